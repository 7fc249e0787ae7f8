"""conv2d and conv2d_backward against tests/reference.py and PyTorch."""
import functools
import zlib

import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import assert_close, random, spy_kernel, to_first, to_last

# id: (N, C_in, H, W, C_out, (kh, kw), stride, padding, dilation, groups, mode)
CASES = {
    "basic_3x3_p1": (2, 3, 7, 6, 4, (3, 3), 1, 1, 1, 1, "zeros"),
    "nonsquare_kernel_stride": (2, 2, 9, 7, 3, (3, 2), (2, 1), (1, 0), 1, 1, "zeros"),
    "stride2_no_pad_odd": (1, 3, 9, 8, 2, (3, 3), 2, 0, 1, 1, "zeros"),
    "stride3_dilation2": (2, 2, 13, 11, 3, (3, 3), 3, 2, 2, 1, "zeros"),
    "dilation_per_dim": (1, 2, 10, 9, 2, (2, 3), 1, 1, (2, 1), 1, "zeros"),
    "groups2": (2, 4, 6, 7, 6, (3, 3), 1, 1, 1, 2, "zeros"),
    "depthwise": (2, 4, 6, 6, 4, (3, 3), 1, 1, 1, 4, "zeros"),
    "depthwise_multiplier": (1, 3, 7, 5, 6, (3, 3), 2, 1, 1, 3, "zeros"),
    # wider than the direct kernel's 64-column chunk: whole and partial chunks
    "depthwise_wide": (2, 3, 5, 150, 3, (3, 5), 1, ((1, 2), (3, 1)), (1, 2), 3, "zeros"),
    "depthwise_wide_s2": (1, 2, 4, 140, 4, (2, 3), 2, 1, 1, 2, "zeros"),
    "depthwise_wide_reflect": (1, 2, 6, 131, 2, (3, 3), 1, 2, 2, 2, "reflect"),
    "asymmetric": (2, 3, 8, 7, 2, (3, 3), 1, ((1, 2), (0, 3)), 1, 1, "zeros"),
    "asymmetric_stride2": (1, 2, 9, 9, 3, (3, 2), 2, ((0, 2), (3, 1)), 1, 1, "zeros"),
    "asymmetric_stride3": (2, 2, 11, 10, 3, (3, 3), 3, ((2, 0), (1, 2)), 1, 1, "zeros"),
    "same_s1_even_kernel": (2, 2, 7, 6, 3, (4, 2), 1, "same", 1, 1, "zeros"),
    "same_s2": (2, 3, 9, 8, 2, (3, 3), 2, "same", 1, 1, "zeros"),
    "same_s3_dilated": (1, 2, 10, 11, 3, (3, 3), 3, "same", 2, 1, "zeros"),
    "same_s2_s3": (1, 2, 11, 10, 2, (5, 4), (2, 3), "same", 1, 1, "zeros"),
    "valid": (2, 2, 6, 7, 3, (3, 3), 1, "valid", 1, 1, "zeros"),
    "pointwise_1x1": (2, 5, 4, 5, 3, (1, 1), 1, 0, 1, 1, "zeros"),
    "pointwise_groups": (2, 6, 5, 4, 4, (1, 1), 1, 0, 1, 2, "zeros"),
    "pointwise_strided": (2, 4, 7, 6, 3, (1, 1), 2, 0, 1, 1, "zeros"),
    "kernel_equals_input": (2, 3, 5, 4, 2, (5, 4), 1, 0, 1, 1, "zeros"),
    "big_padding": (1, 2, 3, 4, 2, (2, 2), 2, 4, 1, 1, "zeros"),
    "reflect": (2, 2, 6, 7, 3, (3, 3), 1, 2, 1, 1, "reflect"),
    "reflect_asym_stride": (1, 3, 7, 8, 2, (3, 3), 2, ((2, 1), (0, 3)), 1, 1, "reflect"),
    "replicate": (2, 2, 5, 6, 3, (3, 3), 1, ((1, 3), (2, 0)), 1, 1, "replicate"),
    "circular": (2, 2, 6, 5, 3, (3, 3), 1, (2, 1), 1, 1, "circular"),
    "circular_groups": (1, 4, 6, 6, 4, (3, 3), 2, "same", 1, 2, "circular"),
}


def _pads(case):
    N, C, H, W, K, k, s, p, d, g, mode = case
    kernel = k
    stride = (s, s) if isinstance(s, int) else s
    dil = (d, d) if isinstance(d, int) else d
    if p == "same":
        return ref.same_pads((H, W), kernel, stride, dil)
    if p == "valid":
        return ((0, 0), (0, 0))
    if isinstance(p, int):
        return ((p, p), (p, p))
    return tuple((v, v) if isinstance(v, int) else tuple(v) for v in p)


@functools.lru_cache(maxsize=None)
def _problem(name):
    """Inputs and reference results for a case (float32-exact values)."""
    N, C, H, W, K, k, s, p, d, g, mode = case = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = random(rng, (N, C, H, W), np.float64)
    w = random(rng, (K, C // g, *k), np.float64)
    b = random(rng, (K,), np.float64)
    stride = (s, s) if isinstance(s, int) else s
    dil = (d, d) if isinstance(d, int) else d
    pads = _pads(case)
    y = ref.conv2d(x, w, b, stride, pads, dil, g, mode)
    gy = random(rng, y.shape, np.float64)
    gx, gw, gb = ref.conv2d_backward(gy, x, w, stride, pads, dil, g, mode)
    return x, w, b, y, gy, gx, gw, gb


def _kwargs(name, channels_last):
    N, C, H, W, K, k, s, p, d, g, mode = CASES[name]
    return dict(stride=s, padding=p, dilation=d, groups=g, padding_mode=mode,
                channels_last=channels_last)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference(name, dtype, channels_last, workspace_mode):
    x, w, b, y, gy, gx, gw, gb = _problem(name)
    kw = _kwargs(name, channels_last)
    lay = to_last if channels_last else (lambda a: a)
    xin, gyin = lay(x).astype(dtype), lay(gy).astype(dtype)
    out = cyconv.conv2d(xin, w.astype(dtype), b.astype(dtype), **kw)
    assert_close(out, lay(y), dtype, "output")
    grads = cyconv.conv2d_backward(gyin, xin, w.astype(dtype), **kw)
    assert_close(grads.input, lay(gx), dtype, "grad input")
    assert_close(grads.weight, gw, dtype, "grad weight")
    assert_close(grads.bias, gb, dtype, "grad bias")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name, channels_last):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b, _, gy, _, _, _ = _problem(name)
    N, C, H, W, K, k, s, p, d, g, mode = CASES[name]
    (t, bo), (le, r) = _pads(CASES[name])
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    torch_mode = "constant" if mode == "zeros" else mode
    yt = F.conv2d(F.pad(xt, (le, r, t, bo), mode=torch_mode), wt, bt, stride=s,
                  dilation=d, groups=g)
    yt.backward(torch.tensor(gy))
    lay = to_last if channels_last else (lambda a: a)
    kw = _kwargs(name, channels_last)
    assert_close(cyconv.conv2d(lay(x), w, b, **kw), lay(yt.detach().numpy()),
                 np.float64, "output")
    grads = cyconv.conv2d_backward(lay(gy), lay(x), w, **kw)
    assert_close(grads.input, lay(xt.grad.numpy()), np.float64, "grad input")
    assert_close(grads.weight, wt.grad.numpy(), np.float64, "grad weight")
    assert_close(grads.bias, bt.grad.numpy(), np.float64, "grad bias")


def test_torch_padding_argument_forms():
    """cyconv's int, per-dim and 'same' padding mean what PyTorch's do."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = random(rng, (2, 3, 9, 8), np.float64)
    w = random(rng, (4, 3, 3, 5), np.float64)
    for padding in (0, 2, (1, 2), "same", "valid"):
        expected = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w),
                                              padding=padding).numpy()
        assert_close(cyconv.conv2d(x, w, padding=padding), expected, np.float64,
                     f"padding={padding!r}")
    for mode in ("reflect", "replicate", "circular"):
        layer = torch.nn.Conv2d(3, 4, (3, 5), padding=(1, 2), padding_mode=mode,
                                bias=False).double()
        with torch.no_grad():
            layer.weight.copy_(torch.tensor(w))
            expected = layer(torch.tensor(x)).numpy()
        assert_close(cyconv.conv2d(x, w, padding=(1, 2), padding_mode=mode), expected,
                     np.float64, mode)


@pytest.mark.parametrize("name", ["basic_3x3_p1", "asymmetric_stride2", "same_s3_dilated",
                                  "reflect_asym_stride", "circular_groups", "replicate"])
def test_gradients_match_finite_differences(name):
    """d/dtheta sum(conv2d(...) * gy) by central differences (float64)."""
    x, w, b, _, gy, _, _, _ = _problem(name)
    kw = _kwargs(name, False)

    def loss(x_, w_, b_):
        return float(np.sum(cyconv.conv2d(x_, w_, b_, **kw) * gy))

    grads = cyconv.conv2d_backward(gy, x, w, **kw)
    eps = 1e-6
    for arr, grad, which in ((x, grads.input, 0), (w, grads.weight, 1), (b, grads.bias, 2)):
        flat = arr.reshape(-1)
        idx = np.random.default_rng(0).choice(flat.size, min(flat.size, 25), replace=False)
        for i in idx:
            plus, minus = [x.copy(), w.copy(), b.copy()], [x.copy(), w.copy(), b.copy()]
            plus[which].reshape(-1)[i] += eps
            minus[which].reshape(-1)[i] -= eps
            numeric = (loss(*plus) - loss(*minus)) / (2 * eps)
            assert abs(numeric - grad.reshape(-1)[i]) <= 1e-6 * max(1, abs(numeric)), \
                (which, i, numeric, grad.reshape(-1)[i])


@pytest.mark.parametrize("needs", [("input",), ("weight",), ("bias",), ("input", "bias"),
                                   ("weight", "bias"), ()])
def test_needs_selects_gradients(needs):
    x, w, b, y, gy, gx, gw, gb = _problem("groups2")
    grads = cyconv.conv2d_backward(gy, x, w, padding=1, groups=2, needs=needs)
    assert isinstance(grads, cyconv.ConvGrads)
    for name, expected in (("input", gx), ("weight", gw), ("bias", gb)):
        value = getattr(grads, name)
        if name in needs:
            assert_close(value, expected, np.float64, name)
        else:
            assert value is None


def _odd_views(a):
    """The same values through unusual memory layouts."""
    ro = a.copy()
    ro.flags.writeable = False
    yield "read-only", ro
    yield "fortran", np.asfortranarray(a)
    neg = a[..., ::-1].copy()[..., ::-1]
    assert neg.strides[-1] < 0
    yield "negative-strides", neg
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    yield "sliced", big[..., ::2]
    yield "list", a.tolist()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_unusual_memory_layouts(channels_last, tmp_path):
    x, w, b, y, gy, gx, gw, gb = _problem("asymmetric_stride2")
    kw = _kwargs("asymmetric_stride2", channels_last)
    lay = to_last if channels_last else (lambda a: a)
    for label, xv in _odd_views(lay(x)):
        assert_close(cyconv.conv2d(xv, w, b, **kw), lay(y), np.float64, label)
        assert_close(cyconv.conv2d_backward(lay(gy), xv, w, **kw).input, lay(gx),
                     np.float64, label)
    for label, wv in _odd_views(w):
        assert_close(cyconv.conv2d(lay(x), wv, b, **kw), lay(y), np.float64, label)
    for label, gv in _odd_views(lay(gy)):
        assert_close(cyconv.conv2d_backward(gv, lay(x), w, **kw).weight, gw,
                     np.float64, label)
    path = tmp_path / "x.npy"
    np.save(path, lay(x))
    mm = np.load(path, mmap_mode="r")
    assert_close(cyconv.conv2d(mm, w, b, **kw), lay(y), np.float64, "memmap")


@pytest.mark.parametrize("name", ["depthwise", "reflect_asym_stride", "same_s2"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_inputs_never_modified(name, channels_last):
    x, w, b, _, gy, _, _, _ = _problem(name)
    lay = to_last if channels_last else (lambda a: a)
    arrays = [lay(x).astype(np.float32), w.astype(np.float32), b.astype(np.float32),
              lay(gy).astype(np.float32)]
    before = [a.copy() for a in arrays]
    kw = _kwargs(name, channels_last)
    cyconv.conv2d(*arrays[:3], **kw)
    cyconv.conv2d_backward(arrays[3], arrays[0], arrays[1], **kw)
    for a, a0 in zip(arrays, before):
        assert a.tobytes() == a0.tobytes()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_identical_results_for_1_and_2_threads(channels_last, monkeypatch):
    # Several tiles and partial buckets, so both threads get work.
    from cyconv import _workspace
    monkeypatch.setattr(_workspace, "tile_size", lambda k, n, i: min(n, 40))
    rng = np.random.default_rng(3)
    x = random(rng, (5, 6, 23, 19))
    w = random(rng, (8, 3, 3, 3))
    b = random(rng, (8,))
    kw = dict(stride=(1, 2), padding=1, groups=2, channels_last=channels_last)
    if channels_last:
        x = to_last(x)
    results = []
    for n in (1, 2):
        with cyconv.num_threads(n):
            y = cyconv.conv2d(x, w, b, **kw)
            g = cyconv.conv2d_backward(np.ones_like(y) * 0.5 + y, x, w, **kw)
            results.append((y, *g))
    for a, c in zip(*results):
        assert np.array_equal(a, c)


def test_out_argument():
    x, w, b, y, *_ = _problem("same_s2")
    out = np.full(y.shape, np.nan)
    res = cyconv.conv2d(x, w, b, stride=2, padding="same", out=out)
    assert res is out
    assert_close(out, y, np.float64, "out")
    out32 = np.empty(to_last(y).shape, np.float32)
    res = cyconv.conv2d(to_last(x).astype(np.float32), w.astype(np.float32),
                        b.astype(np.float32), stride=2, padding="same",
                        channels_last=True, out=out32)
    assert res is out32
    assert_close(out32, to_last(y), np.float32, "out channels_last")


@pytest.mark.parametrize("dtypes, expected", [
    ((np.float32, np.float32), np.float32),
    ((np.float64, np.float64), np.float64),
    ((np.float16, np.float16), np.float32),
    ((np.int64, np.int32), np.float64),
    ((np.float32, np.int8), np.float32),
    ((np.uint8, np.float16), np.float32),
    ((np.bool_, np.float64), np.float64),
])
def test_dtype_rules(dtypes, expected):
    """float32/float64 kept; others follow np.result_type, computed in float64
    (float16 in float32)."""
    rng = np.random.default_rng(5)
    x = (rng.integers(0, 3, (2, 2, 5, 5))).astype(dtypes[0])
    w = (rng.integers(0, 3, (3, 2, 3, 3))).astype(dtypes[1])
    y = cyconv.conv2d(x, w)
    want = np.result_type(*dtypes)
    want = np.float32 if want in (np.float16, np.float32) else np.float64
    assert y.dtype == want == expected
    assert_close(y, ref.conv2d(x.astype(np.float64), w.astype(np.float64)), y.dtype.type)
    g = cyconv.conv2d_backward(np.ones(y.shape, dtypes[0]), x, w)
    assert g.input.dtype == g.weight.dtype == g.bias.dtype == expected


def test_empty_batch():
    x = np.zeros((0, 3, 6, 6), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    y = cyconv.conv2d(x, w, padding=1)
    assert y.shape == (0, 4, 6, 6) and y.dtype == np.float32
    g = cyconv.conv2d_backward(y, x, w, padding=1)
    assert g.input.shape == x.shape
    assert np.array_equal(g.weight, np.zeros_like(w))
    assert np.array_equal(g.bias, np.zeros(4, np.float32))


def scratch_bytes():
    """Bytes of this thread's reusable kernel scratch."""
    from cyconv import _workspace
    return sum(b.nbytes for b in getattr(_workspace._local, "bufs", {}).values())


def test_large_batch_workspace_is_bounded():
    """Scratch memory stays within the documented budget and does not grow
    with the batch; results stay right across many tiles and buckets."""
    from cyconv import _workspace

    rng = np.random.default_rng(9)
    w = random(rng, (16, 8, 3, 3))
    sizes = []
    for N in (64, 256):
        _workspace._local.bufs = {}
        x = random(rng, (N, 8, 30, 30))
        with cyconv.num_threads(2):
            y = cyconv.conv2d(x, w, padding=1)
            cyconv.conv2d_backward(y, x, w, padding=1)
        sizes.append(scratch_bytes())
        assert sizes[-1] <= 2 * _workspace.TILE_BYTES + _workspace.PARTIAL_BYTES
        assert_close(y[:2], ref.conv2d(x[:2], w, pads=((1, 1), (1, 1))), np.float32, "first")
        assert_close(y[-1:], ref.conv2d(x[-1:], w, pads=((1, 1), (1, 1))), np.float32, "last")
    assert sizes[0] == sizes[1]


def test_winograd4_workspace_is_bounded(monkeypatch):
    """The F(4x4, 3x3) path's scratch stays within WINOGRAD4_BYTES per
    thread and does not grow with the batch."""
    from cyconv import _params, _workspace
    from cyconv import conv as conv_mod
    calls = spy_kernel(monkeypatch, "winograd_forward")
    rng = np.random.default_rng(10)
    w = random(rng, (16, 16, 3, 3))
    sizes = []
    for N in (4, 16):
        _workspace._local.bufs = {}
        x = random(rng, (N, 16, 30, 30))
        with cyconv.num_threads(2):
            y = cyconv.conv2d(x, w, padding=1)
        sizes.append(scratch_bytes())
        assert sizes[-1] <= 2 * _workspace.WINOGRAD4_BYTES
        assert_close(y[-1:], ref.conv2d(x[-1:], w, pads=((1, 1), (1, 1))), np.float32, "last")
    assert calls and sizes[0] == sizes[1]
    geo = _params.conv_geometry("conv", 2, x, w, None, 1, 1, 1, 1, padding_mode="zeros",
                                channels_last=False)
    assert conv_mod._uses_winograd(geo, np.float32) and conv_mod._uses_winograd4(geo, 4)


def test_large_shape_against_torch():
    """A benchmark-sized layer: real tiling and bucketing, float32."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = random(rng, (4, 32, 40, 40))
    w = random(rng, (48, 32, 3, 3))
    y = cyconv.conv2d(x, w, stride=2, padding=1)
    yt = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), stride=2, padding=1)
    assert_close(y, yt.numpy(), np.float32, "forward")
    gy = random(rng, y.shape)
    g = cyconv.conv2d_backward(gy, x, w, stride=2, padding=1)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    torch.nn.functional.conv2d(xt, wt, stride=2, padding=1).backward(torch.tensor(gy))
    assert_close(g.input, xt.grad.numpy(), np.float32, "grad input")
    assert_close(g.weight, wt.grad.numpy(), np.float32, "grad weight")
