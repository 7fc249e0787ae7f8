"""SciPy-compatible 2-D filtering: ``convolve2d`` and ``correlate2d``.

Same results and output dtypes as ``scipy.signal.convolve2d`` /
``correlate2d`` for real floating inputs, plus leading batch dimensions on
the image, filtered in parallel with the GIL released.
"""
import numbers

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

def _dtype(op, in1, in2):
    for name, a in (("in1", in1), ("in2", in2)):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{op}: {name} has dtype {a.dtype}; cyconv.signal filters real "
                            f"inputs (use scipy.signal for complex ones)")
    dt = np.result_type(in1.dtype, in2.dtype)
    if dt == np.float16:
        return np.dtype(np.float32)
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float64)


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
    if not isinstance(fillvalue, numbers.Real):
        raise TypeError(f"{op}: fillvalue must be a real number, got {fillvalue!r}")
    dtype = _dtype(op, in1, in2)
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
    kernel = P.contiguous(in2, dtype)
    if flip:
        kernel = np.ascontiguousarray(kernel[::-1, ::-1])
    pads = _mode_pads(kernel.shape, mode, flip)
    batch = in1.shape[:-2]
    x = P.contiguous(in1, dtype).reshape(-1, *image)
    if any(p for pair in pads for p in pair):
        width = ((0, 0), *pads)
        if boundary == "fill":
            x = np.pad(x, width, constant_values=dtype.type(fillvalue))
        else:
            x = np.pad(x, width, mode=_NP_MODE[boundary])
    out = np.empty((x.shape[0], x.shape[1] - kernel.shape[0] + 1,
                    x.shape[2] - kernel.shape[1] + 1), dtype)
    _signal.correlate_valid(x, kernel, out, kernel_threads())
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
    fillvalue : real number

    Returns
    -------
    ndarray
        float32 for float32 (and float16) inputs, float64 for float64 or mixed
        ones, as SciPy; integer inputs are filtered in float64.

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
