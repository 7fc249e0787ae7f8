"""Ctrl-C (SIGINT) during a long batch: KeyboardInterrupt within a second or
two (kernels run in blocks of samples, and Python sees the signal between
blocks), and the library works normally afterwards."""
import os
import signal
import subprocess
import sys
import time

import pytest

CHILD = r"""
import sys, time
import numpy as np
import cyconv

rng = np.random.default_rng(0)
# Each call is a long batch: several seconds on 2 cores without blocks.
x = rng.standard_normal((1024, 64, 32, 32)).astype(np.float32)  # 256 MiB
w = rng.standard_normal((64, 64, 5, 5)).astype(np.float32)      # 215 GFLOP per call
x2 = np.repeat(x, 2, axis=0)
op = sys.argv[1]
print("ready", flush=True)
t0 = time.perf_counter()
calls = 0
try:
    while True:          # every call is a long batch; stop only on Ctrl-C
        if op == "conv":
            cyconv.conv2d(x, w, padding=2)
        elif op == "backward":
            cyconv.conv2d_backward(x, x, w, padding=2, needs=("input",))
        else:
            cyconv.avg_pool2d(x2, 15, 1, 7)
        calls += 1
except KeyboardInterrupt:
    print("interrupted", time.perf_counter(), calls, flush=True)
# no broken state: a fresh call is still exact
xs = rng.standard_normal((2, 3, 7, 7))
ws = rng.standard_normal((4, 3, 3, 3))
y = cyconv.conv2d(xs, ws, padding=1)
ref = sum(np.einsum("nchw,kc->nkhw", np.pad(xs, ((0, 0), (0, 0), (1, 1), (1, 1)))
                    [:, :, i:i + 7, j:j + 7], ws[:, :, i, j])
          for i in range(3) for j in range(3))
print("ok" if np.allclose(y, ref) else "WRONG", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
@pytest.mark.parametrize("op", ["conv", "backward", "pool"])
def test_ctrl_c_interrupts_a_long_batch_quickly(op):
    p = subprocess.Popen([sys.executable, "-c", CHILD, op], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(1.0)                  # inside a kernel call
        sent = time.perf_counter()
        p.send_signal(signal.SIGINT)
        line = p.stdout.readline().split()
        assert line and line[0] == "interrupted", p.stderr.read()
        latency = float(line[1]) - sent
        assert latency < 1.0, f"KeyboardInterrupt came {latency:.2f} s after SIGINT"
        assert p.stdout.readline().strip() == "ok"
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
