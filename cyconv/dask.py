"""cyconv on Dask: convolution, pooling, filtering and inference on arrays
larger than memory or than one machine (``pip install cyconv[dask]``).

Every function takes and returns lazy ``dask.array`` arrays and gives the
same result as the in-memory op, whatever the chunking.  Each output block
is computed by the in-memory op from the slice of input it needs: its own
region widened by the halo that the kernel size, dilation, stride and
padding imply (``(k - 1) * dilation`` on the trailing side of a stride-sized
step), with the global padding applied only where the block touches the
border.  Chunks smaller than the halo, uneven chunks and strides that do not
divide the chunk size are all exact: no rechunking is silently assumed.
Weights, biases and models are sent to the workers once, as one shared task.

Threads: each task runs cyconv with ``threads_per_task`` OpenMP threads.  By
default (:func:`default_threads_per_task`) that is cyconv's own thread count
divided by the tasks the scheduler runs at once: 1 under the threaded
scheduler (one task per CPU) and on a ``dask.distributed`` worker whose
nanny set ``OMP_NUM_THREADS=1`` (distributed's default), so cyconv's threads
times Dask's do not oversubscribe the cores.  Pass ``threads_per_task`` (or
set ``CYCONV_DASK_THREADS``) to override, for example to run one big task
per machine with all its cores.
"""
import itertools
import os
from types import SimpleNamespace

import dask
import dask.array as da
import numpy as np

import cyconv
from cyconv import _params as P

__all__ = ["conv1d", "conv2d", "conv3d", "max_pool1d", "max_pool2d", "max_pool3d",
           "avg_pool1d", "avg_pool2d", "avg_pool3d", "lp_pool1d", "lp_pool2d", "lp_pool3d",
           "convolve2d", "correlate2d", "predict", "default_threads_per_task"]

_NP_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def default_threads_per_task():
    """OpenMP threads for one task, so that cyconv's threads times the tasks
    running at once stay within the cores.

    ``CYCONV_DASK_THREADS`` if set.  On a ``dask.distributed`` worker:
    cyconv's default (which follows ``OMP_NUM_THREADS``, set to 1 by
    distributed's nannies) divided by the worker's threads.  Under the
    threaded scheduler: cyconv's default divided by its worker threads
    (``num_workers``, by default one per CPU), so 1.
    """
    env = os.environ.get("CYCONV_DASK_THREADS", "").strip()
    if env:
        return max(1, int(env))
    base = cyconv.get_num_threads()
    try:
        from distributed import get_worker

        return max(1, base // get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    return max(1, base // (dask.config.get("num_workers", None) or cpus))


def _run(threads, fn, *args, **kwargs):
    with cyconv.num_threads(threads or default_threads_per_task()):
        return fn(*args, **kwargs)


def _shape_only(x):
    return SimpleNamespace(shape=tuple(int(v) for v in x.shape), ndim=x.ndim)


# --------------------------------------------------------------------------
# The block plan shared by every op
# --------------------------------------------------------------------------

def _out_blocks(in_chunks, out, stride, before):
    """Output block boundaries along one dim, from the input's chunk
    boundaries: an output belongs to the block holding its window's first tap."""
    bounds = np.cumsum((0,) + tuple(in_chunks))[:-1]
    starts = sorted({min(out, max(0, -(-(int(b) + before) // stride))) for b in bounds}
                    | {0})
    starts = [s for s in starts if s < out]
    return list(zip(starts, starts[1:] + [out]))


def _input_window(o0, o1, n, k, s, d, before, after):
    """Input slice [a, b) and local (before, after) padding for outputs
    [o0, o1): the block's taps [start, end), clipped to the padded input.
    Windows may lie wholly in the end padding (convolution allows that), in
    which case the slice is empty and only padding remains."""
    start = o0 * s - before
    end = (o1 - 1) * s - before + d * (k - 1) + 1
    a = min(max(start, 0), n)
    b = max(min(end, n), a)
    return a, b, (max(a - start, 0), min(end, n + after) - max(b, start))


def _blocked(x, spatial_axes, windows, out_sizes, block_fn, out_shape_fn, dtype, args,
             keep_axes_chunked=()):
    """Assemble a lazy result from ``block_fn(slice, local_pads, *args)``.

    ``windows[i] = (k, s, d, before, after)`` for spatial axis i; axes in
    ``keep_axes_chunked`` keep the input's chunks (batch, or channels for
    pooling), every other non-spatial axis must be a single chunk.
    """
    spatial_axes = list(spatial_axes)
    rechunk = {a: -1 for a in range(x.ndim)
               if a not in spatial_axes and a not in keep_axes_chunked}
    if rechunk:
        x = x.rechunk(rechunk)
    per_axis = []
    for axis in range(x.ndim):
        if axis in spatial_axes:
            i = spatial_axes.index(axis)
            k, s, d, before, after = windows[i]
            per_axis.append([("s", i, o0, o1) for o0, o1 in
                             _out_blocks(x.chunks[axis], out_sizes[i], s, before)])
        else:
            bounds = np.cumsum((0,) + x.chunks[axis])
            per_axis.append([("o", axis, int(a), int(b)) for a, b in
                             zip(bounds[:-1], bounds[1:])])
    blocks = np.empty([len(p) for p in per_axis], dtype=object)
    for index in itertools.product(*[range(len(p)) for p in per_axis]):
        slices, pads, out_spatial, other = [], [], [], []
        for axis, j in enumerate(index):
            kind, i, a, b = per_axis[axis][j]
            if kind == "s":
                k, s, d, before, after = windows[i]
                lo, hi, pad = _input_window(a, b, x.shape[axis], k, s, d, before, after)
                slices.append(slice(lo, hi))
                pads.append(pad)
                out_spatial.append(b - a)
            else:
                slices.append(slice(a, b))
                other.append(b - a)
        shape = out_shape_fn(x.shape, tuple(slices), tuple(out_spatial))
        task = dask.delayed(block_fn, pure=True)(x[tuple(slices)], tuple(pads), *args)
        blocks[index] = da.from_delayed(task, shape=shape, dtype=dtype)
    return da.block(blocks.tolist())


def _as_dask(x):
    if isinstance(x, da.Array):
        return x
    return da.from_array(np.asarray(x), chunks="auto")


# --------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------

def _conv_block(block, pads, weight, bias, nd, stride, dilation, groups, channels_last,
                threads):
    fn = getattr(cyconv, f"conv{nd}d")
    return _run(threads, fn, block, weight, bias, stride, pads, dilation, groups,
                channels_last=channels_last)


def _conv(nd, x, weight, bias, stride, padding, dilation, groups, padding_mode,
          channels_last, strict, threads_per_task):
    op = f"cyconv.dask.conv{nd}d"
    x = _as_dask(x)
    weight = np.asarray(weight)
    bias = None if bias is None else np.asarray(bias)
    dtype = P.compute_dtype(op, input=np.empty(0, x.dtype), weight=weight, bias=bias)
    geo = P.conv_geometry(op, nd, _shape_only(x), weight, bias, stride, padding, dilation,
                          groups, padding_mode=padding_mode, channels_last=channels_last,
                          strict=strict)
    spatial_axes = list(range(1, nd + 1)) if channels_last else list(range(2, nd + 2))
    pads = geo.pads
    if padding_mode != "zeros":  # materialise reflect/replicate/circular lazily
        width = [(0, 0)] * x.ndim
        for axis, pair in zip(spatial_axes, pads):
            width[axis] = pair
        x = da.pad(x, width, mode=_NP_PAD_MODE[padding_mode])
        pads = ((0, 0),) * nd
    windows = [(k, s, d, b, a) for k, s, d, (b, a) in
               zip(geo.kernel, geo.stride, geo.dilation, pads)]

    def out_shape(shape, slices, out_spatial):
        n = slices[0].stop - slices[0].start
        return (n, *out_spatial, geo.C_out) if channels_last else (n, geo.C_out, *out_spatial)

    w = dask.delayed(np.ascontiguousarray(weight, dtype), pure=True)
    b = None if bias is None else dask.delayed(np.ascontiguousarray(bias, dtype), pure=True)
    return _blocked(x.astype(dtype), spatial_axes, windows, geo.out_spatial, _conv_block,
                    out_shape, dtype, (w, b, nd, geo.stride, geo.dilation, geo.groups,
                                       channels_last, threads_per_task),
                    keep_axes_chunked=(0,))


def _make_conv(nd):
    def conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
             padding_mode="zeros", channels_last=False, strict=False,
             threads_per_task=None):
        return _conv(nd, x, weight, bias, stride, padding, dilation, groups, padding_mode,
                     channels_last, strict, threads_per_task)

    conv.__name__ = conv.__qualname__ = f"conv{nd}d"
    conv.__doc__ = f"""Lazy :func:`cyconv.conv{nd}d` of a dask array.

    Same arguments and result as the in-memory op, for input chunked along
    the batch and/or the spatial axes (channels are gathered into one chunk).
    ``threads_per_task``: OpenMP threads per block (see the module docstring).

    Examples
    --------
    >>> import dask.array as da, numpy as np, cyconv.dask as cd
    >>> x = da.ones((4, 2) + (16,) * {nd}, chunks=(2, 2) + (5,) * {nd})
    >>> cd.conv{nd}d(x, np.ones((3, 2) + (3,) * {nd}), padding=1).shape[:2]
    (4, 3)
    """
    conv.__module__ = __name__
    return conv


conv1d, conv2d, conv3d = (_make_conv(nd) for nd in (1, 2, 3))


# --------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------

def _pool_block(block, pads, kind, nd, kernel, stride, dilation, ceil_mode, extra,
                channels_last, threads):
    if kind == "lp":
        return _run(threads, getattr(cyconv, f"lp_pool{nd}d"), block, extra[0], kernel,
                    stride, pads, dilation, ceil_mode, channels_last=channels_last)
    fn = getattr(cyconv, f"{kind}_pool{nd}d")
    return _run(threads, fn, block, kernel, stride, pads, dilation, ceil_mode, *extra,
                channels_last=channels_last)


def _pool(kind, nd, x, kernel_size, stride, padding, dilation, ceil_mode, extra,
          channels_last, threads_per_task):
    op = f"cyconv.dask.{kind}_pool{nd}d"
    x = _as_dask(x)
    dtype = P.compute_dtype(op, input=np.empty(0, x.dtype))
    geo = P.pool_geometry(op, nd, _shape_only(x), kernel_size, stride, padding, dilation,
                          ceil_mode, channels_last=channels_last)
    kernel = P.int_tuple(op, "kernel_size", kernel_size, nd, 1)
    stride = P.pool_stride(op, stride, kernel)
    dilation = P.int_tuple(op, "dilation", dilation, nd, 1)
    pads = P.padding_pairs(op, padding, nd, geo.spatial, kernel, stride, dilation)
    spatial_axes = list(range(1, nd + 1)) if channels_last else list(range(2, nd + 2))
    windows = [(k, s, d, b, a) for k, s, d, (b, a) in zip(kernel, stride, dilation, pads)]

    def out_shape(shape, slices, out_spatial):
        n = slices[0].stop - slices[0].start
        c = slices[-1] if channels_last else slices[1]
        c = c.stop - c.start
        return (n, *out_spatial, c) if channels_last else (n, c, *out_spatial)

    c_axis = x.ndim - 1 if channels_last else 1
    return _blocked(x.astype(dtype), spatial_axes, windows, geo.out_spatial, _pool_block,
                    out_shape, dtype, (kind, nd, kernel, stride, dilation, bool(ceil_mode),
                                       extra, channels_last, threads_per_task),
                    keep_axes_chunked=(0, c_axis))


def _make_pools(nd):
    def max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
                 channels_last=False, threads_per_task=None):
        return _pool("max", nd, x, kernel_size, stride, padding, dilation, ceil_mode, (),
                     channels_last, threads_per_task)

    def avg_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                 count_include_pad=True, divisor_override=None, *, channels_last=False,
                 threads_per_task=None):
        return _pool("avg", nd, x, kernel_size, stride, padding, dilation, ceil_mode,
                     (count_include_pad, divisor_override), channels_last, threads_per_task)

    def lp_pool(x, norm_type, kernel_size, stride=None, padding=0, dilation=1,
                ceil_mode=False, *, channels_last=False, threads_per_task=None):
        return _pool("lp", nd, x, kernel_size, stride, padding, dilation, ceil_mode,
                     (norm_type,), channels_last, threads_per_task)

    out = {}
    for name, fn in ((f"max_pool{nd}d", max_pool), (f"avg_pool{nd}d", avg_pool),
                     (f"lp_pool{nd}d", lp_pool)):
        fn.__name__ = fn.__qualname__ = name
        fn.__doc__ = (f"Lazy :func:`cyconv.{name}` of a dask array chunked along any "
                      f"axes; same arguments and result (no indices).")
        fn.__module__ = __name__
        out[name] = fn
    return out


for _nd in (1, 2, 3):
    globals().update(_make_pools(_nd))
del _nd


# --------------------------------------------------------------------------
# SciPy-compatible filtering
# --------------------------------------------------------------------------

_BOUNDARY = {"fill": "fill", "pad": "fill", "wrap": "wrap", "circular": "wrap",
             "symm": "symm", "symmetric": "symm"}


def _filter_block(block, pads, kernel, threads):
    # ``block`` is already padded by the boundary rule: a valid correlation
    return _run(threads, cyconv.signal.correlate2d, block, kernel, "valid")


def _filter(op, in1, in2, mode, boundary, fillvalue, flip, threads_per_task):
    x = _as_dask(in1)
    k = np.asarray(in2)
    if k.ndim != 2 or x.ndim < 2:
        raise ValueError(f"{op}: in1 must be (..., H, W) and in2 2-D, got {x.shape} and "
                         f"{k.shape}")
    P.check_choice(op, "mode", mode, ("full", "same", "valid"))
    if boundary not in _BOUNDARY:
        raise ValueError(f"{op}: boundary must be one of {', '.join(map(repr, _BOUNDARY))},"
                         f" got {boundary!r}")
    boundary = _BOUNDARY[boundary]
    image = x.shape[-2:]
    if mode == "valid" and not all(i >= m for i, m in zip(image, k.shape)):
        raise ValueError(f"{op}: for 'valid' mode the images {image} must be at least as "
                         f"large as the kernel {k.shape} (SciPy's swap is not supported "
                         f"on dask arrays)")
    # the output dtype: an integer one is computed exactly block by block
    dtype = cyconv.signal._dtypes(op, np.empty(0, x.dtype), k)[0]
    fill = cyconv.signal._fill(op, fillvalue, dtype) if boundary == "fill" else None
    kernel = np.ascontiguousarray(k[::-1, ::-1] if flip else k, dtype)
    pads = cyconv.signal._mode_pads(kernel.shape, mode, flip)
    x = x.astype(dtype)
    if any(p for pair in pads for p in pair):
        width = [(0, 0)] * (x.ndim - 2) + pads
        x = (da.pad(x, width, mode="constant", constant_values=fill[()])
             if boundary == "fill" else
             da.pad(x, width, mode="wrap" if boundary == "wrap" else "symmetric"))
    out = tuple(n - m + 1 for n, m in zip(x.shape[-2:], kernel.shape))
    windows = [(m, 1, 1, 0, 0) for m in kernel.shape]

    def out_shape(shape, slices, out_spatial):
        return tuple(s.stop - s.start for s in slices[:-2]) + tuple(out_spatial)

    spatial = [x.ndim - 2, x.ndim - 1]
    return _blocked(x, spatial, windows, out, _filter_block, out_shape, dtype,
                    (dask.delayed(kernel, pure=True), threads_per_task),
                    keep_axes_chunked=tuple(range(x.ndim - 2)))


def convolve2d(in1, in2, mode="full", boundary="fill", fillvalue=0, *,
               threads_per_task=None):
    """Lazy :func:`cyconv.signal.convolve2d` of a large 2-D dask array or a
    batch ``(..., H, W)``; boundaries fill/wrap/symm map onto ``dask.array.pad``
    (constant/wrap/symmetric)."""
    return _filter("cyconv.dask.convolve2d", in1, in2, mode, boundary, fillvalue, True,
                   threads_per_task)


def correlate2d(in1, in2, mode="full", boundary="fill", fillvalue=0, *,
                threads_per_task=None):
    """Lazy :func:`cyconv.signal.correlate2d`; see :func:`convolve2d`."""
    return _filter("cyconv.dask.correlate2d", in1, in2, mode, boundary, fillvalue, False,
                   threads_per_task)


# --------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------

def _predict_block(block, model, threads):
    return _run(threads, lambda b: model.eval()(b), block)


def predict(model, x, *, threads_per_task=None):
    """Apply a ``cyconv.nn`` model (in eval mode) to a dask array of inputs,
    batch chunk by batch chunk; the model is sent to the workers once.

    Examples
    --------
    >>> import dask.array as da, numpy as np, cyconv.dask as cd
    >>> from cyconv import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> cd.predict(model, da.ones((10, 1, 4, 4), np.float32, chunks=4)).shape
    (10, 3)
    """
    x = _as_dask(x)
    x = x.rechunk({a: -1 for a in range(1, x.ndim)})
    meta = model.eval()(np.zeros((1, *x.shape[1:]), x.dtype))
    m = dask.delayed(model, pure=True)
    blocks = []
    for i, n in enumerate(x.chunks[0]):
        task = dask.delayed(_predict_block, pure=True)(x.blocks[i], m, threads_per_task)
        blocks.append(da.from_delayed(task, shape=(n, *meta.shape[1:]), dtype=meta.dtype))
    return da.concatenate(blocks, axis=0) if blocks else da.zeros((0, *meta.shape[1:]),
                                                                   dtype=meta.dtype)
