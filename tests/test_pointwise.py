"""The pointwise forward kernel (pointwise_forward) against tests/reference.py.

conv1d/2d/3d take it for channels-first, groups-1, float32 convolutions whose
kernel is 1 in every axis, with stride 1 and no padding applied by the
kernel, POINTWISE_MIN_IN or more input and at most POINTWISE_MAX_OUT output
channels (AVX-512 variant).  The fixture lifts the channel limits and the
variant and dtype restrictions, so every case runs the kernel on any machine,
and checks that it was taken: rows shorter than, equal to and longer than a
32-column register block, output channels not a multiple of its 8, work items
of one block and of many.
"""
import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import (assert_close, assert_same_nonfinite, by_thread_count, random,
                      spy_kernel)
from cyconv import conv as conv_mod


@pytest.fixture
def pointwise(monkeypatch):
    monkeypatch.setattr(conv_mod, "POINTWISE_ENABLED", True)
    monkeypatch.setattr(conv_mod, "POINTWISE_MIN_IN", 1)
    monkeypatch.setattr(conv_mod, "POINTWISE_MAX_OUT", 1 << 30)
    monkeypatch.setattr(conv_mod, "_POINTWISE_ITEMSIZES", (4, 8))
    return spy_kernel(monkeypatch, "pointwise_forward")


# (N, C_in, spatial, C_out)
SHAPES = {
    "one_block": (2, 5, (4, 8), 8),
    "short_rows": (3, 7, (3, 3), 5),
    "tail_block": (2, 16, (9, 11), 13),
    "many_blocks": (1, 33, (20, 30), 17),
    "one_channel": (2, 1, (6, 7), 3),
    "wide_c_out": (1, 70, (5, 13), 70),
}


@pytest.mark.parametrize("cols", ["default", "one_block", "two_blocks"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_matches_reference(name, dtype, bias, cols, pointwise, monkeypatch):
    if cols != "default":
        monkeypatch.setattr(conv_mod, "_POINTWISE_COLS", 32 if cols == "one_block" else 64)
    N, C, sp, K = SHAPES[name]
    rng = np.random.default_rng(len(name))
    x = random(rng, (N, C) + sp, dtype)
    w = random(rng, (K, C, 1, 1), dtype)
    b = random(rng, (K,), dtype) if bias else None
    x0 = x.copy()
    y = cyconv.conv2d(x, w, b)
    assert pointwise, "the pointwise kernel was not taken"
    assert np.array_equal(x, x0)
    assert_close(y, ref.conv2d(x, w, b), dtype, name)


@pytest.mark.parametrize("nd", [1, 3])
def test_other_dimensions(nd, pointwise):
    rng = np.random.default_rng(nd)
    x = random(rng, (2, 9) + (5, 6, 7)[:nd] if nd == 3 else (2, 9, 45))
    w = random(rng, (11, 9) + (1,) * nd)
    b = random(rng, (11,))
    y = getattr(cyconv, f"conv{nd}d")(x, w, b)
    assert pointwise
    assert_close(y, ref.conv_nd(x, w, b, (1,) * nd, [(0, 0)] * nd, (1,) * nd), np.float32)


def test_non_zero_padding_mode(pointwise):
    """reflect padding is materialised by numpy.pad: the kernel then pads nothing."""
    rng = np.random.default_rng(3)
    x = random(rng, (2, 6, 5, 7))
    w = random(rng, (4, 6, 1, 1))
    y = cyconv.conv2d(x, w, padding=2, padding_mode="reflect")
    assert pointwise
    xp = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    assert_close(y, ref.conv2d(xp, w, None), np.float32)


def test_non_contiguous_input(pointwise):
    rng = np.random.default_rng(5)
    x = random(rng, (2, 40, 9, 20))[:, ::2, :, ::2]
    w = random(rng, (12, 20, 1, 1))
    y = cyconv.conv2d(x, w)
    assert pointwise
    assert_close(y, ref.conv2d(np.ascontiguousarray(x), w, None), np.float32)


def test_thread_count_does_not_change_bits(pointwise, monkeypatch):
    monkeypatch.setattr(conv_mod, "_POINTWISE_COLS", 32)
    rng = np.random.default_rng(4)
    x = random(rng, (3, 20, 11, 13))
    w = random(rng, (9, 20, 1, 1))
    outs = by_thread_count(lambda: cyconv.conv2d(x, w))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_empty_batch(pointwise):
    x = np.zeros((0, 8, 5, 5), np.float32)
    w = np.ones((4, 8, 1, 1), np.float32)
    assert cyconv.conv2d(x, w).shape == (0, 4, 5, 5)


def test_inf_and_nan_propagate(pointwise):
    """The zero columns padding a row's last register block are never
    written out, so an inf weight leaves no NaN outside the definition's."""
    rng = np.random.default_rng(6)
    x = random(rng, (1, 8, 3, 5))
    w = random(rng, (8, 8, 1, 1))
    x[0, 2, 1, 3] = np.nan
    w[3, 4] = np.inf
    y = cyconv.conv2d(x, w)
    with np.errstate(invalid="ignore"):
        r = ref.conv2d(x.astype(np.float64), w.astype(np.float64), None)
    assert pointwise
    assert_same_nonfinite(y, r, np.float32)


def test_selection_rule(monkeypatch):
    from cyconv import _kernels, _params

    assert conv_mod.POINTWISE_ENABLED == (_kernels.VARIANT == "avx512")
    monkeypatch.setattr(conv_mod, "POINTWISE_ENABLED", True)

    def uses(C_in=256, C_out=64, k=1, stride=1, padding=0, groups=1, cl=False, nd=2,
             dtype=np.float32, mode="zeros"):
        x = np.zeros((1, C_in) + (20,) * nd, dtype)
        if cl:
            x = np.moveaxis(x, 1, -1)
        w = np.zeros((C_out, C_in // groups) + (k,) * nd, dtype)
        geo = _params.conv_geometry("conv", nd, x, w, None, stride, padding, 1, groups,
                                    padding_mode=mode, channels_last=cl)
        pads = geo.pads if mode == "zeros" else ((0, 0),) * nd
        return conv_mod._uses_pointwise(geo, pads, dtype)
    assert uses()
    assert uses(nd=1) and uses(nd=3)
    assert uses(C_in=conv_mod.POINTWISE_MIN_IN, C_out=conv_mod.POINTWISE_MAX_OUT)
    assert uses(padding=1, mode="reflect")
    assert not uses(C_in=conv_mod.POINTWISE_MIN_IN - 1)
    assert not uses(C_out=conv_mod.POINTWISE_MAX_OUT + 1)
    assert not uses(dtype=np.float64)
    assert not uses(k=3)
    assert not uses(stride=2)
    assert not uses(padding=1)
    assert not uses(groups=2)
    assert not uses(cl=True)


def test_pointwise_1x1_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = random(rng, (2, 256, 14, 15))
    w = random(rng, (64, 256, 1, 1))
    b = random(rng, (64,))
    y = cyconv.conv2d(x, w, b)
    t = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                   torch.from_numpy(b).double())
    assert_close(y, t.numpy(), np.float32)
