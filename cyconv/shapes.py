"""Shape arithmetic a user can ask for: output shapes, an explanation of a
convolution's numbers, and receptive fields through a stack of layers."""
import numpy as np

from . import _params as P

__all__ = ["conv_output_shape", "explain_conv", "receptive_field"]


def _spatial(op, shape, extra=0):
    """A tuple of 1 to 3 positive spatial sizes (plus ``extra`` leading ones)."""
    try:
        shape = tuple(int(v) for v in shape)
    except TypeError:
        raise TypeError(f"{op}: expected a tuple of ints for the shape, got "
                        f"{shape!r}") from None
    if not 1 + extra <= len(shape) <= 3 + extra or min(shape) < 1:
        what = "(C, *spatial) with" if extra else "a tuple of"
        raise ValueError(f"{op}: expected {what} 1 to 3 positive spatial sizes, got "
                         f"{shape!r}")
    return shape


def conv_output_shape(spatial_shape, kernel_size, stride=1, padding=0, dilation=1,
                      ceil_mode=False):
    """Spatial output shape of a convolution or pooling window.

    ``floor((in + pad_before + pad_after - dilation * (k - 1) - 1) / stride) + 1``
    per dim; with ``ceil_mode`` rounded up, dropping a last window that would
    start in the end padding (PyTorch's pooling rule).

    Examples
    --------
    >>> import cyconv
    >>> cyconv.conv_output_shape((227, 227), 11, stride=4)
    (55, 55)
    """
    op = "conv_output_shape"
    spatial = _spatial(op, spatial_shape)
    nd = len(spatial)
    kernel = P.int_tuple(op, "kernel_size", kernel_size, nd, 1)
    stride = P.int_tuple(op, "stride", stride, nd, 1)
    dilation = P.int_tuple(op, "dilation", dilation, nd, 1)
    pads = P.padding_pairs(op, padding, nd, spatial, kernel, stride, dilation)
    return P.output_size(op, spatial, kernel, stride, dilation, pads,
                         ceil_mode=bool(ceil_mode))


def _n(v):
    return f"{v:,}"


def explain_conv(input_shape, kernel_size, stride=1, padding=0, dilation=1,
                 out_channels=None):
    """Walk through a convolution's arithmetic with the numbers given.

    Parameters
    ----------
    input_shape : (C, *spatial)
    kernel_size, stride, padding, dilation
        As for :func:`cyconv.conv2d` (1 to 3 spatial dims).
    out_channels : int, optional
        K, the number of filters: adds the output volume, its neurons, and the
        parameter counts with and without parameter sharing.

    Returns
    -------
    str
        ``(W - F + 2P) / S + 1`` per dim with the numbers filled in, whether
        the neurons fit (and if not, the paddings that would), and the weights
        each neuron has.

    Examples
    --------
    >>> import cyconv
    >>> print(cyconv.explain_conv((3, 227, 227), 11, stride=4, out_channels=96))
    ... # doctest: +ELLIPSIS
    Convolution of a 3x227x227 input (C x H x W) with 11x11 filters, ...
    """
    op = "explain_conv"
    shape = _spatial(op, input_shape, extra=1)
    C, spatial = shape[0], shape[1:]
    nd = len(spatial)
    names = P.dim_names(nd)
    kernel = P.int_tuple(op, "kernel_size", kernel_size, nd, 1)
    stride = P.int_tuple(op, "stride", stride, nd, 1)
    dilation = P.int_tuple(op, "dilation", dilation, nd, 1)
    pads = P.padding_pairs(op, padding, nd, spatial, kernel, stride, dilation)
    if out_channels is not None:
        out_channels = P.positive_int(op, "out_channels", out_channels)
    axes = " x ".join(("D", "H", "W")[3 - nd:])
    lines = [f"Convolution of a {C}x{'x'.join(map(str, spatial))} input (C x {axes}) "
             f"with {'x'.join(map(str, kernel))} filters, stride "
             f"{'x'.join(map(str, stride))}, padding "
             f"{', '.join(map(str, pads)) if any(a != b for a, b in pads) else 'x'.join(str(a) for a, _ in pads)}"
             + (f", dilation {'x'.join(map(str, dilation))}" if max(dilation) > 1 else "")
             + ":"]
    out, fits = [], True
    for name, n, k, s, d, pair in zip(names, spatial, kernel, stride, dilation, pads):
        eff = d * (k - 1) + 1
        span = n + pair[0] + pair[1] - eff
        if span < 0:
            raise ValueError(f"{op}: the {eff}-wide filter is larger than the padded "
                             f"{name} {n + pair[0] + pair[1]}")
        value = span / s + 1
        line = (f"  {name}: (W - F + 2P) / S + 1 = ({n} - {eff} + "
                f"{P._format_padding_term(pair)}) / {s} + 1 = {value:g}")
        if span % s:
            fits = False
            rem = span % s
            sides, sym = P._fitting_paddings(n, eff, s, pair)
            unit = ("column" if name == "width" else "element" if name == "length"
                    else "row") + ("s" if rem > 1 else "")
            line += (f" -> not an integer: the neurons do not fit; the last {rem} "
                     f"{unit} of the padded input "
                     f"would be ignored (output {span // s + 1}). Paddings that fit: "
                     f"{' or '.join(sides)} (before, after)"
                     + (f", or {' or '.join(sym)} on both sides" if sym else "") + ".")
        else:
            line += " -> fits"
        lines.append(line)
        out.append(span // s + 1)
    per_neuron = C * int(np.prod(kernel))
    lines.append(f"  Each neuron sees {'x'.join(map(str, kernel))}x{C} = {_n(per_neuron)} "
                 f"weights + 1 bias.")
    if out_channels is not None:
        K = out_channels
        neurons = int(np.prod(out)) * K
        volume = "x".join(map(str, out)) + f"x{K}"
        lines.append(f"  With K = {K} filters the output volume is {volume}"
                     f" = {_n(neurons)} neurons.")
        lines.append(f"  With parameter sharing: {K} x {_n(per_neuron)} = "
                     f"{_n(K * per_neuron)} weights + {K} biases = "
                     f"{_n(K * (per_neuron + 1))} parameters.")
        lines.append(f"  Without sharing: {_n(neurons)} x {_n(per_neuron + 1)} = "
                     f"{_n(neurons * (per_neuron + 1))} parameters.")
    lines.append("  The neurons fit neatly." if fits else
                 "  The neurons do not fit neatly: cyconv floors the output size, and "
                 "strict=True raises instead.")
    return "\n".join(lines)


def _layer_params(op, layer, nd):
    """(kernel, stride, padding, dilation) of a tuple or of a layer object;
    None for layers that keep the geometry (activations, normalisation)."""
    if isinstance(layer, (tuple, list)):
        if len(layer) != 4:
            raise ValueError(f"{op}: a layer tuple is (kernel_size, stride, padding, "
                             f"dilation), got {layer!r}")
        return tuple(layer)
    k = getattr(layer, "kernel_size", None)
    if k is None:
        return None
    stride = getattr(layer, "stride", None)
    return (k, k if stride is None else stride, getattr(layer, "padding", 0),
            getattr(layer, "dilation", 1))


def _chain(op, layers):
    """The layers in order, each plain cyconv.nn.Sequential among them
    replaced by its layers; a cyconv.nn module with a forward of its own
    (a residual block, say) is refused: its geometry is not a chain."""
    from cyconv.nn.module import Module, is_builtin, is_chain

    for layer in layers:
        if isinstance(layer, Module) and getattr(layer, "kernel_size", None) is None:
            if is_chain(layer):
                yield from _chain(op, layer)
                continue
            if not is_builtin(layer):
                raise ValueError(
                    f"{op}: {type(layer).__name__} is a module with a forward of its own, "
                    f"whose receptive field is not a chain of windows; pass its layers, or "
                    f"(kernel_size, stride, padding, dilation) tuples, instead")
        yield layer


def receptive_field(layers, spatial_shape):
    """Receptive field of every layer's output units in the input.

    Parameters
    ----------
    layers : sequence
        ``(kernel_size, stride, padding, dilation)`` tuples, or layer objects
        with those attributes (``cyconv.nn`` convolution and pooling layers);
        layers without ``kernel_size`` (activations) keep the geometry.  A
        ``cyconv.nn.Sequential`` among them stands for its layers (one row
        each); a ``cyconv.nn`` module with a forward of its own (a residual
        block) raises ``ValueError``.
    spatial_shape : tuple of ints
        The input's spatial size.

    Returns
    -------
    list of dict
        One per layer: ``size`` (input pixels a unit sees), ``jump`` (input
        distance between neighbouring units), ``start`` (input coordinate of
        the first unit's centre, negative inside the padding) and ``output``
        (the layer's spatial output size), each a tuple over spatial dims.

    Examples
    --------
    >>> import cyconv
    >>> rf = cyconv.receptive_field([(3, 1, 1, 1), (2, 2, 0, 1)], (32, 32))
    >>> rf[-1]["size"], rf[-1]["jump"]
    ((4, 4), (2, 2))
    """
    op = "receptive_field"
    spatial = _spatial(op, spatial_shape)
    nd = len(spatial)
    size, jump, start, n = (1,) * nd, (1,) * nd, (0.5,) * nd, spatial
    rows = []
    for i, layer in enumerate(_chain(op, layers)):
        params = _layer_params(op, layer, nd)
        if params is not None:
            k, s, p, d = params
            kernel = P.int_tuple(op, "kernel_size", k, nd, 1)
            stride = P.int_tuple(op, "stride", s, nd, 1)
            dilation = P.int_tuple(op, "dilation", d, nd, 1)
            pads = P.padding_pairs(op, p, nd, n, kernel, stride, dilation)
            out = P.output_size(f"{op}: layer {i}", n, kernel, stride, dilation, pads)
            eff = [dd * (kk - 1) + 1 for kk, dd in zip(kernel, dilation)]
            start = tuple(st + ((e - 1) / 2 - pb) * j
                          for st, e, (pb, _), j in zip(start, eff, pads, jump))
            size = tuple(r + (e - 1) * j for r, e, j in zip(size, eff, jump))
            jump = tuple(j * ss for j, ss in zip(jump, stride))
            n = out
        rows.append({"size": size, "jump": jump,
                     "start": tuple(v - 0.5 for v in start), "output": n})
    return rows
