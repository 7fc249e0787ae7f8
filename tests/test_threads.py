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
