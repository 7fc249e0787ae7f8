"""The row copies with a fast path against their general versions and
tests/reference.py, on random geometries:

- the im2col of whole 2-D output rows (_to_col_rows, the default where a
  tile holds whole rows) against _transfer_cf: strides 1-3, dilation,
  padding wider than the kernel (rows and columns that are all padding),
  kernels as large as the padded input, groups; and 3-D inputs of depth 1
  with depth padding (whose one depth tap can lie in the padding);
- the four stride-4 phases of a row in one pass (_gather4: F(4x4, 3x3)
  Winograd's input rows, and the bands of stride-4 first layers) against
  four _gather calls.

Each pair must give the same bits, and both the reference's values."""
import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import assert_close, force_im2col, random, spy_kernel, to_first, to_last
from cyconv import conv as conv_mod


@pytest.fixture
def im2col_only(monkeypatch):
    """Every forward and backward through im2col + GEMM."""
    force_im2col(monkeypatch)
    old = conv_mod._conv.set_to_col_rows(True)
    yield
    conv_mod._conv.set_to_col_rows(old)


def _geometry(rng):
    kh, kw = rng.integers(1, 6, 2)
    sh, sw = rng.integers(1, 4, 2)
    dh, dw = rng.integers(1, 3, 2)
    pads = tuple(tuple(int(v) for v in rng.integers(0, 2 * k + 1, 2)) for k in (kh, kw))
    H = int(max(1, (kh - 1) * dh + 1 - sum(pads[0]) + rng.integers(0, 9)))
    W = int(max(1, (kw - 1) * dw + 1 - sum(pads[1]) + rng.integers(0, 9)))
    groups = int(rng.choice([1, 2]))
    return dict(N=int(rng.integers(1, 3)), C=2 * int(rng.integers(1, 3)), H=H, W=W,
                K=2 * int(rng.integers(1, 3)), kernel=(int(kh), int(kw)),
                stride=(int(sh), int(sw)), dilation=(int(dh), int(dw)), pads=pads,
                groups=groups)


@pytest.mark.parametrize("seed", range(40))
def test_matches_transfer_cf_and_reference(seed, im2col_only):
    rng = np.random.default_rng(seed)
    g = _geometry(rng)
    x = random(rng, (g["N"], g["C"], g["H"], g["W"]), np.float64)
    w = random(rng, (g["K"], g["C"] // g["groups"]) + g["kernel"], np.float64)
    b = random(rng, (g["K"],), np.float64)
    kw = dict(stride=g["stride"], padding=g["pads"], dilation=g["dilation"],
              groups=g["groups"])
    y = cyconv.conv2d(x, w, b, **kw)
    gy = random(rng, y.shape, np.float64)
    grads = cyconv.conv2d_backward(gy, x, w, **kw)
    conv_mod._conv.set_to_col_rows(False)
    y_cf = cyconv.conv2d(x, w, b, **kw)
    grads_cf = cyconv.conv2d_backward(gy, x, w, **kw)
    conv_mod._conv.set_to_col_rows(True)
    # the same columns, so the same bits
    assert np.array_equal(y, y_cf)
    assert np.array_equal(grads.weight, grads_cf.weight)
    assert np.array_equal(grads.input, grads_cf.input)
    _assert_reference(y, grads, gy, x, w, b, g["stride"], g["pads"], g["dilation"],
                      g["groups"], str(g))


def _assert_reference(y, grads, gy, x, w, b, stride, pads, dilation, groups, what,
                      lay=lambda a: a):
    """y and the input and weight gradients against tests/reference.py; x and
    gy channels first, y and grads.input in the layout ``lay`` makes."""
    assert_close(y, lay(ref.conv_nd(x, w, b, stride, pads, dilation, groups)),
                 np.float64, what)
    gx_ref, gw_ref, _ = ref.conv_nd_backward(gy, x, w, stride, pads, dilation, groups)
    assert_close(grads.weight, gw_ref, np.float64, what)
    assert_close(grads.input, lay(gx_ref), np.float64, what)


# Depth 1 with a kernel depth of 1: the im2col of a 3-D convolution's whole
# output rows may take _to_col_rows only when its one depth tap is inside the
# input.  (before, after, stride) in depth; the first three give one output
# plane whose tap lies in the padding, so every output is the bias.
DEPTH_ONE = [(1, 0, 2), (1, 1, 3), (2, 0, 3), (0, 1, 2), (0, 0, 1), (1, 0, 1)]


@pytest.mark.parametrize("channels_last", [False, True], ids=["ncx", "nxc"])
@pytest.mark.parametrize("depth", DEPTH_ONE, ids=str)
@pytest.mark.parametrize("seed", range(3))
def test_depth_one_3d_matches_reference(seed, depth, channels_last, im2col_only):
    rng = np.random.default_rng(seed)
    g = _geometry(rng)
    before, after, sd = depth
    pads = ((before, after),) + g["pads"]
    stride, dilation = (sd,) + g["stride"], (1,) + g["dilation"]
    x = random(rng, (g["N"], g["C"], 1, g["H"], g["W"]), np.float64)
    w = random(rng, (g["K"], g["C"] // g["groups"], 1) + g["kernel"], np.float64)
    b = random(rng, (g["K"],), np.float64)
    kw = dict(stride=stride, padding=pads, dilation=dilation, groups=g["groups"])
    lay = to_last if channels_last else (lambda a: a)
    y = cyconv.conv3d(lay(x), w, b, channels_last=channels_last, **kw)
    gy = random(rng, to_first(y).shape if channels_last else y.shape, np.float64)
    grads = cyconv.conv3d_backward(lay(gy), lay(x), w, channels_last=channels_last, **kw)
    _assert_reference(y, grads, gy, x, w, b, stride, pads, dilation, g["groups"], str(g),
                      lay)


def test_setting_round_trips():
    old = conv_mod._conv.set_to_col_rows(False)
    try:
        assert conv_mod._conv.set_to_col_rows(True) is False
        assert conv_mod._conv.set_to_col_rows(True) is True
    finally:
        conv_mod._conv.set_to_col_rows(old)


@pytest.fixture
def gather4_paths(monkeypatch):
    """Winograd F(4x4, 3x3) for any 3x3 stride-1 layer, and small_forward
    for first layers, whatever their size."""
    monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_OUTPUTS", 1)
    monkeypatch.setattr(conv_mod, "WINOGRAD4_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv_mod, "SMALL_MIN_TAPS", 1)
    monkeypatch.setattr(conv_mod, "SMALL_ENABLED", True)
    old = conv_mod._conv.set_gather4(True)
    yield
    conv_mod._conv.set_gather4(old)


def _both_gathers(fn):
    out = fn()
    conv_mod._conv.set_gather4(False)
    try:
        out_general = fn()
    finally:
        conv_mod._conv.set_gather4(True)
    return out, out_general


@pytest.mark.parametrize("seed", range(20))
def test_winograd4_rows_match_gather_and_reference(seed, gather4_paths, monkeypatch):
    rng = np.random.default_rng(100 + seed)
    N, C, K = int(rng.integers(1, 3)), int(rng.integers(1, 5)), int(rng.integers(1, 5))
    H, W = (int(v) for v in rng.integers(1, 23, 2))
    pads = tuple(tuple(int(v) for v in rng.integers(0, 4, 2)) for _ in range(2))
    if H + sum(pads[0]) < 3 or W + sum(pads[1]) < 3:
        pads = ((1, 1), (1, 1))
        H, W = max(H, 1), max(W, 1)
    x = random(rng, (N, C, H, W), np.float64)
    w = random(rng, (K, C, 3, 3), np.float64)
    b = random(rng, (K,), np.float64)
    calls = spy_kernel(monkeypatch, "winograd_forward")
    y, y_general = _both_gathers(lambda: cyconv.conv2d(x, w, b, padding=pads))
    assert calls, "Winograd was not taken"
    assert np.array_equal(y, y_general)
    assert_close(y, ref.conv_nd(x, w, b, (1, 1), pads, (1, 1)), np.float64, str(x.shape))


@pytest.mark.parametrize("seed", range(20))
def test_stride4_bands_match_gather_and_reference(seed, gather4_paths):
    rng = np.random.default_rng(200 + seed)
    kh, kw = (int(v) for v in rng.integers(1, 12, 2))
    pads = tuple(tuple(int(v) for v in rng.integers(0, 6, 2)) for _ in range(2))
    H = int(max(1, kh - sum(pads[0]) + rng.integers(0, 30)))
    W = int(max(1, kw - sum(pads[1]) + rng.integers(0, 30)))
    C, K = int(rng.integers(1, 4)), int(rng.integers(1, 40))
    x = random(rng, (int(rng.integers(1, 3)), C, H, W), np.float32)
    w = random(rng, (K, C, kh, kw), np.float32)
    b = random(rng, (K,), np.float32)
    stride = (int(rng.integers(1, 5)), 4)
    y, y_general = _both_gathers(lambda: cyconv.conv2d(x, w, b, stride=stride, padding=pads))
    assert np.array_equal(y, y_general)
    assert_close(y, ref.conv_nd(x, w, b, stride, pads, (1, 1)), np.float32, str(x.shape))
