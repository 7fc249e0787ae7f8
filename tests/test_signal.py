"""cyconv.signal against scipy.signal and a direct loop."""
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


def correlate_loop(x, k, fillvalue=0.0):
    """Full correlation from the definition, zero/fill outside the image."""
    M1, N1 = x.shape
    M2, N2 = k.shape
    out = np.zeros((M1 + M2 - 1, N1 + N2 - 1))
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


def test_output_dtypes_follow_scipy():
    x32 = np.ones((5, 5), np.float32)
    assert cs.convolve2d(x32, x32[:2, :2]).dtype == np.float32
    assert cs.convolve2d(x32, np.ones((2, 2))).dtype == np.float64
    assert cs.correlate2d(x32.astype(np.float16), x32[:2, :2]).dtype == np.float32
    assert cs.correlate2d(np.ones((5, 5), int), np.ones((2, 2), int)).dtype == np.float64


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
    (lambda: cs.convolve2d(np.ones((4, 4)), np.ones((2, 2)), fillvalue="0"), TypeError,
     "fillvalue must be a real number"),
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
