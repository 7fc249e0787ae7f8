"""Public im2col / col2im (torch.nn.functional.unfold / fold)."""
import numpy as np

from . import _params as P
from ._kernels import conv as _conv
from ._threads import kernel_threads

__all__ = ["im2col", "col2im"]


def _hyper(op, kernel_size, stride, padding, dilation, spatial, what):
    kernel = P.int_tuple(op, "kernel_size", kernel_size, 2, 1)
    stride = P.int_tuple(op, "stride", stride, 2, 1)
    dilation = P.int_tuple(op, "dilation", dilation, 2, 1)
    pads = P.padding_pairs(op, padding, 2, spatial, kernel, stride, dilation)
    out = P.output_size(op, spatial, kernel, stride, dilation, pads, what=what)
    return kernel, stride, dilation, pads, out


def _launch(kernel, stride, dilation, pads, out, channels_last):
    return (P.launch_geometry(kernel, stride, pads, dilation, out), bool(channels_last))


def im2col(x, kernel_size, stride=1, padding=0, dilation=1, *, channels_last=False):
    """Extract sliding patches: the columns of a convolution as a GEMM.

    Parameters
    ----------
    x : array_like, (N, C, H, W), or (N, H, W, C) with channels_last
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (int, int), ((top, bottom), (left, right)), "valid" or "same"
        Zero padding.

    Returns
    -------
    ndarray
        Channels first: (N, C*kh*kw, L), rows ordered (c, i, j), exactly
        ``torch.nn.functional.unfold``.  Channels last: (N, L, kh*kw*C),
        columns ordered (i, j, c).  L = H_out * W_out.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cyconv.im2col(np.arange(16.).reshape(1, 1, 4, 4), 2).shape
    (1, 4, 9)
    """
    op = "im2col"
    x = P.as_array(op, "input", x)
    dtype = P.compute_dtype(op, input=x)
    P.check_ndim(op, "input", x, 4, "(N, H, W, C)" if channels_last else "(N, C, H, W)")
    N, C = x.shape[0], (x.shape[3] if channels_last else x.shape[1])
    spatial = x.shape[1:3] if channels_last else x.shape[2:]
    kernel, stride, dilation, pads, out = _hyper(op, kernel_size, stride, padding,
                                                 dilation, spatial, "input")
    L, kk = out[0] * out[1], kernel[0] * kernel[1]
    col = np.empty((N, L, kk * C) if channels_last else (N, C * kk, L), dtype)
    _conv.im2col(P.view5(P.contiguous(x, dtype), 2, channels_last), col,
                   *_launch(kernel, stride, dilation, pads, out, channels_last),
                   kernel_threads())
    return col


def col2im(cols, output_size, kernel_size, stride=1, padding=0, dilation=1, *,
           channels_last=False):
    """Sum patches back into images: ``torch.nn.functional.fold``.

    Parameters
    ----------
    cols : array_like
        (N, C*kh*kw, L), or (N, L, kh*kw*C) with channels_last, as made by
        :func:`im2col`.  Overlapping patch entries are summed.
    output_size : (int, int)
        The image size (H, W).
    kernel_size, stride, padding, dilation
        As for :func:`im2col`.

    Returns
    -------
    ndarray, (N, C, H, W) or (N, H, W, C)

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cols = cyconv.im2col(np.ones((1, 1, 3, 3)), 2)
    >>> cyconv.col2im(cols, (3, 3), 2)[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    op = "col2im"
    cols = P.as_array(op, "cols", cols)
    dtype = P.compute_dtype(op, cols=cols)
    P.check_ndim(op, "cols", cols, 3, "(N, L, kh*kw*C)" if channels_last
                 else "(N, C*kh*kw, L)")
    spatial = P.int_tuple(op, "output_size", output_size, 2, 1, one_for_all=False)
    kernel, stride, dilation, pads, out = _hyper(op, kernel_size, stride, padding,
                                                 dilation, spatial, "output")
    kk, L = kernel[0] * kernel[1], out[0] * out[1]
    rows, length = (cols.shape[2], cols.shape[1]) if channels_last else cols.shape[1:]
    if rows % kk:
        raise ValueError(f"{op}: cols has {rows} patch entries per position, expected a "
                         f"multiple of kh*kw = {kk} (C * {kernel[0]} * {kernel[1]})")
    if length != L:
        raise ValueError(f"{op}: cols has {length} positions, expected L = {out[0]} * "
                         f"{out[1]} = {L} for output_size {spatial}, kernel_size "
                         f"{kernel}, stride {stride}, padding {pads}, dilation {dilation}")
    N, C = cols.shape[0], rows // kk
    x = np.zeros((N, *spatial, C) if channels_last else (N, C, *spatial), dtype)
    _conv.col2im(P.view5(x, 2, channels_last), P.contiguous(cols, dtype),
                   *_launch(kernel, stride, dilation, pads, out, channels_last),
                   kernel_threads())
    return x
