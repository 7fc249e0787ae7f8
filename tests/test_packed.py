"""The packed-weight forward kernel (packed_forward) against tests/reference.py.

conv1d/2d/3d take it for channels-first, groups-1, float32 convolutions that
need im2col, with at least PACKED_MIN_OUT output channels and weights within
PACKED_MAX_WEIGHT_BYTES (AVX-512 variant).  The fixture lifts the limits and
the variant and dtype restrictions, so every case runs the kernel on any
machine, and checks that it was taken: output channels not a multiple of its
32-channel register block, tiles whose positions are not a multiple of its
8, tiles of a few positions and of whole samples, runs longer than its
64-position weight pass.
"""
import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import (assert_close, assert_same_nonfinite, by_thread_count, random,
                      spy_kernel)
from cyconv import _workspace
from cyconv import conv as conv_mod


@pytest.fixture
def packed(monkeypatch):
    monkeypatch.setattr(conv_mod, "PACKED_ENABLED", True)
    monkeypatch.setattr(conv_mod, "PACKED_MIN_OUT", 1)
    monkeypatch.setattr(conv_mod, "PACKED_MAX_WEIGHT_BYTES", 1 << 40)
    monkeypatch.setattr(conv_mod, "_PACKED_ITEMSIZES", (4, 8))
    monkeypatch.setattr(conv_mod, "SMALL_MAX_CHANNELS", 0)
    monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_CHANNELS", 1 << 30)
    return spy_kernel(monkeypatch, "packed_forward")


def pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


# (N, C_in, H, W, C_out, kernel, stride, padding, dilation)
SHAPES = {
    "resnet_s2_like": (2, 16, 12, 12, 40, (3, 3), 2, 1, 1),
    "one_channel_out": (2, 3, 7, 9, 1, (3, 3), 1, 1, 1),
    "c_out_33": (1, 5, 10, 11, 33, (3, 3), 1, 0, 1),
    "c_out_64": (1, 4, 9, 9, 64, (2, 2), 1, 0, 1),
    "wide_5x5": (2, 6, 13, 31, 12, (5, 5), 1, 2, 1),
    "dilated": (1, 4, 14, 15, 9, (3, 3), 1, 2, 2),
    "strides_per_dim": (2, 3, 15, 17, 7, (3, 2), (2, 3), (1, 0), 1),
    "one_by_one_strided": (2, 8, 9, 10, 16, (1, 1), 2, 0, 1),
    "one_by_one_padded": (1, 8, 5, 6, 10, (1, 1), 1, 1, 1),
    "long_rows": (1, 2, 3, 150, 35, (3, 3), 1, 1, 1),
}


@pytest.mark.parametrize("tiles", ["default", "tiles3", "tiles8"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_matches_reference(name, dtype, tiles, packed, monkeypatch):
    if tiles != "default":
        size = int(tiles[5:])
        monkeypatch.setattr(_workspace, "tile_size", lambda k, n, i: min(n, size))
    N, C, H, W, K, kernel, stride, pad, dil = SHAPES[name]
    rng = np.random.default_rng(len(name))
    x = random(rng, (N, C, H, W), dtype)
    w = random(rng, (K, C) + kernel, dtype)
    b = random(rng, (K,), dtype)
    x0, w0 = x.copy(), w.copy()
    y = cyconv.conv2d(x, w, b, stride=stride, padding=pad, dilation=dil)
    assert packed, "the packed kernel was not taken"
    assert np.array_equal(x, x0) and np.array_equal(w, w0)
    r = ref.conv2d(x, w, b, stride=pair(stride), pads=tuple((p, p) for p in pair(pad)),
                   dilation=pair(dil))
    assert_close(y, r, dtype, name)


@pytest.mark.parametrize("nd", [1, 3])
def test_other_dimensions(nd, packed):
    rng = np.random.default_rng(nd)
    sp = (6, 7, 8) if nd == 3 else (50,)
    x = random(rng, (2, 3) + sp)
    w = random(rng, (10, 3) + (3,) * nd)
    y = getattr(cyconv, f"conv{nd}d")(x, w, None, stride=2, padding=1)
    assert packed
    assert_close(y, ref.conv_nd(x, w, None, (2,) * nd, [(1, 1)] * nd, (1,) * nd), np.float32)


def test_thread_count_does_not_change_bits(packed, monkeypatch):
    monkeypatch.setattr(_workspace, "tile_size", lambda k, n, i: min(n, 20))
    rng = np.random.default_rng(4)
    x = random(rng, (3, 5, 13, 14))
    w = random(rng, (35, 5, 3, 3))
    outs = by_thread_count(lambda: cyconv.conv2d(x, w, stride=2, padding=1))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_empty_batch(packed):
    x = np.zeros((0, 4, 6, 6), np.float32)
    w = np.ones((8, 4, 3, 3), np.float32)
    assert cyconv.conv2d(x, w, stride=2).shape == (0, 8, 2, 2)


def test_inf_and_nan_propagate(packed):
    """A tile's last register block reads scratch past its rows; those lanes
    only reach outputs that are never written."""
    rng = np.random.default_rng(6)
    x = random(rng, (1, 3, 9, 9))
    w = random(rng, (5, 3, 3, 3))
    x[0, 1, 4, 4] = np.nan
    w[2, 0, 1, 1] = np.inf
    y = cyconv.conv2d(x, w, padding=1)
    with np.errstate(invalid="ignore"):
        r = ref.conv2d(x.astype(np.float64), w.astype(np.float64), None,
                       pads=((1, 1), (1, 1)))
    assert packed
    assert_same_nonfinite(y, r, np.float32)


def test_selection_rule(monkeypatch):
    from cyconv import _kernels, _params

    assert conv_mod.PACKED_ENABLED == (_kernels.VARIANT == "avx512")
    monkeypatch.setattr(conv_mod, "PACKED_ENABLED", True)

    def uses(C_in=128, C_out=256, k=3, stride=2, padding=1, groups=1, cl=False, nd=2,
             dtype=np.float32):
        x = np.zeros((1, C_in) + (20,) * nd, dtype)
        if cl:
            x = np.moveaxis(x, 1, -1)
        w = np.zeros((C_out, C_in // groups) + (k,) * nd, dtype)
        geo = _params.conv_geometry("conv", nd, x, w, None, stride, padding, 1, groups,
                                    padding_mode="zeros", channels_last=cl)
        return conv_mod._uses_packed(geo, geo.pads, dtype)
    assert uses()
    assert uses(nd=1) and uses(nd=3, C_in=16)
    assert uses(k=1, stride=2, padding=0)
    assert uses(C_out=conv_mod.PACKED_MIN_OUT)
    assert not uses(C_out=conv_mod.PACKED_MIN_OUT - 1)
    limit = conv_mod.PACKED_MAX_WEIGHT_BYTES // (4 * 9)
    assert uses(C_in=limit // 512, C_out=512)
    assert not uses(C_in=limit // 512 + 1, C_out=512)
    assert not uses(k=1, stride=1, padding=0)   # a plain GEMM on the input in place
    assert not uses(dtype=np.float64)
    assert not uses(groups=2)
    assert not uses(cl=True)


def test_resnet_3x3_s2_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = random(rng, (2, 128, 14, 15))
    w = random(rng, (256, 128, 3, 3))
    b = random(rng, (256,))
    y = cyconv.conv2d(x, w, b, stride=2, padding=1)
    t = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                   torch.from_numpy(b).double(), stride=2, padding=1)
    assert_close(y, t.numpy(), np.float32)


# (C_out, taps, block): whole and partial blocks, runs of taps past the
# kernel's 64-tap work item and shorter than one
@pytest.mark.parametrize("C_out, K, block", [(64, 128, 32), (33, 70, 32), (5, 3, 8),
                                             (96, 363, 32), (17, 200, 8), (1, 1, 32)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_weights_layout(C_out, K, block, dtype, monkeypatch):
    """wb[b, t, o] = w2[b * block + o, t], zero past C_out, on one thread and
    split over threads; the weights are left as they were."""
    monkeypatch.setattr(conv_mod, "_BLOCKED_PARALLEL_MIN", 0)   # split even small weights
    w2 = random(np.random.default_rng(C_out * K), (C_out, K), dtype)
    keep = w2.copy()
    nb = -(-C_out // block)
    expected = np.zeros((nb, K, block), dtype)
    for b in range(nb):
        for o in range(block):
            if b * block + o < C_out:
                expected[b, :, o] = w2[b * block + o]
    for got in by_thread_count(lambda: conv_mod._blocked_weights(w2, block).copy()):
        assert got.shape == expected.shape and got.dtype == dtype
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(w2, keep)
