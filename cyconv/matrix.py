"""The convolution as a sparse fully connected layer."""
from types import SimpleNamespace

import numpy as np
import scipy.sparse

from . import _params as P

__all__ = ["conv2d_matrix"]


def conv2d_matrix(weight, input_shape, stride=1, padding=0, dilation=1, groups=1):
    """The sparse matrix ``M`` of a 2-D convolution (zero padding, no bias).

    ``M @ x[n].ravel() == conv2d(x, weight, ...)[n].ravel()`` for an input of
    shape ``input_shape = (C, H, W)`` (channels first): the convolution as a
    fully connected layer whose rows share weights and are mostly zero.

    Parameters
    ----------
    weight : array_like, (C_out, C_in // groups, kH, kW)
    input_shape : (C, H, W)
    stride, padding, dilation, groups
        As for :func:`cyconv.conv2d`.

    Returns
    -------
    scipy.sparse.csr_matrix, (C_out * H_out * W_out, C * H * W)
        Row ``(k * H_out + p) * W_out + q`` holds the weights of output neuron
        ``(k, p, q)``: ``C_in // groups * kH * kW`` non-zeros (structural:
        stored even when a weight is 0), minus the taps that fall in the
        padding.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> w = np.ones((2, 1, 3, 3)); x = np.arange(25.).reshape(1, 1, 5, 5)
    >>> M = cyconv.conv2d_matrix(w, (1, 5, 5), padding=1)
    >>> np.allclose(M @ x[0].ravel(), cyconv.conv2d(x, w, padding=1)[0].ravel())
    True
    """
    op = "conv2d_matrix"
    weight = P.as_array(op, "weight", weight)
    dtype = P.compute_dtype(op, weight=weight)
    try:
        C, H, W = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: input_shape must be (C, H, W), got {input_shape!r}") \
            from None
    x = SimpleNamespace(shape=(1, C, H, W), ndim=4)
    geo = P.conv_geometry(op, 2, x, weight, None, stride, padding, dilation, groups)
    K, Cg, kh, kw = weight.shape
    Ho, Wo = geo.out_spatial
    (sh, sw), (dh, dw), ((ph, _), (pw, _)) = geo.stride, geo.dilation, geo.pads
    # one axis per index: output channel, out row, out col, in channel, tap row, tap col
    k = np.arange(K).reshape(-1, 1, 1, 1, 1, 1)
    oh = np.arange(Ho).reshape(1, -1, 1, 1, 1, 1)
    ow = np.arange(Wo).reshape(1, 1, -1, 1, 1, 1)
    c = np.arange(Cg).reshape(1, 1, 1, -1, 1, 1)
    i = np.arange(kh).reshape(1, 1, 1, 1, -1, 1)
    j = np.arange(kw).reshape(1, 1, 1, 1, 1, -1)
    ih = oh * sh - ph + i * dh
    iw = ow * sw - pw + j * dw
    full = (K, Ho, Wo, Cg, kh, kw)
    valid = np.broadcast_to((ih >= 0) & (ih < H) & (iw >= 0) & (iw < W), full)
    rows = np.broadcast_to((k * Ho + oh) * Wo + ow, full)[valid]
    cols = np.broadcast_to(((k // (K // groups) * Cg + c) * H + ih) * W + iw, full)[valid]
    data = np.broadcast_to(P.contiguous(weight, dtype)[k, c, i, j], full)[valid]
    M = scipy.sparse.csr_matrix((data, (rows, cols)), shape=(K * Ho * Wo, C * H * W))
    M.sort_indices()
    return M
