"""The bad-input matrix: every public op, called with every kind of bad
argument, raises the documented exception (ValueError for a bad value or
shape, TypeError for a bad type or dtype) with a message that names the
argument, before any work; legal but unusual values (NaN, inf, empty
batches) give the correct result.  Every array passed in, failing or not,
is byte-for-byte unchanged afterwards."""
import re

import numpy as np
import pytest

import cyconv
import reference as ref
from cyconv import signal

RNG = np.random.default_rng(0)


def _x(d, n=2, c=4, size=7, dtype=np.float64):
    return RNG.standard_normal((n, c) + (size,) * d).astype(dtype)


def _w(d, cout=4, cin=4, k=3, dtype=np.float64):
    return RNG.standard_normal((cout, cin) + (k,) * d).astype(dtype)


# --------------------------------------------------------------------------
# Good calls: op name -> (function, args, kwargs), per dimensionality
# --------------------------------------------------------------------------

def _good(name, d):
    x, w, b = _x(d), _w(d), RNG.standard_normal(4)
    conv = getattr(cyconv, f"conv{d}d", None)
    out_sp = (5,) * d
    gy = RNG.standard_normal((2, 4) + out_sp)
    table = {
        "conv": (conv, (x, w, b), {"stride": 1, "padding": 0}),
        "conv_backward": (getattr(cyconv, f"conv{d}d_backward"), (gy, x, w),
                          {"stride": 1, "padding": 0}),
        "conv_transpose": (getattr(cyconv, f"conv_transpose{d}d"), (x, w, b),
                           {"stride": 1, "padding": 0}),
        "conv_transpose_backward": (getattr(cyconv, f"conv_transpose{d}d_backward"),
                                    (RNG.standard_normal((2, 4) + (9,) * d), x, w),
                                    {"stride": 1, "padding": 0}),
        "max_pool": (getattr(cyconv, f"max_pool{d}d"), (x, 3), {"stride": 2, "padding": 1}),
        "avg_pool": (getattr(cyconv, f"avg_pool{d}d"), (x, 3), {"stride": 2, "padding": 1}),
        "lp_pool": (getattr(cyconv, f"lp_pool{d}d"), (x, 2.0, 3), {"stride": 2}),
        "adaptive_avg_pool": (getattr(cyconv, f"adaptive_avg_pool{d}d"), (x, 3), {}),
        "adaptive_max_pool": (getattr(cyconv, f"adaptive_max_pool{d}d"), (x, 3), {}),
        "avg_pool_backward": (getattr(cyconv, f"avg_pool{d}d_backward"),
                              (RNG.standard_normal((2, 4) + (4,) * d), x.shape, 3),
                              {"stride": 2, "padding": 1}),
        "adaptive_avg_pool_backward": (getattr(cyconv, f"adaptive_avg_pool{d}d_backward"),
                                       (RNG.standard_normal((2, 4) + (3,) * d), x.shape), {}),
    }
    if name == "max_pool_backward":
        _, idx = getattr(cyconv, f"max_pool{d}d")(x, 3, 2, 1, return_indices=True)
        return (getattr(cyconv, f"max_pool{d}d_backward"),
                (RNG.standard_normal(idx.shape), idx, x.shape), {})
    return table[name]


CONV = ["conv", "conv_backward", "conv_transpose", "conv_transpose_backward"]
POOL = ["max_pool", "avg_pool", "lp_pool"]
ADAPTIVE = ["adaptive_avg_pool", "adaptive_max_pool"]
BACKWARD_POOL = ["avg_pool_backward", "adaptive_avg_pool_backward", "max_pool_backward"]
ALL = CONV + POOL + ADAPTIVE + BACKWARD_POOL
DIMS = [1, 2, 3]


def _check(fn, args, kwargs, exc, arg_pattern):
    arrays = [a for a in list(args) + list(kwargs.values()) if isinstance(a, np.ndarray)]
    before = [(a.dtype, a.shape, a.tobytes()) for a in arrays]
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert re.search(arg_pattern, msg), f"message {msg!r} does not name {arg_pattern!r}"
    for a, (dtype, shape, data) in zip(arrays, before):
        assert a.dtype == dtype and a.shape == shape and a.tobytes() == data
    return msg


# Which positional argument is the "data" array of each op (the one whose
# dtype and ndim are checked), and its name in messages.
DATA = {n: (0, r"\binput\b|\bx\b") for n in CONV[:1] + CONV[2:3] + POOL + ADAPTIVE}
DATA.update({n: (0, r"grad_output") for n in
             ["conv_backward", "conv_transpose_backward"] + BACKWARD_POOL})


def _replace(args, i, value):
    args = list(args)
    args[i] = value
    return tuple(args)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", ALL)
def test_good_call_leaves_inputs_unchanged(op, d):
    fn, args, kwargs = _good(op, d)
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    before = [a.tobytes() for a in arrays]
    fn(*args, **kwargs)
    assert [a.tobytes() for a in arrays] == before


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", ALL)
def test_wrong_ndim(op, d):
    fn, args, kwargs = _good(op, d)
    i, name = DATA[op]
    _check(fn, _replace(args, i, args[i][0]), kwargs, ValueError, name + r"|dimensions")
    _check(fn, _replace(args, i, args[i][None]), kwargs, ValueError, name + r"|dimensions")


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64, object, "U3", "S2",
                                   "datetime64[s]"])
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", ALL)
def test_unsupported_dtype(op, d, dtype):
    fn, args, kwargs = _good(op, d)
    i, name = DATA[op]
    bad = args[i].astype(dtype)
    _check(fn, _replace(args, i, bad), kwargs, TypeError, r"dtype|" + name)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", ALL)
def test_not_an_array(op, d):
    fn, args, kwargs = _good(op, d)
    i, name = DATA[op]
    _check(fn, _replace(args, i, {"not": "an array"}), kwargs, TypeError, name + r"|array")


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", CONV)
def test_mixed_float32_float64(op, d):
    fn, args, kwargs = _good(op, d)
    _check(fn, _replace(args, 1 if "backward" in op else 0,
                        args[1 if "backward" in op else 0].astype(np.float32)),
           kwargs, TypeError, r"dtype")


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", CONV)
def test_wrong_channel_count(op, d):
    fn, args, kwargs = _good(op, d)
    wi = 2 if "backward" in op else 1
    w = args[wi]
    bad = w[:, :3] if op.startswith("conv") and "transpose" not in op else w[:3]
    _check(fn, _replace(args, wi, np.ascontiguousarray(bad)), kwargs, ValueError,
           r"channels")


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", CONV)
def test_groups_not_dividing(op, d):
    fn, args, kwargs = _good(op, d)
    _check(fn, args, dict(kwargs, groups=3), ValueError, r"groups")


@pytest.mark.parametrize("value", [0, -1])
@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", CONV + POOL[:2])
def test_non_positive_stride_dilation(op, d, name, value):
    fn, args, kwargs = _good(op, d)
    _check(fn, args, dict(kwargs, **{name: value}), ValueError, name)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", POOL + ["avg_pool_backward"])
def test_non_positive_kernel(op, d):
    fn, args, kwargs = _good(op, d)
    k = 2 if op == "lp_pool" else (2 if op == "avg_pool_backward" else 1)
    for value in (0, -2):
        _check(fn, _replace(args, k, value), kwargs, ValueError, r"kernel_size")


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", CONV + ["max_pool", "avg_pool"])
def test_negative_padding(op, d):
    fn, args, kwargs = _good(op, d)
    _check(fn, args, dict(kwargs, padding=-1), ValueError, r"padding")


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", ["conv", "conv_backward"])
def test_kernel_larger_than_padded_input(op, d):
    fn, args, kwargs = _good(op, d)
    wi = 2 if "backward" in op else 1
    big = np.ones(args[wi].shape[:2] + (9,) * d)
    _check(fn, _replace(args, wi, big), kwargs, ValueError, r"kernel|input")


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", ["max_pool", "avg_pool"])
def test_pool_kernel_larger_than_input(op, d):
    fn, args, kwargs = _good(op, d)
    _check(fn, _replace(args, 1, 12), dict(kwargs, padding=0), ValueError,
           r"kernel|input")


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", ["max_pool", "avg_pool"])
def test_pool_window_wholly_in_padding(op, d):
    """A window with no input tap has no defined maximum: an error naming the
    padding (PyTorch refuses any padding over half the kernel instead)."""
    fn, args, kwargs = _good(op, d)
    _check(fn, _replace(args, 1, 2), dict(kwargs, padding=2), ValueError, r"padding")


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", ["max_pool", "avg_pool"])
def test_pool_padding_over_half_the_kernel_is_exact(op, d):
    """API.md allows any padding; where every window touches the input the
    result is the definition's."""
    fn, args, kwargs = _good(op, d)
    y = fn(*args, **dict(kwargs, padding=2))
    r = ref.pool(args[0], op.split("_")[0], (3,) * d, (2,) * d, [(2, 2)] * d, (1,) * d)
    np.testing.assert_allclose(y, r[0] if op == "max_pool" else r, rtol=1e-12)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", ["conv", "conv_transpose"])
def test_mismatched_bias(op, d):
    fn, args, kwargs = _good(op, d)
    _check(fn, _replace(args, 2, np.ones(3)), kwargs, ValueError, r"bias")
    _check(fn, _replace(args, 2, np.ones((4, 1))), kwargs, ValueError, r"bias")
    _check(fn, _replace(args, 2, np.ones(4, np.complex128)), kwargs, TypeError, r"bias")


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", ["conv", "conv_transpose", "max_pool", "avg_pool"])
def test_bad_out(op, d):
    fn, args, kwargs = _good(op, d)
    y = fn(*args, **kwargs)
    _check(fn, args, dict(kwargs, out=np.empty(y.shape[:-1] + (y.shape[-1] + 1,))),
           ValueError, r"\bout\b")
    # API.md: anything but a C-contiguous array of the exact shape and dtype
    # is a ValueError
    _check(fn, args, dict(kwargs, out=np.empty(y.shape, np.float32)), ValueError, r"\bout\b")
    strided = np.empty(y.shape[:-1] + (2 * y.shape[-1],))[..., ::2]
    _check(fn, args, dict(kwargs, out=strided), ValueError, r"\bout\b")
    _check(fn, args, dict(kwargs, out=list(y.ravel())), ValueError, r"\bout\b")
    ro = np.empty(y.shape)
    ro.flags.writeable = False
    _check(fn, args, dict(kwargs, out=ro), ValueError, r"\bout\b")


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", ["conv", "max_pool", "avg_pool"])
def test_out_aliasing_the_input(op, d):
    fn, args, kwargs = _good(op, d)
    y = fn(*args, **kwargs)
    x = np.zeros(max(args[0].size, y.size) * 2)
    xin = x[:args[0].size].reshape(args[0].shape)
    xin[...] = args[0]
    out = x[:y.size].reshape(y.shape)    # shares memory with the input
    _check(fn, _replace(args, 0, xin), dict(kwargs, out=out), ValueError, r"\bout\b")


@pytest.mark.parametrize("d", DIMS)
def test_max_pool_backward_indices_out_of_range(d):
    fn, (gy, idx, shape), kwargs = _good("max_pool_backward", d)
    plane = int(np.prod(shape[2:]))
    for bad in (plane, -1, 10 ** 12):
        i2 = idx.copy()
        i2.flat[3] = bad
        _check(fn, (gy, i2, shape), kwargs, ValueError, r"indices")
    _check(fn, (gy, idx.astype(np.float64), shape), kwargs, TypeError, r"indices")
    _check(fn, (gy, idx[:1], shape), kwargs, ValueError, r"indices|grad_output")


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_signal_bad_inputs(mode):
    img, k = RNG.standard_normal((9, 8)), RNG.standard_normal((3, 3))
    for fn in (signal.convolve2d, signal.correlate2d):
        _check(fn, (img[0], k), {"mode": mode}, ValueError, r"in1|2-D|dimensions")
        _check(fn, (img, k[None]), {"mode": mode}, ValueError, r"in2|2-D|dimensions")
        _check(fn, (img.astype(np.complex128), k), {"mode": mode}, TypeError, r"in1|complex")
        _check(fn, (img.astype(object), k), {"mode": mode}, TypeError, r"in1|dtype")
        _check(fn, (img, k), {"mode": "nope"}, ValueError, r"mode")
        _check(fn, (img, k), {"mode": mode, "boundary": "nope"}, ValueError, r"boundary")


def test_im2col_col2im_bad_inputs():
    x = _x(2)
    _check(cyconv.im2col, (x, 0), {}, ValueError, r"kernel_size")
    _check(cyconv.im2col, (x, 3), {"stride": 0}, ValueError, r"stride")
    _check(cyconv.im2col, (x[0], 3), {}, ValueError, r"input|dimensions")
    _check(cyconv.im2col, (x.astype(np.complex64), 3), {}, TypeError, r"dtype|input")
    cols = cyconv.im2col(x, 3)
    _check(cyconv.col2im, (cols[:, :-1], (7, 7), 3), {}, ValueError, r"cols")
    _check(cyconv.col2im, (cols, (7, 7), 3), {"stride": -1}, ValueError, r"stride")


def test_local_and_matrix_bad_inputs():
    x = _x(2)
    w = RNG.standard_normal((5, 5, 4, 4, 3, 3))   # (H_out, W_out, C_out, C_in, kH, kW)
    cyconv.locally_connected2d(x, w)
    _check(cyconv.locally_connected2d, (x, w[:4]), {}, ValueError, r"weight")
    _check(cyconv.locally_connected2d, (x, w[..., 0]), {}, ValueError, r"weight")
    _check(cyconv.locally_connected2d, (x, w), {"stride": 0}, ValueError, r"stride")
    _check(cyconv.conv2d_matrix, (_w(2), (4, 7, 7)), {"stride": 0}, ValueError, r"stride")
    _check(cyconv.conv2d_matrix, (_w(2), (3, 7, 7)), {}, ValueError, r"channels")


# --------------------------------------------------------------------------
# Legal values that other libraries mishandle: NaN, inf, empty batches
# --------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # the reference's NaNs
@pytest.mark.parametrize("d", DIMS)
def test_nan_and_inf_propagate_like_the_definition(d):
    x = _x(d, size=6)
    x.flat[5] = np.nan
    x.flat[40] = np.inf
    x.flat[41] = -np.inf
    w = _w(d)
    y = getattr(cyconv, f"conv{d}d")(x, w, padding=1)
    r = ref.conv_nd(x, w, None, (1,) * d, [(1, 1)] * d, (1,) * d)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(r))
    finite = np.isfinite(r)
    np.testing.assert_allclose(y[finite], r[finite], rtol=1e-10, atol=1e-10)
    # max pooling: NaN wins its window (PyTorch's rule), inf is an ordinary maximum
    p = getattr(cyconv, f"max_pool{d}d")(x, 2, 2)
    rp, _ = ref.pool(x, "max", (2,) * d, (2,) * d, [(0, 0)] * d, (1,) * d)
    np.testing.assert_array_equal(p, rp)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int64, np.uint16, np.float16])
@pytest.mark.parametrize("op", ["conv", "max_pool", "avg_pool", "adaptive_avg_pool"])
def test_other_real_dtypes_are_legal(op, dtype):
    """API.md: other real inputs follow np.result_type and are computed in
    float64 (float16 in float32)."""
    fn, args, kwargs = _good(op, 2)
    x = (args[0] * 3).astype(dtype)
    want = np.float32 if dtype == np.float16 else np.float64
    if op == "conv":
        args = (args[0], args[1].astype(want), args[2].astype(want))
    y = fn(*_replace(args, 0, x), **kwargs)
    expect = fn(*_replace(args, 0, x.astype(want)), **kwargs)
    assert y.dtype == want
    np.testing.assert_array_equal(y, expect)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("op", ["conv", "max_pool", "avg_pool"])
def test_empty_batch(op, d):
    fn, args, kwargs = _good(op, d)
    y = fn(*_replace(args, 0, args[0][:0]), **kwargs)
    full = fn(*args, **kwargs)
    assert y.shape == (0,) + full.shape[1:]
