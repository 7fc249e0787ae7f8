"""Layers, with PyTorch's constructor arguments, parameter names, shapes and
default initialisation, built on cyconv's public ops only."""
import math

import numpy as np

import cyconv
from cyconv import _params as P

from .module import Module, Parameter, generator, same_shape

__all__ = [
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "LocallyConnected2d", "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d",
    "AvgPool3d", "AdaptiveAvgPool2d", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Linear",
    "Flatten", "Dropout", "BatchNorm2d",
]


def _uniform(shape, bound, dtype):
    return Parameter(generator().uniform(-bound, bound, size=shape).astype(dtype))


def _tuple(v, nd):
    return (v,) * nd if isinstance(v, (int, np.integer)) else tuple(v)


def _need_forward(layer, saved="_x"):
    """RuntimeError unless forward ran: it sets ``saved`` (Dropout's mask to
    None in eval mode, where backward needs nothing)."""
    if not hasattr(layer, saved):
        raise RuntimeError(f"{type(layer).__name__}.backward called before forward")


def _param_backward(layer, fn, grad, **kwargs):
    """Shared by the weighted layers: gradients from ``fn`` (a public
    ``*_backward`` op), accumulated into weight.grad and bias.grad."""
    _need_forward(layer)
    needs = ("input", "weight") + (("bias",) if layer.bias is not None else ())
    g = fn(grad, layer._x, layer.weight, needs=needs, **kwargs)
    layer.weight.grad += g.weight
    if layer.bias is not None:
        layer.bias.grad += g.bias
    return g.input


def _spatial_out(shape, nd, channels_last, fn):
    """Apply fn(spatial) -> spatial to a per-sample shape, keeping channels."""
    if channels_last:
        return (*fn(shape[:nd]), shape[nd])
    return (shape[0], *fn(shape[1:]))


# --------------------------------------------------------------------------
# Convolutions
# --------------------------------------------------------------------------

def _conv_repr(layer):
    """PyTorch's extra_repr of a convolution: arguments at their defaults are
    left out."""
    nd = len(layer.kernel_size)
    s = (f"{layer.in_channels}, {layer.out_channels}, kernel_size={layer.kernel_size}, "
         f"stride={layer.stride}")
    if layer.padding != (0,) * nd:
        s += f", padding={layer.padding}"
    if getattr(layer, "dilation", (1,) * nd) != (1,) * nd:
        s += f", dilation={layer.dilation}"
    if getattr(layer, "output_padding", (0,) * nd) != (0,) * nd:
        s += f", output_padding={layer.output_padding}"
    if getattr(layer, "groups", 1) != 1:
        s += f", groups={layer.groups}"
    if layer.bias is None:
        s += ", bias=False"
    if getattr(layer, "padding_mode", "zeros") != "zeros":
        s += f", padding_mode={layer.padding_mode}"
    return s


class _ConvNd(Module):
    nd = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", *,
                 channels_last=False, strict=False, dtype=np.float32):
        super().__init__()
        nd = self.nd
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _tuple(kernel_size, nd)
        self.stride, self.dilation = _tuple(stride, nd), _tuple(dilation, nd)
        self.padding = padding if isinstance(padding, str) else (
            _tuple(padding, nd) if not isinstance(padding, (tuple, list)) else tuple(padding))
        self.padding_mode, self.channels_last, self.strict = padding_mode, channels_last, strict
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{type(self).__name__}: groups={groups} must divide "
                             f"in_channels={in_channels} and out_channels={out_channels}")
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        bound = 1 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)), as PyTorch
        self.weight = _uniform((out_channels, in_channels // groups, *self.kernel_size),
                               bound, dtype)
        self.bias = _uniform((out_channels,), bound, dtype) if bias else None

    def _kw(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.padding_mode,
                    channels_last=self.channels_last)

    def forward(self, x):
        self._x = x
        return getattr(cyconv, f"conv{self.nd}d")(x, self.weight, self.bias,
                                                   strict=self.strict, **self._kw())

    def backward(self, grad):
        return _param_backward(self, getattr(cyconv, f"conv{self.nd}d_backward"), grad,
                               **self._kw())

    def output_shape(self, shape):
        def out(spatial):
            pads = P.padding_pairs(type(self).__name__, self.padding, self.nd, spatial,
                                   self.kernel_size, self.stride, self.dilation)
            return P.output_size(type(self).__name__, spatial, self.kernel_size,
                                 self.stride, self.dilation, pads)
        shape = _spatial_out(shape, self.nd, self.channels_last, out)
        return (*shape[:-1], self.out_channels) if self.channels_last else \
            (self.out_channels, *shape[1:])

    def extra_repr(self):
        return _conv_repr(self)


class Conv1d(_ConvNd):
    """1-D convolution layer, as ``torch.nn.Conv1d`` (plus channels_last, strict, dtype)."""
    nd = 1


class Conv2d(_ConvNd):
    """2-D convolution layer, as ``torch.nn.Conv2d`` (plus channels_last, strict, dtype).

    Examples
    --------
    >>> from cyconv import nn
    >>> nn.Conv2d(3, 96, 11, stride=4).weight.shape
    (96, 3, 11, 11)
    """
    nd = 2


class Conv3d(_ConvNd):
    """3-D convolution layer, as ``torch.nn.Conv3d`` (plus channels_last, strict, dtype)."""
    nd = 3


class _ConvTransposeNd(Module):
    nd = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 *, channels_last=False, dtype=np.float32):
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"{type(self).__name__}: only padding_mode='zeros' is "
                             f"supported (as in PyTorch), got {padding_mode!r}")
        nd = self.nd
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _tuple(kernel_size, nd)
        self.stride, self.padding = _tuple(stride, nd), _tuple(padding, nd)
        self.output_padding, self.dilation = _tuple(output_padding, nd), _tuple(dilation, nd)
        self.channels_last = channels_last
        # PyTorch computes fan_in from weight.size(1) * kernel = out_channels // groups * k
        fan_in = out_channels // groups * math.prod(self.kernel_size)
        bound = 1 / math.sqrt(fan_in)
        self.weight = _uniform((in_channels, out_channels // groups, *self.kernel_size),
                               bound, dtype)
        self.bias = _uniform((out_channels,), bound, dtype) if bias else None

    def _kw(self, output_padding=None):
        if output_padding is None:   # backward: what the last forward used
            output_padding = getattr(self, "_output_padding", self.output_padding)
        return dict(stride=self.stride, padding=self.padding,
                    output_padding=output_padding, groups=self.groups,
                    dilation=self.dilation, channels_last=self.channels_last)

    def _padding_for(self, x, output_size):
        """The output padding that gives ``output_size``, as PyTorch's
        ConvTranspose forward(input, output_size) finds it: the spatial sizes
        (or the whole output shape), each between the smallest output and
        stride - 1 more."""
        name, nd = type(self).__name__, self.nd
        size = tuple(int(v) for v in output_size)
        if len(size) == nd + 2:
            size = size[1:-1] if self.channels_last else size[2:]
        if len(size) != nd:
            raise ValueError(f"{name}: output_size must have {nd} or {nd + 2} elements, "
                             f"got {tuple(output_size)}")
        spatial = x.shape[1:-1] if self.channels_last else x.shape[2:]
        lo = self._smallest_output(spatial)
        hi = [m + s - 1 for m, s in zip(lo, self.stride)]
        if not all(a <= v <= b for a, v, b in zip(lo, size, hi)):
            raise ValueError(f"{name}: requested an output size of {size}, but valid sizes "
                             f"range from {tuple(lo)} to {tuple(hi)} (for an input of "
                             f"{tuple(spatial)})")
        return tuple(v - a for v, a in zip(size, lo))

    def forward(self, x, output_size=None):
        """``output_size`` (optional, as in PyTorch): the output's spatial
        size (or whole shape), which picks the output padding; the layer's
        own ``output_padding`` is used otherwise."""
        self._x = x
        self._output_padding = (self.output_padding if output_size is None
                                else self._padding_for(np.asarray(x), output_size))
        return getattr(cyconv, f"conv_transpose{self.nd}d")(
            x, self.weight, self.bias, **self._kw(self._output_padding))

    def backward(self, grad):
        return _param_backward(self, getattr(cyconv, f"conv_transpose{self.nd}d_backward"),
                               grad, **self._kw())

    def _smallest_output(self, spatial):
        """Output size per spatial dim without output padding."""
        return [(n - 1) * s - 2 * p + d * (k - 1) + 1 for n, s, p, d, k in
                zip(spatial, self.stride, self.padding, self.dilation, self.kernel_size)]

    def output_shape(self, shape):
        def out(spatial):
            return tuple(m + o for m, o in zip(self._smallest_output(spatial),
                                               self.output_padding))
        shape = _spatial_out(shape, self.nd, self.channels_last, out)
        return (*shape[:-1], self.out_channels) if self.channels_last else \
            (self.out_channels, *shape[1:])

    def extra_repr(self):
        return _conv_repr(self)


class ConvTranspose1d(_ConvTransposeNd):
    """As ``torch.nn.ConvTranspose1d``."""
    nd = 1


class ConvTranspose2d(_ConvTransposeNd):
    """As ``torch.nn.ConvTranspose2d``."""
    nd = 2


class ConvTranspose3d(_ConvTransposeNd):
    """As ``torch.nn.ConvTranspose3d``."""
    nd = 3


class LocallyConnected2d(Module):
    """A convolution without parameter sharing: every output position has its
    own filters.  Needs the input's spatial size to size its weights.

    Parameters: ``weight`` (H_out, W_out, C_out, C_in, kH, kW), ``bias``
    (C_out, H_out, W_out), initialised like a convolution's.

    Examples
    --------
    >>> from cyconv import nn
    >>> nn.LocallyConnected2d(3, 8, (32, 32), 5).weight.shape
    (28, 28, 8, 3, 5, 5)
    """

    def __init__(self, in_channels, out_channels, input_size, kernel_size, stride=1,
                 padding=0, dilation=1, bias=True, *, channels_last=False,
                 dtype=np.float32):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.input_size = _tuple(input_size, 2)
        self.kernel_size, self.stride = _tuple(kernel_size, 2), _tuple(stride, 2)
        self.padding, self.dilation = padding, _tuple(dilation, 2)
        self.channels_last = channels_last
        out = cyconv.conv_output_shape(self.input_size, self.kernel_size, self.stride,
                                       padding, self.dilation)
        bound = 1 / math.sqrt(in_channels * math.prod(self.kernel_size))
        self.weight = _uniform((*out, out_channels, in_channels, *self.kernel_size), bound,
                               dtype)
        self.bias = _uniform((out_channels, *out), bound, dtype) if bias else None

    def _kw(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    channels_last=self.channels_last)

    def forward(self, x):
        self._x = x
        return cyconv.locally_connected2d(x, self.weight, self.bias, **self._kw())

    def backward(self, grad):
        return _param_backward(self, cyconv.locally_connected2d_backward, grad,
                               **self._kw())

    def output_shape(self, shape):
        out = self.weight.shape[:2]
        return (*out, self.out_channels) if self.channels_last else (self.out_channels, *out)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
             f"kernel_size={self.kernel_size}, stride={self.stride}")
        if self.padding not in (0, (0, 0)):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        return s + (", bias=False" if self.bias is None else "")


# --------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------

class _PoolNd(Module):
    nd = 2
    kind = "max"

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                 *, channels_last=False, strict=False):
        super().__init__()
        self.kernel_size = _tuple(kernel_size, self.nd)
        self.stride = self.kernel_size if stride is None else _tuple(stride, self.nd)
        self.padding, self.dilation = padding, _tuple(dilation, self.nd)
        self.ceil_mode, self.channels_last, self.strict = ceil_mode, channels_last, strict

    def output_shape(self, shape):
        def out(spatial):
            pads = P.padding_pairs(type(self).__name__, self.padding, self.nd, spatial,
                                   self.kernel_size, self.stride, self.dilation)
            return P.output_size(type(self).__name__, spatial, self.kernel_size,
                                 self.stride, self.dilation, pads, ceil_mode=self.ceil_mode)
        return _spatial_out(shape, self.nd, self.channels_last, out)


class _MaxPoolNd(_PoolNd):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1,
                 return_indices=False, ceil_mode=False, *, channels_last=False,
                 strict=False):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode,
                         channels_last=channels_last, strict=strict)
        self.return_indices = return_indices

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")

    def forward(self, x):
        x = np.asarray(x)
        self._x = x
        y, self._indices = getattr(cyconv, f"max_pool{self.nd}d")(
            x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
            True, channels_last=self.channels_last, strict=self.strict)
        return (y, self._indices) if self.return_indices else y

    def backward(self, grad):
        _need_forward(self)
        return getattr(cyconv, f"max_pool{self.nd}d_backward")(
            grad, self._indices, self._x.shape, channels_last=self.channels_last)


class MaxPool1d(_MaxPoolNd):
    """As ``torch.nn.MaxPool1d``."""
    nd = 1


class MaxPool2d(_MaxPoolNd):
    """As ``torch.nn.MaxPool2d``."""
    nd = 2


class MaxPool3d(_MaxPoolNd):
    """As ``torch.nn.MaxPool3d``."""
    nd = 3


class _AvgPoolNd(_PoolNd):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None, *, dilation=1,
                 channels_last=False, strict=False):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode,
                         channels_last=channels_last, strict=strict)
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def extra_repr(self):
        s = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if self.dilation != (1,) * len(self.dilation):   # beyond PyTorch's AvgPool
            s += f", dilation={self.dilation}"
        if self.ceil_mode:
            s += ", ceil_mode=True"
        if not self.count_include_pad:
            s += ", count_include_pad=False"
        if self.divisor_override is not None:
            s += f", divisor_override={self.divisor_override}"
        return s

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                self.count_include_pad, self.divisor_override)

    def forward(self, x):
        x = np.asarray(x)
        self._x = x
        return getattr(cyconv, f"avg_pool{self.nd}d")(x, *self._args(),
                                                       channels_last=self.channels_last,
                                                       strict=self.strict)

    def backward(self, grad):
        _need_forward(self)
        return getattr(cyconv, f"avg_pool{self.nd}d_backward")(
            grad, self._x.shape, *self._args(), channels_last=self.channels_last)


class AvgPool1d(_AvgPoolNd):
    """As ``torch.nn.AvgPool1d``."""
    nd = 1


class AvgPool2d(_AvgPoolNd):
    """As ``torch.nn.AvgPool2d``."""
    nd = 2


class AvgPool3d(_AvgPoolNd):
    """As ``torch.nn.AvgPool3d``."""
    nd = 3


class AdaptiveAvgPool2d(Module):
    """As ``torch.nn.AdaptiveAvgPool2d``."""

    def __init__(self, output_size, *, channels_last=False):
        super().__init__()
        self.output_size, self.channels_last = output_size, channels_last

    def extra_repr(self):
        return f"output_size={self.output_size}"

    def forward(self, x):
        x = np.asarray(x)
        self._x = x
        return cyconv.adaptive_avg_pool2d(x, self.output_size,
                                          channels_last=self.channels_last)

    def backward(self, grad):
        _need_forward(self)
        return cyconv.adaptive_avg_pool2d_backward(grad, self._x.shape,
                                                   channels_last=self.channels_last)

    def output_shape(self, shape):
        size = _tuple(self.output_size, 2) if self.output_size is not None else (None, None)

        def out(spatial):
            return tuple(n if o is None else o for n, o in zip(spatial, size))
        return _spatial_out(shape, 2, self.channels_last, out)


# --------------------------------------------------------------------------
# Element-wise and dense layers
# --------------------------------------------------------------------------

def _in_place_target(x, inplace):
    """x itself where ``inplace`` asks for it and x can hold the result (a
    writeable floating ndarray), else None: the result goes to a new array."""
    if inplace and isinstance(x, np.ndarray) and x.flags.writeable and x.dtype.kind == "f":
        return x
    return None


def _computed(layer, x):
    """x as an array of the dtype ``layer`` computes in, by the ops' rule:
    float32 and float64 as they are, other real dtypes in float64 (float16 in
    float32), complex or object a TypeError."""
    x = np.asarray(x)
    return x.astype(P.compute_dtype(type(layer).__name__, input=x), copy=False)


class ReLU(Module):
    """max(x, 0).  With ``inplace=True`` (as in PyTorch) a writeable floating
    input array is overwritten with the result and returned."""

    output_shape = same_shape

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        out = _in_place_target(x, self.inplace)
        x = _computed(self, x)
        # the mask backward needs, taken before any overwrite; NaN passes its
        # gradient, as PyTorch's (which zeroes it only where x <= 0)
        self._x = ~(x <= 0)
        return np.maximum(x, 0, out=out)

    def backward(self, grad):
        _need_forward(self)
        return grad * self._x


class LeakyReLU(Module):
    """x if x > 0 else negative_slope * x; ``inplace`` as for :class:`ReLU`."""

    output_shape = same_shape

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, x):
        out = _in_place_target(x, self.inplace)
        x = _computed(self, x)
        self._x = positive = x > 0
        y = np.where(positive, x, x * x.dtype.type(self.negative_slope))
        if out is None:
            return y
        out[...] = y
        return out

    def backward(self, grad):
        _need_forward(self)
        return np.where(self._x, grad, grad * grad.dtype.type(self.negative_slope))


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    output_shape = same_shape

    def forward(self, x):
        x = _computed(self, x)
        self._y = y = np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))),
                               np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x)))).astype(x.dtype)
        self._x = x
        return y

    def backward(self, grad):
        _need_forward(self)
        return grad * self._y * (1 - self._y)


class Tanh(Module):
    """tanh(x)."""

    output_shape = same_shape

    def forward(self, x):
        self._x = x = _computed(self, x)
        self._y = np.tanh(x)
        return self._y

    def backward(self, grad):
        _need_forward(self)
        return grad * (1 - self._y * self._y)


class Linear(Module):
    """y = x @ weight.T + bias, as ``torch.nn.Linear`` (weight (out, in))."""

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)
        self.weight = _uniform((out_features, in_features), bound, dtype)
        self.bias = _uniform((out_features,), bound, dtype) if bias else None

    def forward(self, x):
        self._x = x = np.asarray(x)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear: input has {x.shape[-1]} features, expected "
                             f"{self.in_features} (input shape {x.shape})")
        y = x @ np.asarray(self.weight).T
        return y + np.asarray(self.bias) if self.bias is not None else y

    def backward(self, grad):
        _need_forward(self)
        x2 = self._x.reshape(-1, self.in_features)
        g2 = np.asarray(grad).reshape(-1, self.out_features)
        self.weight.grad += g2.T @ x2
        if self.bias is not None:
            self.bias.grad += g2.sum(axis=0)
        return (g2 @ np.asarray(self.weight)).reshape(self._x.shape)

    def output_shape(self, shape):
        return (*shape[:-1], self.out_features)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    """Flatten dims start_dim..end_dim (PyTorch's defaults: all but the batch)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x):
        self._x = x = np.asarray(x)
        s = self.start_dim % x.ndim
        e = self.end_dim % x.ndim
        return x.reshape(*x.shape[:s], -1, *x.shape[e + 1:])

    def backward(self, grad):
        _need_forward(self)
        return np.asarray(grad).reshape(self._x.shape)

    def output_shape(self, shape):
        full = (1, *shape)  # per-sample shape: put a batch back for the dims
        s, e = self.start_dim % len(full), self.end_dim % len(full)
        return (*full[1:s], math.prod(full[s:e + 1]), *full[e + 1:])


class Dropout(Module):
    """Zero each element with probability p in training, scaling the rest by
    1 / (1 - p) (p = 1 zeroes everything, as in PyTorch); the identity in eval
    mode.  Masks come from cyconv.nn.seed.  ``inplace`` as for :class:`ReLU`."""

    output_shape = same_shape

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, x):
        out = _in_place_target(x, self.inplace)
        x = _computed(self, x)
        if not self.training or self.p == 0:
            self._mask = None
            return x
        if self.p == 1:
            self._mask = np.zeros(x.shape, x.dtype)
        else:
            keep = generator().random(x.shape) >= self.p
            self._mask = keep.astype(x.dtype) / x.dtype.type(1 - self.p)
        return np.multiply(x, self._mask, out=out)

    def backward(self, grad):
        _need_forward(self, "_mask")
        return grad if self._mask is None else grad * self._mask


class BatchNorm2d(Module):
    """As ``torch.nn.BatchNorm2d``: batch statistics in training (running
    averages updated with ``momentum``, or with ``momentum=None`` the
    cumulative average of every batch so far; unbiased variance), running
    ones in eval; parameters weight/bias, buffers running_mean/running_var/
    num_batches_tracked."""

    output_shape = same_shape
    _optional_state = ("num_batches_tracked",)   # see Module.load_state_dict

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, *, bias=True, channels_last=False,
                 dtype=np.float32):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.channels_last = channels_last
        if affine:   # bias=False: a scale without a shift (PyTorch 2.13's keyword)
            self.weight = Parameter(np.ones(num_features, dtype))
            self.bias = Parameter(np.zeros(num_features, dtype)) if bias else None
        else:
            self.weight = self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))

    def _shape(self, x):
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d: input must have 4 dimensions, got shape "
                             f"{x.shape}")
        channels = x.shape[-1 if self.channels_last else 1]
        if channels != self.num_features:   # the statistics would broadcast silently
            raise ValueError(f"BatchNorm2d: input has {channels} channels, expected "
                             f"num_features = {self.num_features} (input shape {x.shape}"
                             f"{', channels last' if self.channels_last else ''})")
        return (1, 1, 1, -1) if self.channels_last else (1, -1, 1, 1)

    def forward(self, x):
        x = _computed(self, x)
        shape = self._shape(x)
        axes = (0, 1, 2) if self.channels_last else (0, 2, 3)
        if self.training or not self.track_running_stats:
            n = x.size // max(self.num_features, 1)
            if n == 1:
                raise ValueError(f"BatchNorm2d: batch statistics need more than 1 value per "
                                 f"channel, got input shape {x.shape}")
            if n == 0:
                # an empty batch has no statistics: as PyTorch, the output is empty and
                # the running averages stay (the batch is still counted)
                if self.training and self.track_running_stats:
                    self.num_batches_tracked[...] += 1
                self._cache = (np.empty(x.shape, x.dtype), None, shape, axes, True)
                return np.empty(x.shape, x.dtype)
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            if self.training and self.track_running_stats:
                self.num_batches_tracked[...] += 1
                # momentum None: the cumulative average over every batch so far
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                self.running_mean[...] = (1 - m) * self.running_mean + m * mean
                self.running_var[...] = (1 - m) * self.running_var + m * var * n / (n - 1)
        else:
            mean, var = self.running_mean, self.running_var
        inv = 1 / np.sqrt(var + x.dtype.type(self.eps))
        xhat = (x - mean.reshape(shape)) * inv.reshape(shape)
        self._cache = (xhat, inv, shape, axes, self.training or not self.track_running_stats)
        if self.affine:
            y = xhat * np.asarray(self.weight).reshape(shape)
            if self.bias is not None:
                y += np.asarray(self.bias).reshape(shape)
            return y.astype(x.dtype)
        return xhat.astype(x.dtype)

    def backward(self, grad):
        _need_forward(self, "_cache")
        xhat, inv, shape, axes, batch_stats = self._cache
        grad = np.asarray(grad)
        if self.affine:
            self.weight.grad += (grad * xhat).sum(axis=axes)
            if self.bias is not None:
                self.bias.grad += grad.sum(axis=axes)
            g = grad * np.asarray(self.weight).reshape(shape)
        else:
            g = grad
        if not batch_stats:
            return g * inv.reshape(shape)
        if xhat.size == 0:       # an empty batch: nothing flows back
            return np.zeros(g.shape, g.dtype)
        mean_g = g.mean(axis=axes, keepdims=True)
        mean_gx = (g * xhat).mean(axis=axes, keepdims=True)
        return (g - mean_g - xhat * mean_gx) * inv.reshape(shape)
