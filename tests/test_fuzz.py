"""Property-based fuzzing against tests/reference.py: random shapes, dtypes,
layouts and hyperparameters for convolution (1-3-D, transposed, backward),
pooling and im2col/col2im.

Profiles: "ci" (the default; bounded, about 30 s in all) and "long" (for local
runs: CYCONV_FUZZ=long python -m pytest tests/test_fuzz.py).
"""
import os
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cyconv
import reference as ref
from conftest import assert_close, to_first, to_last
from cyconv import _workspace

settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("CYCONV_FUZZ", "ci")
settings.load_profile(PROFILE)

dtypes = st.sampled_from([np.float32, np.float64])


def _array(data, shape, dtype):
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32).astype(dtype)


def _tiling(data):
    """Sometimes force tiny im2col tiles and one weight-gradient bucket per tile."""
    tile = data.draw(st.sampled_from([None, 1, 3, 8]), label="tile")
    if tile is None:
        return mock.patch.object(_workspace, "tile_size", _workspace.tile_size)
    return mock.patch.object(_workspace, "tile_size", lambda k, n, i: min(n, tile))


@st.composite
def conv_problems(draw):
    d = draw(st.integers(1, 3), label="ndim")
    groups = draw(st.integers(1, 3))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n = draw(st.integers(0, 2))
    kernel = draw(st.lists(st.integers(1, 4), min_size=d, max_size=d))
    stride = draw(st.lists(st.integers(1, 3), min_size=d, max_size=d))
    dilation = draw(st.lists(st.integers(1, 3), min_size=d, max_size=d))
    pads = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                         min_size=d, max_size=d))
    size = []
    for k, dl, (b, a) in zip(kernel, dilation, pads):
        need = max(1, (k - 1) * dl + 1 - b - a)
        size.append(need + draw(st.integers(0, 6 if d < 3 else 3)))
    return dict(d=d, groups=groups, cg=cg, kg=kg, n=n, kernel=kernel, stride=stride,
                dilation=dilation, pads=pads, size=size)


@given(p=conv_problems(), dtype=dtypes, channels_last=st.booleans(), bias=st.booleans(),
       data=st.data())
def test_conv_forward_and_backward(p, dtype, channels_last, bias, data):
    d, G = p["d"], p["groups"]
    x = _array(data, (p["n"], G * p["cg"], *p["size"]), dtype)
    w = _array(data, (G * p["kg"], p["cg"], *p["kernel"]), dtype)
    b = _array(data, (G * p["kg"],), dtype) if bias else None
    kw = dict(stride=p["stride"], padding=[tuple(q) for q in p["pads"]],
              dilation=p["dilation"], groups=G, channels_last=channels_last)
    conv = getattr(cyconv, f"conv{d}d")
    backward = getattr(cyconv, f"conv{d}d_backward")
    xin = to_last(x) if channels_last else x
    with _tiling(data):
        y = conv(xin, w, b, **kw)
        yr = ref.conv_nd(x, w, b, p["stride"], p["pads"], p["dilation"], G)
        assert_close(to_first(y) if channels_last else y, yr, dtype, "forward")
        gy = _array(data, yr.shape, dtype)
        gx, gw, gb = backward(to_last(gy) if channels_last else gy, xin, w, **kw)
    rgx, rgw = ref.conv_nd_backward(gy, x, w, p["stride"], p["pads"], p["dilation"], G)[:2]
    assert_close(to_first(gx) if channels_last else gx, rgx, dtype, "grad input")
    assert_close(gw, rgw, dtype, "grad weight")
    assert_close(gb, gy.astype(np.float64).sum(axis=tuple(i for i in range(gy.ndim) if i != 1)),
                 dtype, "grad bias")


@st.composite
def transpose_problems(draw):
    d = draw(st.integers(1, 3), label="ndim")
    groups = draw(st.integers(1, 2))
    kernel = draw(st.lists(st.integers(1, 4), min_size=d, max_size=d))
    stride = draw(st.lists(st.integers(1, 3), min_size=d, max_size=d))
    dilation = draw(st.lists(st.integers(1, 2), min_size=d, max_size=d))
    size = draw(st.lists(st.integers(1, 5 if d < 3 else 3), min_size=d, max_size=d))
    padding, out_pad = [], []
    for n, k, s, dl in zip(size, kernel, stride, dilation):
        full = (n - 1) * s + dl * (k - 1) + 1
        padding.append(draw(st.integers(0, max(0, (full - 1) // 2))))
        out_pad.append(draw(st.integers(0, max(s, dl) - 1)))
    return dict(d=d, groups=groups, cin=groups * draw(st.integers(1, 2)),
                cog=draw(st.integers(1, 2)), n=draw(st.integers(0, 2)), kernel=kernel,
                stride=stride, dilation=dilation, size=size, padding=padding,
                output_padding=out_pad)


@given(p=transpose_problems(), dtype=dtypes, channels_last=st.booleans(), data=st.data())
def test_conv_transpose_forward_and_backward(p, dtype, channels_last, data):
    d, G = p["d"], p["groups"]
    x = _array(data, (p["n"], p["cin"], *p["size"]), dtype)
    w = _array(data, (p["cin"], p["cog"], *p["kernel"]), dtype)
    b = _array(data, (p["cog"] * G,), dtype)
    args = (p["stride"], p["padding"], p["output_padding"], G, p["dilation"])
    yr = ref.conv_transpose_nd(x, w, b, *args)
    xin = to_last(x) if channels_last else x
    y = getattr(cyconv, f"conv_transpose{d}d")(xin, w, b, *args, channels_last=channels_last)
    assert_close(to_first(y) if channels_last else y, yr, dtype, "forward")
    gy = _array(data, yr.shape, dtype)
    gx, gw, gb = getattr(cyconv, f"conv_transpose{d}d_backward")(
        to_last(gy) if channels_last else gy, xin, w, *args, channels_last=channels_last)
    rgx, rgw = ref.conv_transpose_nd_backward(gy, x, w, *args)[:2]
    assert_close(to_first(gx) if channels_last else gx, rgx, dtype, "grad input")
    assert_close(gw, rgw, dtype, "grad weight")


@st.composite
def pool_problems(draw):
    d = draw(st.integers(1, 3), label="ndim")
    kernel = draw(st.lists(st.integers(1, 4), min_size=d, max_size=d))
    stride = draw(st.lists(st.integers(1, 3), min_size=d, max_size=d))
    dilation = draw(st.lists(st.integers(1, 2), min_size=d, max_size=d))
    pads, size = [], []
    for k, dl in zip(kernel, dilation):
        p = draw(st.integers(0, k // 2))
        pads.append((p, p))
        size.append(max(1, (k - 1) * dl + 1 - 2 * p) + draw(st.integers(0, 5 if d < 3 else 3)))
    return dict(d=d, kernel=kernel, stride=stride, dilation=dilation, pads=pads, size=size,
                n=draw(st.integers(0, 2)), c=draw(st.integers(1, 3)),
                ceil_mode=draw(st.booleans()))


@given(p=pool_problems(), dtype=dtypes, channels_last=st.booleans(),
       op=st.sampled_from(["max", "avg"]), count_include_pad=st.booleans(),
       divisor=st.sampled_from([None, 1, 3]), nan=st.booleans(), data=st.data())
def test_pooling_forward_and_backward(p, dtype, channels_last, op, count_include_pad,
                                      divisor, nan, data):
    d = p["d"]
    x = _array(data, (p["n"], p["c"], *p["size"]), dtype)
    if nan and x.size:
        x.flat[data.draw(st.integers(0, x.size - 1), label="nan at")] = np.nan
    pad = [q[0] for q in p["pads"]]
    xin = to_last(x) if channels_last else x
    common = dict(channels_last=channels_last)
    try:
        if op == "max":
            y, idx = getattr(cyconv, f"max_pool{d}d")(
                xin, p["kernel"], p["stride"], pad, p["dilation"], p["ceil_mode"],
                return_indices=True, **common)
        else:
            y = getattr(cyconv, f"avg_pool{d}d")(
                xin, p["kernel"], p["stride"], pad, p["dilation"], p["ceil_mode"],
                count_include_pad, divisor, **common)
    except ValueError as exc:   # only a window wholly in the padding may be refused
        assert "wholly in the padding" in str(exc)
        return
    r = ref.pool(x, op, p["kernel"], p["stride"], p["pads"], p["dilation"], p["ceil_mode"],
                 count_include_pad, divisor)
    yf = to_first(y) if channels_last else y
    if op == "max":
        np.testing.assert_array_equal(yf, r[0].astype(dtype))
        np.testing.assert_array_equal(to_first(idx) if channels_last else idx, r[1])
        gy = _array(data, yf.shape, dtype)
        gx = getattr(cyconv, f"max_pool{d}d_backward")(
            to_last(gy) if channels_last else gy, idx, xin.shape, **common)
        rgx = ref.max_pool_backward(gy, r[1], x.shape)
    else:
        np.testing.assert_array_equal(np.isnan(yf), np.isnan(r))   # NaN propagates
        assert_close(np.nan_to_num(yf), np.nan_to_num(r), dtype, "avg")
        gy = _array(data, yf.shape, dtype)
        gx = getattr(cyconv, f"avg_pool{d}d_backward")(
            to_last(gy) if channels_last else gy, xin.shape, p["kernel"], p["stride"], pad,
            p["dilation"], p["ceil_mode"], count_include_pad, divisor, **common)
        rgx = ref.avg_pool_backward(gy, x.shape, p["kernel"], p["stride"], p["pads"],
                                    p["dilation"], p["ceil_mode"], count_include_pad, divisor)
    assert_close(to_first(gx) if channels_last else gx, rgx, dtype, "grad input")


@given(p=conv_problems().filter(lambda p: p["d"] == 2), dtype=dtypes, data=st.data())
def test_im2col_col2im(p, dtype, data):
    x = _array(data, (p["n"], p["cg"], *p["size"]), dtype)
    kw = dict(stride=p["stride"], padding=[tuple(q) for q in p["pads"]],
              dilation=p["dilation"])
    cols = cyconv.im2col(x, p["kernel"], **kw)
    rc = ref.im2col(x, p["kernel"], p["stride"], p["pads"], p["dilation"])
    assert_close(cols, rc, dtype, "im2col")
    back = cyconv.col2im(cols, p["size"], p["kernel"], **kw)
    assert_close(back, ref.col2im(rc, p["size"], p["kernel"], p["stride"], p["pads"],
                                  p["dilation"]), dtype, "col2im")
