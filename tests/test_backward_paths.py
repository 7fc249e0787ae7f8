"""The specialised backward paths against tests/reference.py:

* the input gradient of a stride-1 convolution as the forward convolution
  of grad_output with the flipped kernel (_adjoint_geometry), where that
  convolution takes Winograd, grouped_forward or depthwise3_forward;
* the weight gradient of one-channel-per-group convolutions by
  direct_backward_weight;
* the weight gradient of Winograd-shaped convolutions in the transformed
  domain (winograd_backward_weight);
* the weight gradient by blocks of input channels
  (conv_backward_weight_blocks).

Each test checks that the path was really taken.
"""
import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import assert_close, by_thread_count, random, spy_kernel
from cyconv import _workspace
from cyconv import conv as conv_mod


@pytest.fixture(params=[2, 4], ids=["F2", "F4"])
def small_winograd(request, monkeypatch):
    """Winograd for any channel count, in small work items; the forward
    (and adjoint) with F(2x2, 3x3) or F(4x4, 3x3)."""
    monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_OUTPUTS", 1)
    monkeypatch.setattr(conv_mod, "WINOGRAD4_MIN_CHANNELS", 1 if request.param == 4 else 10**9)
    monkeypatch.setattr(_workspace, "winograd_tiles", lambda c, k, i, a2=16: 5)


def pads_nd(pad, nd):
    if np.isscalar(pad):
        return ((pad, pad),) * nd
    return tuple((p, p) if np.isscalar(p) else tuple(p) for p in pad)


def check_backward(nd, x, w, stride, pad, dil, groups, dtype, what):
    y = getattr(cyconv, f"conv{nd}d")(x, w, stride=stride, padding=pad, dilation=dil,
                                      groups=groups)
    gy = random(np.random.default_rng(y.size), y.shape, dtype)
    g = getattr(cyconv, f"conv{nd}d_backward")(gy, x, w, stride=stride, padding=pad,
                                               dilation=dil, groups=groups)
    s = (stride,) * nd if np.isscalar(stride) else stride
    d = (dil,) * nd if np.isscalar(dil) else dil
    rx, rw, rb = ref.conv_nd_backward(gy, x, w, s, pads_nd(pad, nd), d, groups)
    assert_close(g.input, rx, dtype, what + " input")
    assert_close(g.weight, rw, dtype, what + " weight")
    assert_close(g.bias, rb, dtype, what + " bias")


# (N, C_in, H, W, C_out, padding, dilation)
WINO = {
    "same": (2, 3, 8, 9, 4, 1, 1),
    "valid": (1, 3, 10, 9, 2, 0, 1),
    "asymmetric_pad": (2, 2, 7, 8, 3, ((0, 2), (2, 1)), 1),
    "dilation2": (2, 2, 11, 12, 3, 2, 2),
    "dilation_per_dim": (1, 2, 13, 15, 2, (1, 3), (2, 3)),
    "one_pixel": (1, 2, 1, 1, 3, 1, 1),
    "wide": (1, 2, 4, 150, 3, 1, 1),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(WINO))
def test_winograd_shaped_backward(name, dtype, small_winograd, monkeypatch):
    adj = spy_kernel(monkeypatch, "winograd_forward")
    wgt = spy_kernel(monkeypatch, "winograd_backward_weight")
    N, C, H, W, K, pad, dil = WINO[name]
    rng = np.random.default_rng(len(name))
    x = random(rng, (N, C, H, W), dtype)
    w = random(rng, (K, C, 3, 3), dtype)
    check_backward(2, x, w, 1, pad, dil, 1, dtype, name)
    assert wgt, "the Winograd weight gradient was not taken"
    assert len(adj) == 2, "the input gradient did not go through Winograd"


def test_input_gradient_with_padding_beyond_the_kernel_uses_col2im(small_winograd,
                                                                   monkeypatch):
    """Padding 3 > dilation * (k - 1) = 2: the adjoint would need negative
    padding, so the input gradient keeps GEMM + col2im."""
    col2im = spy_kernel(monkeypatch, "conv_backward_input")
    rng = np.random.default_rng(1)
    x = random(rng, (1, 2, 6, 5), np.float64)
    w = random(rng, (3, 2, 3, 3), np.float64)
    check_backward(2, x, w, 1, 3, 1, 1, np.float64, "pad 3")
    assert col2im


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # the reference's NaNs
@pytest.mark.parametrize("where", ["input", "grad_output"])
def test_winograd_weight_gradient_inf_and_nan_fall_back(where, small_winograd):
    rng = np.random.default_rng(5)
    x = random(rng, (2, 3, 8, 9), np.float64)
    w = random(rng, (4, 3, 3, 3), np.float64)
    gy = random(rng, (2, 4, 8, 9), np.float64)
    if where == "input":
        x[1, 2, 4, 4] = np.inf
        x[0, 1, 5, 1] = np.nan
    else:
        gy[0, 3, 2, 2] = -np.inf
    g = cyconv.conv2d_backward(gy, x, w, padding=1)
    _, rw, _ = ref.conv_nd_backward(gy, x, w, (1, 1), ((1, 1), (1, 1)), (1, 1))
    np.testing.assert_array_equal(np.isnan(g.weight), np.isnan(rw))
    np.testing.assert_array_equal(np.isinf(g.weight), np.isinf(rw))
    finite = np.isfinite(rw)
    np.testing.assert_allclose(g.weight[finite], rw[finite], rtol=1e-10, atol=1e-10)


def test_winograd_weight_gradient_needs_buckets(small_winograd, monkeypatch):
    """Too little partial-sum budget for the transformed weights: im2col."""
    monkeypatch.setattr(_workspace, "PARTIAL_BYTES", 1)
    wgt = spy_kernel(monkeypatch, "winograd_backward_weight")
    rng = np.random.default_rng(2)
    x = random(rng, (2, 3, 8, 8), np.float64)
    w = random(rng, (4, 3, 3, 3), np.float64)
    check_backward(2, x, w, 1, 1, 1, 1, np.float64, "no buckets")
    assert not wgt


# (nd, N, C, spatial, multiplier, kernel, stride, padding, dilation)
GROUPED = {
    "depthwise2d": (2, 2, 3, (9, 8), 1, 3, 1, 1, 1),
    "depthwise2d_k4_asym": (2, 1, 2, (10, 7), 1, 4, 1, "same", 1),
    "depthwise2d_strided": (2, 2, 3, (11, 9), 1, 3, 2, 1, 1),
    "depthwise2d_dilated": (2, 1, 2, (12, 13), 1, 3, 1, 2, 2),
    "depthwise2d_wide": (2, 1, 2, (3, 70), 1, 3, 1, 1, 1),
    "multiplier2d": (2, 2, 2, (8, 9), 3, 3, (1, 2), 1, 1),
    "depthwise1d": (1, 3, 4, (37,), 1, 5, 1, 2, 1),
    "multiplier1d_strided": (1, 2, 3, (40,), 2, 4, 3, 1, 2),
    "depthwise3d": (3, 2, 2, (5, 6, 7), 1, 3, 1, 1, 1),
    "depthwise3d_strided": (3, 1, 3, (6, 5, 7), 2, 2, (2, 1, 2), 1, (1, 2, 1)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(GROUPED))
def test_grouped_backward(name, dtype, monkeypatch):
    direct = spy_kernel(monkeypatch, "direct_backward_weight")
    grouped = spy_kernel(monkeypatch, "grouped_forward")
    dw3 = spy_kernel(monkeypatch, "depthwise3_forward")
    nd, N, C, sp, m, k, stride, pad, dil = GROUPED[name]
    rng = np.random.default_rng(len(name))
    x = random(rng, (N, C) + sp, dtype)
    w = random(rng, (C * m, 1) + (k,) * nd, dtype)
    if pad == "same":
        pad = tuple(ref.same_pads(sp, (k,) * nd, (1,) * nd, (dil,) * nd))
    check_backward(nd, x, w, stride, pad, dil, C, dtype, name)
    assert direct, "direct_backward_weight was not taken"
    # the input gradient is a grouped forward for depthwise stride 1 in 1-D/2-D
    adjoint = nd <= 2 and m == 1 and np.all(np.asarray(stride) == 1)
    assert len(grouped) + len(dw3) == (2 if adjoint else int(nd <= 2))


def test_backward_bits_do_not_depend_on_thread_count(small_winograd):
    rng = np.random.default_rng(9)
    cases = [(random(rng, (3, 4, 11, 13)), random(rng, (5, 4, 3, 3)), 1),
             (random(rng, (5, 6, 12, 10)), random(rng, (6, 1, 3, 3)), 6)]
    for x, w, groups in cases:
        gy = random(rng, (x.shape[0], w.shape[0], x.shape[2], x.shape[3]))
        outs = by_thread_count(
            lambda: cyconv.conv2d_backward(gy, x, w, padding=1, groups=groups))
        for o in outs[1:]:
            for a, b in zip(outs[0], o):
                assert np.array_equal(a, b)


def test_empty_batch(small_winograd):
    x = np.zeros((0, 4, 6, 6), np.float32)
    for w, groups in ((np.ones((3, 4, 3, 3), np.float32), 1),
                      (np.ones((4, 1, 3, 3), np.float32), 4)):
        gy = np.zeros((0, w.shape[0], 6, 6), np.float32)
        g = cyconv.conv2d_backward(gy, x, w, padding=1, groups=groups)
        assert g.input.shape == x.shape
        assert np.array_equal(g.weight, np.zeros_like(w))


@pytest.mark.parametrize("dil,out_pad", [(1, 0), (2, 1)])
def test_transposed_stride1_forward_and_weight(dil, out_pad, small_winograd, monkeypatch):
    """conv_transpose2d with stride 1 is the adjoint's input gradient, so it
    takes Winograd too; output_padding < dilation is allowed there."""
    wf = spy_kernel(monkeypatch, "winograd_forward")
    rng = np.random.default_rng(4)
    x = random(rng, (2, 3, 7, 8), np.float64)
    w = random(rng, (3, 4, 3, 3), np.float64)
    b = random(rng, (4,), np.float64)
    y = cyconv.conv_transpose2d(x, w, b, padding=1, output_padding=out_pad, dilation=dil)
    r = ref.conv_transpose_nd(x, w, b, (1, 1), (1, 1), (out_pad,) * 2, 1, (dil,) * 2)
    assert_close(y, r, np.float64, "transposed")
    gy = random(rng, y.shape, np.float64)
    g = cyconv.conv_transpose2d_backward(gy, x, w, padding=1, output_padding=out_pad,
                                         dilation=dil)
    rx, rw, rb = ref.conv_transpose_nd_backward(gy, x, w, (1, 1), (1, 1), (out_pad,) * 2,
                                                1, (dil,) * 2)
    assert_close(g.input, rx, np.float64, "transposed input")
    assert_close(g.weight, rw, np.float64, "transposed weight")
    assert wf


def test_inputs_are_not_modified(small_winograd):
    rng = np.random.default_rng(3)
    x = random(rng, (2, 3, 6, 7))
    w = random(rng, (4, 3, 3, 3))
    gy = random(rng, (2, 4, 6, 7))
    copies = [a.copy() for a in (x, w, gy)]
    cyconv.conv2d_backward(gy, x, w, padding=1)
    for a, c in zip((x, w, gy), copies):
        assert np.array_equal(a, c)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # the reference's NaNs
@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("where", ["weight", "grad_output"])
def test_inf_at_the_border_matches_the_definition(where, groups, small_winograd):
    """An inf weight or grad_output next to the zero padding: the paths that
    skip or add padding taps must give the definition's inf/NaN pattern."""
    rng = np.random.default_rng(8)
    x = random(rng, (2, 4, 7, 6), np.float64)
    w = random(rng, (4, 4 // groups, 3, 3), np.float64)
    gy = random(rng, (2, 4, 7, 6), np.float64)
    if where == "weight":
        w[1, 0, 0, 2] = np.inf
    else:
        gy[1, 2, 0, 5] = np.inf
    g = cyconv.conv2d_backward(gy, x, w, padding=1, groups=groups)
    rx, rw, _ = ref.conv_nd_backward(gy, x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), groups)
    for a, r in ((g.input, rx), (g.weight, rw)):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(r))
        np.testing.assert_array_equal(np.isinf(a), np.isinf(r))
        finite = np.isfinite(r)
        np.testing.assert_allclose(a[finite], r[finite], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("col", [0, -1])
def test_depthwise_weight_gradient_inf_in_a_wrapped_column(col, monkeypatch):
    """direct_backward_weight sums a same-size plane as one span and then
    subtracts the positions that wrap around a row end; an inf input in the
    first or last column is read there by taps whose definition never uses
    it, and their weight gradient must stay finite (im2col recomputes)."""
    rng = np.random.default_rng(11)
    x = random(rng, (2, 3, 6, 9), np.float64)
    x[1, 2, 3, col] = np.inf
    w = random(rng, (3, 1, 3, 3), np.float64)
    gy = random(rng, (2, 3, 6, 9), np.float64)
    direct = spy_kernel(monkeypatch, "direct_backward_weight")
    g = cyconv.conv2d_backward(gy, x, w, padding=1, groups=3, needs=("weight",))
    assert direct
    with np.errstate(invalid="ignore"):
        _, rw, _ = ref.conv_nd_backward(gy, x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), 3)
    np.testing.assert_array_equal(np.isnan(g.weight), np.isnan(rw))
    np.testing.assert_array_equal(np.isinf(g.weight), np.isinf(rw))
    assert np.isfinite(rw[2, 0, :, 2 if col == 0 else 0]).all()   # the taps that never read it
    finite = np.isfinite(rw)
    np.testing.assert_allclose(g.weight[finite], rw[finite], rtol=1e-10, atol=1e-10)


# Weight gradient by blocks of input channels (conv_backward_weight_blocks):
# (nd, N, C_in, spatial, C_out, kernel, stride, padding, dilation)
BLOCKS = {
    "resnet_like": (2, 2, 11, (9, 8), 5, 3, 2, 1, 1),
    "partial_last_block": (2, 3, 7, (6, 7), 3, 3, 1, 1, 1),
    "dilated_padded": (2, 2, 5, (11, 10), 2, 3, 1, ((2, 0), (1, 3)), 2),
    "non_square": (2, 1, 6, (7, 12), 4, (2, 5), (1, 2), (0, 2), 1),
    "one_by_one_strided": (2, 2, 9, (7, 7), 3, 1, 2, 0, 1),
    "kernel_beyond_input": (2, 1, 4, (2, 3), 2, 3, 1, 1, 1),
    "conv1d": (1, 3, 6, (13,), 2, 4, 3, 2, 1),
    "conv3d": (3, 2, 5, (5, 4, 6), 3, 2, (1, 2, 1), 1, (2, 1, 1)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_weight_gradient_by_channel_blocks(name, dtype, monkeypatch):
    nd, N, C, sp, K, k, s, p, d = BLOCKS[name]
    monkeypatch.setattr(conv_mod, "WEIGHT_BLOCK_COLUMNS", 5)   # blocks of 1 to 5 channels
    monkeypatch.setattr(conv_mod, "WEIGHT_BLOCK_MIN_ITEMS", 2)
    monkeypatch.setattr(_workspace, "tile_size", lambda k_, n, i: min(n, 7))   # several tiles
    calls = spy_kernel(monkeypatch, "conv_backward_weight_blocks")
    buckets = spy_kernel(monkeypatch, "conv_backward_weight")
    rng = np.random.default_rng(len(name))
    x = random(rng, (N, C) + sp, dtype)
    kern = (k,) * nd if np.isscalar(k) else k
    w = random(rng, (K, C) + kern, dtype)
    check_backward(nd, x, w, s, p, d, 1, dtype, name)
    assert calls and not buckets


def test_weight_gradient_blocks_bits_do_not_depend_on_thread_count(monkeypatch):
    monkeypatch.setattr(conv_mod, "WEIGHT_BLOCK_COLUMNS", 9)
    monkeypatch.setattr(conv_mod, "WEIGHT_BLOCK_MIN_ITEMS", 2)
    calls = spy_kernel(monkeypatch, "conv_backward_weight_blocks")
    rng = np.random.default_rng(5)
    x = random(rng, (3, 7, 12, 11))
    w = random(rng, (6, 7, 3, 3))
    gy = random(rng, (3, 6, 6, 6))

    def grad():
        return cyconv.conv2d_backward(gy, x, w, stride=2, padding=1, needs=("weight",)).weight

    outs = by_thread_count(grad)
    assert calls
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("geometry, expected", [
    (dict(C_in=128, kernel=(3, 3), stride=(2, 2)), 16),    # resnet_3x3_s2: 8 items
    (dict(C_in=64, kernel=(5, 5)), 6),
    (dict(C_in=3, kernel=(11, 11), stride=(4, 4)), 0),     # a first layer: 2 items
    (dict(C_in=256, kernel=(1, 1)), 0),                    # pointwise: read in place
    (dict(C_in=256, kernel=(1, 1), stride=(2, 2)), 0),     # 2 items of 144: too few
    (dict(C_in=64, kernel=(3, 3), groups=2), 0),
    (dict(C_in=64, kernel=(3, 3), channels_last=True), 0),
])
def test_weight_gradient_block_rule(geometry, expected):
    from types import SimpleNamespace
    geo = SimpleNamespace(**{**dict(stride=(1, 1), groups=1, channels_last=False), **geometry})
    pads = ((0, 0),) * len(geo.kernel)
    assert conv_mod._weight_blocks(geo, pads) == expected


def test_weight_gradient_blocks_kernel_checks_its_arguments():
    x = np.zeros((2, 4, 1, 6, 6), np.float32)
    geo = np.array((1, 3, 3, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 6, 6), np.intp)
    gy = np.zeros((2, 5, 36), np.float32)
    ws = np.zeros((1, 2 * 9 * 36), np.float32)
    with pytest.raises(ValueError, match="inconsistent"):
        conv_mod._conv.conv_backward_weight_blocks(x, gy, np.zeros((5, 35), np.float32),
                                                   geo, ws, 2, 36, 1)
    with pytest.raises(ValueError, match="inconsistent"):   # scratch too small
        conv_mod._conv.conv_backward_weight_blocks(x, gy, np.zeros((5, 36), np.float32),
                                                   geo, ws, 3, 36, 1)
    gw = np.zeros((5, 36), np.float32)
    conv_mod._conv.conv_backward_weight_blocks(x, gy, gw, geo, ws, 2, 36, 1)
    assert not gw.any()
