"""Module.summary: a layer table with shapes, parameters and receptive fields."""
import math

from cyconv import _params as P


def _fmt(shape, channels_last):
    """55x55x96: spatial dims first, then channels (whatever the layout)."""
    if len(shape) <= 1:
        return str(shape[0]) if shape else "1"
    spatial, c = (shape[:-1], shape[-1]) if channels_last else (shape[1:], shape[0])
    return "x".join(str(v) for v in (*spatial, c))


def _fits(layer, shape):
    """False when the layer's input does not fit neatly (strict would raise)."""
    k = getattr(layer, "kernel_size", None)
    if k is None or not hasattr(layer, "stride"):
        return True
    nd = len(k)
    cl = getattr(layer, "channels_last", False)
    spatial = shape[:nd] if cl else shape[1:nd + 1]
    dilation = getattr(layer, "dilation", (1,) * nd)
    padding = getattr(layer, "padding", 0)
    try:
        pads = P.padding_pairs("summary", padding, nd, spatial, k, layer.stride, dilation)
        P.output_size("summary", spatial, k, layer.stride, dilation, pads, strict=True)
    except ValueError:
        return False
    return True


def summary(model, input_shape):
    """One row per layer: output shape, parameters, receptive field (size and
    jump in input pixels) and '*' where the input does not fit neatly."""
    layers = list(model) if hasattr(model, "__iter__") else [model]
    shape = tuple(input_shape)
    rows = [("layer", "output", "params", "receptive field", "fits")]
    size = jump = 1
    total = 0
    for i, layer in enumerate(layers):
        cl = getattr(layer, "channels_last", False)
        fits = _fits(layer, shape)
        shape = layer.output_shape(shape)
        k = getattr(layer, "kernel_size", None)
        if k is not None and hasattr(layer, "stride"):
            d = getattr(layer, "dilation", (1,) * len(k))
            size = size + (d[0] * (k[0] - 1)) * jump
            jump = jump * layer.stride[0]
        n = sum(math.prod(p.shape) for p in layer.parameters())
        total += n
        rows.append((f"{i}: {type(layer).__name__}", _fmt(shape, cl), f"{n:,}",
                     f"{size} (jump {jump})", "" if fits else "* input does not fit"))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = ["  ".join(r[c].ljust(widths[c]) for c in range(5)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"total parameters: {total:,}")
    if any(r[4] for r in rows[1:]):
        lines.append("* input rows or columns ignored: strict=True would raise; see "
                     "cyconv.explain_conv")
    return "\n".join(lines)
