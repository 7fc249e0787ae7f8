"""The Winograd F(2x2, 3x3) and F(4x4, 3x3) forward paths of conv2d against
tests/reference.py.

conv2d takes them for channels-first 3x3 stride-1 convolutions with enough
channels and outputs (cyconv.conv.WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_OUTPUTS,
WINOGRAD4_MIN_CHANNELS); the tests lower those thresholds and shrink the work
items so small shapes cross every tile, chunk and edge case, and check that
the path was really taken with the tile size under test.
"""
import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import assert_close, by_thread_count, random, spy_kernel
from cyconv import _workspace
from cyconv import conv as conv_mod


@pytest.fixture(params=[2, 4], ids=["F2", "F4"])
def winograd(request, monkeypatch):
    """Winograd F(m x m, 3x3) for any channel count, m = 2 or 4; returns
    (m, the tile sizes of the kernel's calls)."""
    m = request.param
    monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_OUTPUTS", 1)
    monkeypatch.setattr(conv_mod, "WINOGRAD4_MIN_CHANNELS", 1 if m == 4 else 10**9)
    calls = []
    real = conv_mod._conv.winograd_forward

    def spy(*args):
        calls.append(int(args[4][8]))   # geo = (ph, pw, dh, dw, Ho, Wo, R, Bc, m)
        return real(*args)

    monkeypatch.setattr(conv_mod._conv, "winograd_forward", spy)
    return m, calls


def taken(winograd):
    m, calls = winograd
    return bool(calls) and set(calls) == {m}


# (N, C_in, H, W, C_out, padding, dilation)
SHAPES = {
    "even": (2, 3, 8, 8, 4, 1, 1),
    "odd_sizes": (2, 2, 9, 7, 3, 1, 1),
    "valid": (1, 3, 10, 9, 2, 0, 1),
    "asymmetric_pad": (2, 2, 7, 8, 3, ((0, 2), (3, 1)), 1),
    "pad_wider_than_kernel": (1, 2, 5, 4, 2, 3, 1),
    "one_pixel_out": (1, 3, 3, 3, 2, 0, 1),
    "one_pixel_in": (1, 2, 1, 1, 2, 1, 1),
    "dilation2": (2, 2, 11, 12, 3, 2, 2),
    "dilation_per_dim": (1, 2, 13, 15, 2, (1, 3), (2, 3)),
    "dilation_odd_out": (1, 2, 9, 10, 3, 1, (3, 2)),
    "wide": (1, 2, 5, 300, 3, 1, 1),       # more than one column chunk
    "wide_dilated": (1, 2, 9, 290, 2, 2, 2),
    "tall": (1, 2, 40, 6, 2, 1, 1),
}


@pytest.mark.parametrize("tiles", [None, 1, 3, 7])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_matches_reference(name, dtype, tiles, winograd, monkeypatch):
    N, C, H, W, K, pad, dil = SHAPES[name]
    if tiles is not None:
        monkeypatch.setattr(_workspace, "winograd_tiles", lambda c, k, i, a2=16: tiles)
    rng = np.random.default_rng(len(name) * 7 + (tiles or 0))
    x = random(rng, (N, C, H, W), dtype)
    w = random(rng, (K, C, 3, 3), dtype)
    b = random(rng, (K,), dtype)
    y = cyconv.conv2d(x, w, b, padding=pad, dilation=dil)
    assert taken(winograd), f"Winograd F({winograd[0]}) was not taken: {winograd[1]}"
    pads = ref_pads(pad)
    dil2 = (dil, dil) if np.isscalar(dil) else dil
    assert_close(y, ref.conv2d(x, w, b, pads=pads, dilation=dil2), dtype, name)


def ref_pads(pad):
    if np.isscalar(pad):
        return ((pad, pad), (pad, pad))
    if np.isscalar(pad[0]):
        return ((pad[0], pad[0]), (pad[1], pad[1]))
    return pad


def test_thread_count_does_not_change_bits(winograd, monkeypatch):
    monkeypatch.setattr(_workspace, "winograd_tiles", lambda c, k, i, a2=16: 5)
    rng = np.random.default_rng(3)
    x = random(rng, (3, 4, 17, 19))
    w = random(rng, (5, 4, 3, 3))
    outs = by_thread_count(lambda: cyconv.conv2d(x, w, padding=1))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    assert taken(winograd)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # the reference's NaNs
@pytest.mark.parametrize("where", ["input", "weight"])
def test_inf_and_nan_fall_back_to_the_definition(where, winograd):
    """Winograd's transforms subtract inputs (inf - inf = NaN), so a call that
    sees inf or NaN is recomputed by the direct sum: NaN exactly where the
    definition gives NaN."""
    rng = np.random.default_rng(5)
    x = random(rng, (2, 3, 8, 9), np.float64)
    w = random(rng, (4, 3, 3, 3), np.float64)
    if where == "input":
        x[1, 2, 4, 4] = np.inf
        x[0, 0, 2, 6] = -np.inf
        x[0, 1, 5, 1] = np.nan
    else:
        w[2, 1, 1, 1] = np.inf
    y = cyconv.conv2d(x, w, padding=1)
    r = ref.conv2d(x, w, pads=((1, 1), (1, 1)))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(r))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(r))
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(r))
    finite = np.isfinite(r)
    np.testing.assert_allclose(y[finite], r[finite], rtol=1e-10, atol=1e-10)
    assert x.flags.writeable and np.isinf(x).sum() == (2 if where == "input" else 0)
    if where == "input":   # the weights are checked before the kernel runs
        assert taken(winograd)


def test_selection_rule():
    """Which convolutions take the path (the documented heuristic)."""
    def geo(C_in=64, C_out=64, k=3, stride=1, dilation=1, groups=1, cl=False, nd=2, size=40):
        x = np.zeros((1, C_in) + (size,) * nd, np.float32)
        if cl:
            x = np.moveaxis(x, 1, -1)
        w = np.zeros((C_out, C_in // groups) + (k,) * nd, np.float32)
        from cyconv import _params
        return _params.conv_geometry("conv", nd, x, w, None, stride, 1, dilation, groups,
                                     padding_mode="zeros", channels_last=cl)
    f32 = np.float32
    assert conv_mod._uses_winograd(geo(), f32)
    assert conv_mod._uses_winograd(geo(dilation=2), f32)
    assert not conv_mod._uses_winograd(geo(stride=2), f32)
    assert not conv_mod._uses_winograd(geo(k=5), f32)
    assert not conv_mod._uses_winograd(geo(groups=2), f32)
    assert not conv_mod._uses_winograd(geo(cl=True), f32)
    assert not conv_mod._uses_winograd(geo(nd=1), f32)
    assert not conv_mod._uses_winograd(geo(C_in=3), f32)
    assert not conv_mod._uses_winograd(geo(dilation=17), f32)
    assert not conv_mod._uses_winograd(geo(C_in=2048, C_out=2048), f32)
    assert not conv_mod._uses_winograd(geo(size=16), f32)   # 16 x 16 outputs
    assert conv_mod._uses_winograd4(geo(), 4)
    assert conv_mod._uses_winograd4(geo(C_in=16, C_out=16), 4)
    assert not conv_mod._uses_winograd4(geo(C_in=15), 4)
    assert conv_mod._uses_winograd4(geo(C_in=128, C_out=128), 4)
    assert not conv_mod._uses_winograd4(geo(C_in=256, C_out=256), 4)


def test_benchmark_layer_against_torch(monkeypatch):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = random(rng, (2, 64, 30, 28))
    w = random(rng, (48, 64, 3, 3))
    b = random(rng, (48,))
    for dil in (1, 2):
        calls = spy_kernel(monkeypatch, "winograd_forward")
        y = cyconv.conv2d(x, w, b, padding=dil, dilation=dil)
        assert calls
        t = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                       torch.from_numpy(b).double(), padding=dil, dilation=dil)
        assert_close(y, t.numpy(), np.float32, f"dilation {dil}")


@pytest.mark.parametrize("K, C", [(3, 5), (4, 16), (2, 37), (64, 64)])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transformed_weights(K, C, m, dtype, monkeypatch):
    """U = G w G^T per (output, input) channel pair, against the product of
    the matrices in NumPy float64 (G written out from the F(m x m, 3x3)
    algorithm here), on one thread and split over threads: whole and partial
    runs of the kernel's 16 input channels per work item."""
    monkeypatch.setattr(conv_mod, "_WINO_WEIGHTS_PER_THREAD", 1)
    sixth, twelfth, w24 = 1 / 6, 1 / 12, 1 / 24
    G = {2: [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
         4: [[0.25, 0, 0], [-sixth, -sixth, -sixth], [-sixth, sixth, -sixth],
             [w24, twelfth, sixth], [w24, -twelfth, sixth], [0, 0, 1]]}[m]
    G = np.array(G)
    w = random(np.random.default_rng(K * C + m), (K, C, 3, 3), dtype)
    keep = w.copy()
    expected = np.einsum("ip,kcpq,jq->ijkc", G, w.astype(np.float64), G)
    expected = expected.reshape((m + 2) ** 2, K, C)
    outs = by_thread_count(lambda: conv_mod._winograd_weights(w, m))
    for got in outs:
        assert got.shape == expected.shape and got.dtype == dtype
        np.testing.assert_allclose(got, expected, rtol=4 * np.finfo(dtype).eps,
                                   atol=4 * np.finfo(dtype).eps * np.abs(w).max())
        np.testing.assert_array_equal(got, outs[0])
    np.testing.assert_array_equal(w, keep)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("m", [2, 4])
def test_transformed_weights_flag_inf_and_nan(value, m, monkeypatch):
    """The weight transform reports an inf or NaN wherever it is (first and
    last kernel of a run of 16 input channels, a partial run, every tap),
    so that the forward pass falls back to the definition."""
    monkeypatch.setattr(conv_mod, "_WINO_WEIGHTS_PER_THREAD", 1)
    K, C = 3, 21   # runs of 16 and 5 input channels
    w0 = random(np.random.default_rng(7), (K, C, 3, 3), np.float32)
    assert all(u is not None for u in by_thread_count(lambda: conv_mod._winograd_weights(w0, m)))
    for k, c, p, q in [(0, 0, 0, 0), (1, 15, 2, 2), (2, 16, 1, 0), (2, 20, 0, 2),
                       (0, 7, 1, 1)]:
        w = w0.copy()
        w[k, c, p, q] = value
        assert all(u is None for u in by_thread_count(lambda: conv_mod._winograd_weights(w, m)))
