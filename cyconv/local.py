"""Locally connected 2-D layer: a convolution without parameter sharing."""
import math
from types import SimpleNamespace

import numpy as np

from . import _params as P
from . import _workspace
from ._kernels import conv as _conv
from ._threads import blas_single_threaded, kernel_threads
from .conv import ConvGrads

__all__ = ["locally_connected2d", "locally_connected2d_backward"]


def _geometry(op, x, weight, bias, stride, padding, dilation, channels_last):
    if weight.ndim != 6:
        raise ValueError(f"{op}: weight must have 6 dimensions (H_out, W_out, C_out, C_in, "
                         f"kH, kW), got shape {weight.shape}")
    Ho, Wo, C_out, C_in, kh, kw = weight.shape
    shared = SimpleNamespace(shape=(C_out, C_in, kh, kw), ndim=4)
    geo = P.conv_geometry(op, 2, x, shared, None, stride, padding, dilation, 1,
                          channels_last=channels_last)
    if (Ho, Wo) != geo.out_spatial:
        raise ValueError(f"{op}: weight has {Ho}x{Wo} output positions, but this input, "
                         f"kernel, stride, padding and dilation give "
                         f"{geo.out_spatial[0]}x{geo.out_spatial[1]}")
    if bias is not None and bias.shape != (C_out, Ho, Wo):
        raise ValueError(f"{op}: bias must have shape {(C_out, Ho, Wo)} = (C_out, H_out, "
                         f"W_out), got shape {bias.shape}")
    return geo


def _weights(weight, dtype, channels_last):
    """(L, C_out, K) in the column order of the layout's im2col."""
    Ho, Wo, C_out = weight.shape[:3]
    w = weight.transpose(0, 1, 2, 4, 5, 3) if channels_last else weight
    return np.ascontiguousarray(w, dtype=dtype).reshape(Ho * Wo, C_out, -1)


def _launch(geo, dtype):
    """Kernel geometry, samples per block (patches + outputs within one tile
    budget) and K, the weights per output neuron."""
    K = geo.C_in * math.prod(geo.kernel)
    nb = max(1, min(geo.N, _workspace.TILE_BYTES // ((K + geo.C_out) * dtype.itemsize)))
    return P.launch_geometry(geo.kernel, geo.stride, geo.pads, geo.dilation,
                             geo.out_spatial), nb, K


def _scratch(geo, nb, K, dtype, items):
    n = kernel_threads(items)
    return _workspace.scratch("col", (n, nb * (K + geo.C_out)), dtype), n


def locally_connected2d(x, weight, bias=None, stride=1, padding=0, dilation=1, *,
                        channels_last=False):
    """2-D convolution without parameter sharing (a locally connected layer).

    Every output position has its own filters, as used for centred faces
    where different regions need different features.

    Parameters
    ----------
    x : array_like, (N, C_in, H, W), or (N, H, W, C_in) with channels_last
    weight : array_like, (H_out, W_out, C_out, C_in, kH, kW)
    bias : array_like, (C_out, H_out, W_out), optional
    stride, padding, dilation
        As for :func:`cyconv.conv2d` (zero padding).

    Returns
    -------
    ndarray, (N, C_out, H_out, W_out) or (N, H_out, W_out, C_out)

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> x = np.ones((2, 3, 6, 6))
    >>> w = np.ones((4, 4, 5, 3, 3, 3))
    >>> cyconv.locally_connected2d(x, w).shape
    (2, 5, 4, 4)
    """
    op = "locally_connected2d"
    x = P.as_array(op, "input", x)
    weight = P.as_array(op, "weight", weight)
    bias = None if bias is None else P.as_array(op, "bias", bias)
    dtype = P.compute_dtype(op, input=x, weight=weight, bias=bias)
    geo = _geometry(op, x, weight, bias, stride, padding, dilation, channels_last)
    y = np.empty(geo.output_shape, dtype)
    if geo.N == 0:
        return y
    launch, nb, K = _launch(geo, dtype)
    L = math.prod(geo.out_spatial)
    b = (np.empty((0, 0), dtype) if bias is None
         else P.contiguous(bias, dtype).reshape(geo.C_out, L))
    ws, n = _scratch(geo, nb, K, dtype, L * -(-geo.N // nb))
    yk = y.reshape((geo.N, L, geo.C_out) if geo.channels_last else (geo.N, geo.C_out, L))
    with blas_single_threaded():
        _conv.lc_forward(P.view5(P.contiguous(x, dtype), 2, geo.channels_last),
                         _weights(weight, dtype, geo.channels_last), b, yk, launch,
                         geo.channels_last, ws, nb, n)
    return y


def locally_connected2d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1,
                                 *, channels_last=False, needs=("input", "weight", "bias")):
    """Gradients of :func:`locally_connected2d`: a :class:`cyconv.ConvGrads`
    with the input's, the weight's (H_out, W_out, C_out, C_in, kH, kW) and the
    bias's (C_out, H_out, W_out) gradients, each on request through ``needs``.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> x = np.ones((2, 3, 6, 6)); w = np.ones((4, 4, 5, 3, 3, 3))
    >>> g = cyconv.locally_connected2d_backward(np.ones((2, 5, 4, 4)), x, w)
    >>> g.weight.shape, g.bias.shape
    ((4, 4, 5, 3, 3, 3), (5, 4, 4))
    """
    op = "locally_connected2d_backward"
    needs = P.check_needs(op, needs)
    grad_output = P.as_array(op, "grad_output", grad_output)
    x = P.as_array(op, "input", x)
    weight = P.as_array(op, "weight", weight)
    dtype = P.compute_dtype(op, grad_output=grad_output, input=x, weight=weight)
    geo = _geometry(op, x, weight, None, stride, padding, dilation, channels_last)
    if grad_output.shape != geo.output_shape:
        raise ValueError(f"{op}: grad_output has shape {grad_output.shape}, expected "
                         f"{geo.output_shape} (the shape of locally_connected2d's output)")
    L = math.prod(geo.out_spatial)
    gy = P.contiguous(grad_output, dtype).reshape(
        (geo.N, L, geo.C_out) if geo.channels_last else (geo.N, geo.C_out, L))
    launch, nb, K = _launch(geo, dtype)
    g_input = g_weight = g_bias = None
    if "bias" in needs:
        g_bias = (gy.sum(axis=0).T if geo.channels_last else gy.sum(axis=0)).reshape(
            geo.C_out, *geo.out_spatial)
        g_bias = np.ascontiguousarray(g_bias)
    x5 = P.view5(P.contiguous(x, dtype), 2, geo.channels_last)
    with blas_single_threaded():
        if "weight" in needs:
            gw = np.empty((L, geo.C_out, K), dtype)
            ws, n = _scratch(geo, nb, K, dtype, L)
            _conv.lc_backward_weight(x5, gy, gw, launch, geo.channels_last, ws, nb, n)
            Ho, Wo = geo.out_spatial
            kh, kw = geo.kernel
            if geo.channels_last:
                gw = gw.reshape(Ho, Wo, geo.C_out, kh, kw, geo.C_in).transpose(0, 1, 2, 5, 3, 4)
            g_weight = np.ascontiguousarray(gw).reshape(weight.shape)
        if "input" in needs:
            g_input = np.zeros(geo.input_shape, dtype)
            ws, n = _scratch(geo, nb, K, dtype, -(-geo.N // nb))
            _conv.lc_backward_input(gy, _weights(weight, dtype, geo.channels_last),
                                    P.view5(g_input, 2, geo.channels_last), launch,
                                    geo.channels_last, ws, nb, n)
    return ConvGrads(g_input, g_weight, g_bias)
