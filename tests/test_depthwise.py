"""The 3x3 stride-1 forward kernels depthwise3_forward and single3x3_forward
against tests/reference.py.

conv2d takes depthwise3_forward for channels-first convolutions with one
input channel per group (depthwise and channel multipliers), a 3x3 kernel,
stride 1 and no column dilation, with any padding and row dilation, in
every variant and both dtypes.  The cases cover output rows without a partner row (odd
heights, row dilation), single-row outputs, widths that are not a multiple
of any vector length, asymmetric padding, padding larger than the input,
bands of a few rows, and the input gradient (the adjoint convolution).
single3x3_forward (a one-channel input, groups 1, same kernels) gets the
same kinds of cases, with odd output-channel counts (it computes two output
channels per pass).
"""
import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import assert_close, assert_same_nonfinite, by_thread_count, random, spy_kernel
from cyconv import conv as conv_mod


@pytest.fixture
def depthwise3(monkeypatch):
    return spy_kernel(monkeypatch, "depthwise3_forward")


def pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


# (N, C, multiplier, H, W, padding ((top, bottom), (left, right)), row dilation)
SHAPES = {
    "same": (2, 5, 1, 9, 40, ((1, 1), (1, 1)), 1),
    "valid": (1, 3, 1, 8, 17, ((0, 0), (0, 0)), 1),
    "odd_height": (2, 2, 1, 7, 5, ((1, 1), (1, 1)), 1),
    "one_row_out": (1, 2, 1, 3, 33, ((0, 0), (1, 1)), 1),
    "one_by_one_input": (3, 2, 1, 1, 1, ((1, 1), (1, 1)), 1),
    "asymmetric": (1, 4, 1, 10, 23, ((2, 0), (0, 3)), 1),
    "pad_beyond_input": (1, 2, 1, 2, 3, ((4, 3), (5, 2)), 1),
    "multiplier": (2, 3, 2, 11, 13, ((1, 1), (1, 1)), 1),
    "row_dilation_2": (1, 3, 1, 12, 19, ((2, 2), (1, 1)), 2),
    "row_dilation_3_odd": (2, 2, 3, 13, 9, ((3, 1), (1, 0)), 3),
    "wide": (1, 2, 1, 4, 150, ((1, 1), (1, 1)), 1),
}


@pytest.mark.parametrize("band", ["default", "few_rows"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_matches_reference(name, dtype, band, depthwise3, monkeypatch):
    if band == "few_rows":   # bands of one output row: every row lacks a partner
        monkeypatch.setattr(conv_mod, "_SMALL_BAND_BYTES", 1)
    N, C, m, H, W, pads, dh = SHAPES[name]
    rng = np.random.default_rng(len(name))
    x = random(rng, (N, C, H, W), dtype)
    w = random(rng, (C * m, 1, 3, 3), dtype)
    b = random(rng, (C * m,), dtype)
    x0, w0 = x.copy(), w.copy()
    y = cyconv.conv2d(x, w, b, padding=pads, dilation=(dh, 1), groups=C)
    assert depthwise3, "depthwise3_forward was not taken"
    assert np.array_equal(x, x0) and np.array_equal(w, w0)
    r = ref.conv_nd(x, w, b, (1, 1), pads, (dh, 1), C)
    assert_close(y, r, dtype, name)


def test_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = random(rng, (2, 16, 29, 31))
    w = random(rng, (16, 1, 3, 3))
    b = random(rng, (16,))
    for dil in (1, (2, 1)):
        y = cyconv.conv2d(x, w, b, padding=1, dilation=dil, groups=16)
        t = torch.nn.functional.conv2d(torch.from_numpy(x).double(),
                                       torch.from_numpy(w).double(),
                                       torch.from_numpy(b).double(), padding=1,
                                       dilation=dil, groups=16)
        assert_close(y, t.numpy(), np.float32, str(dil))


def test_thread_count_does_not_change_bits(monkeypatch):
    monkeypatch.setattr(conv_mod, "_SMALL_BAND_BYTES", 1 << 10)   # several bands per plane
    rng = np.random.default_rng(4)
    x = random(rng, (2, 6, 37, 41))
    w = random(rng, (6, 1, 3, 3))
    outs = by_thread_count(lambda: cyconv.conv2d(x, w, padding=1, groups=6))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_inf_and_nan_propagate(depthwise3):
    rng = np.random.default_rng(6)
    x = random(rng, (1, 3, 9, 10))
    w = random(rng, (3, 1, 3, 3))
    x[0, 1, 4, 4] = np.nan
    x[0, 0, 0, 9] = np.inf   # at the last column: the padded reads next to it stay zero
    w[2, 0, 1, 1] = -np.inf
    y = cyconv.conv2d(x, w, padding=1, groups=3)
    with np.errstate(invalid="ignore"):
        r = ref.conv_nd(x.astype(np.float64), w.astype(np.float64), None, (1, 1),
                        ((1, 1), (1, 1)), (1, 1), 3)
    assert depthwise3
    assert_same_nonfinite(y, r, np.float32)


def test_input_gradient_takes_it(depthwise3):
    """The input gradient of a depthwise 3x3 stride-1 convolution is the
    adjoint depthwise convolution (flipped kernel), which takes the kernel."""
    rng = np.random.default_rng(7)
    x = random(rng, (2, 4, 11, 9))
    w = random(rng, (4, 1, 3, 3))
    gy = random(rng, (2, 4, 11, 9))
    g = cyconv.conv2d_backward(gy, x, w, padding=1, groups=4)
    assert len(depthwise3) == 1
    rx, rw, rb = ref.conv2d_backward(gy, x, w, pads=((1, 1), (1, 1)), groups=4)
    assert_close(g.input, rx, np.float32, "grad_input")
    assert_close(g.weight, rw, np.float32, "grad_weight")
    assert_close(g.bias, rb, np.float32, "grad_bias")


def test_selection_rule():
    from cyconv import _params

    def uses(C=8, groups=8, C_out=8, k=(3, 3), stride=1, dilation=1, cl=False):
        x = np.zeros((1, C, 12, 12), np.float32)
        if cl:
            x = np.moveaxis(x, 1, -1)
        w = np.zeros((C_out, C // groups) + k, np.float32)
        geo = _params.conv_geometry("conv", 2, x, w, None, stride, 1, dilation, groups,
                                    padding_mode="zeros", channels_last=cl)
        return conv_mod._uses_depthwise3(geo)
    assert uses()
    assert uses(C_out=16)                       # channel multiplier 2
    assert uses(dilation=(3, 1))
    assert not uses(dilation=(1, 2))            # column dilation: grouped_forward
    assert not uses(k=(3, 5)) and not uses(k=(5, 5))
    assert not uses(stride=2)
    assert not uses(groups=4)                   # two input channels per group
    assert not uses(C=1, groups=1)              # a plain convolution
    assert not uses(cl=True)


# ---------------------------------------------------------------------------
# single3x3_forward: a one-channel input (groups 1), 3x3, stride 1
# ---------------------------------------------------------------------------

@pytest.fixture
def single3x3(monkeypatch):
    return spy_kernel(monkeypatch, "single3x3_forward")


# (N, C_out, H, W, padding ((top, bottom), (left, right)), row dilation)
SINGLE = {
    "mnist_like": (3, 8, 28, 28, ((1, 1), (1, 1)), 1),
    "odd_channels": (2, 5, 7, 9, ((1, 1), (1, 1)), 1),
    "one_channel_out": (2, 1, 6, 11, ((0, 0), (1, 1)), 1),
    "one_by_one_input": (3, 2, 1, 1, ((1, 1), (1, 1)), 1),
    "asymmetric": (1, 4, 10, 5, ((2, 0), (0, 3)), 1),
    "pad_beyond_input": (1, 3, 2, 3, ((4, 3), (5, 2)), 1),
    "row_dilation_2": (2, 3, 12, 13, ((2, 2), (1, 1)), 2),
    "row_dilation_3_valid": (1, 2, 13, 9, ((0, 0), (0, 0)), 3),
    "wide": (1, 3, 4, 150, ((1, 1), (1, 1)), 1),
}


@pytest.mark.parametrize("band", ["default", "few_rows"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(SINGLE))
def test_single_channel_matches_reference(name, dtype, band, single3x3, monkeypatch):
    if band == "few_rows":   # bands of one output row
        monkeypatch.setattr(conv_mod, "_SMALL_BAND_BYTES", 1)
    N, K, H, W, pads, dh = SINGLE[name]
    rng = np.random.default_rng(len(name) + 40)
    x = random(rng, (N, 1, H, W), dtype)
    w = random(rng, (K, 1, 3, 3), dtype)
    b = random(rng, (K,), dtype)
    x0, w0 = x.copy(), w.copy()
    y = cyconv.conv2d(x, w, b, padding=pads, dilation=(dh, 1))
    assert single3x3, "single3x3_forward was not taken"
    assert np.array_equal(x, x0) and np.array_equal(w, w0)
    assert_close(y, ref.conv_nd(x, w, b, (1, 1), pads, (dh, 1)), dtype, name)


def test_single_channel_against_torch_and_threads():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = random(rng, (5, 1, 28, 28))
    w = random(rng, (7, 1, 3, 3))
    b = random(rng, (7,))
    outs = by_thread_count(lambda: cyconv.conv2d(x, w, b, padding=1))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    t = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                   torch.from_numpy(b).double(), padding=1)
    assert_close(outs[0], t.numpy(), np.float32)


def test_single_channel_inf_and_nan(single3x3):
    rng = np.random.default_rng(12)
    x = random(rng, (2, 1, 8, 9))
    w = random(rng, (3, 1, 3, 3))
    x[0, 0, 3, 8] = np.inf    # last column: the dropped columns past the row read it
    x[1, 0, 0, 0] = np.nan
    w[1, 0, 2, 2] = -np.inf
    y = cyconv.conv2d(x, w, padding=1)
    with np.errstate(invalid="ignore"):
        r = ref.conv_nd(x.astype(np.float64), w.astype(np.float64), None, (1, 1),
                        ((1, 1), (1, 1)), (1, 1))
    assert single3x3
    assert_same_nonfinite(y, r, np.float32)


def test_single_channel_selection_rule():
    from cyconv import _params

    def uses(C=1, groups=1, k=(3, 3), stride=1, dilation=1, cl=False):
        x = np.zeros((1, C, 12, 12), np.float32)
        if cl:
            x = np.moveaxis(x, 1, -1)
        w = np.zeros((4, C // groups) + k, np.float32)
        geo = _params.conv_geometry("conv", 2, x, w, None, stride, 1, dilation, groups,
                                    padding_mode="zeros", channels_last=cl)
        return conv_mod._uses_single3x3(geo)
    assert uses()
    assert uses(dilation=(2, 1))
    assert not uses(C=2) and not uses(dilation=(1, 2)) and not uses(k=(5, 5))
    assert not uses(stride=2) and not uses(cl=True)
