import numpy as np
import pytest

from cyconv import _prepared, _workspace


@pytest.fixture(autouse=True)
def _no_kept_weights():
    """Every test starts without prepared weights kept by an earlier one."""
    _prepared.clear()
    yield
    _prepared.clear()

# Tolerances relative to the output's scale (max |reference|).
RTOL = {np.float32: 1e-4, np.float64: 1e-10}


def assert_close(actual, expected, dtype, what=""):
    actual = np.asarray(actual)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert actual.dtype == np.dtype(dtype), (what, actual.dtype, dtype)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0))
    assert err <= RTOL[dtype] * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


def assert_same_nonfinite(actual, expected, dtype, what=""):
    """inf and NaN where the float64 definition has them (infinities of the
    same sign), and assert_close on the rest."""
    actual = np.asarray(actual)
    expected = np.asarray(expected, np.float64)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), what)
    np.testing.assert_array_equal(np.isinf(actual), np.isinf(expected), what)
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected), what)
    finite = np.isfinite(expected)
    assert_close(actual[finite], expected[finite], dtype, what)


def to_last(a):
    """(N, C, ...) -> (N, ..., C)"""
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def to_first(a):
    """(N, ..., C) -> (N, C, ...)"""
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


def by_thread_count(fn, counts=(1, 2, 3)):
    """fn() run under each OpenMP thread count, results in order."""
    import cyconv
    outs = []
    for n in counts:
        with cyconv.num_threads(n):
            outs.append(fn())
    return outs


def random(rng, shape, dtype=np.float32):
    """Values exactly representable in float32, so one float64 reference
    serves both dtypes."""
    return rng.standard_normal(shape).astype(np.float32).astype(dtype)


def force_im2col(monkeypatch):
    """im2col + GEMM (and col2im) where conv2d and its backward would take a
    specialised kernel (few input channels, pointwise forward and weight
    gradient, packed, Winograd, depthwise)."""
    from cyconv import conv
    monkeypatch.setattr(conv, "SMALL_MAX_CHANNELS", 0)
    monkeypatch.setattr(conv, "POINTWISE_ENABLED", False)
    monkeypatch.setattr(conv, "POINTWISE_WEIGHT_ENABLED", False)
    monkeypatch.setattr(conv, "PACKED_ENABLED", False)
    monkeypatch.setattr(conv, "WINOGRAD_MIN_CHANNELS", 1 << 30)
    monkeypatch.setattr(conv, "_uses_direct", lambda geo: False)


@pytest.fixture(params=["default", "tiles3", "tiles8", "im2col", "im2col_cf"])
def workspace_mode(request, monkeypatch):
    """Force the kernels' tiling paths: several tiles per image (splitting
    rows, or whole-row bands for the parallel col2im), one partial bucket
    per tile or accumulation in place; or im2col + GEMM (and col2im) where
    conv2d and its backward would take a specialised kernel (few input
    channels, pointwise, Winograd, depthwise), its tiles of whole 2-D rows
    im2col'ed by _to_col_rows (im2col) or by the general _transfer_cf
    (im2col_cf)."""
    if request.param == "im2col_cf":
        from cyconv import conv
        old = conv._conv.set_to_col_rows(False)
        request.addfinalizer(lambda: conv._conv.set_to_col_rows(old))
    if request.param in ("im2col", "im2col_cf"):
        force_im2col(monkeypatch)
    if request.param == "tiles3":
        monkeypatch.setattr(_workspace, "tile_size", lambda k, n, i: min(n, 3))
        monkeypatch.setattr(_workspace, "PARTIAL_BYTES", 1)
    elif request.param == "tiles8":
        monkeypatch.setattr(_workspace, "tile_size", lambda k, n, i: min(n, 8))
    return request.param


def spy_kernel(monkeypatch, name):
    """Record the calls of cyconv._kernels.conv.<name> made by cyconv.conv;
    returns the list of their first arguments' shapes."""
    from cyconv import conv
    calls = []
    real = getattr(conv._conv, name)

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(conv._conv, name, spy)
    return calls
