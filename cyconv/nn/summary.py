"""Module.summary: a layer table with shapes, parameters and receptive fields."""
import math

import numpy as np

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


def _walk(layer, shape, size, jump):
    """(output shape, fits, size, jump) after ``layer`` for a per-sample input
    ``shape``; size and jump are None once unknown.

    A Sequential is walked layer by layer.  A module of the user's own (a
    residual block, say) is run on one zero sample unless it defines
    output_shape, and its layers' inputs are checked as they are called; its
    receptive field is not a chain of windows, so from there on it is
    unknown."""
    from .module import Module, is_builtin, is_chain, run_zero_sample

    if is_chain(layer):
        fits = True
        for child in layer:
            shape, ok, size, jump = _walk(child, shape, size, jump)
            fits = fits and ok
        return shape, fits, size, jump
    if is_builtin(layer):
        fits = _fits(layer, shape)
        out = layer.output_shape(shape)
        k = getattr(layer, "kernel_size", None)
        if k is not None and hasattr(layer, "stride") and size is not None:
            d = getattr(layer, "dilation", (1,) * len(k))
            size = size + (d[0] * (k[0] - 1)) * jump
            jump = jump * layer.stride[0]
        return out, fits, size, jump
    if type(layer).output_shape is not Module.output_shape:
        return tuple(layer.output_shape(shape)), True, None, None
    calls = []
    out = tuple(np.shape(run_zero_sample(layer, shape, record=calls))[1:])
    fits = all(_fits(m, s) for m, s in calls if is_builtin(m))
    return out, fits, None, None


def summary(model, input_shape):
    """One row per layer: output shape, parameters, receptive field (size and
    jump in input pixels; '?' after a module of the user's own) and '*'
    where the input of the layer, or of a layer inside it, does not fit
    neatly."""
    from .module import is_chain

    # rows are named as the layers are in the state_dict ("0", "1", ... or an
    # OrderedDict's names)
    layers = list(model._children.items()) if is_chain(model) else [("0", model)]
    shape = tuple(input_shape)
    rows = [("layer", "output", "params", "receptive field", "fits")]
    size = jump = 1
    total = 0
    for name, layer in layers:
        # a module of several layers shows its output in their layout
        cl = any(getattr(m, "channels_last", False) for m in layer.modules())
        shape, fits, size, jump = _walk(layer, shape, size, jump)
        n = sum(math.prod(p.shape) for p in layer.parameters())
        total += n
        rows.append((f"{name}: {type(layer).__name__}", _fmt(shape, cl), f"{n:,}",
                     "?" if size is None else f"{size} (jump {jump})",
                     "" if fits else "* input does not fit"))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = ["  ".join(r[c].ljust(widths[c]) for c in range(5)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"total parameters: {total:,}")
    if any(r[4] for r in rows[1:]):
        lines.append("* input rows or columns ignored: strict=True would raise; see "
                     "cyconv.explain_conv")
    if any(r[3] == "?" for r in rows[1:]):
        lines.append("? receptive field unknown after a module of your own (not a chain "
                     "of cyconv.nn layers)")
    return "\n".join(lines)
