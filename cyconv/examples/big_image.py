"""Filter an image larger than you would like to hold in memory, with Dask.

    python -m cyconv.examples.big_image [--size 20000] [--kernel 7] [--band 128]

Makes a SIZE x SIZE float32 image as a ``.npy`` file in a temporary folder,
correlates it with a KERNEL x KERNEL kernel through ``cyconv.dask`` (mode
"same", symmetric boundary) with a progress bar, streams the result to a
second ``.npy`` file, and prints the throughput next to the in-memory
``cyconv.signal.correlate2d`` on an image that fits, the peak resident
memory, and a spot check of a few output tiles against the in-memory op.

The files are read and written in row bands with plain file I/O rather than
through a memory map, whose touched pages would count as resident memory.
Needs the ``[dask]`` extra.
"""
import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np

import cyconv
from cyconv import signal


def _write_npy(path, shape, bands):
    """Write a float32 .npy band by band; returns the data offset."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        offset = f.tell()
        for band in bands:
            f.write(np.ascontiguousarray(band, "<f4").tobytes())
    return offset


def _read_rows(path, offset, width, r0, r1):
    with open(path, "rb") as f:
        f.seek(offset + r0 * width * 4)
        return np.fromfile(f, "<f4", count=(r1 - r0) * width).reshape(r1 - r0, width)


class _RowWriter:
    """``da.store`` target writing blocks into a .npy file, row segment by row
    segment (blocks of different workers never overlap)."""

    def __init__(self, path, offset, shape):
        self.path, self.offset, self.shape = path, offset, shape
        self.fd = os.open(path, os.O_WRONLY)

    def __setitem__(self, key, value):
        rows, cols = key
        r0, c0 = rows.start or 0, cols.start or 0
        value = np.ascontiguousarray(value, "<f4")
        for i, row in enumerate(value):
            os.pwrite(self.fd, row.tobytes(),
                      self.offset + ((r0 + i) * self.shape[1] + c0) * 4)

    def close(self):
        os.close(self.fd)


def _kernel(k):
    g = np.exp(-0.5 * ((np.arange(k) - k // 2) / (k / 4)) ** 2)
    return (np.outer(g, g) / np.outer(g, g).sum()).astype(np.float32)


def run(size=20000, k=7, band=128, folder=None, seed=0, progress=True, log=print):
    import dask
    import dask.array as da
    from dask.diagnostics import ProgressBar

    from cyconv import dask as cd

    kernel = _kernel(k)
    folder = folder or tempfile.mkdtemp(prefix="cyconv-big-")
    src, dst = os.path.join(folder, "image.npy"), os.path.join(folder, "filtered.npy")
    rng = np.random.default_rng(seed)
    # first, the in-memory op on an image that fits (its buffers are returned
    # to the system before the big run, so they do not add to its peak)
    fit = min(size, 4096)
    small = rng.standard_normal((fit, fit), np.float32)
    signal.correlate2d(small, kernel, "same", "symm")
    t1 = time.perf_counter()
    signal.correlate2d(small, kernel, "same", "symm")
    mem_mpix = fit * fit / (time.perf_counter() - t1) / 1e6
    del small

    t0 = time.perf_counter()
    offset = _write_npy(src, (size, size),
                        (rng.standard_normal((min(band, size - r), size), np.float32)
                         for r in range(0, size, band)))
    log(f"wrote a {size}x{size} float32 image ({size * size * 4 / 2**30:.2f} GiB) to {src} "
        f"in {time.perf_counter() - t0:.1f} s")

    bands = [da.from_delayed(dask.delayed(_read_rows)(src, offset, size, r,
                                                      min(r + band, size)),
                             shape=(min(band, size - r), size), dtype=np.float32)
             for r in range(0, size, band)]
    image = da.concatenate(bands, axis=0)
    result = cd.correlate2d(image, kernel, mode="same", boundary="symm")
    out_offset = _write_npy(dst, (size, size), ())
    with open(dst, "r+b") as f:  # reserve the file's full size
        f.truncate(out_offset + size * size * 4)
    writer = _RowWriter(dst, out_offset, (size, size))
    t0 = time.perf_counter()
    try:
        if progress:
            with ProgressBar():
                da.store(result, writer, lock=False, scheduler="threads")
        else:
            da.store(result, writer, lock=False, scheduler="threads")
    finally:
        writer.close()
    elapsed = time.perf_counter() - t0
    mpix = size * size / elapsed / 1e6

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    image_bytes = size * size * 4
    log(f"dask:      {elapsed:.1f} s, {mpix:.1f} Mpixel/s ({cyconv.get_num_threads()} CPUs, "
        f"{band}-row bands)")
    log(f"in memory: {mem_mpix:.1f} Mpixel/s (cyconv.signal.correlate2d, {fit}x{fit})")
    log(f"peak resident memory: {peak / 2**20:.0f} MiB = {peak / image_bytes:.1%} of the "
        f"image's {image_bytes / 2**20:.0f} MiB")

    # spot check: tiles at a corner, an edge and the middle, against the in-memory op
    half = k // 2
    worst = 0.0
    for r0, c0 in ((0, 0), (size // 2, 0), (size // 2, size // 2), (size - 64, size - 64)):
        r1, c1 = min(r0 + 64, size), min(c0 + 64, size)
        a, b = max(r0 - half, 0), min(r1 + half, size)
        region = _read_rows(src, offset, size, a, b)[:, max(c0 - half, 0):min(c1 + half, size)]
        region = np.pad(region, ((half - (r0 - a), half - (b - r1)),
                                 (half - (c0 - max(c0 - half, 0)),
                                  half - (min(c1 + half, size) - c1))), mode="symmetric")
        expected = signal.correlate2d(region, kernel, "valid")
        got = _read_rows(dst, out_offset, size, r0, r1)[:, c0:c1]
        worst = max(worst, float(np.abs(got - expected).max()))
    log(f"spot check of 4 output tiles against the in-memory op: max abs difference "
        f"{worst:.2e}")
    return {"seconds": elapsed, "mpix_per_s": mpix, "in_memory_mpix_per_s": mem_mpix,
            "peak_bytes": peak, "image_bytes": image_bytes, "max_abs_diff": worst,
            "folder": folder}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m cyconv.examples.big_image",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--kernel", type=int, default=7)
    ap.add_argument("--band", type=int, default=128, help="rows per chunk")
    ap.add_argument("--keep", metavar="DIR", help="write the files here and keep them")
    args = ap.parse_args(argv)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        run(args.size, args.kernel, args.band, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="cyconv-big-") as tmp:
            run(args.size, args.kernel, args.band, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
