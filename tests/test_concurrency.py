"""Many Python threads at once: correct results, and the GIL released."""
import sys
import threading

import numpy as np

import cyconv


def _work(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 4, 20, 18)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    y = cyconv.conv2d(x, w, stride=(1, 2), padding="same", groups=2)
    g = cyconv.conv2d_backward(y, x, w, stride=(1, 2), padding="same", groups=2)
    p, i = cyconv.max_pool2d(y, 3, 2, 1, return_indices=True)
    a = cyconv.avg_pool2d(y, 2, ceil_mode=True)
    return (y, *g, p, i, a, cyconv.max_pool2d_backward(p, i, y.shape))


def test_eight_threads_at_once_get_correct_results():
    expected = [_work(s) for s in range(8)]
    results = [None] * 8
    start = threading.Barrier(8)

    def run(s):
        start.wait()
        for _ in range(3):
            results[s] = _work(s)

    threads = [threading.Thread(target=run, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for s in range(8):
        for a, b in zip(results[s], expected[s]):
            assert np.array_equal(a, b)


def test_kernels_release_the_gil():
    """While conv2d runs, another Python thread keeps counting.

    With a long switch interval the counter cannot take the GIL from the main
    thread while it runs Python code (the call's validation, allocation); it
    only runs when the main thread releases the GIL, inside the kernel.  A
    kernel holding the GIL would leave the count at 0.
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 64, 56, 56)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    cyconv.conv2d(x[:1], w, padding=1)  # warm up outside the measurement
    count = [0]
    stop = threading.Event()
    running = threading.Event()

    def counter():
        running.set()
        while not stop.is_set():
            count[0] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.5)
    try:
        t = threading.Thread(target=counter)
        t.start()
        running.wait()
        before = count[0]
        with cyconv.num_threads(1):
            cyconv.conv2d(x, w, padding=1)  # a few hundred ms inside the kernel
        during = count[0] - before
        stop.set()
        t.join()
    finally:
        sys.setswitchinterval(old)
    assert during > 1000, during
