"""ONNX's own backend test cases for the convolution, pooling and col2im
operators, run through cyconv: an oracle independent of PyTorch and of
tests/reference.py (the inputs and expected outputs are the ones ONNX ships
with its operator specification, made by ONNX's reference implementation).

Each node's attributes (pads as [begin..., end...], auto_pad, output_shape,
flat argmax indices, ...) are translated to cyconv's arguments here.  Where
cyconv follows PyTorch or its contract instead of ONNX, the test says so and
checks what cyconv does instead of skipping the case.
"""
import importlib
import warnings

import numpy as np
import pytest

import cyconv

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402

MODULES = {  # ONNX operator -> the module of onnx.backend.test.case.node with its cases
    "Conv": "conv", "ConvTranspose": "convtranspose", "MaxPool": "maxpool",
    "AveragePool": "averagepool", "LpPool": "lppool",
    "GlobalAveragePool": "globalaveragepool", "GlobalMaxPool": "globalmaxpool",
    "Col2Im": "col2im",
}


@pytest.fixture(scope="module")
def cases():
    """name -> (node, inputs, outputs, rtol, atol) for every case of MODULES."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            node_cases = importlib.import_module("onnx.backend.test.case.node")
            for m in MODULES.values():   # importing a module runs its cases' exports
                importlib.import_module(f"{node_cases.__name__}.{m}")
        except ImportError as exc:  # pragma: no cover - a build of onnx without them
            pytest.skip(f"onnx's backend test cases are not importable: {exc}")
    found = {}
    for c in node_cases._NodeTestCases:
        [node] = c.model.graph.node
        if node.op_type in MODULES:
            [(inputs, outputs)] = c.data_sets
            found[c.name] = (node, [np.asarray(a) for a in inputs],
                             [np.asarray(a) for a in outputs], c.rtol, c.atol)
    return found


def _attrs(node):
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _pads(a, in_spatial, kernel, stride, dilation):
    """ONNX's pads / auto_pad as cyconv's ((before, after), ...)."""
    nd = len(in_spatial)
    auto = a.get("auto_pad", "NOTSET")
    if auto == "VALID":
        return ((0, 0),) * nd
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for n, k, s, d in zip(in_spatial, kernel, stride, dilation):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return tuple(pads)
    p = list(a.get("pads", [0] * 2 * nd))
    return tuple(zip(p[:nd], p[nd:]))


def _geometry(a, x, kernel):
    nd = x.ndim - 2
    stride = tuple(a.get("strides", [1] * nd))
    dilation = tuple(a.get("dilations", [1] * nd))
    return stride, dilation, _pads(a, x.shape[2:], kernel, stride, dilation)


def _conv(node, x, w, b=None):
    a = _attrs(node)
    stride, dilation, pads = _geometry(a, x, w.shape[2:])
    conv = getattr(cyconv, f"conv{x.ndim - 2}d")
    return [conv(x, w, b, stride, pads, dilation, a.get("group", 1))]


def _conv_transpose(node, x, w, b=None):
    # ONNX: out = stride * (in - 1) + output_padding + (k - 1) * dilation + 1
    # - pads; output_shape, where given, sets the pads (and, when it is longer
    # than that with no padding, the output padding).
    a = _attrs(node)
    nd = x.ndim - 2
    stride = list(a.get("strides", [1] * nd))
    dilation = list(a.get("dilations", [1] * nd))
    extra = list(a.get("output_padding", [0] * nd))
    full = [s * (n - 1) + e + (k - 1) * d + 1
            for s, n, e, k, d in zip(stride, x.shape[2:], extra, w.shape[2:], dilation)]
    auto = a.get("auto_pad", "NOTSET")
    if "output_shape" in a or auto in ("SAME_UPPER", "SAME_LOWER"):
        want = (list(a["output_shape"])[-nd:] if "output_shape" in a
                else [n * s for n, s in zip(x.shape[2:], stride)])
        pads = []
        for i in range(nd):
            total = full[i] - want[i]
            if total < 0:
                extra[i] -= total
                total = 0
            small, big = total // 2, total - total // 2
            pads.append((big, small) if auto == "SAME_LOWER" else (small, big))
    elif auto == "VALID":
        pads = [(0, 0)] * nd
    else:
        p = list(a.get("pads", [0] * 2 * nd))
        pads = list(zip(p[:nd], p[nd:]))
    # cyconv (as PyTorch) pads the same amount at both ends; the rest is cut here
    both = tuple(min(pb, pe) for pb, pe in pads)
    y = getattr(cyconv, f"conv_transpose{nd}d")(
        x, w, b, tuple(stride), both, tuple(extra), a.get("group", 1), tuple(dilation))
    cut = tuple(slice(pb - m, y.shape[2 + i] - (pe - m))
                for i, ((pb, pe), m) in enumerate(zip(pads, both)))
    return [y[(slice(None), slice(None)) + cut]]


def _pool(node, x):
    a = _attrs(node)
    nd = x.ndim - 2
    kernel = tuple(a["kernel_shape"])
    stride, dilation, pads = _geometry(a, x, kernel)
    ceil = bool(a.get("ceil_mode", 0))
    op = node.op_type
    if op == "AveragePool":
        return [getattr(cyconv, f"avg_pool{nd}d")(
            x, kernel, stride, pads, dilation, ceil,
            count_include_pad=bool(a.get("count_include_pad", 0)))]
    if op == "LpPool":
        return [getattr(cyconv, f"lp_pool{nd}d")(x, a.get("p", 2), kernel, stride, pads,
                                                 dilation, ceil)]
    if len(node.output) == 1:
        return [getattr(cyconv, f"max_pool{nd}d")(x, kernel, stride, pads, dilation, ceil)]
    y, idx = getattr(cyconv, f"max_pool{nd}d")(x, kernel, stride, pads, dilation, ceil,
                                               return_indices=True)
    # cyconv's (PyTorch's) index is within each (n, c) plane, row-major; ONNX's
    # is into the whole tensor, in the plane order that storage_order names
    if a.get("storage_order", 0) == 1:
        idx = np.ravel_multi_index(np.unravel_index(idx, x.shape[2:]), x.shape[2:], order="F")
    n, c = x.shape[:2]
    planes = np.arange(n * c).reshape((n, c) + (1,) * nd) * int(np.prod(x.shape[2:]))
    return [y, idx + planes]


def _col2im(node, cols, image_shape, block_shape):
    a = _attrs(node)
    nd = len(image_shape)
    stride = tuple(a.get("strides", [1] * nd))
    dilation = tuple(a.get("dilations", [1] * nd))
    p = list(a.get("pads", [0] * 2 * nd))
    return [cyconv.col2im(cols, tuple(int(v) for v in image_shape),
                          tuple(int(v) for v in block_shape), stride,
                          tuple(zip(p[:nd], p[nd:])), dilation)]


RUN = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "MaxPool": _pool,
    "AveragePool": _pool, "LpPool": _pool,
    "GlobalAveragePool": lambda node, x: [cyconv.global_avg_pool(x)],
    "GlobalMaxPool": lambda node, x: [cyconv.global_max_pool(x)],
    "Col2Im": _col2im,
}


@pytest.mark.parametrize("op", sorted(MODULES))
def test_onnx_backend_cases(cases, op):
    ran = 0
    for name, (node, inputs, outputs, rtol, atol) in sorted(cases.items()):
        if node.op_type != op:
            continue
        if op == "Col2Im" and len(inputs[1]) != 2:
            continue          # cyconv's col2im is 2-D (the contract's); ONNX's is N-D
        a = _attrs(node)
        if op == "LpPool" and a.get("p", 2) % 2:
            # cyconv follows PyTorch's definition, sum(x ** p) ** (1 / p), with no
            # absolute value; ONNX sums |x| ** p.  They agree on |x| (and on x
            # for an even p).
            inputs = [np.abs(inputs[0])]
        snapshot = [i.copy() for i in inputs]
        got = RUN[op](node, *inputs)
        for g, want in zip(got, outputs):
            if want.dtype.kind in "iu" and g.dtype.kind == "f":
                # integer input: computed in float64 (the contract), where ONNX
                # (and PyTorch's max_pool) keep the integer dtype; same values
                assert g.dtype == np.float64, name
                np.testing.assert_array_equal(g, want, err_msg=name)
                continue
            assert g.dtype == want.dtype, (name, g.dtype, want.dtype)
            assert g.shape == want.shape, (name, g.shape, want.shape)
            np.testing.assert_allclose(g, want, rtol=rtol, atol=atol, err_msg=name)
        for before, after in zip(snapshot, inputs):
            np.testing.assert_array_equal(before, after)
        ran += 1
    assert ran, f"no ONNX case for {op} ran"
