"""Memory: no leaks over thousands of calls, MemoryError (with the size) for
what cannot be allocated, 64-bit index arithmetic past 2**31 elements, and
results that do not depend on how a batch is split into blocks."""
import gc
import os

import numpy as np
import pytest

import cyconv
from cyconv import _workspace, signal


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


rng = np.random.default_rng(0)
X2 = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)
W2 = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
X1, W1 = X2[:, :, 0], W2[:, :, 0]
X3 = rng.standard_normal((1, 2, 5, 6, 6))
W3 = rng.standard_normal((3, 2, 2, 2, 2))
GY2 = rng.standard_normal((2, 6, 12, 12)).astype(np.float32)
IMG = rng.standard_normal((40, 40))
_, IDX = cyconv.max_pool2d(X2, 2, return_indices=True)
GP = np.ones(IDX.shape, np.float32)
LW = rng.standard_normal((10, 10, 3, 4, 3, 3)).astype(np.float32)

OPS = {
    "conv1d": lambda: cyconv.conv1d(X1, W1, padding=1),
    "conv2d": lambda: cyconv.conv2d(X2, W2, padding=1),
    "conv2d_depthwise": lambda: cyconv.conv2d(X2, W2[:4, :1], padding=1, groups=4),
    "conv2d_channels_last": lambda: cyconv.conv2d(np.moveaxis(X2, 1, -1).copy(), W2,
                                                  padding=1, channels_last=True),
    "conv3d": lambda: cyconv.conv3d(X3, W3),
    "conv2d_backward": lambda: cyconv.conv2d_backward(GY2, X2, W2, padding=1),
    "conv_transpose2d": lambda: cyconv.conv_transpose2d(X2, W2.transpose(1, 0, 2, 3).copy(),
                                                        stride=2),
    "conv_transpose2d_backward": lambda: cyconv.conv_transpose2d_backward(
        GY2[:, :, :10, :10], X2[:, :, :8, :8], W2.transpose(1, 0, 2, 3).copy()),
    "max_pool2d": lambda: cyconv.max_pool2d(X2, 3, 2, 1, return_indices=True),
    "avg_pool2d": lambda: cyconv.avg_pool2d(X2, 3, 2, 1),
    "lp_pool2d": lambda: cyconv.lp_pool2d(X2, 2.0, 2),
    "adaptive_avg_pool2d": lambda: cyconv.adaptive_avg_pool2d(X2, 5),
    "adaptive_max_pool2d": lambda: cyconv.adaptive_max_pool2d(X2, 5, return_indices=True),
    "max_pool2d_backward": lambda: cyconv.max_pool2d_backward(GP, IDX, X2.shape),
    "avg_pool2d_backward": lambda: cyconv.avg_pool2d_backward(GP, X2.shape, 2),
    "im2col_col2im": lambda: cyconv.col2im(cyconv.im2col(X2, 3), (12, 12), 3),
    "locally_connected2d": lambda: cyconv.locally_connected2d_backward(
        GY2[:, :3, :10, :10], X2, LW),
    "correlate2d": lambda: signal.correlate2d(IMG, IMG[:5, :5], mode="same",
                                              boundary="symm"),
    "conv2d_matrix": lambda: cyconv.conv2d_matrix(W2, (4, 12, 12), padding=1),
}

CALLS = 2000


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.parametrize("op", sorted(OPS))
def test_repeated_calls_do_not_leak(op):
    fn = OPS[op]
    for _ in range(200):          # warm up: scratch buffers, allocator pools
        fn()
    gc.collect()
    before = _rss()
    for _ in range(CALLS):
        fn()
    gc.collect()
    grown = _rss() - before
    # a leak of even 300 bytes per call would add 600 kB
    assert grown < 512 * 1024, f"{op}: resident memory grew {grown / 1024:.0f} KiB " \
                               f"over {CALLS} calls"


def test_unallocatable_output_is_a_memory_error_with_its_size():
    x = np.ones((1, 1, 2, 2))
    w = np.ones((1, 1, 1, 1))
    # 512 PiB of float64 output: more than any x86-64 address space (57 bits
    # is 128 PiB), so no overcommit setting lets the allocation succeed; an
    # 8 TiB output did succeed on a 128 GiB machine with overcommit on.
    with pytest.raises(MemoryError, match=r"PiB|TiB|GiB|bytes"):
        cyconv.conv_transpose2d(x, w, stride=2 ** 28 + 1)


def test_output_shape_overflowing_an_index_is_a_clear_error():
    x = np.ones((1, 1, 2, 2))
    w = np.ones((1, 1, 1, 1))
    with pytest.raises((ValueError, MemoryError), match=r"too big|allocate|maximum|stride"):
        cyconv.conv_transpose2d(x, w, stride=2 ** 40)


@pytest.mark.parametrize("op", ["conv2d", "conv2d_depthwise", "conv2d_backward",
                                "max_pool2d", "avg_pool2d", "conv_transpose2d"])
def test_results_do_not_depend_on_the_sample_blocks(op, monkeypatch):
    whole = OPS[op]()
    monkeypatch.setattr(_workspace, "CHUNK_WORK", 1)   # one sample per kernel call
    assert _workspace.sample_blocks(2, 10) == [(0, 1), (1, 2)]
    blocked = OPS[op]()
    for a, b in zip(whole if isinstance(whole, tuple) else (whole,),
                    blocked if isinstance(blocked, tuple) else (blocked,)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(_available() < 8 * 2 ** 30, reason="needs 8 GiB of free memory")
def test_index_arithmetic_past_2_31_elements():
    """A (1, 2, 32768, 32769) float32 input has 2**31 + 65536 elements: the
    second channel's offsets only fit in 64-bit indices.  np.zeros maps
    untouched pages to the zero page, so only the output and a few written
    pages are resident (about 2 GiB)."""
    x = np.zeros((1, 2, 32768, 32769), np.float32)
    assert x.size > 2 ** 31
    x[0, 1, -2, -3] = 5.0
    x[0, 1, -1, -2] = -7.0
    y = cyconv.max_pool2d(x, 2)
    assert y.shape == (1, 2, 16384, 16384)
    assert y[0, 1, -1, -1] == 5.0 and y[0, 1, -1, -2] == 0.0
    assert float(y[0, 0].max()) == 0.0
    del y
    g = cyconv.avg_pool2d(x[:, 1:], 2)
    assert g[0, 0, -1, -1] == -0.5 and g[0, 0, -1, -2] == 0.0
