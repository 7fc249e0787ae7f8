"""A fork after a parallel kernel must not hang the child (GNU libgomp's
thread pool does not survive fork); each scenario runs in a subprocess with a
timeout, so a regression fails instead of hanging CI."""
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "register_at_fork"),
                                reason="needs the fork start method")

SCRIPT = textwrap.dedent("""
    import multiprocessing as mp, numpy as np, cyconv
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)

    def job(i):
        y = cyconv.conv2d(x, w, padding=1)
        g = cyconv.conv2d_backward(y, x, w, padding=1)
        p = cyconv.max_pool2d(y, 2)
        return cyconv.get_num_threads(), float(y.sum() + g.weight.sum() + p.sum())

    if __name__ == "__main__":
        {parent}
        with cyconv.num_threads(1):
            ref = job(0)[1]
        with mp.get_context("fork").Pool(2) as pool:
            out = pool.map_async(job, range(4)).get(timeout=60)
        print(sorted({{t for t, _ in out}}), all(v == ref for _, v in out))
""")


def _run(parent):
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(parent=parent)],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "CYCONV_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_fork_after_a_parallel_kernel_completes_with_one_thread():
    parent = "with cyconv.num_threads(2): job(0)"  # the OpenMP pool now exists
    assert _run(parent) == "[1] True"


def test_fork_before_any_parallel_kernel_keeps_the_threads():
    assert _run("pass") == "[2] True"
