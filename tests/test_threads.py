"""Thread-count API, the OpenMP build, the BLAS limit and show_config."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import cyconv
from cyconv import _threads
from cyconv._kernels import _openmp_helpers


@pytest.mark.skipif(os.environ.get("CYCONV_NO_OPENMP") == "1",
                    reason="deliberate serial build (CYCONV_NO_OPENMP=1)")
def test_build_has_openmp():
    assert _openmp_helpers.have_openmp()
    assert _openmp_helpers.team_size(2) == 2


def test_set_and_context():
    old = cyconv.get_num_threads()
    try:
        cyconv.set_num_threads(3)
        assert cyconv.get_num_threads() == 3
        with cyconv.num_threads(1):
            assert cyconv.get_num_threads() == 1
            with cyconv.num_threads(2):
                assert cyconv.get_num_threads() == 2
            assert cyconv.get_num_threads() == 1
        assert cyconv.get_num_threads() == 3
    finally:
        cyconv.set_num_threads(old)


def test_context_is_per_thread():
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def other():
        inside.wait()
        seen["other"] = cyconv.get_num_threads()
        release.set()

    t = threading.Thread(target=other)
    t.start()
    default = cyconv.get_num_threads()
    with cyconv.num_threads(default + 5):
        inside.set()
        release.wait(10)
        assert cyconv.get_num_threads() == default + 5
    t.join()
    assert seen["other"] == default


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                      ("2", TypeError), (True, ValueError)])
def test_bad_thread_counts(bad, exc):
    with pytest.raises(exc, match="n must be a positive int"):
        cyconv.set_num_threads(bad)
    with pytest.raises(exc, match="n must be a positive int"):
        with cyconv.num_threads(bad):
            pass


@pytest.mark.parametrize("env, expected", [
    ({"CYCONV_NUM_THREADS": "3", "OMP_NUM_THREADS": "5"}, "3 CYCONV_NUM_THREADS"),
    ({"OMP_NUM_THREADS": "5,2"}, "5 OMP_NUM_THREADS"),
    ({}, f"{len(os.sched_getaffinity(0))} CPU affinity"),
])
def test_default_from_environment(env, expected):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("CYCONV_NUM_THREADS", "OMP_NUM_THREADS")}
    code = ("import cyconv, cyconv._threads as t; "
            "print(cyconv.get_num_threads(), t.default_source())")
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_blas_limited_inside_kernels_and_restored():
    libs = _threads.blas_controllers()
    assert libs, "threadpoolctl found no BLAS: the limit would do nothing"
    for lib in libs:
        lib.set_num_threads(2)
    with _threads.blas_single_threaded():
        assert [lib.num_threads for lib in libs] == [1] * len(libs)
        with _threads.blas_single_threaded():
            assert [lib.num_threads for lib in libs] == [1] * len(libs)
        assert [lib.num_threads for lib in libs] == [1] * len(libs)
    assert [lib.num_threads for lib in libs] == [2] * len(libs)


def test_blas_limited_in_other_python_threads():
    """The limit holds in a Python thread other than the one that first set
    it: threadpoolctl's OpenBLAS setter silently does nothing there, so a
    kernel run from a worker thread after one run from the main thread used
    to run its GEMMs with a multi-threaded OpenBLAS."""
    libs = _threads.blas_controllers()
    assert libs, "threadpoolctl found no BLAS: the limit would do nothing"
    for lib in libs:
        lib.set_num_threads(2)   # this (main) thread now controls OpenBLAS in threadpoolctl
    x = np.ones((1, 16, 12, 12), np.float32)
    w = np.ones((16, 16, 3, 3), np.float32)
    cyconv.conv2d(x, w)          # a kernel with the limit, from this thread
    seen = {}

    def worker():
        with _threads.blas_single_threaded():
            seen["inside"] = [lib.num_threads for lib in libs]
        seen["after"] = [lib.num_threads for lib in libs]

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["inside"] == [1] * len(libs)
    assert seen["after"] == [2] * len(libs)
    assert [lib.num_threads for lib in libs] == [2] * len(libs)


def test_show_config_and_cli(capsys):
    cyconv.show_config()
    text = capsys.readouterr().out
    assert cyconv.__version__ in text and "OpenMP" in text and "BLAS" in text
    assert "-O3" in text or "-O0" in text
    assert "-march=native" not in text and "-ffast-math" not in text
    out = subprocess.run([sys.executable, "-m", "cyconv", "info"], capture_output=True,
                         text=True, check=True).stdout
    assert "OpenMP:" in out and "threads:" in out
    expected = "off" if os.environ.get("CYCONV_NO_OPENMP") == "1" else "on"
    assert f"OpenMP:          {expected}" in out


def test_threads_passed_explicitly():
    """The kernels take the count given, whatever OpenMP's own default is."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 16, 16))
    w = rng.standard_normal((5, 3, 3, 3))
    with cyconv.num_threads(1):
        a = cyconv.conv2d(x, w)
    with cyconv.num_threads(7):  # more threads than cores is allowed
        b = cyconv.conv2d(x, w)
    assert np.array_equal(a, b)


def _affinities():
    """{tid: set of CPUs} of every thread of this process (Linux).

    One listing of /proc/self/task can skip a live thread while another
    thread exits (the kernel walks the thread list by position; seen in CI:
    the calling thread itself missing from a listing taken while the workers
    of the previous test's thread were ending), so the tids are the union of
    a few listings, and the calling thread is always included."""
    tids = {threading.get_native_id()}
    for _ in range(4):
        tids.update(int(t) for t in os.listdir("/proc/self/task"))
    out = {}
    for tid in sorted(tids):
        try:
            out[tid] = os.sched_getaffinity(tid)
        except OSError:   # the thread ended meanwhile
            pass
    return out


def _in_fresh_thread(fn):
    """fn() in a new Python thread: its own libgomp pool and binding state."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:   # re-raised in the caller
            box["error"] = e

    th = threading.Thread(target=target)
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


needs_binding = pytest.mark.skipif(
    _threads._openmp_helpers() is None or len(os.sched_getaffinity(0)) < 2
    or not _threads.BIND_THREADS,
    reason="worker binding needs Linux, OpenMP, 2 CPUs and CYCONV_BIND_THREADS on")


@needs_binding
def test_workers_bound_to_other_cpus_master_untouched():
    allowed = os.sched_getaffinity(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    with cyconv.num_threads(1):
        expected = cyconv.conv2d(x, w)

    def run():
        before = set(_affinities())
        mine = os.sched_getaffinity(0)
        with cyconv.num_threads(2):
            y = cyconv.conv2d(x, w)
            n, cpu = _threads._local.bound
        new = {t: a for t, a in _affinities().items() if t not in before}
        return y, mine, os.sched_getaffinity(0), n, cpu, new

    y, mine_before, mine_after, n, cpu, new = _in_fresh_thread(run)
    assert np.array_equal(y, expected)
    assert mine_before == mine_after == allowed       # the master is never bound
    assert n == 2 and cpu in allowed
    single = [a for a in new.values() if len(a) == 1]
    assert len(single) == 1, new                       # one worker, on one CPU
    assert single[0] <= allowed and cpu not in single[0]


@needs_binding
def test_team_larger_than_cpus_not_bound():
    allowed = os.sched_getaffinity(0)

    def run():
        before = set(_affinities())
        with cyconv.num_threads(2):           # bound first ...
            assert _threads.kernel_threads() == 2
        with cyconv.num_threads(len(allowed) + 1):   # ... then released
            assert _threads.kernel_threads() == len(allowed) + 1
        return {t: a for t, a in _affinities().items() if t not in before}

    new = _in_fresh_thread(run)
    assert len(new) == len(allowed)
    assert all(a == allowed for a in new.values()), new


@pytest.mark.skipif(_threads._openmp_helpers() is None or len(os.sched_getaffinity(0)) < 3
                    or not _threads.BIND_THREADS, reason="needs 3 CPUs and binding")
def test_team_shrinking_and_growing_rebinds():
    allowed = os.sched_getaffinity(0)

    def run():
        before = set(_affinities())
        with cyconv.num_threads(3):
            _threads.kernel_threads()          # 2 workers bound
            _threads.kernel_threads(2)         # libgomp ends the second
            _threads.kernel_threads()          # a new one, bound again
        cpu = _threads._local.bound[1]
        return cpu, {t: a for t, a in _affinities().items() if t not in before}

    cpu, new = _in_fresh_thread(run)
    single = [a for a in new.values() if len(a) == 1]
    assert len(single) == 2 and len(single[0] | single[1]) == 2, new
    assert all(a <= allowed and cpu not in a for a in single)


def test_kernel_threads_bounds():
    with cyconv.num_threads(4):
        assert _threads.kernel_threads() == 4
        assert _threads.kernel_threads(3) == 3
        assert _threads.kernel_threads(0) == 1
    with cyconv.num_threads(1):
        assert _threads.kernel_threads(10) == 1


def test_binding_off(monkeypatch):
    calls = []
    monkeypatch.setattr(_threads, "bind_workers", lambda n: calls.append(n))
    monkeypatch.setattr(_threads, "BIND_THREADS", False)
    with cyconv.num_threads(2):
        _threads.kernel_threads()
    assert calls == []
    monkeypatch.setattr(_threads, "BIND_THREADS", True)
    with cyconv.num_threads(2):
        _threads.kernel_threads()
        _threads.kernel_threads(1)   # a team of one: nothing to bind
    with cyconv.num_threads(1):
        _threads.kernel_threads()
    assert calls == [2]
    # every op asks for its team through kernel_threads
    x = np.ones((8, 4, 64, 64), np.float32)
    with cyconv.num_threads(2):
        cyconv.conv2d(x, np.ones((4, 4, 3, 3), np.float32))
        cyconv.max_pool2d(x, 2)
        cyconv.signal.correlate2d(x[0, 0], np.ones((3, 3), np.float32))
    assert calls == [2, 2, 2, 2]


@pytest.mark.parametrize("env, expected", [("0", False), ("off", False), ("1", True),
                                           ("", True)])
def test_bind_threads_environment(env, expected):
    code = "from cyconv import _threads; print(_threads.BIND_THREADS)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "CYCONV_BIND_THREADS": env})
    assert out.stdout.strip() == str(expected)
