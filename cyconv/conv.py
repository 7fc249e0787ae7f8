"""Public convolution ops: validate, choose the dtype, call one kernel."""
from collections import namedtuple

import numpy as np

from . import _params as P
from . import _workspace
from ._kernels import _conv2d
from ._threads import blas_single_threaded, get_num_threads

__all__ = ["ConvGrads", "conv2d", "conv2d_backward"]

ConvGrads = namedtuple("ConvGrads", ["input", "weight", "bias"])
ConvGrads.__doc__ = ("Gradients of a convolution; an entry not named in "
                     "``needs`` is None.")

_NP_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _spatial_axes(geo):
    return tuple(range(1, 1 + geo.nd)) if geo.channels_last else tuple(range(2, 2 + geo.nd))


def _kernel_input(geo, x, dtype):
    """The input the kernel reads, and the zero padding the kernel applies.

    Zero padding is done by the kernel itself; the other padding modes are
    materialised here with numpy.pad (the result is input-sized)."""
    x = P.contiguous(x, dtype)
    if geo.padding_mode == "zeros":
        return x, geo.pads
    width = [(0, 0)] * x.ndim
    for axis, pair in zip(_spatial_axes(geo), geo.pads):
        width[axis] = pair
    return np.pad(x, width, mode=_NP_PAD_MODE[geo.padding_mode]), ((0, 0),) * geo.nd


def _pad_adjoint(g, geo):
    """Adjoint of numpy.pad in ``geo.padding_mode``: fold the gradient of the
    padded input back onto the input (padding taps add to their source)."""
    mode = geo.padding_mode
    for axis, n, (before, after) in zip(_spatial_axes(geo), geo.spatial, geo.pads):
        core = [slice(None)] * g.ndim
        core[axis] = slice(before, before + n)
        res = g[tuple(core)].copy()
        for p in list(range(before)) + list(range(before + n, before + n + after)):
            q = p - before
            if mode == "reflect":
                src = -q if q < 0 else 2 * (n - 1) - q
            elif mode == "replicate":
                src = min(max(q, 0), n - 1)
            else:  # circular
                src = q % n
            dst = [slice(None)] * g.ndim
            dst[axis] = src
            pick = [slice(None)] * g.ndim
            pick[axis] = p
            res[tuple(dst)] += g[tuple(pick)]
        g = res
    return np.ascontiguousarray(g)


def _weight_matrix(weight, dtype, channels_last):
    """(C_out, K) weights in the column order of the layout's im2col."""
    w = weight.transpose(0, *range(2, weight.ndim), 1) if channels_last else weight
    return np.ascontiguousarray(w, dtype=dtype).reshape(weight.shape[0], -1)


def _launch(geo, pads):
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.stride, geo.dilation
    return (kh, kw, sh, sw, pads[0][0], pads[1][0], dh, dw, *geo.out_spatial,
            geo.groups, geo.channels_last)


def _flat(arr, geo, channels):
    n, L = arr.shape[0], int(np.prod(arr.shape[1:-1] if geo.channels_last else arr.shape[2:]))
    return arr.reshape((n, L, channels) if geo.channels_last else (n, channels, L))


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", channels_last=False, strict=False, out=None):
    """2-D convolution (cross-correlation, as in every deep-learning library).

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W), or (N, H, W, C_in) with channels_last
    weight : array_like, shape (C_out, C_in // groups, kH, kW)
    bias : array_like, shape (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), ((top, bottom), (left, right)), "valid" or "same"
        "same" gives an output of ``ceil(in / stride)`` with any stride, the
        odd unit of padding going after (TensorFlow SAME, ONNX SAME_UPPER).
    groups : int
        Input and output channels are split into this many groups;
        ``groups == C_in`` is a depthwise convolution.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
    channels_last : bool
        Input and output are (N, H, W, C); the weight layout never changes.
    strict : bool
        Raise ValueError when ``(in + pad - dilation*(k-1) - 1) / stride`` is not
        an integer (input rows or columns would be ignored), showing the
        arithmetic and the nearest paddings that fit.
    out : ndarray, optional
        C-contiguous array of the output's shape and dtype to write into.

    Returns
    -------
    ndarray, (N, C_out, H_out, W_out) or (N, H_out, W_out, C_out)
        float32 for float32 (and float16) operands, float64 otherwise.

    Notes
    -----
    Output positions are processed in tiles: im2col of a tile into a
    per-thread workspace, then one GEMM through scipy's BLAS (single-threaded
    inside the OpenMP loop).  Beyond its input, output and weights (and, for
    reflect/replicate/circular padding, a padded copy of the input) a call
    uses at most 1 MiB of workspace per thread, whatever the batch size.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> x = np.ones((1, 3, 5, 5), np.float32)
    >>> w = np.ones((4, 3, 3, 3), np.float32)
    >>> cyconv.conv2d(x, w, padding=1).shape
    (1, 4, 5, 5)
    """
    op = "conv2d"
    x = P.as_array(op, "input", x)
    weight = P.as_array(op, "weight", weight)
    bias = None if bias is None else P.as_array(op, "bias", bias)
    dtype = P.compute_dtype(op, input=x, weight=weight, bias=bias)
    geo = P.conv_geometry(op, 2, x, weight, bias, stride, padding, dilation, groups,
                          padding_mode=padding_mode, channels_last=channels_last,
                          strict=strict)
    P.check_out(op, out, geo.output_shape, dtype,
                {"input": x, "weight": weight, "bias": bias})
    y = out if out is not None else np.empty(geo.output_shape, dtype)
    if geo.N == 0:
        return y
    xk, pads = _kernel_input(geo, x, dtype)
    w2 = _weight_matrix(weight, dtype, geo.channels_last)
    b = P.contiguous(bias, dtype) if bias is not None else np.empty(0, dtype)
    L = int(np.prod(geo.out_spatial))
    tile = _workspace.tile_size(w2.shape[1], L, dtype.itemsize)
    n = min(get_num_threads(), geo.N * geo.groups * -(-L // tile))
    ws = _workspace.scratch("col", (n, w2.shape[1] * tile), dtype)
    with blas_single_threaded():
        _conv2d.conv2d_forward(xk, w2, b, _flat(y, geo, geo.C_out), *_launch(geo, pads),
                               ws, tile, n)
    return y


def conv2d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1,
                    *, padding_mode="zeros", channels_last=False,
                    needs=("input", "weight", "bias")):
    """Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like
        Gradient of the loss with respect to ``conv2d``'s output (its shape).
    x, weight, stride, padding, dilation, groups, padding_mode, channels_last
        As given to :func:`conv2d`.
    needs : tuple of {"input", "weight", "bias"}
        The gradients to compute; the others are returned as None.

    Returns
    -------
    ConvGrads
        Named tuple ``(input, weight, bias)`` in the layouts of ``x``,
        ``weight`` and the bias.

    Notes
    -----
    The weight gradient is reduced through at most 16 partial sums of at most
    16 MiB in all (fixed by the shape, so results do not depend on the thread
    count); with im2col tiles of at most 1 MiB per thread, that is the whole
    workspace beyond the inputs and outputs, whatever the batch size.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> x = np.ones((2, 3, 5, 5)); w = np.ones((4, 3, 3, 3))
    >>> g = cyconv.conv2d_backward(np.ones((2, 4, 3, 3)), x, w)
    >>> g.input.shape, g.weight.shape, g.bias.shape
    ((2, 3, 5, 5), (4, 3, 3, 3), (4,))
    """
    op = "conv2d_backward"
    needs = P.check_needs(op, needs)
    grad_output = P.as_array(op, "grad_output", grad_output)
    x = P.as_array(op, "input", x)
    weight = P.as_array(op, "weight", weight)
    dtype = P.compute_dtype(op, grad_output=grad_output, input=x, weight=weight)
    geo = P.conv_geometry(op, 2, x, weight, None, stride, padding, dilation, groups,
                          padding_mode=padding_mode, channels_last=channels_last)
    if grad_output.shape != geo.output_shape:
        raise ValueError(f"{op}: grad_output has shape {grad_output.shape}, expected "
                         f"{geo.output_shape} (the shape of conv2d's output)")
    gy = _flat(P.contiguous(grad_output, dtype), geo, geo.C_out)
    g_bias = g_weight = g_input = None
    if "bias" in needs:
        g_bias = gy.sum(axis=(0, 1) if geo.channels_last else (0, 2))
    if not needs & {"input", "weight"}:
        return ConvGrads(None, None, g_bias)
    w2 = _weight_matrix(weight, dtype, geo.channels_last)
    K = w2.shape[1]
    L = gy.shape[1] if geo.channels_last else gy.shape[2]
    threads = get_num_threads()
    xk, pads = _kernel_input(geo, x, dtype)
    launch = _launch(geo, pads)
    with blas_single_threaded():
        if "weight" in needs:
            tile = _workspace.tile_size(K, L, dtype.itemsize)
            items = geo.N * -(-L // tile)
            nb = _workspace.buckets(items, w2.size * dtype.itemsize)
            n = min(threads, nb)
            ws = _workspace.scratch("col", (n, K * tile), dtype)
            partial = (_workspace.scratch("partial", (nb, w2.size), dtype) if nb > 1
                       else np.empty((1, 1), dtype))
            gw2 = np.empty_like(w2)
            _conv2d.conv2d_backward_weight(xk, gy, gw2, partial, *launch, ws, tile, n)
            if geo.channels_last:
                kh, kw = geo.kernel
                g_weight = np.ascontiguousarray(
                    gw2.reshape(geo.C_out, kh, kw, -1).transpose(0, 3, 1, 2))
            else:
                g_weight = gw2.reshape(weight.shape)
        if "input" in needs:
            Wo = geo.out_spatial[1]
            tile = _workspace.row_aligned(_workspace.tile_size(K, L, dtype.itemsize), Wo)
            n = min(threads, geo.N * geo.groups * -(-L // tile))
            ws = _workspace.scratch("col", (n, K * tile), dtype)
            gxk = np.zeros(xk.shape, dtype)
            _conv2d.conv2d_backward_input(gy, w2, gxk, *launch, ws, tile, n)
            g_input = gxk if geo.padding_mode == "zeros" else _pad_adjoint(gxk, geo)
    return ConvGrads(g_input, g_weight, g_bias)
