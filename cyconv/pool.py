"""Public pooling ops: max, average, Lp, adaptive and global, 1-D to 3-D.

Every op validates its arguments through cyconv._params, computes the
per-dim window tables there, and calls one kernel of cyconv._kernels._pool.
"""
import math
import operator

import numpy as np

from . import _params as P
from . import _workspace
from ._kernels import pool as _pool
from ._threads import kernel_threads

_OP_MAX, _OP_AVG, _OP_LP = 0, 1, 2
_NO_INDEX = np.empty((1, 1, 1, 1, 1), np.int64)

__all__ = [f"{kind}{nd}d" for kind in ("max_pool", "avg_pool", "lp_pool",
                                        "adaptive_avg_pool", "adaptive_max_pool")
           for nd in (1, 2, 3)]
__all__ += [f"{kind}_pool{nd}d_backward" for kind in ("max", "avg", "adaptive_avg")
            for nd in (1, 2, 3)]
__all__ += ["global_avg_pool", "global_max_pool"]


def _input(op, x):
    x = P.as_array(op, "input", x)
    return x, P.compute_dtype(op, input=x)


def _forward(geo, x, dtype, op_code, out=None, want_idx=False, norm=1.0, divisor=0.0,
             divc=None):
    """Run the forward kernel; returns (values, indices or None)."""
    y = out if out is not None else np.empty(geo.output_shape, dtype)
    idx = np.empty(geo.output_shape, np.int64) if want_idx else None
    if y.size:
        x = P.contiguous(x, dtype)
        # blocks of samples: Ctrl-C is seen between blocks (_workspace.sample_blocks);
        # the work of a sample is its window taps (the tables' counts summed per
        # dim, multiplied across dims) plus the elements it reads
        taps = geo.C * int(np.prod(geo.count.sum(axis=1)))
        per_sample = taps + x.size // max(1, x.shape[0])
        n = kernel_threads()
        # a row of the input per thread: windows of several rows folded into one
        ws = _workspace.scratch("pool", (n, 1 if geo.channels_last else x.shape[-1]), dtype)
        for n0, n1 in _workspace.sample_blocks(x.shape[0], per_sample):
            _pool.pool_forward(geo.view5(x[n0:n1], geo.spatial),
                               geo.view5(y[n0:n1], geo.out_spatial),
                               geo.view5(idx[n0:n1], geo.out_spatial) if want_idx
                               else _NO_INDEX,
                               geo.first, geo.count, geo.divc if divc is None else divc,
                               geo.step, geo.wrun, op_code, float(norm), float(divisor),
                               want_idx, geo.channels_last, ws, n)
    return y, idx


def _check_bool(op, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}")
    return bool(value)


def _divisor(op, divisor_override):
    if divisor_override is None:
        return 0.0
    if isinstance(divisor_override, (bool, np.bool_)):
        raise TypeError(f"{op}: divisor_override must be None or a non-zero int, "
                        f"got {divisor_override!r}")
    try:
        d = operator.index(divisor_override)
    except TypeError:
        raise TypeError(f"{op}: divisor_override must be None or a non-zero int, got "
                        f"{divisor_override!r}") from None
    if d == 0:
        raise ValueError(f"{op}: divisor_override must be non-zero, got 0")
    return float(d)


# --------------------------------------------------------------------------
# Implementations (nd-generic)
# --------------------------------------------------------------------------

def _max_pool(nd, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
              channels_last, strict, out):
    op = f"max_pool{nd}d"
    x, dtype = _input(op, x)
    geo = P.pool_geometry(op, nd, x, kernel_size, stride, padding, dilation, ceil_mode,
                          channels_last=channels_last, strict=strict)
    want = _check_bool(op, "return_indices", return_indices)
    P.check_out(op, out, geo.output_shape, dtype, {"input": x})
    y, idx = _forward(geo, x, dtype, _OP_MAX, out, want_idx=want)
    return (y, idx) if want else y


def _avg_pool(nd, x, kernel_size, stride, padding, dilation, ceil_mode,
              count_include_pad, divisor_override, channels_last, strict, out):
    op = f"avg_pool{nd}d"
    x, dtype = _input(op, x)
    geo = P.pool_geometry(op, nd, x, kernel_size, stride, padding, dilation, ceil_mode,
                          channels_last=channels_last, strict=strict)
    include = _check_bool(op, "count_include_pad", count_include_pad)
    divisor = _divisor(op, divisor_override)
    P.check_out(op, out, geo.output_shape, dtype, {"input": x})
    y, _ = _forward(geo, x, dtype, _OP_AVG, out, divisor=divisor,
                    divc=geo.divc if include else geo.count)
    return y


def _lp_pool(nd, x, norm_type, kernel_size, stride, padding, dilation, ceil_mode,
             channels_last):
    op = f"lp_pool{nd}d"
    x, dtype = _input(op, x)
    try:
        p = float(norm_type)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: norm_type must be a positive number, got "
                        f"{norm_type!r}") from None
    if not (p > 0 and math.isfinite(p)):
        raise ValueError(f"{op}: norm_type must be positive and finite, got {norm_type!r}")
    geo = P.pool_geometry(op, nd, x, kernel_size, stride, padding, dilation, ceil_mode,
                          channels_last=channels_last)
    y, _ = _forward(geo, x, dtype, _OP_LP, norm=p)
    return y


def _input_shape(op, nd, input_shape):
    try:
        shape = tuple(operator.index(v) for v in input_shape)
    except TypeError:
        raise TypeError(f"{op}: input_shape must be a tuple of ints, got "
                        f"{input_shape!r}") from None
    if len(shape) != nd + 2 or min(shape) < 0:
        raise ValueError(f"{op}: input_shape must be {nd + 2} non-negative ints "
                         f"(the input's shape as passed), got {input_shape!r}")
    return shape


def _max_pool_backward(nd, grad_output, indices, input_shape, channels_last):
    op = f"max_pool{nd}d_backward"
    gy = P.as_array(op, "grad_output", grad_output)
    idx = P.as_array(op, "indices", indices)
    dtype = P.compute_dtype(op, grad_output=gy)
    shape = _input_shape(op, nd, input_shape)
    _check_bool(op, "channels_last", channels_last)
    if idx.shape != gy.shape:
        raise ValueError(f"{op}: indices has shape {idx.shape}, expected the shape of "
                         f"grad_output {gy.shape}")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{op}: indices must have an integer dtype, got {idx.dtype}")
    P.check_ndim(op, "grad_output", gy, nd + 2, P._layout(nd, channels_last))
    nc = (0, -1) if channels_last else (0, 1)
    if (gy.shape[nc[0]], gy.shape[nc[1]]) != (shape[nc[0]], shape[nc[1]]):
        raise ValueError(f"{op}: grad_output has shape {gy.shape}, which does not match "
                         f"the batch and channels of input_shape {shape}")
    spatial = shape[1:-1] if channels_last else shape[2:]
    plane = math.prod(spatial)
    if idx.size and (idx.min() < 0 or idx.max() >= plane):
        raise ValueError(f"{op}: indices must lie in [0, {plane}) (positions within an "
                         f"input plane of {spatial}), got values from {idx.min()} to "
                         f"{idx.max()}")
    gx = np.zeros(shape, dtype)
    out_spatial = gy.shape[1:-1] if channels_last else gy.shape[2:]
    pad = (1,) * (3 - nd)

    def view5(a, sp):
        n, c = shape[nc[0]], shape[nc[1]]
        return a.reshape((n, *pad, *sp, c) if channels_last else (n, c, *pad, *sp))

    if gx.size and gy.size:
        _pool.max_pool_backward(view5(P.contiguous(gy, dtype), out_spatial),
                                view5(np.ascontiguousarray(idx, np.int64), out_spatial),
                                view5(gx, spatial), bool(channels_last), kernel_threads())
    return gx


def _avg_pool_backward(nd, grad_output, input_shape, kernel_size, stride, padding,
                       dilation, ceil_mode, count_include_pad, divisor_override,
                       channels_last):
    op = f"avg_pool{nd}d_backward"
    gy = P.as_array(op, "grad_output", grad_output)
    dtype = P.compute_dtype(op, grad_output=gy)
    shape = _input_shape(op, nd, input_shape)
    geo = P.pool_geometry(op, nd, shape, kernel_size, stride, padding, dilation,
                          ceil_mode, channels_last=channels_last)
    include = _check_bool(op, "count_include_pad", count_include_pad)
    divisor = _divisor(op, divisor_override)
    if gy.shape != geo.output_shape:
        raise ValueError(f"{op}: grad_output has shape {gy.shape}, expected "
                         f"{geo.output_shape} (the shape of avg_pool{nd}d's output)")
    gx = np.zeros(shape, dtype)
    if gx.size and gy.size:
        _pool.avg_pool_backward(geo.view5(P.contiguous(gy, dtype), geo.out_spatial),
                                geo.view5(gx, geo.spatial), geo.first, geo.count,
                                geo.divc if include else geo.count, geo.step, divisor,
                                geo.channels_last, kernel_threads())
    return gx


def _adaptive_avg_backward(nd, grad_output, input_shape, channels_last):
    op = f"adaptive_avg_pool{nd}d_backward"
    gy = P.as_array(op, "grad_output", grad_output)
    dtype = P.compute_dtype(op, grad_output=gy)
    shape = _input_shape(op, nd, input_shape)
    shaped = P.SimpleNamespace(shape=shape, ndim=len(shape))
    P.check_ndim(op, "grad_output", gy, nd + 2, P._layout(nd, channels_last))
    out = gy.shape[1:-1] if channels_last else gy.shape[2:]
    geo = P.adaptive_geometry(op, nd, shaped, out, channels_last=channels_last)
    if gy.shape != geo.output_shape:
        raise ValueError(f"{op}: grad_output has shape {gy.shape}, which does not match "
                         f"the batch and channels of input_shape {shape}")
    gx = np.zeros(shape, dtype)
    if gx.size and gy.size:
        _pool.avg_pool_backward(geo.view5(P.contiguous(gy, dtype), geo.out_spatial),
                                geo.view5(gx, geo.spatial), geo.first, geo.count,
                                geo.count, geo.step, 0.0, geo.channels_last,
                                kernel_threads())
    return gx


def _adaptive(nd, x, output_size, op_code, return_indices, channels_last, name):
    op = name or f"adaptive_{'max' if op_code == _OP_MAX else 'avg'}_pool{nd}d"
    x, dtype = _input(op, x)
    geo = P.adaptive_geometry(op, nd, x, output_size, channels_last=channels_last)
    want = _check_bool(op, "return_indices", return_indices)
    y, idx = _forward(geo, x, dtype, op_code, want_idx=want, divc=geo.count)
    return (y, idx) if want else y


def _global(op, x, op_code, channels_last):
    x = P.as_array(op, "input", x)
    nd = x.ndim - 2
    if nd not in (1, 2, 3):
        raise ValueError(f"{op}: input must have 3 to 5 dimensions (N, C, *spatial) "
                         f"with 1 to 3 spatial dims, got shape {x.shape}")
    return _adaptive(nd, x, (1,) * nd, op_code, False, channels_last, op)


# --------------------------------------------------------------------------
# Public functions, one per dimensionality
# --------------------------------------------------------------------------

def _named(fn, name, doc):
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    fn.__module__ = __name__
    return fn


_LAYOUT = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}
_LAST = {1: "(N, L, C)", 2: "(N, H, W, C)", 3: "(N, D, H, W, C)"}
_EXAMPLE_SHAPE = {1: "(1, 2, 8)", 2: "(1, 2, 8, 8)", 3: "(1, 2, 8, 8, 8)"}
_EXAMPLE_OUT = {1: "(1, 2, 4)", 2: "(1, 2, 4, 4)", 3: "(1, 2, 4, 4, 4)"}

_WINDOW_DOC = """
    kernel_size : int or tuple of {nd} ints
        A tuple of one int counts as that int (in every argument, as in PyTorch).
    stride : int or tuple, optional
        Defaults to ``kernel_size`` (for None, or an empty tuple as in PyTorch).
    padding : int, tuple, tuple of (before, after) pairs, "valid" or "same"
        Padding may exceed half the window (as ONNX allows) as long as every
        window touches the input; otherwise ValueError.
    dilation : int or tuple of {nd} ints
    ceil_mode : bool
        Round the output size up; as in PyTorch a last window that would start
        in the end padding is dropped.
"""


def _max_doc(nd):
    return f"""{nd}-D max pooling.

    Parameters
    ----------
    x : array_like, {_LAYOUT[nd]}, or {_LAST[nd]} with channels_last
    {_WINDOW_DOC.format(nd=nd).strip()}
    return_indices : bool
        Also return int64 indices of the maxima: flat positions within each
        (n, c) input plane, laid out like the output (PyTorch's convention).
    channels_last, strict, out
        As for :func:`cyconv.conv2d`.

    Padding counts as -inf; NaN propagates; ties pick the first position.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cyconv.max_pool{nd}d(np.ones({_EXAMPLE_SHAPE[nd]}), 2).shape
    {_EXAMPLE_OUT[nd]}
    """


def _avg_doc(nd):
    return f"""{nd}-D average pooling (sum pooling with ``divisor_override=1``).

    Parameters
    ----------
    x : array_like, {_LAYOUT[nd]}, or {_LAST[nd]} with channels_last
    {_WINDOW_DOC.format(nd=nd).strip()}
    count_include_pad : bool
        Divide by the window taps inside input + padding (True) or inside the
        input only (False).  With ceil_mode, taps beyond the padded input
        never count.
    divisor_override : int, optional
        Divide every window sum by this instead.
    channels_last, strict, out
        As for :func:`cyconv.conv2d`.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cyconv.avg_pool{nd}d(np.ones({_EXAMPLE_SHAPE[nd]}), 2).shape
    {_EXAMPLE_OUT[nd]}
    """


def _make(nd):
    def max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                 return_indices=False, *, channels_last=False, strict=False, out=None):
        return _max_pool(nd, x, kernel_size, stride, padding, dilation, ceil_mode,
                         return_indices, channels_last, strict, out)

    def avg_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                 count_include_pad=True, divisor_override=None, *, channels_last=False,
                 strict=False, out=None):
        return _avg_pool(nd, x, kernel_size, stride, padding, dilation, ceil_mode,
                         count_include_pad, divisor_override, channels_last, strict, out)

    def lp_pool(x, norm_type, kernel_size, stride=None, padding=0, dilation=1,
                ceil_mode=False, *, channels_last=False):
        return _lp_pool(nd, x, norm_type, kernel_size, stride, padding, dilation,
                        ceil_mode, channels_last)

    def max_pool_backward(grad_output, indices, input_shape, *, channels_last=False):
        return _max_pool_backward(nd, grad_output, indices, input_shape, channels_last)

    def avg_pool_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                          dilation=1, ceil_mode=False, count_include_pad=True,
                          divisor_override=None, *, channels_last=False):
        return _avg_pool_backward(nd, grad_output, input_shape, kernel_size, stride,
                                  padding, dilation, ceil_mode, count_include_pad,
                                  divisor_override, channels_last)

    def adaptive_avg_pool(x, output_size, *, channels_last=False):
        return _adaptive(nd, x, output_size, _OP_AVG, False, channels_last, None)

    def adaptive_max_pool(x, output_size, return_indices=False, *, channels_last=False):
        return _adaptive(nd, x, output_size, _OP_MAX, return_indices, channels_last, None)

    def adaptive_avg_pool_backward(grad_output, input_shape, *, channels_last=False):
        return _adaptive_avg_backward(nd, grad_output, input_shape, channels_last)

    lay = f"{_LAYOUT[nd]} (or {_LAST[nd]} with channels_last)"
    return {
        f"max_pool{nd}d": _named(max_pool, f"max_pool{nd}d", _max_doc(nd)),
        f"avg_pool{nd}d": _named(avg_pool, f"avg_pool{nd}d", _avg_doc(nd)),
        f"lp_pool{nd}d": _named(lp_pool, f"lp_pool{nd}d", f"""{nd}-D power-average pooling.

    ``(sum over the window of x ** norm_type) ** (1 / norm_type)`` (PyTorch's
    definition: no absolute value, so odd powers of negative inputs can give
    NaN).  Padding taps contribute nothing, and a window cut short by
    ``ceil_mode`` sums only its taps inside the input (PyTorch's
    implementation, ``avg_pool * prod(kernel_size)``, scales such a window up
    as if it were whole).  Input {lay}; other arguments as for
    :func:`max_pool{nd}d`.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cyconv.lp_pool{nd}d(np.ones({_EXAMPLE_SHAPE[nd]}), 2, 2).shape
    {_EXAMPLE_OUT[nd]}
    """),
        f"max_pool{nd}d_backward": _named(max_pool_backward, f"max_pool{nd}d_backward",
                                          f"""Gradient of :func:`max_pool{nd}d`.

    Parameters
    ----------
    grad_output : array_like, the shape of the pooled output
    indices : array_like of ints, as returned with ``return_indices=True``
    input_shape : tuple of ints, the input's shape as passed (in its layout)

    Returns
    -------
    ndarray of ``input_shape``: each output's gradient added at its index.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> x = np.ones({_EXAMPLE_SHAPE[nd]})
    >>> y, i = cyconv.max_pool{nd}d(x, 2, return_indices=True)
    >>> cyconv.max_pool{nd}d_backward(np.ones_like(y), i, x.shape).shape == x.shape
    True
    """),
        f"avg_pool{nd}d_backward": _named(avg_pool_backward, f"avg_pool{nd}d_backward",
                                          f"""Gradient of :func:`avg_pool{nd}d`.

    ``grad_output`` has the pooled output's shape; ``input_shape`` is the
    input's shape as passed; the other arguments are those given to
    :func:`avg_pool{nd}d`.  Each output's gradient, divided by its divisor,
    goes to every input tap of its window.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> g = cyconv.avg_pool{nd}d_backward(np.ones({_EXAMPLE_OUT[nd]}), {_EXAMPLE_SHAPE[nd]}, 2)
    >>> float(g.max())
    {1 / 2 ** nd}
    """),
        f"adaptive_avg_pool{nd}d": _named(adaptive_avg_pool, f"adaptive_avg_pool{nd}d",
                                          f"""{nd}-D adaptive average pooling.

    Output window ``o`` of a dim of size ``n`` covers
    ``[floor(o * n / out), ceil((o + 1) * n / out))``, as in PyTorch.
    ``output_size`` is an int or a tuple of {nd} ints (None keeps that dim).
    Input {lay}.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cyconv.adaptive_avg_pool{nd}d(np.ones({_EXAMPLE_SHAPE[nd]}), 4).shape
    {_EXAMPLE_OUT[nd]}
    """),
        f"adaptive_avg_pool{nd}d_backward": _named(
            adaptive_avg_pool_backward, f"adaptive_avg_pool{nd}d_backward",
            f"""Gradient of :func:`adaptive_avg_pool{nd}d`.

    ``grad_output`` has the pooled shape (which fixes ``output_size``);
    ``input_shape`` is the input's shape as passed.  Each output's gradient,
    divided by its window's size, goes to every element of the window.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> g = cyconv.adaptive_avg_pool{nd}d_backward(np.ones({_EXAMPLE_OUT[nd]}), {_EXAMPLE_SHAPE[nd]})
    >>> float(g.max())
    {1 / 2 ** nd}
    """),
        f"adaptive_max_pool{nd}d": _named(adaptive_max_pool, f"adaptive_max_pool{nd}d",
                                          f"""{nd}-D adaptive max pooling.

    Windows as for :func:`adaptive_avg_pool{nd}d`; ``return_indices`` as for
    :func:`max_pool{nd}d` (usable with :func:`max_pool{nd}d_backward`).

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cyconv.adaptive_max_pool{nd}d(np.ones({_EXAMPLE_SHAPE[nd]}), 4).shape
    {_EXAMPLE_OUT[nd]}
    """),
    }


for _nd in (1, 2, 3):
    globals().update(_make(_nd))
del _nd


def global_avg_pool(x, *, channels_last=False):
    """Mean over all spatial dims: (N, C, *spatial) -> (N, C, 1, ..., 1).

    Works for 1 to 3 spatial dims; with channels_last, (N, *spatial, C) ->
    (N, 1, ..., 1, C).

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cyconv.global_avg_pool(np.ones((2, 3, 5, 5))).shape
    (2, 3, 1, 1)
    """
    return _global("global_avg_pool", x, _OP_AVG, channels_last)


def global_max_pool(x, *, channels_last=False):
    """Maximum over all spatial dims: (N, C, *spatial) -> (N, C, 1, ..., 1).

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cyconv.global_max_pool(np.ones((2, 3, 5, 5))).shape
    (2, 3, 1, 1)
    """
    return _global("global_max_pool", x, _OP_MAX, channels_last)
