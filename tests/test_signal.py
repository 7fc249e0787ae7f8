"""cyconv.signal against scipy.signal and a direct loop."""
import warnings

import numpy as np
import pytest
import scipy.signal as ss

import cyconv
from cyconv import signal as cs
from conftest import assert_close

MODES = ["full", "same", "valid"]
BOUNDARIES = ["fill", "wrap", "symm"]
SHAPES = [((7, 9), (3, 3)), ((8, 6), (4, 2)), ((5, 5), (2, 5)), ((6, 7), (1, 1)),
          ((4, 5), (6, 7)), ((3, 8), (5, 2)), ((9, 9), (9, 9))]


def correlate_loop(x, k, fillvalue=0.0, out=None):
    """Full correlation from the definition, zero/fill outside the image."""
    M1, N1 = x.shape
    M2, N2 = k.shape
    out = np.zeros((M1 + M2 - 1, N1 + N2 - 1)) if out is None else out
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            for a in range(M2):
                for b in range(N2):
                    r, c = i - (M2 - 1) + a, j - (N2 - 1) + b
                    v = x[r, c] if 0 <= r < M1 and 0 <= c < N1 else fillvalue
                    out[i, j] += v * k[a, b]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shapes", SHAPES)
def test_matches_scipy(shapes, mode, boundary, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shapes[0]).astype(dtype)
    k = rng.standard_normal(shapes[1]).astype(dtype)
    for ours, theirs in ((cs.convolve2d, ss.convolve2d), (cs.correlate2d, ss.correlate2d)):
        try:
            expected = theirs(x, k, mode, boundary, 0.5)
        except ValueError:
            with pytest.raises(ValueError, match="at least as large"):
                ours(x, k, mode, boundary, 0.5)
            continue
        got = ours(x, k, mode, boundary, 0.5)
        assert got.dtype == expected.dtype
        assert_close(got, expected, dtype, f"{ours.__name__} {mode} {boundary}")


def test_against_the_definition():
    rng = np.random.default_rng(1)
    x, k = rng.standard_normal((6, 5)), rng.standard_normal((3, 4))
    assert_close(cs.correlate2d(x, k, fillvalue=-1.5), correlate_loop(x, k, -1.5),
                 np.float64)
    assert_close(cs.convolve2d(x, k), correlate_loop(x, k[::-1, ::-1]), np.float64)


def test_valid_mode_swaps_like_scipy():
    rng = np.random.default_rng(2)
    small, big = rng.standard_normal((3, 4)), rng.standard_normal((6, 7))
    for ours, theirs in ((cs.convolve2d, ss.convolve2d), (cs.correlate2d, ss.correlate2d)):
        assert_close(ours(small, big, "valid"), theirs(small, big, "valid"), np.float64)
    with pytest.raises(ValueError, match="at least as large as the other"):
        cs.correlate2d(np.ones((3, 8)), np.ones((5, 2)), "valid")


@pytest.mark.parametrize("dt1, dt2", [
    (np.float32, np.float32), (np.float32, np.float64), (np.uint8, np.uint8),
    (np.int16, np.uint8), (np.bool_, np.int8), (np.int32, np.int64), (np.uint8, np.float32),
    (np.int64, np.float32), (np.uint64, np.int64)])
def test_output_dtypes_follow_scipy(dt1, dt2):
    x, k = np.ones((5, 5), dt1), np.ones((2, 2), dt2)
    assert cs.convolve2d(x, k).dtype == ss.convolve2d(x, k).dtype == np.result_type(dt1, dt2)


def test_dtypes_scipy_refuses():
    x = np.ones((5, 5), np.float16)
    assert cs.correlate2d(x, x[:2, :2]).dtype == np.float32
    b = np.ones((5, 5), bool)
    got = cs.correlate2d(b, b[:2, :2])
    assert got.dtype == np.float64 and got.max() == 4
    for call in (lambda: ss.correlate2d(x, x[:2, :2]), lambda: ss.correlate2d(b, b[:2, :2])):
        with pytest.raises(ValueError):
            call()


def wrapped_loop(x, k, dtype, fillvalue=0):
    """Full correlation in exact Python integers, wrapped modulo 2**bits
    into ``dtype``: what integer arithmetic in ``dtype`` gives."""
    exact = correlate_loop(np.asarray(x).astype(object), np.asarray(k).astype(object),
                           int(fillvalue), out=np.zeros(
                               (x.shape[0] + k.shape[0] - 1, x.shape[1] + k.shape[1] - 1),
                               object))
    bits = np.iinfo(dtype).bits
    wrapped = [(int(v) % 2 ** bits) for v in exact.ravel()]
    return np.array(wrapped, np.uint64).astype(dtype).reshape(exact.shape)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.int64,
                                   np.uint64])
@pytest.mark.parametrize("scale", ["small", "full"])
def test_integers_exact_and_wrapped(dtype, scale):
    """Small values take the float64 kernel (exact), the full range the int64
    loop; both wrap like SciPy's integer arithmetic."""
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    lo, hi = (info.min, info.max) if scale == "full" else (max(info.min, -9), 9)
    x = rng.integers(lo, hi, (6, 7), dtype=dtype, endpoint=True)
    k = rng.integers(lo, hi, (3, 4), dtype=dtype, endpoint=True)
    fill = 2
    expected = wrapped_loop(x, k, dtype, fill)
    got = cs.correlate2d(x, k, fillvalue=fill)
    assert got.dtype == dtype
    assert np.array_equal(got, expected)
    assert np.array_equal(cs.convolve2d(x, k[::-1, ::-1], fillvalue=fill), expected)
    for mode in MODES:
        for boundary in BOUNDARIES:
            for ours, theirs in ((cs.convolve2d, ss.convolve2d),
                                 (cs.correlate2d, ss.correlate2d)):
                want = theirs(x, k, mode, boundary, fill)
                have = ours(x, k, mode, boundary, fill)
                assert have.dtype == want.dtype and np.array_equal(have, want), \
                    (ours.__name__, mode, boundary)


def test_integer_batches_and_swap():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (2, 3, 9, 8), dtype=np.uint8)
    k = rng.integers(0, 256, (3, 2), dtype=np.uint8)
    got = cs.convolve2d(x, k, "same", "symm")
    for idx in np.ndindex(2, 3):
        assert np.array_equal(got[idx], ss.convolve2d(x[idx], k, "same", "symm"))
    small, big = x[0, 0, :2, :3], x[1, 2]
    for ours, theirs in ((cs.convolve2d, ss.convolve2d), (cs.correlate2d, ss.correlate2d)):
        assert np.array_equal(ours(small, big, "valid"), theirs(small, big, "valid"))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("fillvalue", [1.7, -2.7, np.int64(-3), np.float64(-1.5), [2],
                                       np.array([2.5]), np.array([[4]], np.uint8), True,
                                       -1, 300, 1e30, float("inf"), 1j, [1, 2], [], "abc"])
def test_fillvalue_converts_as_scipy(dtype, fillvalue):
    x = np.arange(12).reshape(3, 4).astype(dtype)
    k = np.ones((2, 2), dtype)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = ss.correlate2d(x, k, fillvalue=fillvalue)
        except ValueError:
            with pytest.raises(ValueError, match="fillvalue"):
                cs.correlate2d(x, k, fillvalue=fillvalue)
            return
        got = cs.correlate2d(x, k, fillvalue=fillvalue)
    assert got.dtype == expected.dtype
    if got.dtype.kind == "f":   # inf fills give inf where both agree
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    else:
        assert np.array_equal(got, expected)
    # a boundary that never reads it ignores fillvalue, as SciPy does
    assert np.array_equal(cs.correlate2d(x, k, boundary="wrap", fillvalue=fillvalue),
                          ss.correlate2d(x, k, boundary="wrap"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_batches_filter_image_by_image(mode, boundary):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 8))
    k = rng.standard_normal((3, 2))
    got = cs.correlate2d(x, k, mode, boundary, 0.25)
    for idx in np.ndindex(2, 3):
        assert_close(got[idx], ss.correlate2d(x[idx], k, mode, boundary, 0.25), np.float64)
    with cyconv.num_threads(1):
        assert np.array_equal(cs.correlate2d(x, k, mode, boundary, 0.25), got)


def test_inputs_unchanged_and_odd_layouts():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((10, 11))
    k = rng.standard_normal((3, 3))
    expected = ss.convolve2d(x, k, "same", "symm")
    for v in (np.asfortranarray(x), x[::-1].copy()[::-1], x.tolist()):
        before = np.array(v, copy=True)
        assert_close(cs.convolve2d(v, k, "same", "symm"), expected, np.float64)
        assert np.array_equal(np.asarray(v), before)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: cs.convolve2d(np.ones((4, 4)), np.ones((2, 2, 2))), ValueError,
     "in2 must be a 2-D kernel"),
    (lambda: cs.convolve2d(np.ones(4), np.ones((2, 2))), ValueError,
     "in1 must have at least 2 dimensions"),
    (lambda: cs.convolve2d(np.ones((4, 4)), np.ones((2, 2)), "sam"), ValueError,
     "mode must be one of"),
    (lambda: cs.convolve2d(np.ones((4, 4)), np.ones((2, 2)), boundary="reflect"),
     ValueError, "boundary must be one of"),
    (lambda: cs.convolve2d(np.ones((4, 4)), np.ones((2, 2)), fillvalue="zero"), ValueError,
     "could not cast `fillvalue` directly to the output dtype float64: got 'zero'"),
    (lambda: cs.convolve2d(np.ones((4, 4)), np.ones((2, 2)), fillvalue=[1, 2]), ValueError,
     r"`fillvalue` must be scalar or an array with one element, got shape \(2,\)"),
    (lambda: cs.convolve2d(np.ones((4, 4)), np.ones((2, 2)), fillvalue=[]), ValueError,
     r"`fillvalue` must be scalar or an array with one element, got an empty array of "
     r"shape \(0,\)"),
    # SciPy's own test of these messages (test_fillvalue_errors) matches this prefix
    (lambda: cs.convolve2d([[1]], [[1, 2]], fillvalue=1j), ValueError,
     "could not cast `fillvalue` directly to the output "),
    (lambda: cs.convolve2d(np.ones((4, 4), complex), np.ones((2, 2))), TypeError,
     "in1 has dtype complex128"),
    (lambda: cs.correlate2d(np.ones((4, 0)), np.ones((2, 2))), ValueError,
     "must not be empty"),
    (lambda: cs.correlate2d(np.ones((2, 3, 3)), np.ones((4, 4)), "valid"), ValueError,
     "only defined for a single 2-D in1"),
])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
