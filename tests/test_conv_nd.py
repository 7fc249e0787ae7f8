"""conv1d, conv3d and conv_transpose1d/2d/3d (with backward) against
tests/reference.py and PyTorch."""
import functools
import zlib

import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import assert_close, random, to_last

# name: (nd, N, C_in, spatial, C_out, kernel, stride, padding, dilation, groups, mode)
CONV = {
    "1d_basic": (1, 2, 3, (11,), 4, (3,), 1, 1, 1, 1, "zeros"),
    "1d_stride_dil_groups": (1, 2, 4, (13,), 6, (3,), 2, 2, 2, 2, "zeros"),
    "1d_same_s3": (1, 1, 2, (10,), 3, (4,), 3, "same", 1, 1, "zeros"),
    "1d_asym_reflect": (1, 2, 2, (9,), 2, (3,), 1, ((2, 1),), 1, 1, "reflect"),
    "1d_circular": (1, 1, 3, (7,), 2, (3,), 2, 2, 1, 1, "circular"),
    "3d_basic": (3, 2, 2, (5, 6, 5), 3, (3, 3, 3), 1, 1, 1, 1, "zeros"),
    "3d_mixed": (3, 1, 4, (6, 5, 7), 4, (2, 3, 2), (2, 1, 2), (1, 0, 1), (1, 1, 2), 2,
                 "zeros"),
    "3d_same_s2": (3, 1, 2, (5, 7, 6), 2, (3, 2, 3), 2, "same", 1, 1, "zeros"),
    "3d_depthwise_replicate": (3, 2, 3, (4, 5, 4), 3, (3, 3, 3), 1, 1, 1, 3, "replicate"),
}

# name: (nd, N, C_in, spatial, C_out, kernel, stride, padding, output_padding, groups, dilation)
TRANSPOSED = {
    "t1d_basic": (1, 2, 3, (7,), 4, (3,), 1, 0, 0, 1, 1),
    "t1d_stride_outpad": (1, 2, 4, (6,), 2, (4,), 3, 1, 2, 2, 1),
    "t1d_dilated": (1, 1, 2, (5,), 3, (3,), 2, 2, 1, 1, 2),
    "t2d_basic": (2, 2, 3, (5, 4), 2, (3, 3), 2, 1, 1, 1, 1),
    "t2d_nonsquare_groups": (2, 1, 4, (4, 5), 6, (2, 3), (2, 1), (0, 1), (1, 0), 2, (1, 2)),
    "t2d_outpad_lt_dilation": (2, 1, 2, (4, 4), 2, (3, 3), 1, 1, 1, 1, 2),
    "t3d_basic": (3, 1, 2, (3, 4, 3), 2, (2, 3, 2), 2, 1, 1, 1, 1),
    "t3d_groups_dilated": (3, 2, 4, (3, 3, 4), 4, (3, 2, 2), (1, 2, 2), (1, 0, 1),
                           (0, 1, 0), 2, (2, 1, 1)),
}

LAYOUTS = pytest.mark.parametrize("channels_last", [False, True], ids=["ncx", "nxc"])
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64])


def _t(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def _pads(case):
    nd, N, C, sp, K, k, s, p, d, g, mode = case
    s, d = _t(s, nd), _t(d, nd)
    if p == "same":
        return ref.same_pads(sp, k, s, d)
    if isinstance(p, int):
        return ((p, p),) * nd
    return tuple((v, v) if isinstance(v, int) else tuple(v) for v in p)


@functools.lru_cache(maxsize=None)
def _conv_problem(name):
    nd, N, C, sp, K, k, s, p, d, g, mode = case = CONV[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = random(rng, (N, C, *sp), np.float64)
    w = random(rng, (K, C // g, *k), np.float64)
    b = random(rng, (K,), np.float64)
    y = ref.conv_nd(x, w, b, _t(s, nd), _pads(case), _t(d, nd), g, mode)
    gy = random(rng, y.shape, np.float64)
    return x, w, b, y, gy, ref.conv_nd_backward(gy, x, w, _t(s, nd), _pads(case),
                                                _t(d, nd), g, mode)


@LAYOUTS
@DTYPES
@pytest.mark.parametrize("name", list(CONV))
def test_conv_matches_reference(name, dtype, channels_last):
    nd, N, C, sp, K, k, s, p, d, g, mode = CONV[name]
    x, w, b, y, gy, (gx, gw, gb) = _conv_problem(name)
    lay = to_last if channels_last else (lambda a: a)
    kw = dict(stride=s, padding=p, dilation=d, groups=g, padding_mode=mode,
              channels_last=channels_last)
    conv = getattr(cyconv, f"conv{nd}d")
    assert_close(conv(lay(x).astype(dtype), w.astype(dtype), b.astype(dtype), **kw),
                 lay(y), dtype, "forward")
    grads = getattr(cyconv, f"conv{nd}d_backward")(lay(gy).astype(dtype),
                                                    lay(x).astype(dtype),
                                                    w.astype(dtype), **kw)
    assert_close(grads.input, lay(gx), dtype, "grad input")
    assert_close(grads.weight, gw, dtype, "grad weight")
    assert_close(grads.bias, gb, dtype, "grad bias")


@pytest.mark.parametrize("name", list(CONV))
def test_conv_matches_torch(name):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    nd, N, C, sp, K, k, s, p, d, g, mode = case = CONV[name]
    x, w, b, _, gy, _ = _conv_problem(name)
    flat = [v for pair in reversed(_pads(case)) for v in pair]
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    yt = getattr(F, f"conv{nd}d")(F.pad(xt, flat, mode="constant" if mode == "zeros"
                                        else mode), wt, torch.tensor(b), s, 0, d, g)
    yt.backward(torch.tensor(gy))
    kw = dict(stride=s, padding=p, dilation=d, groups=g, padding_mode=mode)
    assert_close(getattr(cyconv, f"conv{nd}d")(x, w, b, **kw), yt.detach().numpy(),
                 np.float64, "forward")
    grads = getattr(cyconv, f"conv{nd}d_backward")(gy, x, w, **kw)
    assert_close(grads.input, xt.grad.numpy(), np.float64, "grad input")
    assert_close(grads.weight, wt.grad.numpy(), np.float64, "grad weight")


@functools.lru_cache(maxsize=None)
def _transposed_problem(name):
    nd, N, C, sp, K, k, s, p, op, g, d = TRANSPOSED[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = random(rng, (N, C, *sp), np.float64)
    w = random(rng, (C, K // g, *k), np.float64)
    b = random(rng, (K,), np.float64)
    args = (_t(s, nd), _t(p, nd), _t(op, nd), g, _t(d, nd))
    y = ref.conv_transpose_nd(x, w, b, *args)
    gy = random(rng, y.shape, np.float64)
    return x, w, b, y, gy, ref.conv_transpose_nd_backward(gy, x, w, *args)


@LAYOUTS
@DTYPES
@pytest.mark.parametrize("name", list(TRANSPOSED))
def test_transposed_matches_reference(name, dtype, channels_last):
    nd, N, C, sp, K, k, s, p, op, g, d = TRANSPOSED[name]
    x, w, b, y, gy, (gx, gw, gb) = _transposed_problem(name)
    lay = to_last if channels_last else (lambda a: a)
    kw = dict(stride=s, padding=p, output_padding=op, groups=g, dilation=d,
              channels_last=channels_last)
    fn = getattr(cyconv, f"conv_transpose{nd}d")
    assert_close(fn(lay(x).astype(dtype), w.astype(dtype), b.astype(dtype), **kw),
                 lay(y), dtype, "forward")
    grads = getattr(cyconv, f"conv_transpose{nd}d_backward")(
        lay(gy).astype(dtype), lay(x).astype(dtype), w.astype(dtype), **kw)
    assert_close(grads.input, lay(gx), dtype, "grad input")
    assert_close(grads.weight, gw, dtype, "grad weight")
    assert_close(grads.bias, gb, dtype, "grad bias")


@LAYOUTS
@pytest.mark.parametrize("name", list(TRANSPOSED))
def test_transposed_matches_torch(name, channels_last):
    torch = pytest.importorskip("torch")
    nd, N, C, sp, K, k, s, p, op, g, d = TRANSPOSED[name]
    x, w, b, _, gy, _ = _transposed_problem(name)
    lay = to_last if channels_last else (lambda a: a)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    yt = getattr(torch.nn.functional, f"conv_transpose{nd}d")(xt, wt, bt, s, p, op, g, d)
    yt.backward(torch.tensor(gy))
    kw = dict(stride=s, padding=p, output_padding=op, groups=g, dilation=d,
              channels_last=channels_last)
    assert_close(getattr(cyconv, f"conv_transpose{nd}d")(lay(x), w, b, **kw),
                 lay(yt.detach().numpy()), np.float64, "forward")
    grads = getattr(cyconv, f"conv_transpose{nd}d_backward")(lay(gy), lay(x), w, **kw)
    assert_close(grads.input, lay(xt.grad.numpy()), np.float64, "grad input")
    assert_close(grads.weight, wt.grad.numpy(), np.float64, "grad weight")
    assert_close(grads.bias, bt.grad.numpy(), np.float64, "grad bias")


def test_transposed_is_the_adjoint_of_conv():
    """<conv(x), y> == <x, conv_transpose(y)> for the same weight."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((6, 2, 3, 2))
    kw = dict(stride=(2, 3), padding=(1, 0), dilation=(1, 2), groups=2)
    y = cyconv.conv2d(x, w, **kw)
    c = rng.standard_normal(y.shape)
    back = cyconv.conv_transpose2d(c, w, output_padding=(0, 0), **kw)
    # the transposed output may be shorter than x when the conv ignored inputs
    assert abs(np.sum(y * c) - np.sum(x[:, :, :back.shape[2], :back.shape[3]] * back)) \
        < 1e-9 * abs(np.sum(y * c))


def test_transposed_out_and_needs():
    x, w, b, y, gy, (gx, gw, gb) = _transposed_problem("t2d_basic")
    out = np.empty_like(y)
    assert cyconv.conv_transpose2d(x, w, b, 2, 1, 1, out=out) is out
    assert_close(out, y, np.float64)
    grads = cyconv.conv_transpose2d_backward(gy, x, w, 2, 1, 1, needs=("weight",))
    assert grads.input is None and grads.bias is None
    assert_close(grads.weight, gw, np.float64)


@pytest.mark.parametrize("call, exc, match", [
    (lambda x, w: cyconv.conv_transpose2d(x, w, stride=2, output_padding=2), ValueError,
     "output_padding must be smaller than either stride or dilation"),
    (lambda x, w: cyconv.conv_transpose2d(x, w, padding="same"), ValueError,
     "padding must be an int or a tuple of 2 ints"),
    (lambda x, w: cyconv.conv_transpose2d(x, w[:2]), ValueError,
     r"input has 3 channels, weight expects 2"),
    (lambda x, w: cyconv.conv_transpose2d(x, w, groups=2), ValueError,
     "groups=2 does not divide the input's 3 channels"),
    (lambda x, w: cyconv.conv_transpose2d(x, w, padding=5), ValueError,
     r"the output height would be .* = -4; expected a positive size"),
    (lambda x, w: cyconv.conv_transpose2d(x, w, np.ones(3)), ValueError,
     r"bias must have shape \(4,\)"),
    (lambda x, w: cyconv.conv_transpose2d_backward(np.ones((1, 4, 5, 5)), x, w), ValueError,
     r"grad_output has shape \(1, 4, 5, 5\), expected \(1, 4, 6, 7\)"),
    (lambda x, w: cyconv.conv1d(x, w), ValueError, "input must have 3 dimensions"),
    (lambda x, w: cyconv.conv3d(x, w), ValueError, "input must have 5 dimensions"),
])
def test_errors(call, exc, match):
    x = np.ones((1, 3, 4, 5))
    w = np.ones((3, 4, 3, 3))
    with pytest.raises(exc, match=match):
        call(x, w)


def test_conv1d_3d_strict_and_identical_threads():
    with pytest.raises(ValueError, match=r"length does not fit: .*\(10 - 3 \+ 0\) / 2"):
        cyconv.conv1d(np.ones((1, 1, 10)), np.ones((1, 1, 3)), stride=2, strict=True)
    rng = np.random.default_rng(1)
    x = random(rng, (3, 4, 7, 9, 8))
    w = random(rng, (6, 2, 3, 3, 2))
    runs = []
    for n in (1, 2):
        with cyconv.num_threads(n):
            y = cyconv.conv3d(x, w, stride=(1, 2, 1), padding=1, groups=2)
            runs.append((y, *cyconv.conv3d_backward(y, x, w, stride=(1, 2, 1), padding=1,
                                                    groups=2)))
    for a, c in zip(*runs):
        assert np.array_equal(a, c)
