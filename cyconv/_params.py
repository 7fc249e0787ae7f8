"""Hyperparameter normalisation, output-size arithmetic and argument errors.

Everything the public ops need to know about their arguments is computed
here, once; no other module re-derives an output size.  Every ValueError and
TypeError about an argument is raised from this module.
"""
import operator
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

_DIM_NAMES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def dim_names(nd):
    return _DIM_NAMES[nd]


# --------------------------------------------------------------------------
# Scalars and tuples
# --------------------------------------------------------------------------

def _as_int(op, name, value, shown):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be an int or a tuple of ints, "
                        f"got {shown!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int or a tuple of ints, got "
                        f"{shown!r} of type {type(value).__name__}") from None


def int_tuple(op, name, value, nd, minimum, *, one_for_all=True):
    """An int or a tuple of ``nd`` ints, each >= minimum, as a tuple.  A tuple
    of one int counts as that int, as PyTorch takes its hyperparameters
    (``one_for_all=False`` for a size, where it does not)."""
    if isinstance(value, (tuple, list)):
        if len(value) != nd and not (one_for_all and len(value) == 1):
            raise ValueError(f"{op}: {name} must be an int or a tuple of {nd} ints, "
                             f"got {tuple(value)!r} ({len(value)} values)")
        vals = tuple(_as_int(op, name, v, value) for v in value) * (nd // len(value))
    else:
        vals = (_as_int(op, name, value, value),) * nd
    for v in vals:
        if v < minimum:
            word = "positive" if minimum == 1 else f">= {minimum}"
            raise ValueError(f"{op}: {name} must be {word}, got {value!r}")
    return vals


def positive_int(op, name, value):
    return int_tuple(op, name, value, 1, 1)[0]


def check_choice(op, name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{op}: {name} must be one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")
    return value


# --------------------------------------------------------------------------
# Padding and output size
# --------------------------------------------------------------------------

def same_padding(size, kernel, stride, dilation):
    """TensorFlow SAME / ONNX SAME_UPPER: output ceil(size / stride),
    total padding split with the odd unit after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return (total // 2, total - total // 2)


def padding_pairs(op, padding, nd, spatial, kernel, stride, dilation):
    """Normalise ``padding`` to a tuple of ``nd`` (before, after) pairs."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            return tuple(same_padding(n, k, s, d)
                         for n, k, s, d in zip(spatial, kernel, stride, dilation))
        raise ValueError(f"{op}: padding must be an int, a tuple of {nd} ints or "
                         f"(before, after) pairs, 'valid' or 'same', got {padding!r}")
    if isinstance(padding, (tuple, list)):
        if len(padding) == 1 and nd > 1 and not isinstance(padding[0], (tuple, list)):
            padding = tuple(padding) * nd      # one int for every dim, as in PyTorch
        if len(padding) != nd:
            raise ValueError(f"{op}: padding must be an int, a tuple of {nd} ints or "
                             f"of {nd} (before, after) pairs, 'valid' or 'same', "
                             f"got {tuple(padding)!r} ({len(padding)} values)")
        pairs = []
        for p in padding:
            if isinstance(p, (tuple, list)):
                if len(p) != 2:
                    raise ValueError(f"{op}: each padding pair must be (before, after), "
                                     f"got {tuple(p)!r} in padding={padding!r}")
                pairs.append(tuple(_as_int(op, "padding", v, padding) for v in p))
            else:
                v = _as_int(op, "padding", p, padding)
                pairs.append((v, v))
        pairs = tuple(pairs)
    else:
        v = _as_int(op, "padding", padding, padding)
        pairs = ((v, v),) * nd
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
    return pairs


def _format_padding_term(pair):
    before, after = pair
    if before == after:
        return "0" if before == 0 else f"2*{before}"
    return f"{before} + {after}"


def _fitting_paddings(size, eff, stride, pair):
    """Paddings nearest to ``pair`` that make the division exact."""
    before, after = pair
    rem = (size + before + after - eff) % stride
    out = []
    for total in (before + after - rem, before + after + stride - rem):
        if total < 0 or size + total < eff:
            continue
        keep = (before, total - before) if total >= before else None
        balanced = (total // 2, total - total // 2)
        for p in (keep, balanced):
            if p is not None and p not in out:   # keep and balanced may coincide
                out.append(p)
    sym = [p for p in range(0, max(before, after) + 2 * stride + 1)
           if (size + 2 * p - eff) >= 0 and (size + 2 * p - eff) % stride == 0]
    sym.sort(key=lambda p: (abs(2 * p - before - after), p))
    return [f"({b}, {a})" for b, a in out], [str(p) for p in sym[:2]]


def output_size(op, spatial, kernel, stride, dilation, pads, *, strict=False,
                ceil_mode=False, what="input"):
    """Spatial output size; raises when the kernel does not fit or, with
    ``strict``, when ``(in + pads - eff) / stride`` is not an integer."""
    nd = len(spatial)
    names = dim_names(nd)
    out = []
    for i, (n, k, s, d, pair) in enumerate(zip(spatial, kernel, stride, dilation, pads)):
        eff = d * (k - 1) + 1
        padded = n + pair[0] + pair[1]
        if padded < eff:
            dil = f" (dilated to {eff})" if d > 1 else ""
            raise ValueError(
                f"{op}: kernel_size {k}{dil} is larger than the padded {what} "
                f"{names[i]} {padded} ({what} {n} + padding {pair[0]} + {pair[1]}); "
                f"expected a kernel that fits in the padded {what}")
        span = padded - eff
        if strict and span % s:
            rem = span % s
            dil = f", kernel {k} dilated by {d}" if d > 1 else ""
            unit = "row" if names[i] in ("height", "depth") else "column"
            if names[i] == "length":
                unit = "element"
            pairs, symmetric = _fitting_paddings(n, eff, s, pair)
            raise ValueError(
                f"{op}: strict=True and the {names[i]} does not fit: "
                f"(W - F + 2P) / S + 1 = ({n} - {eff} + {_format_padding_term(pair)}) / {s} + 1"
                f" = {span / s + 1:g} is not an integer (W = {what} {names[i]} {n}, "
                f"F = {eff}{dil}, P = padding {pair}, S = stride {s}). "
                f"The last {rem} {unit}{'s' if rem > 1 else ''} of the padded {what} "
                f"would be ignored. Nearest paddings that fit: "
                f"{' or '.join(pairs)} as (before, after)"
                + (f", or {' or '.join(symmetric)} on both sides." if symmetric
                   else "; no equal padding on both sides fits."))
        if ceil_mode:
            o = -(-span // s) + 1
            if (o - 1) * s >= n + pair[0]:  # last window starts in the end padding
                o -= 1
        else:
            o = span // s + 1
        out.append(o)
    return tuple(out)


# --------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------

def as_array(op, name, value):
    if isinstance(value, np.ndarray):
        return value
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - e.g. ragged nested sequences
        raise TypeError(f"{op}: {name} must be array-like, got {type(value).__name__} "
                        f"({exc})") from None
    return arr


def check_ndim(op, name, arr, ndim, layout):
    if arr.ndim != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions {layout}, "
                         f"got shape {arr.shape} ({arr.ndim} dimensions)")


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def compute_dtype(op, **arrays):
    """The dtype an op computes in, from its operands (None entries skipped).

    float32 and float64 are kept; other real dtypes follow np.result_type and
    are computed in float64 (float16 in float32).  Complex, object, string
    and mixed float32/float64 operands raise TypeError.
    """
    d0 = None
    for a in arrays.values():   # fast path: all float32 or all float64 (native)
        if a is not None:
            if d0 is None:
                d0 = a.dtype
                if d0 is not _F32 and d0 is not _F64:
                    break
            elif a.dtype is not d0:
                break
    else:
        if d0 is not None:
            return d0
    named = {k: v for k, v in arrays.items() if v is not None}
    for name, a in named.items():
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{op}: {name} has dtype {a.dtype}; expected a real "
                            f"dtype (float32 and float64 are computed natively)")
    kinds = {name: a.dtype for name, a in named.items()
             if a.dtype in (np.float32, np.float64)}
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{n} is {d}" for n, d in kinds.items())
        raise TypeError(f"{op}: mixed float32 and float64 operands ({listing}); "
                        f"cast them to one dtype")
    dt = np.result_type(*[a.dtype for a in named.values()])
    if dt == np.float16:
        return np.dtype(np.float32)
    if dt in (np.float32, np.float64):
        return dt
    return np.dtype(np.float64)


def contiguous(arr, dtype):
    """C-contiguous array of ``dtype``; a copy only when needed."""
    return np.ascontiguousarray(arr, dtype=dtype)


def check_out(op, out, shape, dtype, inputs):
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise ValueError(f"{op}: out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{op}: out has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise ValueError(f"{op}: out has dtype {out.dtype}, expected {np.dtype(dtype)}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{op}: out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{op}: out is read-only")
    for name, a in inputs.items():
        if a is not None and isinstance(a, np.ndarray) and np.may_share_memory(out, a):
            raise ValueError(f"{op}: out shares memory with {name}; pass a separate array")
    return out


def check_needs(op, needs, allowed=("input", "weight", "bias")):
    if isinstance(needs, str):
        needs = (needs,)
    try:
        needs = tuple(needs)
    except TypeError:
        raise TypeError(f"{op}: needs must be a tuple of names from {allowed}, "
                        f"got {needs!r}") from None
    for n in needs:
        if n not in allowed:
            raise ValueError(f"{op}: needs must name gradients from {allowed}, got {n!r}")
    return frozenset(needs)


# --------------------------------------------------------------------------
# Convolution geometry
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvGeometry:
    """Everything a convolution kernel needs, validated and normalised."""
    nd: int
    N: int
    C_in: int
    C_out: int
    groups: int
    spatial: tuple          # input spatial size (unpadded)
    kernel: tuple
    stride: tuple
    dilation: tuple
    pads: tuple             # ((before, after), ...)
    out_spatial: tuple
    channels_last: bool
    padding_mode: str

    @property
    def input_shape(self):
        if self.channels_last:
            return (self.N, *self.spatial, self.C_in)
        return (self.N, self.C_in, *self.spatial)

    @property
    def output_shape(self):
        if self.channels_last:
            return (self.N, *self.out_spatial, self.C_out)
        return (self.N, self.C_out, *self.out_spatial)


def _layout(nd, channels_last):
    sp = ", ".join(("D", "H", "W")[3 - nd:])
    return f"(N, {sp}, C)" if channels_last else f"(N, C, {sp})"


# conv_geometry's results by their arguments, for arguments of plain types
# only (int, str, bool and tuples of ints): a value of another type is
# validated by its type (a bool stride, a float padding), which equality
# would hide (True == 1, 1.0 == 1).  Errors are never stored.  Measured on
# the benchmark VM with the caches a kernel leaves behind (an 8 MB NumPy
# pass), medians: 76 us to compute, 8-10 us to find (conv_geometry runs at
# every call, forward and backward; a pointwise_1x1 call takes 1.3-1.5 ms).
_GEOMETRIES = {}
_GEOMETRIES_MAX = 256


class _Unplain(Exception):
    pass


def _plain(v):
    """v as part of a cache key: an int, a str, or a tuple of ints or of
    tuples of ints, by exact type; else raises _Unplain."""
    t = type(v)
    if t is int or t is str:
        return v
    if t is tuple:
        for e in v:
            if type(e) is not int and (type(e) is not tuple
                                       or any(type(f) is not int for f in e)):
                raise _Unplain
        return v
    raise _Unplain


def conv_geometry(op, nd, x, weight, bias, stride, padding, dilation, groups, *,
                  padding_mode="zeros", channels_last=False, strict=False):
    """Validate a convolution's arguments and compute its geometry (the same
    frozen ConvGeometry for the same plain arguments, from a cache)."""
    try:
        key = (op, nd, _plain(tuple(x.shape)), _plain(tuple(weight.shape)),
               None if bias is None else _plain(tuple(bias.shape)),
               _plain(stride), _plain(padding), _plain(dilation), _plain(groups),
               _plain(padding_mode), channels_last.__class__, bool(channels_last),
               strict.__class__, bool(strict))
        if key[10] is not bool or key[12] is not bool:
            raise _Unplain
    except (_Unplain, TypeError, ValueError, AttributeError):
        key = None
    if key is not None:
        geo = _GEOMETRIES.get(key)
        if geo is not None:
            return geo
    geo = _conv_geometry(op, nd, x, weight, bias, stride, padding, dilation, groups,
                         padding_mode=padding_mode, channels_last=channels_last,
                         strict=strict)
    if key is not None:
        if len(_GEOMETRIES) >= _GEOMETRIES_MAX:
            _GEOMETRIES.clear()
        _GEOMETRIES[key] = geo
    return geo


def _conv_geometry(op, nd, x, weight, bias, stride, padding, dilation, groups, *,
                   padding_mode, channels_last, strict):
    if not isinstance(channels_last, (bool, np.bool_)):
        raise TypeError(f"{op}: channels_last must be a bool, got {channels_last!r}")
    check_ndim(op, "input", x, nd + 2, _layout(nd, channels_last))
    check_ndim(op, "weight", weight, nd + 2,
               f"(C_out, C_in // groups, {', '.join(('kD', 'kH', 'kW')[3 - nd:])})")
    check_choice(op, "padding_mode", padding_mode, PADDING_MODES)
    groups = positive_int(op, "groups", groups)
    N = x.shape[0]
    C_in = x.shape[-1] if channels_last else x.shape[1]
    spatial = tuple(x.shape[1:-1] if channels_last else x.shape[2:])
    C_out, cg = weight.shape[0], weight.shape[1]
    kernel = tuple(weight.shape[2:])
    if any(k < 1 for k in kernel) or cg < 1:
        raise ValueError(f"{op}: weight has shape {weight.shape}; every kernel size and "
                         f"C_in // groups must be positive")
    if C_out < 1:
        raise ValueError(f"{op}: weight has shape {weight.shape}; expected at least one "
                         f"output channel")
    if C_in % groups:
        raise ValueError(f"{op}: groups={groups} does not divide the input's "
                         f"{C_in} channels")
    if C_out % groups:
        raise ValueError(f"{op}: groups={groups} does not divide the weight's "
                         f"{C_out} output channels (weight shape {weight.shape})")
    if cg * groups != C_in:
        raise ValueError(f"{op}: input has {C_in} channels, weight expects "
                         f"{cg * groups} (C_in // groups = {cg}, groups = {groups})")
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != C_out):
        raise ValueError(f"{op}: bias must have shape ({C_out},) to match the weight's "
                         f"{C_out} output channels, got shape {bias.shape}")
    stride = int_tuple(op, "stride", stride, nd, 1)
    dilation = int_tuple(op, "dilation", dilation, nd, 1)
    pads = padding_pairs(op, padding, nd, spatial, kernel, stride, dilation)
    if padding_mode != "zeros":
        _check_mode_padding(op, padding_mode, spatial, pads)
    out_spatial = output_size(op, spatial, kernel, stride, dilation, pads, strict=strict)
    return ConvGeometry(nd, N, C_in, C_out, groups, spatial, kernel, stride, dilation,
                        pads, out_spatial, bool(channels_last), padding_mode)


def _check_mode_padding(op, mode, spatial, pads):
    names = dim_names(len(spatial))
    for name, n, (b, a) in zip(names, spatial, pads):
        if mode == "reflect" and max(b, a) >= n:
            raise ValueError(f"{op}: padding_mode='reflect' needs padding smaller than "
                             f"the input {name} {n}, got padding ({b}, {a})")
        if mode == "circular" and max(b, a) > n:
            raise ValueError(f"{op}: padding_mode='circular' needs padding at most the "
                             f"input {name} {n}, got padding ({b}, {a})")


def ceil_div(a, b):
    return -(-a // b)


# --------------------------------------------------------------------------
# Pooling geometry
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolGeometry:
    """A pooling op's shapes and its per-dim window tables (see _kernels/_pool)."""
    nd: int
    N: int
    C: int
    spatial: tuple
    out_spatial: tuple
    channels_last: bool
    first: np.ndarray       # (3, max_out) intp
    count: np.ndarray
    divc: np.ndarray
    step: np.ndarray        # (3,) intp
    wrun: np.ndarray        # (6,) intp: W-dim interior run, see interior_run()

    @property
    def input_shape(self):
        return _shape(self.N, self.C, self.spatial, self.channels_last)

    @property
    def output_shape(self):
        return _shape(self.N, self.C, self.out_spatial, self.channels_last)

    def view5(self, arr, spatial):
        """``arr`` as (N, C, D, H, W) or (N, D, H, W, C) with unit dims added."""
        pad = (1,) * (3 - self.nd)
        n = arr.shape[0]   # a block of samples may be passed
        if self.channels_last:
            return arr.reshape(n, *pad, *spatial, self.C)
        return arr.reshape(n, self.C, *pad, *spatial)


def _shape(N, C, spatial, channels_last):
    return (N, *spatial, C) if channels_last else (N, C, *spatial)


def _tables(windows, nd):
    """Stack per-dim (first, count, divc, step) into (3, max) kernel tables,
    unit dims first for nd < 3."""
    unit = (np.zeros(1, np.intp), np.ones(1, np.intp), np.ones(1, np.intp), 1)
    windows = [unit] * (3 - nd) + list(windows)
    width = max(len(w[0]) for w in windows)
    tabs = []
    for k in range(3):
        t = np.zeros((3, width), np.intp)
        for d, w in enumerate(windows):
            t[d, :len(w[k])] = w[k]
        tabs.append(t)
    return (*tabs, np.array([w[3] for w in windows], np.intp))


def pool_windows(op, name, n, k, s, d, pair, out):
    """Tables of one dim's windows: first tap in the input, taps in the input,
    taps in input + padding; every window must touch the input."""
    before, after = pair
    taps = (np.arange(out) * s - before)[:, None] + np.arange(k)[None, :] * d
    inside = (taps >= 0) & (taps < n)
    count = inside.sum(axis=1)
    if not count.all():
        o = int(np.argmin(count))
        raise ValueError(
            f"{op}: window {o} of the {name} lies wholly in the padding (taps at "
            f"{int(taps[o, 0])}..{int(taps[o, -1])} of an input of {n}, padding {pair}); "
            f"use less padding than kernel_size {k} so that every window touches the input")
    first = taps[np.arange(out), np.argmax(inside, axis=1)]
    in_padded = ((taps >= -before) & (taps < n + after)).sum(axis=1)
    return first.astype(np.intp), count.astype(np.intp), in_padded.astype(np.intp), d


def adaptive_windows(n, out):
    """PyTorch's adaptive windows: [floor(o*n/out), ceil((o+1)*n/out))."""
    o = np.arange(out)
    start = (o * n) // out
    end = -((-(o + 1) * n) // out)
    count = (end - start).astype(np.intp)
    return start.astype(np.intp), count, count, 1


def _pool_input(op, x, nd, channels_last):
    if not isinstance(channels_last, (bool, np.bool_)):
        raise TypeError(f"{op}: channels_last must be a bool, got {channels_last!r}")
    check_ndim(op, "input", x, nd + 2, _layout(nd, channels_last))
    N = x.shape[0]
    C = x.shape[-1] if channels_last else x.shape[1]
    spatial = tuple(x.shape[1:-1] if channels_last else x.shape[2:])
    return N, C, spatial


def pool_stride(op, stride, kernel):
    """A pooling op's stride: None, or PyTorch's empty "omitted" stride, is the
    kernel size."""
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        return kernel
    return int_tuple(op, "stride", stride, len(kernel), 1)


def pool_geometry(op, nd, shape, kernel_size, stride, padding, dilation, ceil_mode,
                  *, channels_last=False, strict=False, what="input"):
    """Validate a pooling op's window arguments for an input array or shape."""
    if not hasattr(shape, "shape"):  # a shape tuple (backward ops)
        shape = SimpleNamespace(shape=tuple(shape), ndim=len(shape))
    N, C, spatial = _pool_input(op, shape, nd, channels_last)
    kernel = int_tuple(op, "kernel_size", kernel_size, nd, 1)
    stride = pool_stride(op, stride, kernel)
    dilation = int_tuple(op, "dilation", dilation, nd, 1)
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise TypeError(f"{op}: ceil_mode must be a bool, got {ceil_mode!r}")
    pads = padding_pairs(op, padding, nd, spatial, kernel, stride, dilation)
    out = output_size(op, spatial, kernel, stride, dilation, pads, strict=strict,
                      ceil_mode=bool(ceil_mode), what=what)
    names = dim_names(nd)
    windows = [pool_windows(op, names[i], spatial[i], kernel[i], stride[i], dilation[i],
                            pads[i], out[i]) for i in range(nd)]
    run = interior_run(spatial[-1], kernel[-1], stride[-1], dilation[-1], pads[-1][0],
                       out[-1])
    return PoolGeometry(nd, N, C, spatial, out, bool(channels_last), *_tables(windows, nd),
                        run)


def interior_run(n, k, s, d, before, out):
    """(k, s, d, before, lo, hi): outputs lo <= o < hi of the last dim have all
    k taps inside the input, at o*s - before + i*d (the kernels' fast path)."""
    lo = min(ceil_div(before, s), out)
    last = n - 1 + before - (k - 1) * d   # o*s <= last
    hi = max(lo, min(out, last // s + 1)) if last >= 0 else lo
    return np.array([k, s, d, before, lo, hi], np.intp)


def adaptive_geometry(op, nd, x, output_size, *, channels_last=False):
    N, C, spatial = _pool_input(op, x, nd, channels_last)
    if output_size is None or isinstance(output_size, (tuple, list)):
        sizes = tuple(output_size) if output_size is not None else (None,) * nd
        if len(sizes) != nd:
            raise ValueError(f"{op}: output_size must be an int or a tuple of {nd} "
                             f"ints (None keeps the input size), got {output_size!r}")
        out = tuple(n if v is None else int_tuple(op, "output_size", v, 1, 1)[0]
                    for n, v in zip(spatial, sizes))
    else:
        out = int_tuple(op, "output_size", output_size, nd, 1)
    for name, n in zip(dim_names(nd), spatial):
        if n < 1:
            raise ValueError(f"{op}: the input {name} is 0; adaptive pooling needs at "
                             f"least one input element per dim (input shape {x.shape})")
    windows = [adaptive_windows(n, o) for n, o in zip(spatial, out)]
    no_run = np.zeros(6, np.intp)  # adaptive windows take the table path throughout
    return PoolGeometry(nd, N, C, spatial, out, bool(channels_last), *_tables(windows, nd),
                        no_run)


def launch_geometry(kernel, stride, pads, dilation, out):
    """The kernels' ``geo`` array: (kd, kh, kw, sd, sh, sw, pd, ph, pw, dd, dh,
    dw, Do, Ho, Wo), unit dims first for 1-D and 2-D; pads are the before
    amounts."""
    u = 3 - len(kernel)
    return np.array((1,) * u + tuple(kernel) + (1,) * u + tuple(stride)
                    + (0,) * u + tuple(b for b, _ in pads) + (1,) * u + tuple(dilation)
                    + (1,) * u + tuple(out), np.intp)


def view5(arr, nd, channels_last):
    """An (N, C, *spatial) or (N, *spatial, C) array as 5-D, unit dims added."""
    u = (1,) * (3 - nd)
    if channels_last:
        return arr.reshape(arr.shape[0], *u, *arr.shape[1:])
    return arr.reshape(*arr.shape[:2], *u, *arr.shape[2:])


def transpose_geometry(op, nd, x, weight, bias, stride, padding, output_padding, groups,
                       dilation, *, channels_last=False):
    """Validate a transposed convolution and describe it as the convolution it
    is the adjoint of: returns (conv geometry whose *input* is the transposed
    output, output_padding)."""
    if not isinstance(channels_last, (bool, np.bool_)):
        raise TypeError(f"{op}: channels_last must be a bool, got {channels_last!r}")
    check_ndim(op, "input", x, nd + 2, _layout(nd, channels_last))
    check_ndim(op, "weight", weight, nd + 2,
               f"(C_in, C_out // groups, {', '.join(('kD', 'kH', 'kW')[3 - nd:])})")
    groups = positive_int(op, "groups", groups)
    N = x.shape[0]
    C_in = x.shape[-1] if channels_last else x.shape[1]
    spatial = tuple(x.shape[1:-1] if channels_last else x.shape[2:])
    kernel = tuple(weight.shape[2:])
    if weight.shape[1] < 1 or any(k < 1 for k in kernel):
        raise ValueError(f"{op}: weight has shape {weight.shape}; every kernel size and "
                         f"C_out // groups must be positive")
    if C_in % groups:
        raise ValueError(f"{op}: groups={groups} does not divide the input's "
                         f"{C_in} channels")
    if weight.shape[0] != C_in:
        raise ValueError(f"{op}: input has {C_in} channels, weight expects "
                         f"{weight.shape[0]} (weight shape (C_in, C_out // groups, ...) = "
                         f"{weight.shape})")
    C_out = weight.shape[1] * groups
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != C_out):
        raise ValueError(f"{op}: bias must have shape ({C_out},) to match the "
                         f"{C_out} output channels, got shape {bias.shape}")
    stride = int_tuple(op, "stride", stride, nd, 1)
    dilation = int_tuple(op, "dilation", dilation, nd, 1)
    if isinstance(padding, str) or (isinstance(padding, (tuple, list))
                                    and any(isinstance(p, (tuple, list)) for p in padding)):
        raise ValueError(f"{op}: padding must be an int or a tuple of {nd} ints, "
                         f"got {padding!r}")
    pad = int_tuple(op, "padding", padding, nd, 0)
    out_pad = int_tuple(op, "output_padding", output_padding, nd, 0)
    for op_, s, d in zip(out_pad, stride, dilation):
        if op_ >= s and op_ >= d:
            raise ValueError(f"{op}: output_padding must be smaller than either stride or "
                             f"dilation, got output_padding {output_padding!r}, stride "
                             f"{stride}, dilation {dilation}")
    out = []
    for name, n, k, s, d, p, o in zip(dim_names(nd), spatial, kernel, stride, dilation,
                                      pad, out_pad):
        size = (n - 1) * s - 2 * p + d * (k - 1) + o + 1
        if size < 1:
            raise ValueError(f"{op}: the output {name} would be (in - 1) * stride - "
                             f"2 * padding + dilation * (k - 1) + output_padding + 1 = "
                             f"({n} - 1) * {s} - 2 * {p} + {d} * ({k} - 1) + {o} + 1 = "
                             f"{size}; expected a positive size")
        out.append(size)
    # The convolution whose input gradient this is: input = our output.
    return ConvGeometry(nd, N, C_out, C_in, groups, tuple(out), kernel, stride, dilation,
                        tuple((p, p) for p in pad), spatial, bool(channels_last), "zeros")
