"""Pooling ops against tests/reference.py and PyTorch."""
import functools
import zlib

import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import assert_close, random, to_first, to_last

# name: (shape (N, C, *spatial), kernel, stride, padding, dilation, ceil_mode)
CASES = {
    "1d_basic": ((2, 3, 11), 3, None, 0, 1, False),
    "1d_stride_pad_ceil": ((2, 2, 10), 4, 3, 2, 1, True),
    "1d_dilated": ((1, 2, 13), 3, 2, 1, 2, False),
    "1d_same": ((2, 2, 9), 4, 2, "same", 1, False),
    "2d_2x2": ((2, 3, 8, 8), 2, None, 0, 1, False),
    "2d_3x3_s2_p1": ((2, 2, 9, 10), 3, 2, 1, 1, False),
    "2d_nonsquare": ((1, 3, 9, 11), (2, 3), (1, 2), (1, 0), 1, False),
    "2d_ceil_partial": ((2, 2, 7, 8), 3, 2, 1, 1, True),
    "2d_ceil_drop": ((1, 2, 5, 5), 2, 2, 1, 1, True),
    "2d_asym_big_pad": ((1, 2, 6, 7), 3, 1, ((2, 2), (0, 2)), 1, False),
    "2d_same_s3": ((2, 2, 10, 11), 3, 3, "same", 1, False),
    "2d_dilated_ceil": ((1, 2, 11, 10), 3, 2, 1, (2, 1), True),
    "2d_window_is_input": ((2, 2, 5, 4), (5, 4), 1, 0, 1, False),
    "3d_basic": ((1, 2, 5, 6, 7), 2, None, 0, 1, False),
    "3d_mixed": ((2, 2, 6, 5, 7), (2, 3, 2), (2, 1, 2), (1, 1, 0), (1, 1, 2), True),
}

AVG_VARIANTS = [(True, None), (False, None), (True, 1), (False, 3)]


def _tuple(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def _resolved(name):
    """Kernel, stride, (before, after) pads and dilation as tuples."""
    shape, k, s, p, d, ceil = CASES[name]
    nd = len(shape) - 2
    k, d = _tuple(k, nd), _tuple(d, nd)
    s = k if s is None else _tuple(s, nd)
    if p == "same":
        pads = ref.same_pads(shape[2:], k, s, d)
    elif isinstance(p, int):
        pads = ((p, p),) * nd
    else:
        pads = tuple((v, v) if isinstance(v, int) else tuple(v) for v in p)
    return nd, k, s, pads, d, ceil


def _fn(kind, nd):
    return getattr(cyconv, kind.format(nd=nd))


@functools.lru_cache(maxsize=None)
def _problem(name):
    shape = CASES[name][0]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = random(rng, shape, np.float64)
    x.reshape(-1)[::7] = x.reshape(-1)[0]  # some ties
    return x


@functools.lru_cache(maxsize=None)
def _reference(name, op, include=True, override=None, norm=2.0):
    x = _problem(name)
    nd, k, s, pads, d, ceil = _resolved(name)
    if op == "lp":
        x = np.abs(x)
    return ref.pool(x, op, k, s, pads, d, ceil, include, override, norm)


def _args(name):
    shape, k, s, p, d, ceil = CASES[name]
    return dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)


LAYOUTS = pytest.mark.parametrize("channels_last", [False, True], ids=["ncx", "nxc"])
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64])


@LAYOUTS
@DTYPES
@pytest.mark.parametrize("name", list(CASES))
def test_max_pool(name, dtype, channels_last):
    x = _problem(name).astype(dtype)
    nd = x.ndim - 2
    lay = to_last if channels_last else (lambda a: a)
    y_ref, i_ref = _reference(name, "max")
    y, i = _fn("max_pool{nd}d", nd)(lay(x), **_args(name), return_indices=True,
                                    channels_last=channels_last)
    assert_close(y, lay(y_ref), dtype, "values")
    assert i.dtype == np.int64 and np.array_equal(i, lay(i_ref))
    y2 = _fn("max_pool{nd}d", nd)(lay(x), **_args(name), channels_last=channels_last)
    assert np.array_equal(y2, y)
    gy = random(np.random.default_rng(1), y.shape, dtype)
    gx = _fn("max_pool{nd}d_backward", nd)(gy, i, lay(x).shape, channels_last=channels_last)
    expected = ref.max_pool_backward(to_first(gy) if channels_last else gy, i_ref, x.shape)
    assert_close(gx, lay(expected), dtype, "backward")


@LAYOUTS
@DTYPES
@pytest.mark.parametrize("include, override", AVG_VARIANTS)
@pytest.mark.parametrize("name", list(CASES))
def test_avg_pool(name, include, override, dtype, channels_last):
    x = _problem(name).astype(dtype)
    nd, k, s, pads, d, ceil = _resolved(name)
    lay = to_last if channels_last else (lambda a: a)
    kw = dict(count_include_pad=include, divisor_override=override,
              channels_last=channels_last)
    y = _fn("avg_pool{nd}d", nd)(lay(x), **_args(name), **kw)
    assert_close(y, lay(_reference(name, "avg", include, override)), dtype, "forward")
    gy = random(np.random.default_rng(2), y.shape, dtype)
    gx = _fn("avg_pool{nd}d_backward", nd)(gy, lay(x).shape, **_args(name), **kw)
    expected = ref.avg_pool_backward(to_first(gy) if channels_last else gy, x.shape, k, s,
                                     pads, d, ceil, include, override)
    assert_close(gx, lay(expected), dtype, "backward")


@LAYOUTS
@DTYPES
@pytest.mark.parametrize("norm", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("name", list(CASES))
def test_lp_pool(name, norm, dtype, channels_last):
    x = np.abs(_problem(name)).astype(dtype)
    nd = x.ndim - 2
    lay = to_last if channels_last else (lambda a: a)
    y = _fn("lp_pool{nd}d", nd)(lay(x), norm, **_args(name), channels_last=channels_last)
    assert_close(y, lay(_reference(name, "lp", norm=norm)), dtype, "lp")


def _torch_ok(name):
    """PyTorch takes symmetric int padding of at most half the window."""
    shape, k, s, p, d, ceil = CASES[name]
    if p == "same" or not (isinstance(p, int) or all(isinstance(v, int) for v in p)):
        return False
    nd = len(shape) - 2
    return all(pp <= kk // 2 for pp, kk in zip(_tuple(p, nd), _tuple(k, nd)))


@LAYOUTS
@DTYPES
@pytest.mark.parametrize("name", [n for n in CASES if _torch_ok(n)])
def test_matches_torch(name, dtype, channels_last):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = _problem(name).astype(dtype)
    shape, k, s, p, d, ceil = CASES[name]
    nd = x.ndim - 2
    lay = to_last if channels_last else (lambda a: a)
    cl = dict(channels_last=channels_last)
    xt = torch.tensor(x, requires_grad=True)
    yt, it = getattr(F, f"max_pool{nd}d")(xt, k, s, p, d, ceil, return_indices=True)
    y, i = _fn("max_pool{nd}d", nd)(lay(x), **_args(name), return_indices=True, **cl)
    assert_close(y, lay(yt.detach().numpy()), dtype, "max")
    assert np.array_equal(i, lay(it.numpy()))
    gy = random(np.random.default_rng(3), yt.shape, dtype)
    yt.backward(torch.tensor(gy))
    assert_close(_fn("max_pool{nd}d_backward", nd)(lay(gy), i, lay(x).shape, **cl),
                 lay(xt.grad.numpy()), dtype, "max backward")
    if d == 1:  # PyTorch's average pooling has no dilation
        for include, override in AVG_VARIANTS:
            xt = torch.tensor(x, requires_grad=True)
            at = getattr(F, f"avg_pool{nd}d")
            kw = dict(ceil_mode=ceil, count_include_pad=include)
            if nd > 1:
                kw["divisor_override"] = override
            elif override is not None:
                continue
            yt = at(xt, k, s, p, **kw)
            yt.backward(torch.tensor(gy))
            ours = dict(count_include_pad=include, divisor_override=override, **cl)
            assert_close(_fn("avg_pool{nd}d", nd)(lay(x), **_args(name), **ours),
                         lay(yt.detach().numpy()), dtype, "avg")
            assert_close(_fn("avg_pool{nd}d_backward", nd)(lay(gy), lay(x).shape,
                                                           **_args(name), **ours),
                         lay(xt.grad.numpy()), dtype, "avg backward")


@LAYOUTS
@DTYPES
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("norm", [1, 2, 3.5])
def test_lp_pool_matches_torch(nd, norm, dtype, channels_last):
    torch = pytest.importorskip("torch")
    x = np.abs(random(np.random.default_rng(4), (2, 3) + (9, 8, 7)[:nd], dtype))
    lay = to_last if channels_last else (lambda a: a)
    k, s = (3, 2, 2)[:nd], (2, 1, 2)[:nd]
    tk, ts = (k[0], s[0]) if nd == 1 else (k, s)  # lp_pool1d takes plain ints
    expected = getattr(torch.nn.functional, f"lp_pool{nd}d")(torch.tensor(x), norm, tk, ts)
    assert_close(_fn("lp_pool{nd}d", nd)(lay(x), norm, k, s, channels_last=channels_last),
                 lay(expected.numpy()), dtype)


ADAPTIVE = [((2, 3, 10), (4,)), ((2, 2, 9, 7), (4, 3)), ((1, 2, 9, 7), (9, 7)),
            ((1, 2, 5, 7), (7, 2)), ((1, 2, 6, 5, 7), (3, 2, 4))]


@LAYOUTS
@DTYPES
@pytest.mark.parametrize("shape, out", ADAPTIVE)
def test_adaptive(shape, out, dtype, channels_last):
    x = random(np.random.default_rng(5), shape, dtype)
    nd = len(out)
    lay = to_last if channels_last else (lambda a: a)
    y = _fn("adaptive_avg_pool{nd}d", nd)(lay(x), out, channels_last=channels_last)
    assert_close(y, lay(ref.adaptive_pool(x, out, "avg")), dtype, "avg")
    y, i = _fn("adaptive_max_pool{nd}d", nd)(lay(x), out, True, channels_last=channels_last)
    y_ref, i_ref = ref.adaptive_pool(x, out, "max")
    assert_close(y, lay(y_ref), dtype, "max")
    assert np.array_equal(i, lay(i_ref))
    gx = _fn("max_pool{nd}d_backward", nd)(np.ones_like(y), i, lay(x).shape,
                                           channels_last=channels_last)
    assert_close(gx, lay(ref.max_pool_backward(np.ones(y_ref.shape), i_ref, x.shape)),
                 dtype, "backward through indices")


@LAYOUTS
@DTYPES
@pytest.mark.parametrize("shape, out", ADAPTIVE)
def test_adaptive_matches_torch(shape, out, dtype, channels_last):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = random(np.random.default_rng(6), shape, dtype)
    nd = len(out)
    lay = to_last if channels_last else (lambda a: a)
    cl = dict(channels_last=channels_last)
    assert_close(_fn("adaptive_avg_pool{nd}d", nd)(lay(x), out, **cl),
                 lay(getattr(F, f"adaptive_avg_pool{nd}d")(torch.tensor(x), out).numpy()),
                 dtype)
    yt, it = getattr(F, f"adaptive_max_pool{nd}d")(torch.tensor(x), out, True)
    y, i = _fn("adaptive_max_pool{nd}d", nd)(lay(x), out, True, **cl)
    assert_close(y, lay(yt.numpy()), dtype)
    assert np.array_equal(i, lay(it.numpy()))


@LAYOUTS
@pytest.mark.parametrize("shape, out", ADAPTIVE)
def test_adaptive_avg_backward_matches_torch(shape, out, channels_last):
    torch = pytest.importorskip("torch")
    x = random(np.random.default_rng(13), shape, np.float64)
    nd = len(out)
    lay = to_last if channels_last else (lambda a: a)
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(torch.nn.functional, f"adaptive_avg_pool{nd}d")(xt, out)
    gy = random(np.random.default_rng(14), yt.shape, np.float64)
    yt.backward(torch.tensor(gy))
    got = _fn("adaptive_avg_pool{nd}d_backward", nd)(lay(gy), lay(x).shape,
                                                     channels_last=channels_last)
    assert_close(got, lay(xt.grad.numpy()), np.float64)


def test_adaptive_output_size_none_keeps_dim():
    x = random(np.random.default_rng(7), (1, 2, 6, 5), np.float64)
    y = cyconv.adaptive_avg_pool2d(x, (None, 2))
    assert_close(y, ref.adaptive_pool(x, (6, 2), "avg"), np.float64)


@LAYOUTS
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_global_pools(nd, channels_last):
    x = random(np.random.default_rng(8), (2, 3) + (5, 4, 3)[:nd], np.float64)
    axes = tuple(range(2, 2 + nd))
    lay = to_last if channels_last else (lambda a: a)
    assert_close(cyconv.global_avg_pool(lay(x), channels_last=channels_last),
                 lay(x.mean(axis=axes, keepdims=True)), np.float64)
    assert_close(cyconv.global_max_pool(lay(x), channels_last=channels_last),
                 lay(x.max(axis=axes, keepdims=True)), np.float64)


# -------------------------------------------------------------------------
# The edge cases where other libraries go wrong
# -------------------------------------------------------------------------

def test_ceil_mode_drops_window_starting_in_end_padding():
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    # ceil((5 + 2 - 2) / 2) + 1 = 4, but window 3 would start at 5 = in the end padding
    assert cyconv.max_pool2d(x, 2, 2, 1, ceil_mode=True).shape == (1, 1, 3, 3)
    assert cyconv.avg_pool2d(x, 2, 2, 1, ceil_mode=True).shape == (1, 1, 3, 3)


def test_lp_pool_ceil_mode_partial_window_sums_only_its_taps():
    # The definition (PyTorch's documented formula and ONNX LpPool): the sum
    # over the window's taps inside the input.  PyTorch's implementation,
    # avg_pool * prod(kernel_size), scales a window cut short by ceil_mode up
    # as if it were whole: it gives 2 ** 0.5 for the last window here.
    x = np.ones((1, 1, 5))
    y = cyconv.lp_pool1d(x, 2, 2, 2, ceil_mode=True)
    np.testing.assert_allclose(y, [[[2 ** 0.5, 2 ** 0.5, 1.0]]], rtol=1e-12)
    x2 = np.arange(1.0, 26.0).reshape(1, 1, 5, 5)
    y2 = cyconv.lp_pool2d(x2, 1, 2, 2, ceil_mode=True)
    np.testing.assert_allclose(y2[0, 0, 2, 2], 25.0)          # one tap: 25
    np.testing.assert_allclose(y2[0, 0, 0, 2], 5.0 + 10.0)    # two taps


def test_window_in_padding_never_gives_inf_or_nan():
    x = -np.ones((1, 1, 4, 4))
    for padding in [((2, 2), (2, 2)), ((0, 2), (2, 0))]:
        y = cyconv.max_pool2d(x, 3, 1, padding)
        assert np.isfinite(y).all() and (y == -1).all()
        a = cyconv.avg_pool2d(x, 3, 1, padding, count_include_pad=False)
        assert np.isfinite(a).all() and np.allclose(a, -1)


def test_window_wholly_in_padding_is_an_error():
    with pytest.raises(ValueError, match=r"window 0 of the width lies wholly in the "
                                         r"padding .*padding \(3, 0\)"):
        cyconv.max_pool2d(np.ones((1, 1, 4, 4)), 2, 1, ((0, 0), (3, 0)))


def test_avg_divisor_with_ceil_mode():
    """The divisor counts the window inside input + padding, or inside the input."""
    x = np.ones((1, 1, 5, 5))
    # window 2 of each dim covers 3..5 with padding (0, 0): only 3, 4 exist
    inc = cyconv.avg_pool2d(x, 3, 2, 0, ceil_mode=True, count_include_pad=True)
    exc = cyconv.avg_pool2d(x, 3, 2, 0, ceil_mode=True, count_include_pad=False)
    assert inc.shape == (1, 1, 2, 2) and np.allclose(inc, 1) and np.allclose(exc, 1)
    # with padding 1 the first window has 4 of 9 taps in the input
    inc = cyconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=True)
    assert np.isclose(inc[0, 0, 0, 0], 4 / 9)
    assert np.isclose(inc[0, 0, -1, -1], 4 / 9)  # 4 inputs + 5 padding, none beyond
    exc = cyconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    assert np.allclose(exc, 1)


@LAYOUTS
def test_ties_pick_the_first_index(channels_last):
    x = np.zeros((1, 2, 4, 6))
    lay = to_last if channels_last else (lambda a: a)
    _, i = cyconv.max_pool2d(lay(x), (2, 3), return_indices=True,
                             channels_last=channels_last)
    expected = np.array([[0, 3], [12, 15]])
    assert np.array_equal(to_first(i) if channels_last else i,
                          np.broadcast_to(expected, (1, 2, 2, 2)))


@LAYOUTS
def test_nan_propagates_through_max(channels_last):
    x = np.arange(32.0).reshape(1, 2, 4, 4)
    x[0, 0, 1, 1] = np.nan
    lay = to_last if channels_last else (lambda a: a)
    for kw in ({}, {"return_indices": True}):
        res = cyconv.max_pool2d(lay(x), 2, channels_last=channels_last, **kw)
        y = to_first(res[0] if kw else res) if channels_last else (res[0] if kw else res)
        assert np.isnan(y[0, 0, 0, 0]) and np.isfinite(y).sum() == 7
        if kw:
            i = to_first(res[1]) if channels_last else res[1]
            assert i[0, 0, 0, 0] == 5
    assert np.isnan(cyconv.adaptive_max_pool2d(lay(x), 1, channels_last=channels_last)
                    ).sum() == 1
    assert np.isnan(cyconv.global_max_pool(lay(x), channels_last=channels_last)).sum() == 1


def test_window_larger_than_padded_input_is_an_error():
    for fn in (cyconv.max_pool2d, cyconv.avg_pool2d):
        with pytest.raises(ValueError, match=r"kernel_size 6 is larger than the padded "
                                             r"input height 5"):
            fn(np.ones((1, 1, 4, 4)), (6, 2), padding=((0, 1), (0, 0)))
    with pytest.raises(ValueError, match="larger than the padded input"):
        cyconv.lp_pool1d(np.ones((1, 1, 3)), 2, 4)


def test_strict_pooling():
    with pytest.raises(ValueError, match=r"\(7 - 2 \+ 0\) / 2 \+ 1 = 3.5"):
        cyconv.max_pool2d(np.ones((1, 1, 7, 8)), 2, strict=True)
    assert cyconv.max_pool2d(np.ones((1, 1, 8, 8)), 2, strict=True).shape == (1, 1, 4, 4)


# -------------------------------------------------------------------------
# Arguments, layouts, threads
# -------------------------------------------------------------------------

@pytest.mark.parametrize("call, exc, match", [
    (lambda x: cyconv.max_pool2d(x, 0), ValueError, "kernel_size must be positive"),
    (lambda x: cyconv.max_pool2d(x, 2, 0), ValueError, "stride must be positive"),
    (lambda x: cyconv.max_pool2d(x, 2, 1, -1), ValueError, "padding must be non-negative"),
    (lambda x: cyconv.max_pool2d(x, 2, ceil_mode=1), TypeError, "ceil_mode must be a bool"),
    (lambda x: cyconv.max_pool2d(x, 2, return_indices="y"), TypeError, "return_indices"),
    (lambda x: cyconv.max_pool2d(x[0], 2), ValueError,
     r"input must have 4 dimensions \(N, C, H, W\)"),
    (lambda x: cyconv.max_pool2d(x.astype(complex), 2), TypeError, "dtype complex128"),
    (lambda x: cyconv.avg_pool2d(x, 2, divisor_override=0), ValueError,
     "divisor_override must be non-zero"),
    (lambda x: cyconv.avg_pool2d(x, 2, divisor_override=1.5), TypeError, "divisor_override"),
    (lambda x: cyconv.avg_pool2d(x, 2, count_include_pad=None), TypeError,
     "count_include_pad"),
    (lambda x: cyconv.lp_pool2d(x, 0, 2), ValueError, "norm_type must be positive"),
    (lambda x: cyconv.lp_pool2d(x, "two", 2), TypeError, "norm_type"),
    (lambda x: cyconv.adaptive_avg_pool2d(x, (2, 0)), ValueError,
     "output_size must be positive"),
    (lambda x: cyconv.adaptive_avg_pool2d(x, (2, 2, 2)), ValueError, "output_size"),
    (lambda x: cyconv.global_avg_pool(x[0, 0]), ValueError, "3 to 5 dimensions"),
    (lambda x: cyconv.max_pool2d(x, 2, out=np.empty((2, 3, 4, 4))), ValueError,
     "out has dtype float64, expected float32"),
    (lambda x: cyconv.max_pool2d(x, 2, out=np.empty((2, 3, 4, 5), np.float32)),
     ValueError, r"out has shape \(2, 3, 4, 5\), expected \(2, 3, 4, 4\)"),
    (lambda x: cyconv.max_pool2d_backward(np.ones((2, 3, 4, 4), np.float32),
                                          np.full((2, 3, 4, 4), 64), x.shape),
     ValueError, r"indices must lie in \[0, 64\)"),
    (lambda x: cyconv.max_pool2d_backward(np.ones((2, 3, 4, 4), np.float32),
                                          np.zeros((2, 3, 4, 4), np.float32), x.shape),
     TypeError, "indices must have an integer dtype"),
    (lambda x: cyconv.max_pool2d_backward(np.ones((2, 3, 4, 4), np.float32),
                                          np.zeros((2, 3, 4, 3), np.int64), x.shape),
     ValueError, "indices has shape"),
    (lambda x: cyconv.max_pool2d_backward(np.ones((2, 3, 4, 4), np.float32),
                                          np.zeros((2, 3, 4, 4), np.int64), (2, 4, 8, 8)),
     ValueError, "does not match the batch and channels"),
    (lambda x: cyconv.avg_pool2d_backward(np.ones((2, 3, 4, 3), np.float32), x.shape, 2),
     ValueError, r"grad_output has shape \(2, 3, 4, 3\), expected \(2, 3, 4, 4\)"),
    (lambda x: cyconv.avg_pool2d_backward(np.ones((2, 3, 4, 4), np.float32), (2, 3, 8), 2),
     ValueError, "input_shape must be 4 non-negative ints"),
])
def test_errors(call, exc, match):
    x = random(np.random.default_rng(9), (2, 3, 8, 8))
    before = x.copy()
    with pytest.raises(exc, match=match):
        call(x)
    assert np.array_equal(x, before)


def test_out_argument():
    x = random(np.random.default_rng(10), (2, 3, 8, 8))
    out = np.empty((2, 3, 4, 4), np.float32)
    assert cyconv.max_pool2d(x, 2, out=out) is out
    assert_close(out, ref.pool(x, "max", (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1))[0],
                 np.float32)
    res = cyconv.avg_pool2d(x, 2, out=out)
    assert res is out
    assert_close(out, ref.pool(x, "avg", (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1)),
                 np.float32)


def test_dtypes():
    x = np.arange(2 * 2 * 4 * 4).reshape(2, 2, 4, 4)
    assert cyconv.max_pool2d(x, 2).dtype == np.float64
    assert cyconv.avg_pool2d(x.astype(np.float16), 2).dtype == np.float32
    assert cyconv.max_pool2d(x.astype(np.float32), 2).dtype == np.float32


@LAYOUTS
def test_odd_layouts_and_inputs_unchanged(channels_last):
    x = random(np.random.default_rng(11), (2, 3, 9, 8), np.float64)
    lay = to_last if channels_last else (lambda a: a)
    xl = lay(x)
    expected = cyconv.max_pool2d(xl, 3, 2, 1, channels_last=channels_last)
    views = [np.asfortranarray(xl), xl[..., ::-1].copy()[..., ::-1], xl.tolist()]
    ro = xl.copy()
    ro.flags.writeable = False
    views.append(ro)
    for v in views:
        before = np.array(v, copy=True)
        assert np.array_equal(cyconv.max_pool2d(v, 3, 2, 1, channels_last=channels_last),
                              expected)
        assert np.array_equal(np.asarray(v), before)


@LAYOUTS
def test_identical_results_for_1_and_2_threads(channels_last):
    x = random(np.random.default_rng(12), (3, 5, 17, 19))
    lay = to_last if channels_last else (lambda a: a)
    runs = []
    for n in (1, 2):
        with cyconv.num_threads(n):
            y, i = cyconv.max_pool2d(lay(x), 3, 2, 1, return_indices=True,
                                     channels_last=channels_last)
            a = cyconv.avg_pool2d(lay(x), 3, 2, 1, ceil_mode=True,
                                  channels_last=channels_last)
            g = cyconv.avg_pool2d_backward(a, lay(x).shape, 3, 2, 1, ceil_mode=True,
                                           channels_last=channels_last)
            m = cyconv.max_pool2d_backward(y, i, lay(x).shape, channels_last=channels_last)
            runs.append((y, i, a, g, m))
    for p, q in zip(*runs):
        assert np.array_equal(p, q)


# Without indices, max and average windows of several input rows are folded
# into one row first, then picked along it (one pass for 2 or 3 adjacent
# taps with stride 2): wide rows (vector loops and their remainders), the
# windows cut by padding, a depth-only fold (one row per window in H).
FOLDED = {
    "wide_3x3_s2_p1": ((1, 3, 9, 101), 3, 2, 1),
    "wide_2x2_s2": ((2, 2, 6, 70), 2, 2, 0),
    "3x2_s2_p1": ((1, 2, 7, 9), (3, 2), 2, (1, 0)),
    "2x3_s2_p1": ((1, 2, 6, 9), (2, 3), 2, (0, 1)),
    "3d_depth_only": ((1, 2, 5, 4, 9), (3, 1, 2), (2, 1, 2), (1, 0, 0)),
}


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(FOLDED))
def test_folded_rows_match_reference(name, dtype, op):
    shape, k, s, p = FOLDED[name]
    nd = len(shape) - 2
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = random(rng, shape, dtype)
    fn = getattr(cyconv, f"{op}_pool{nd}d")
    y = fn(x, k, s, p)
    pads = [(q, q) for q in _tuple(p, nd)]
    r = ref.pool(x, op, _tuple(k, nd), _tuple(s, nd), pads, (1,) * nd)
    assert_close(y, r[0] if op == "max" else r, dtype, name)


@pytest.mark.parametrize("row", [0, 1, 2])
@pytest.mark.parametrize("col", [0, 1, 2, 3])
def test_folded_max_takes_nan_from_any_tap(row, col):
    """A NaN anywhere in a 3x3 stride-2 window reaches its output, whichever
    row (the vertical fold) and column (the pick along the row) it is in."""
    x = np.arange(5 * 6, dtype=np.float32).reshape(1, 1, 5, 6)
    x[0, 0, 1 + row, 1 + col] = np.nan
    y = cyconv.max_pool2d(x, 3, 2, 1)
    r = ref.pool(x.astype(np.float64), "max", (3, 3), (2, 2), [(1, 1), (1, 1)], (1, 1))[0]
    np.testing.assert_array_equal(np.isnan(y), np.isnan(r))
    assert np.isnan(y).any()
    assert_close(y[~np.isnan(y)], r[~np.isnan(r)], np.float32)
