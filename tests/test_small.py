"""The few-input-channel forward kernels (small_forward, band_forward) against
tests/reference.py.

conv1d/conv2d take them for channels-first, groups-1 convolutions with at
most cyconv.conv.SMALL_MAX_CHANNELS input channels and at least
SMALL_MIN_TAPS taps (band_forward from BAND_MIN_TAPS taps and PACKED_MIN_OUT
output channels, float32, AVX2 or AVX-512); every case runs with each kernel
and block size, and the tests check that it was taken, with work items of
one output row and of many, every stride phase split, and rows wider than
one 32-column register block.
"""
import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import assert_close, by_thread_count, random, spy_kernel
from cyconv import _kernels
from cyconv import conv as conv_mod


@pytest.fixture(params=["small_forward", "small_forward_wide", "small_forward_3",
                        "band_forward"])
def small(request, monkeypatch):
    """Each first-layer kernel: small_forward with blocks of 4 output
    channels, or of 8 or (AVX2 only) 3 (float32; float64 keeps 4), or
    band_forward (packed weights, 8-position blocks) with its limits,
    variant and dtype restrictions lifted."""
    if request.param == "small_forward_3" and _kernels.VARIANT != "avx2":
        pytest.skip("3-channel blocks are built in the AVX2 variant only")
    monkeypatch.setattr(conv_mod, "SMALL_MIN_TAPS", 1)
    monkeypatch.setattr(conv_mod, "SMALL_ENABLED", True)   # also in the baseline variant
    monkeypatch.setattr(conv_mod, "SMALL_WIDE", request.param == "small_forward_wide")
    monkeypatch.setattr(conv_mod, "SMALL3", request.param == "small_forward_3")
    band = request.param == "band_forward"
    monkeypatch.setattr(conv_mod, "BAND_ENABLED", band)
    if band:
        monkeypatch.setattr(conv_mod, "BAND_MIN_TAPS", 1)
        monkeypatch.setattr(conv_mod, "PACKED_MIN_OUT", 1)
        monkeypatch.setattr(conv_mod, "_PACKED_ITEMSIZES", (4, 8))
    return spy_kernel(monkeypatch, request.param.replace("_wide", "").replace("_3", ""))


# (N, C_in, H, W, C_out, kernel, stride, padding, dilation)
SHAPES = {
    "3x3_p1": (2, 3, 9, 8, 5, (3, 3), 1, 1, 1),
    "one_channel": (3, 1, 7, 7, 2, (3, 3), 1, 0, 1),
    "four_channels_c_out_9": (1, 4, 6, 9, 9, (2, 3), 1, 1, 1),
    "stride4_11x11": (1, 3, 35, 37, 6, (11, 11), 4, 0, 1),
    "stride_per_dim": (2, 2, 13, 17, 4, (3, 5), (2, 3), (1, 2), 1),
    "dilation": (1, 3, 12, 14, 4, (3, 3), 1, 2, (2, 3)),
    "stride_and_dilation": (1, 2, 15, 19, 3, (3, 3), 2, 1, 2),
    "asymmetric_pad": (1, 3, 8, 9, 4, (3, 3), 1, ((0, 2), (3, 1)), 1),
    "wide_rows": (1, 3, 4, 150, 5, (3, 5), 1, 2, 1),
    "wide_strided": (1, 2, 5, 200, 3, (3, 3), 3, 1, 1),
    "kernel_as_wide_as_input": (2, 3, 5, 5, 4, (5, 5), 1, 0, 1),
    # whole blocks of 8 channels x 32 columns (stored straight into y), then
    # a partial channel block and a partial column block
    "whole_and_partial_blocks": (2, 3, 6, 70, 17, (3, 3), 1, 1, 1),
    "whole_blocks_only": (1, 2, 4, 64, 16, (3, 3), 1, 1, 1),
    # band_forward: a second block of 32 packed channels, partly used
    "c_out_40": (1, 3, 9, 20, 40, (3, 3), 1, 1, 1),
}


@pytest.mark.parametrize("band", ["default", "one_row"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_matches_reference(name, dtype, band, small, monkeypatch):
    N, C, H, W, K, kernel, stride, pad, dil = SHAPES[name]
    if band == "one_row":
        monkeypatch.setattr(conv_mod, "_SMALL_BAND_BYTES", 1)
    rng = np.random.default_rng(len(name))
    x = random(rng, (N, C, H, W), dtype)
    w = random(rng, (K, C) + kernel, dtype)
    b = random(rng, (K,), dtype)
    y = cyconv.conv2d(x, w, b, stride=stride, padding=pad, dilation=dil)
    assert small, "the small-channel kernel was not taken"
    pair = lambda v: (v, v) if np.isscalar(v) else tuple(v)
    pads = pad if not np.isscalar(pad) and not np.isscalar(pad[0]) else tuple(
        (p, p) for p in pair(pad))
    r = ref.conv2d(x, w, b, stride=pair(stride), pads=pads, dilation=pair(dil))
    assert_close(y, r, dtype, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["whole_and_partial_blocks", "stride4_11x11"])
def test_without_bias(name, dtype, small):
    N, C, H, W, K, kernel, stride, pad, dil = SHAPES[name]
    rng = np.random.default_rng(5)
    x = random(rng, (N, C, H, W), dtype)
    w = random(rng, (K, C) + kernel, dtype)
    y = cyconv.conv2d(x, w, stride=stride, padding=pad, dilation=dil)
    assert small, "the small-channel kernel was not taken"
    r = ref.conv2d(x, w, None, stride=(stride, stride), pads=((pad, pad), (pad, pad)),
                   dilation=(dil, dil))
    assert_close(y, r, dtype, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv1d(dtype, small):
    rng = np.random.default_rng(2)
    x = random(rng, (2, 3, 70), dtype)
    w = random(rng, (6, 3, 5), dtype)
    y = cyconv.conv1d(x, w, stride=2, padding=((1, 3),), dilation=2)
    assert small
    r = ref.conv_nd(x, w, None, (2,), [(1, 3)], (2,))
    assert_close(y, r, dtype)


def test_thread_count_does_not_change_bits(small):
    rng = np.random.default_rng(4)
    x = random(rng, (3, 3, 21, 40))
    w = random(rng, (7, 3, 3, 3))
    outs = by_thread_count(lambda: cyconv.conv2d(x, w, padding=1))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_band_selection_rule(monkeypatch):
    from cyconv import _params

    assert conv_mod.BAND_ENABLED == (_kernels.VARIANT in ("avx2", "avx512"))
    monkeypatch.setattr(conv_mod, "BAND_ENABLED", True)

    def uses(C_in=3, k=11, C_out=96, dtype=np.float32):
        x = np.zeros((1, C_in, 30, 30), dtype)
        w = np.zeros((C_out, C_in, k, k), dtype)
        geo = _params.conv_geometry("conv", 2, x, w, None, 4, 0, 1, 1,
                                    padding_mode="zeros", channels_last=False)
        return conv_mod._uses_band(geo, dtype)
    assert uses()
    assert not uses(k=9)                                  # 243 taps
    assert not uses(C_out=conv_mod.PACKED_MIN_OUT - 1)
    assert not uses(dtype=np.float64)
    monkeypatch.setattr(conv_mod, "BAND_ENABLED", False)
    assert not uses()


def test_selection_rule(monkeypatch):
    from cyconv import _params

    assert conv_mod.SMALL_ENABLED == (_kernels.VARIANT != "baseline")
    monkeypatch.setattr(conv_mod, "SMALL_ENABLED", True)

    def geo(C_in=3, k=3, groups=1, cl=False, nd=2):
        x = np.zeros((1, C_in) + (20,) * nd, np.float32)
        if cl:
            x = np.moveaxis(x, 1, -1)
        w = np.zeros((6, C_in // groups) + (k,) * nd, np.float32)
        return _params.conv_geometry("conv", nd, x, w, None, 1, 0, 1, groups,
                                     padding_mode="zeros", channels_last=cl)
    assert conv_mod._uses_small(geo())
    assert conv_mod._uses_small(geo(C_in=1, k=5))
    assert conv_mod._uses_small(geo(nd=1, k=7))
    assert not conv_mod._uses_small(geo(C_in=1))          # 9 taps
    assert not conv_mod._uses_small(geo(C_in=6))
    assert not conv_mod._uses_small(geo(cl=True))
    assert not conv_mod._uses_small(geo(nd=3))
    assert not conv_mod._uses_small(geo(C_in=4, groups=2))


@pytest.mark.parametrize("C_out", [20, 96])   # small_forward, band_forward on AVX-512
def test_first_layer_against_torch(C_out):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = random(rng, (2, 3, 67, 61))
    w = random(rng, (C_out, 3, 11, 11))
    y = cyconv.conv2d(x, w, stride=4, padding=2)
    t = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                   stride=4, padding=2)
    assert_close(y, t.numpy(), np.float32)


# (N, C_in, H, W, C_out, groups, kernel, stride, padding, dilation)
GROUPED = {
    "depthwise": (2, 5, 9, 40, 5, 5, (3, 3), 1, 1, 1),
    "multiplier": (1, 3, 11, 13, 6, 3, (3, 3), 2, 1, 1),
    "strided_dilated": (1, 4, 17, 70, 8, 4, (3, 5), (3, 2), (2, 1), (1, 2)),
    "rows_not_multiple_of_4": (2, 2, 7, 5, 2, 2, (2, 2), 1, 0, 1),
}


@pytest.mark.parametrize("band", ["default", "four_rows"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(GROUPED))
def test_grouped_matches_reference(name, dtype, band, monkeypatch):
    """Depthwise and channel-multiplier convolutions (grouped_forward; the
    3x3 stride-1 ones would take depthwise3_forward, see test_depthwise.py)."""
    N, C, H, W, K, groups, kernel, stride, pad, dil = GROUPED[name]
    if band == "four_rows":
        monkeypatch.setattr(conv_mod, "_SMALL_BAND_BYTES", 1)
    monkeypatch.setattr(conv_mod, "DEPTHWISE3_ENABLED", False)
    calls = spy_kernel(monkeypatch, "grouped_forward")
    rng = np.random.default_rng(len(name) + 1)
    x = random(rng, (N, C, H, W), dtype)
    w = random(rng, (K, C // groups) + kernel, dtype)
    b = random(rng, (K,), dtype)
    y = cyconv.conv2d(x, w, b, stride=stride, padding=pad, dilation=dil, groups=groups)
    assert calls
    pair = lambda v: (v, v) if np.isscalar(v) else tuple(v)
    r = ref.conv_nd(x, w, b, pair(stride), [(p, p) for p in pair(pad)], pair(dil), groups)
    assert_close(y, r, dtype, name)
