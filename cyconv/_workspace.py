"""Scratch memory for the kernels: bounded, and reused between calls.

Fresh memory is slow to touch the first time (page faults), so each calling
Python thread keeps its scratch buffers and reuses them; they grow to the
largest request seen, which the limits below bound whatever the batch size:

* im2col tiles: at most TILE_BYTES per OpenMP thread (Winograd F(4x4, 3x3)
  items: WINOGRAD4_BYTES);
* weight-gradient partial sums: at most PARTIAL_BYTES per call, in at most
  MAX_BUCKETS buckets (none when the weights alone exceed that).
"""
import math
import threading

import numpy as np

TILE_BYTES = 1 << 20      # 1 MiB of im2col columns per thread (about one L2)
WINOGRAD4_BYTES = 2 << 20  # 2 MiB per thread for a Winograd F(4x4, 3x3) item
PARTIAL_BYTES = 16 << 20  # 16 MiB of partial weight gradients per call
MAX_BUCKETS = 16

_local = threading.local()


def scratch(key, shape, dtype):
    """An uninitialised array of ``shape``, reused across calls of this thread."""
    dtype = np.dtype(dtype)
    nbytes = max(1, math.prod(shape) * dtype.itemsize)
    bufs = _local.__dict__.setdefault("bufs", {})
    buf = bufs.get(key)
    if buf is None or buf.nbytes < nbytes:
        buf = bufs[key] = np.empty(nbytes, np.uint8)
    return buf[:math.prod(shape) * dtype.itemsize].view(dtype).reshape(shape)


def tile_size(k, length, itemsize):
    """Output positions per im2col tile of ``k`` rows: within TILE_BYTES.

    A function of the shape only, never of the thread count, so that results
    are identical for every number of threads.
    """
    return max(1, min(length, TILE_BYTES // max(1, k * itemsize)))


def winograd_tiles(c, k, itemsize, a2=16):
    """Tiles per Winograd work item: its transformed input (a2, c, T) and
    products (a2, k, T) within TILE_BYTES for F(2x2, 3x3) (a2 = 16), within
    WINOGRAD4_BYTES for F(4x4, 3x3) (a2 = 36; its GEMMs need more tiles).
    A function of the shape only."""
    budget = TILE_BYTES if a2 == 16 else WINOGRAD4_BYTES
    return max(1, budget // (a2 * (c + k) * itemsize))


def row_aligned(tile, row):
    """Round a tile down to whole rows of ``row`` positions when it spans one."""
    return tile - tile % row if tile >= row else tile


def buckets(items, weight_bytes):
    """Number of weight-gradient partial sums: 1 means accumulate in place."""
    p = min(items, MAX_BUCKETS, PARTIAL_BYTES // max(1, weight_bytes))
    return p if p > 1 else 1


# Long batches run as a sequence of kernel calls over blocks of samples, each
# of at most about CHUNK_WORK multiply-adds (or window taps), so that Python
# gets control between blocks: Ctrl-C (SIGINT) raises KeyboardInterrupt within
# one block's time instead of after the whole batch.  Blocks depend on the
# shape only, never on the thread count.
CHUNK_WORK = 1 << 30
try:
    from ._build_info import DEBUG as _DEBUG
except ImportError:  # pragma: no cover - built by something other than setup.py
    _DEBUG = False
if _DEBUG:   # -O0 kernels with bounds checks are many times slower
    CHUNK_WORK = 1 << 25


def sample_blocks(n, work_per_sample):
    """(n0, n1) ranges covering range(n), each of about CHUNK_WORK work."""
    per = max(1, CHUNK_WORK // max(1, int(work_per_sample)))
    return [(n0, min(n, n0 + per)) for n0 in range(0, n, per)]
