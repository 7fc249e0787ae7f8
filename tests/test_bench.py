"""The benchmark runs end to end on a small subset: every peer that is
installed is timed, the JSON is consistent, and the plot is written."""
import json

import pytest

from cyconv.bench import __main__ as bench
from cyconv.bench import suite


def test_bench_subset_json_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    rc = bench.main(["--shapes", "mnist_small,maxpool_2x2_s2,image_2048_3x3",
                     "--threads", "1", "--rounds", "1", "--json", str(out),
                     "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "sgemm ceiling" in text and "kernels:" in text
    data = json.loads(out.read_text())
    rows = data["results"]
    assert {(r["shape"], r["pass"]) for r in rows} == {
        ("mnist_small", "forward"), ("mnist_small", "backward"),
        ("maxpool_2x2_s2", "forward"), ("image_2048_3x3", "forward")}
    conv_peers = set(suite.peers_for())
    for r in rows:
        assert all(ms > 0 for ms in r["ms"].values())
        assert r["workspace_mib"] < 64
        if r["shape"] == "mnist_small" and r["pass"] == "forward":
            assert set(r["ms"]) == conv_peers
    assert data["sgemm_ceiling_gflops"]["1"] > 0
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_peers_compute_the_same_convolution():
    """The timed peers compute what cyconv computes (else the race is unfair)."""
    import numpy as np

    s = dict(suite.load_shapes()["conv2d"][0], N=1, H=40, W=40)   # alexnet-like, small
    impls = {name: make(s, 1) for name, make in suite.peers_for().items()}
    ref = impls.pop("cyconv")
    y = ref["forward"]()
    for name, impl in impls.items():
        np.testing.assert_allclose(np.asarray(impl["forward"]()), y, rtol=2e-4, atol=2e-3,
                                   err_msg=name)
    gref = ref["backward"]()
    for name, impl in impls.items():
        if "backward" in impl:
            for a, b in zip(gref, impl["backward"]()):
                np.testing.assert_allclose(np.asarray(b), a, rtol=2e-3, atol=2e-2,
                                           err_msg=name)


def test_rounds_rotate_the_peers_order():
    """Each round starts with the next peer, at every thread count, so that
    no peer is always the first call after the thread count changes."""
    calls = []

    def peer(name):
        def make(s, t):
            return {"forward": lambda: calls.append((name, t))}
        return make

    names = ["cyconv", "numpy", "torch"]
    shape = suite.load_shapes()["conv2d"][-1]
    rows = suite.run_suite([shape], [1, 2], {n: peer(n) for n in names},
                           passes=("forward",), rounds=4,
                           work=lambda s, p: 1.0)
    timed = calls[2 * len(names):2 * len(names) + 4 * 2 * len(names)]   # after the warm-up
    expected = []
    for r in range(4):
        for t in (1, 2):
            expected += [(n, t) for n in names[r % 3:] + names[:r % 3]]
    assert timed == expected
    assert {r["threads"] for r in rows} == {1, 2}
    assert all(set(r["ms"]) == set(names) for r in rows)
    assert suite.rotated([], 3) == []
