"""SciPy-compatible 2-D filtering: ``convolve2d`` and ``correlate2d``.

Same results and output dtypes as ``scipy.signal.convolve2d`` /
``correlate2d`` for real inputs (integer ones computed exactly and wrapped
on overflow, as SciPy's integer arithmetic), plus leading batch dimensions
on the image, filtered in parallel with the GIL released.
"""
import numpy as np

from . import _params as P
from ._kernels import signal as _signal
from ._threads import kernel_threads

__all__ = ["convolve2d", "correlate2d"]

_MODES = ("full", "same", "valid")
# SciPy's spellings: fill/pad, wrap/circular, symm/symmetric
_BOUNDARIES = {"fill": "fill", "pad": "fill", "wrap": "wrap", "circular": "wrap",
               "symm": "symm", "symmetric": "symm"}
_NP_MODE = {"wrap": "wrap", "symm": "symmetric"}



def _mode_pads(kernel_shape, mode, flip):
    """(before, after) padding per dim that turns SciPy's ``mode`` into a
    valid correlation with the (already flipped, for convolution) kernel."""
    pads = []
    for m in kernel_shape:
        if mode == "full":
            pads.append((m - 1, m - 1))
        elif mode == "same":
            # offset of 'same' within the full output: SciPy's (m-1)//2 for
            # convolution, m//2 for correlation
            off = (m - 1) // 2 if flip else m // 2
            pads.append((m - 1 - off, off))
        else:
            pads.append((0, 0))
    return pads


def _dtypes(op, in1, in2):
    """(output dtype, dtype computed in): SciPy's numpy.result_type of the
    inputs, except float16 (SciPy refuses it) and bool with bool (SciPy
    refuses that too), filtered in float32 and float64.  Integer results are
    computed exactly (see _integer_filter) and wrap as SciPy's integer loops
    do."""
    for name, a in (("in1", in1), ("in2", in2)):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{op}: {name} has dtype {a.dtype}; cyconv.signal filters real "
                            f"inputs (use scipy.signal for complex ones)")
    dt = np.result_type(in1.dtype, in2.dtype)
    if dt == np.float16:
        return np.dtype(np.float32), np.dtype(np.float32)
    if dt.kind == "b":
        return np.dtype(np.float64), np.dtype(np.float64)
    return dt, (dt if dt.kind == "f" else np.dtype(np.float64))


def _fill(op, fillvalue, dtype):
    """``fillvalue`` as a 0-d array of the output dtype, converted as SciPy
    converts it: as ``numpy.array(fillvalue, dtype)`` would for a Python or
    NumPy scalar (a float truncates towards zero for an integer output), by
    a safe cast only for an array; scalar or one element."""
    try:
        if isinstance(fillvalue, np.ndarray):
            if fillvalue.size == 1 and not np.can_cast(fillvalue.dtype, dtype):
                raise TypeError
            fill = fillvalue.astype(dtype)
        else:
            fill = np.array(fillvalue, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        # SciPy's wording, so that code matching its messages matches these
        raise ValueError(f"{op}: could not cast `fillvalue` directly to the output dtype "
                         f"{dtype}: got {fillvalue!r}") from None
    if fill.size != 1:
        raise ValueError(f"{op}: `fillvalue` must be scalar or an array with one element, "
                         f"got {'an empty array of ' if fill.size == 0 else ''}"
                         f"shape {fill.shape}")
    return fill.reshape(())


# An integer result is computed in float64, exactly while every partial sum
# is an integer below 2**53 in magnitude (bounded by the largest input or
# fill magnitude times the kernel's sum of magnitudes), then wrapped into the
# output dtype: the sum modulo 2**bits, as SciPy's integer arithmetic gives
# it.  Beyond that bound, a loop over the kernel's taps in int64.
_EXACT = 2.0 ** 52


def _pad_images(x, pads, boundary, fill):
    """The images x (B, H, W) padded by ``pads`` per the boundary rule."""
    if not any(p for pair in pads for p in pair):
        return x
    width = ((0, 0), *pads)
    if boundary == "fill":   # (uint64 to int64 wraps: modulo 2**64 it is the same)
        return np.pad(x, width, constant_values=fill.astype(x.dtype, casting="unsafe"))
    return np.pad(x, width, mode=_NP_MODE[boundary])


def _correlate_valid(xp, kernel):
    """The valid correlation of the padded images xp (B, H, W), in parallel."""
    xp, kernel = np.ascontiguousarray(xp), np.ascontiguousarray(kernel)
    out = np.empty((xp.shape[0], xp.shape[1] - kernel.shape[0] + 1,
                    xp.shape[2] - kernel.shape[1] + 1), xp.dtype)
    _signal.correlate_valid(xp, kernel, out, kernel_threads())
    return out


def _integer_filter(x, kernel, fill, boundary, pads, out_dtype):
    """Exact integer correlation of the integer (or bool) images x (B, H, W)
    with kernel, wrapped to out_dtype (the inputs' result type, which holds
    their values)."""
    bound = float(np.abs(kernel.astype(np.float64)).sum())
    big = max(abs(float(x.max())), abs(float(x.min())))   # x is not empty
    if boundary == "fill":
        big = max(big, abs(float(fill)))
    exact = bound * big < _EXACT
    work = np.float64 if exact else np.int64
    xw = _pad_images(x.astype(work), pads, boundary, fill)
    kw = kernel.astype(work)
    if exact:
        out = _correlate_valid(xw, kw).astype(np.int64)
    else:
        kh, kwid = kw.shape
        Ho, Wo = xw.shape[1] - kh + 1, xw.shape[2] - kwid + 1
        out = np.zeros((xw.shape[0], Ho, Wo), np.int64)
        for i in range(kh):
            for j in range(kwid):
                out += kw[i, j] * xw[:, i:i + Ho, j:j + Wo]
    return out.astype(out_dtype, casting="unsafe")


def _filter(op, in1, in2, mode, boundary, fillvalue, flip):
    in1 = P.as_array(op, "in1", in1)
    in2 = P.as_array(op, "in2", in2)
    if in2.ndim != 2:
        raise ValueError(f"{op}: in2 must be a 2-D kernel, got shape {in2.shape}")
    if in1.ndim < 2:
        raise ValueError(f"{op}: in1 must have at least 2 dimensions (..., H, W), got "
                         f"shape {in1.shape}")
    P.check_choice(op, "mode", mode, _MODES)
    if boundary not in _BOUNDARIES:
        raise ValueError(f"{op}: boundary must be one of {', '.join(map(repr, _BOUNDARIES))}"
                         f", got {boundary!r}")
    boundary = _BOUNDARIES[boundary]
    out_dtype, dtype = _dtypes(op, in1, in2)
    # SciPy converts (and checks) fillvalue only where the boundary uses it
    fill = _fill(op, fillvalue, out_dtype) if boundary == "fill" else None
    if 0 in in1.shape[-2:] or 0 in in2.shape:
        raise ValueError(f"{op}: in1 {in1.shape} and in2 {in2.shape} must not be empty")
    image = in1.shape[-2:]
    swap = False
    if mode == "valid" and not all(i >= k for i, k in zip(image, in2.shape)):
        if not all(k >= i for i, k in zip(image, in2.shape)):
            raise ValueError(f"{op}: for 'valid' mode, one input must be at least as large "
                             f"as the other in every dimension; got in1 {in1.shape}, "
                             f"in2 {in2.shape}")
        if in1.ndim > 2:
            raise ValueError(f"{op}: in2 {in2.shape} is larger than the images "
                             f"{image}; SciPy's swap of the inputs in 'valid' mode is only "
                             f"defined for a single 2-D in1")
        in1, in2, swap = in2, in1, True  # SciPy's rule: the larger one is filtered
        image = in1.shape
    batch = in1.shape[:-2]
    pads = _mode_pads(in2.shape, mode, flip)
    if out_dtype.kind in "iu":
        kernel = in2[::-1, ::-1] if flip else in2
        out = _integer_filter(in1.reshape(-1, *image), kernel, fill, boundary, pads,
                              out_dtype)
    else:
        kernel = P.contiguous(in2, dtype)
        if flip:
            kernel = np.ascontiguousarray(kernel[::-1, ::-1])
        x = P.contiguous(in1, dtype).reshape(-1, *image)
        out = _correlate_valid(_pad_images(x, pads, boundary, fill), kernel)
    out = out.reshape(*batch, *out.shape[1:])
    if swap and not flip:
        out = np.ascontiguousarray(out[::-1, ::-1])
    return out


def convolve2d(in1, in2, mode="full", boundary="fill", fillvalue=0):
    """Convolve images with a 2-D kernel, as ``scipy.signal.convolve2d``.

    Parameters
    ----------
    in1 : array_like, (..., H, W)
        One image, or a batch of images in the leading dimensions.
    in2 : array_like, (kh, kw)
        The kernel (flipped, as convolution does).
    mode : {"full", "same", "valid"}
        As in SciPy; in "valid" mode a single image smaller than the kernel in
        every dimension swaps roles with it, as SciPy does.
    boundary : {"fill", "wrap", "symm"}
        Values beyond the image: ``fillvalue``, periodic, or mirrored with the
        edge repeated.  SciPy's aliases "pad", "circular", "symmetric" work.
    fillvalue : scalar or one-element array
        Used by ``boundary="fill"`` only, converted to the output dtype as
        SciPy converts it: a float truncates towards zero for an integer
        output, a value the dtype cannot hold is a ``ValueError``.

    Returns
    -------
    ndarray
        ``numpy.result_type(in1, in2)``, as SciPy: float32 for float32
        inputs, float64 for float64 or mixed float32/float64 ones, and an
        integer type for integer inputs, computed exactly and wrapped on
        overflow (modulo 2**bits) as SciPy's integer arithmetic does.  Beyond
        SciPy, which refuses them: float16 inputs give float32, and a bool
        image with a bool kernel gives float64.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import signal
    >>> signal.convolve2d(np.eye(3), np.ones((2, 2)), mode="valid")
    array([[2., 1.],
           [1., 2.]])
    """
    return _filter("convolve2d", in1, in2, mode, boundary, fillvalue, flip=True)


def correlate2d(in1, in2, mode="full", boundary="fill", fillvalue=0):
    """Cross-correlate images with a 2-D kernel, as ``scipy.signal.correlate2d``.

    Arguments and dtypes as for :func:`convolve2d`; the kernel is not flipped.
    In "valid" mode with swapped inputs the result is reversed, as SciPy does.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import signal
    >>> signal.correlate2d(np.arange(9.).reshape(3, 3), np.ones((2, 2)), mode="valid")
    array([[ 8., 12.],
           [20., 24.]])
    """
    return _filter("correlate2d", in1, in2, mode, boundary, fillvalue, flip=False)
