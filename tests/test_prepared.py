"""cyconv._prepared: prepared weights are reused only for bitwise-equal
weights, never kept for weights that change at every call, bounded, and
safe from several threads; conv2d's results do not depend on it."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import assert_close, random
from cyconv import _prepared
from cyconv import conv as conv_mod


class Maker:
    """A preparation that counts its calls: 2 w + 1, as a new array."""

    def __init__(self):
        self.calls = 0

    def __call__(self, w):
        self.calls += 1
        return 2 * w + 1


def test_kept_from_the_second_sighting_and_reused_while_bitwise_equal():
    make, w = Maker(), np.arange(300, dtype=np.float32).reshape(10, 30)
    first = _prepared.prepared("k", w, make)
    assert make.calls == 1 and _prepared.kept_bytes() == 0   # seen once: nothing kept
    second = _prepared.prepared("k", w, make)
    assert make.calls == 2 and _prepared.kept_bytes() == 2 * w.nbytes
    third = _prepared.prepared("k", w.copy(), make)   # equal bytes, another array
    assert make.calls == 2
    assert not third.flags.writeable
    for out in (first, second, third):
        np.testing.assert_array_equal(out, 2 * w + 1)
    w[0, 1] = 1e6   # one element changed in place, not one of the sampled ones
    changed = _prepared.prepared("k", w, make)
    assert make.calls == 3
    np.testing.assert_array_equal(changed, 2 * w + 1)
    np.testing.assert_array_equal(_prepared.prepared("k", w, make), 2 * w + 1)
    assert make.calls == 3   # the changed weights replaced the kept ones


@pytest.mark.parametrize("other", [
    lambda w: ("k2", w),                                   # another kind
    lambda w: ("k", w.reshape(30, 10)),                    # another shape
    lambda w: ("k", w.astype(np.float64)),                 # another dtype
    lambda w: ("k", np.where(w == 0, np.float32(-0.0), w)),   # -0.0 for 0.0
])
def test_other_kind_shape_dtype_or_bits_is_prepared_again(other):
    make, w = Maker(), np.arange(300, dtype=np.float32).reshape(10, 30)
    for _ in range(3):
        _prepared.prepared("k", w, make)
    assert make.calls == 2
    kind, w2 = other(w)
    out = _prepared.prepared(kind, w2, make)
    assert make.calls == 3
    np.testing.assert_array_equal(out, 2 * w2 + 1)


def test_changing_weights_are_never_copied():
    make, rng = Maker(), np.random.default_rng(0)
    w = rng.standard_normal((16, 40)).astype(np.float32)
    for _ in range(20):   # a training loop: new weights at every step
        w -= 0.01 * rng.standard_normal(w.shape).astype(np.float32)
        np.testing.assert_array_equal(_prepared.prepared("k", w, make), 2 * w + 1)
    assert make.calls == 20 and _prepared.kept_bytes() == 0


def test_none_is_never_kept_and_disabled_keeps_nothing(monkeypatch):
    w = np.ones((4, 4), np.float32)
    calls = []
    for _ in range(3):
        assert _prepared.prepared("k", w, lambda a: calls.append(1)) is None
    assert len(calls) == 3 and _prepared.kept_bytes() == 0
    monkeypatch.setattr(_prepared, "ENABLED", False)
    make = Maker()
    for _ in range(3):
        _prepared.prepared("k", w, make)
    assert make.calls == 3 and _prepared.kept_bytes() == 0


def test_budget_is_bounded_and_recent_entries_are_not_evicted(monkeypatch):
    entry = 2 * 64 * 4   # weights copy + prepared array of (8, 8) float32
    monkeypatch.setattr(_prepared, "MAX_BYTES", 3 * entry)
    monkeypatch.setattr(_prepared, "KEEP_SECONDS", 1e9)
    make = Maker()
    ws = [np.full((8, 8), i, np.float32) for i in range(6)]
    for w in ws:
        for _ in range(3):
            np.testing.assert_array_equal(_prepared.prepared("k", w, make), 2 * w + 1)
    assert _prepared.kept_bytes() == 3 * entry
    assert make.calls == 2 * 3 + 3 * 3   # the last three never fit: all in recent use
    monkeypatch.setattr(_prepared, "KEEP_SECONDS", 0.0)   # now old entries may go
    for w in ws[3:]:
        for _ in range(2):
            _prepared.prepared("k", w, make)
    assert _prepared.kept_bytes() == 3 * entry
    before = make.calls
    for w in ws[3:]:
        _prepared.prepared("k", w, make)
    assert make.calls == before   # the newest three are the ones kept


def test_threads_with_different_weights_get_their_own():
    rng = np.random.default_rng(1)
    ws = [rng.standard_normal((32, 50)).astype(np.float32) for _ in range(4)]
    errors = []

    def work(i):
        make = Maker()
        try:
            for _ in range(200):
                w = ws[i % 2 if i < 2 else i]   # two threads share weights
                if not np.array_equal(_prepared.prepared("k", w, make), 2 * w + 1):
                    errors.append(i)
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("path", ["winograd", "blocked"])
def test_conv2d_with_kept_weights_matches_and_sees_changes(path, monkeypatch):
    """Repeated conv2d calls (kept weights) give the bits of a call with the
    cache off, and a weight changed in place between calls is used."""
    if path == "winograd":
        monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_CHANNELS", 1)
        monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_OUTPUTS", 1)
        shape, kw = (6, 5, 3, 3), dict(padding=1)
    else:
        # packed_forward's blocked weights; its generic code runs in every variant
        monkeypatch.setattr(conv_mod, "PACKED_ENABLED", True)
        shape, kw = (40, 5, 3, 3), dict(stride=2, padding=1)
    rng = np.random.default_rng(2)
    x = random(rng, (2, 5, 12, 11))
    w = random(rng, shape)
    spy = []
    real = _prepared.prepared
    monkeypatch.setattr(_prepared, "prepared",
                        lambda kind, a, make: spy.append(kind[0]) or real(kind, a, make))
    outs = [cyconv.conv2d(x, w, **kw) for _ in range(3)]
    assert path in spy
    assert _prepared.kept_bytes() > 0
    monkeypatch.setattr(_prepared, "ENABLED", False)
    fresh = cyconv.conv2d(x, w, **kw)
    monkeypatch.setattr(_prepared, "ENABLED", True)
    for out in outs:
        np.testing.assert_array_equal(out, fresh)
    w[1, 2, 0, 1] += 3   # in place, between calls
    y = cyconv.conv2d(x, w, **kw)
    pads = ((1, 1), (1, 1))
    assert_close(y, ref.conv2d(x, w, None, stride=(kw.get("stride", 1),) * 2, pads=pads),
                 np.float32, path)


@pytest.mark.parametrize("env, expected", [("0", "off"), ("no", "off"), ("1", "on,"),
                                           ("", "on,")])
def test_environment_turns_it_off_and_info_says_so(env, expected):
    code = ("import cyconv; from cyconv import _prepared; print(_prepared.ENABLED); "
            "print(cyconv._config.build_info()['weight_cache'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "CYCONV_WEIGHT_CACHE": env})
    enabled, info = out.stdout.strip().splitlines()
    assert enabled == str(expected != "off")
    assert info.split()[0] == expected
