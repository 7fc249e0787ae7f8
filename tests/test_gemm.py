"""The BLAS behind the kernels' GEMMs (cyconv._threads._install_gemm).

By default the GEMMs go to the newest OpenBLAS loaded (NumPy's ILP64 one
where it is newer than SciPy's); CYCONV_GEMM=scipy|ilp64 forces one.  Each
path is checked against tests/reference.py on the GEMM-based convolutions
(im2col tiles, a 1x1 in-place GEMM, Winograd's transformed tiles, the
weight-gradient GEMMs), in both float types.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import assert_close, random
from cyconv import _kernels, _threads


def _ilp64_addresses():
    for c in _threads.blas_controllers():
        if c.internal_api == "openblas":
            found = _threads._ilp64_gemm(c.filepath)
            if found is not None:
                return found[0]
    return None


@pytest.fixture(params=["scipy", "ilp64"])
def gemm_path(request):
    _threads.gemm_library()   # the default choice, made once
    if request.param == "ilp64":
        addresses = _ilp64_addresses()
        if addresses is None:
            pytest.skip("no ILP64 OpenBLAS (NumPy's wheels bundle one) is loaded")
        assert _kernels.conv.set_gemm64(*addresses)
    else:
        assert not _kernels.conv.set_gemm64(0, 0)
    yield request.param
    _threads._install_gemm(_threads.blas_controllers())   # back to the default


# (N, C_in, H, W, C_out, kernel, stride, padding): im2col tiles, 1x1 (a plain
# GEMM on the input), Winograd (3x3 stride 1, 16+ channels, 400+ outputs)
CASES = {
    "im2col_s2": (2, 5, 9, 11, 7, 3, 2, 1),
    "pointwise": (2, 13, 6, 7, 9, 1, 1, 0),
    "winograd": (1, 16, 20, 21, 17, 3, 1, 1),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_gemm_path_matches_the_definition(gemm_path, case, dtype):
    N, C, H, W, K, k, s, p = CASES[case]
    rng = np.random.default_rng(11)
    x, w, b = (random(rng, shape, dtype) for shape in
               ((N, C, H, W), (K, C, k, k), (K,)))
    pads = ((p, p), (p, p))
    y = ref.conv2d(x, w, b, (s, s), pads)
    gy = random(rng, y.shape, dtype)
    gx, gw, gb = ref.conv2d_backward(gy, x, w, (s, s), pads)
    out = cyconv.conv2d(x, w, b, stride=s, padding=p)
    assert_close(out, y, dtype, f"{gemm_path} output")
    grads = cyconv.conv2d_backward(gy, x, w, stride=s, padding=p)
    assert_close(grads.input, gx, dtype, f"{gemm_path} grad input")
    assert_close(grads.weight, gw, dtype, f"{gemm_path} grad weight")
    assert_close(grads.bias, gb, dtype, f"{gemm_path} grad bias")


def test_version_order():
    key = _threads._version_key
    assert key("0.3.31.188.0") > key("0.3.30")
    assert key("0.3.31.dev") == (0, 3, 31) < key("0.3.34.0.0")
    assert key(None) == ()


def _library_under(value):
    env = dict(os.environ, CYCONV_GEMM=value)
    return subprocess.run(
        [sys.executable, "-c", "from cyconv import _threads; print(_threads.gemm_library())"],
        env=env, capture_output=True, text=True, timeout=120)


def test_scipy_forced_keeps_cython_blas():
    run = _library_under("scipy")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "scipy.linalg.cython_blas"


def test_ilp64_forced_takes_the_ilp64_openblas():
    if _ilp64_addresses() is None:
        pytest.skip("no ILP64 OpenBLAS (NumPy's wheels bundle one) is loaded")
    run = _library_under("ilp64")
    assert run.returncode == 0, run.stderr
    assert "64-bit integers" in run.stdout


def test_unknown_gemm_choice_fails_the_import():
    run = _library_under("mkl")
    assert run.returncode != 0
    assert "ValueError: CYCONV_GEMM='mkl'" in run.stderr, run.stderr
