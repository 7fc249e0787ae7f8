"""The pointwise weight-gradient kernel (pointwise_backward_weight) against
tests/reference.py.

conv1d/2d/3d_backward (and the transposed convolutions' backward, whose
weight gradient is the adjoint's) take it for channels-first, groups-1,
float32 convolutions whose kernel is 1 in every axis, with stride 1 and no
padding applied by the kernel, at most POINTWISE_WEIGHT_MAX_OUT output
channels and at least POINTWISE_WEIGHT_MIN_L positions per sample.  The
kernel is built in the AVX-512 variant only, so these tests skip elsewhere;
the fixture lifts the size limits and checks that the kernel was taken:
channel counts that are and are not multiples of the 4 x 6 register block,
rows shorter than, equal to and longer than a 16-lane vector, work items of
one block and of many.
"""
import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import (assert_close, assert_same_nonfinite, by_thread_count, random,
                      spy_kernel)
from cyconv import conv as conv_mod

pytestmark = pytest.mark.skipif(not conv_mod._conv.POINTWISE_WEIGHT_BUILT,
                                reason="the pointwise weight kernel is built in the "
                                       "AVX-512 variant only")


@pytest.fixture
def kernel(monkeypatch):
    monkeypatch.setattr(conv_mod, "POINTWISE_WEIGHT_ENABLED", True)
    monkeypatch.setattr(conv_mod, "POINTWISE_WEIGHT_MIN_L", 1)
    monkeypatch.setattr(conv_mod, "POINTWISE_WEIGHT_MAX_OUT", 1 << 30)
    return spy_kernel(monkeypatch, "pointwise_backward_weight")


# (N, C_in, spatial, C_out)
SHAPES = {
    "one_block": (2, 6, (4, 4), 4),
    "short_rows": (3, 7, (3, 3), 5),
    "one_vector": (2, 12, (4, 4), 8),
    "tail_lanes": (2, 13, (9, 11), 9),
    "many_blocks": (1, 33, (20, 30), 17),
    "one_channel": (2, 1, (6, 7), 1),
    "wide_c_out": (1, 20, (5, 13), 70),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_matches_reference(name, kernel):
    N, C, sp, K = SHAPES[name]
    rng = np.random.default_rng(len(name))
    x = random(rng, (N, C) + sp)
    w = random(rng, (K, C, 1, 1))
    gy = random(rng, (N, K) + sp)
    x0, gy0 = x.copy(), gy.copy()
    g = cyconv.conv2d_backward(gy, x, w)
    assert kernel, "the pointwise weight kernel was not taken"
    assert np.array_equal(x, x0) and np.array_equal(gy, gy0)
    gx_r, gw_r, gb_r = ref.conv2d_backward(gy, x, w)
    assert_close(g.weight, gw_r, np.float32, name)
    assert_close(g.input, gx_r, np.float32, name)
    assert_close(g.bias, gb_r, np.float32, name)


@pytest.mark.parametrize("nd", [1, 3])
def test_other_dimensions(nd, kernel):
    rng = np.random.default_rng(nd)
    sp = (5, 6, 7) if nd == 3 else (45,)
    x = random(rng, (2, 9) + sp)
    w = random(rng, (11, 9) + (1,) * nd)
    gy = random(rng, (2, 11) + sp)
    g = getattr(cyconv, f"conv{nd}d_backward")(gy, x, w, needs=("weight",))
    assert kernel
    _, gw_r, _ = ref.conv_nd_backward(gy, x, w, (1,) * nd, [(0, 0)] * nd, (1,) * nd)
    assert_close(g.weight, gw_r, np.float32)


def test_transposed_convolution(kernel):
    """conv_transpose2d_backward's weight gradient is its adjoint's, a 1x1
    convolution's weight gradient with input and grad_output exchanged."""
    rng = np.random.default_rng(2)
    x = random(rng, (2, 10, 6, 7))
    w = random(rng, (10, 7, 1, 1))
    gy = random(rng, (2, 7, 6, 7))
    g = cyconv.conv_transpose2d_backward(gy, x, w, needs=("weight",))
    assert kernel
    _, gw_r = ref.conv_transpose_nd_backward(gy, x, w, (1, 1), (0, 0), (0, 0), 1, (1, 1))[:2]
    assert_close(g.weight, gw_r, np.float32)


def test_non_zero_padding_mode(kernel):
    """reflect padding is materialised by numpy.pad: the kernel then pads nothing."""
    rng = np.random.default_rng(3)
    x = random(rng, (2, 6, 5, 7))
    w = random(rng, (4, 6, 1, 1))
    gy = random(rng, (2, 4, 9, 11))
    g = cyconv.conv2d_backward(gy, x, w, padding=2, padding_mode="reflect", needs=("weight",))
    assert kernel
    _, gw_r, _ = ref.conv2d_backward(gy, x, w, pads=((2, 2), (2, 2)), mode="reflect")
    assert_close(g.weight, gw_r, np.float32)


def test_non_contiguous_operands(kernel):
    rng = np.random.default_rng(5)
    x = random(rng, (2, 40, 9, 20))[:, ::2, :, ::2]
    gy = random(rng, (2, 24, 9, 20))[:, ::2, :, ::2]
    w = random(rng, (12, 20, 1, 1))
    g = cyconv.conv2d_backward(gy, x, w, needs=("weight",))
    assert kernel
    _, gw_r, _ = ref.conv2d_backward(gy, x, w)
    assert_close(g.weight, gw_r, np.float32)


def test_thread_count_does_not_change_bits(kernel):
    rng = np.random.default_rng(4)
    x = random(rng, (3, 40, 11, 13))
    w = random(rng, (9, 40, 1, 1))
    gy = random(rng, (3, 9, 11, 13))
    outs = by_thread_count(lambda: cyconv.conv2d_backward(gy, x, w, needs=("weight",)).weight,
                           counts=(1, 2, 3, 7))
    assert kernel
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_empty_batch(kernel):
    x = np.zeros((0, 8, 5, 5), np.float32)
    w = np.ones((4, 8, 1, 1), np.float32)
    gy = np.zeros((0, 4, 5, 5), np.float32)
    gw = cyconv.conv2d_backward(gy, x, w, needs=("weight",)).weight
    assert gw.shape == w.shape and not gw.any()


def test_inf_and_nan_propagate(kernel):
    """The lanes past a row's last position load zeros from both operands, so
    they add no NaN that the definition does not have."""
    rng = np.random.default_rng(6)
    x = random(rng, (2, 8, 3, 5))
    gy = random(rng, (2, 5, 3, 5))
    x[0, 2, 1, 3] = np.nan
    gy[1, 3, 2, 4] = np.inf
    g = cyconv.conv2d_backward(gy, x, np.ones((5, 8, 1, 1), np.float32), needs=("weight",))
    with np.errstate(invalid="ignore"):
        r = np.einsum("nkl,ncl->kc", gy.reshape(2, 5, -1).astype(np.float64),
                      x.reshape(2, 8, -1).astype(np.float64))
    assert kernel
    assert_same_nonfinite(g.weight[:, :, 0, 0], r, np.float32)


def test_selection_rule(monkeypatch):
    from cyconv import _kernels, _params

    assert conv_mod.POINTWISE_WEIGHT_ENABLED == (_kernels.VARIANT == "avx512")
    monkeypatch.setattr(conv_mod, "POINTWISE_WEIGHT_ENABLED", True)
    L = conv_mod.POINTWISE_WEIGHT_MIN_L

    def uses(C_in=256, C_out=64, L=L, k=1, stride=1, padding=0, groups=1, cl=False,
             dtype=np.float32, mode="zeros"):
        x = np.zeros((1, C_in, L), dtype)
        if cl:
            x = np.moveaxis(x, 1, -1)
        w = np.zeros((C_out, C_in // groups, k), dtype)
        geo = _params.conv_geometry("conv", 1, x, w, None, stride, padding, 1, groups,
                                    padding_mode=mode, channels_last=cl)
        pads = geo.pads if mode == "zeros" else ((0, 0),)
        return conv_mod._uses_pointwise_weight(geo, pads, dtype)
    assert uses()
    assert uses(C_out=conv_mod.POINTWISE_WEIGHT_MAX_OUT)
    assert uses(padding=1, mode="reflect", L=L - 2)
    assert not uses(C_out=conv_mod.POINTWISE_WEIGHT_MAX_OUT + 1)
    assert not uses(L=L - 1)
    assert not uses(dtype=np.float64)
    assert not uses(k=3)
    assert not uses(stride=2)
    assert not uses(padding=1)
    assert not uses(groups=2)
    assert not uses(cl=True)


def test_pointwise_1x1_against_torch(monkeypatch):
    """The benchmark's shape, with the default limits, against PyTorch."""
    torch = pytest.importorskip("torch")
    calls = spy_kernel(monkeypatch, "pointwise_backward_weight")
    rng = np.random.default_rng(8)
    x = random(rng, (2, 256, 28, 28))
    w = random(rng, (64, 256, 1, 1))
    gy = random(rng, (2, 64, 28, 28))
    g = cyconv.conv2d_backward(gy, x, w, needs=("weight",))
    assert calls
    t = torch.ops.aten.convolution_backward(
        torch.from_numpy(gy).double(), torch.from_numpy(x).double(),
        torch.from_numpy(w).double(), [0], [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
        [False, True, False])[1]
    assert_close(g.weight, t.numpy(), np.float32)
