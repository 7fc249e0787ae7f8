"""Instruction-set variants: each built variant the CPU supports runs and agrees
with the reference, CYCONV_ISA forces one, and bad or unsupported requests fail
with a clear error instead of an illegal instruction."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cyconv import _kernels

import reference

RUNNABLE = [v for v in _kernels.built() if _kernels.supported(v)]


def _run(code, isa):
    env = dict(os.environ, CYCONV_ISA=isa)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)


PROBE = r"""
import json, numpy as np, cyconv
from cyconv import _kernels
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 9, 8))
w = rng.standard_normal((4, 3, 3, 2))
y = cyconv.conv2d(x, w, stride=(2, 1), padding=1, dilation=(1, 2))
p = cyconv.max_pool2d(x, 3, stride=2, padding=1)
s = cyconv.signal.correlate2d(x[0, 0], w[0, 0], mode="same", boundary="symm")
print(json.dumps({"variant": _kernels.VARIANT, "conv": y.tolist(), "pool": p.tolist(),
                  "signal": s.tolist()}))
"""


@pytest.mark.parametrize("isa", RUNNABLE)
def test_forced_variant_is_used_and_correct(isa):
    r = _run(PROBE, isa)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["variant"] == isa
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((4, 3, 3, 2))
    ref = reference.conv2d(x, w, None, (2, 1), ((1, 1), (1, 1)), (1, 2))
    np.testing.assert_allclose(np.array(out["conv"]), ref, rtol=1e-12, atol=1e-12)
    pool, _ = reference.pool(x, "max", (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1))
    np.testing.assert_array_equal(np.array(out["pool"]), pool)
    import scipy.signal
    np.testing.assert_allclose(np.array(out["signal"]),
                               scipy.signal.correlate2d(x[0, 0], w[0, 0], "same", "symm"),
                               rtol=1e-12, atol=1e-12)


def test_auto_picks_the_widest_supported_variant():
    r = _run("from cyconv import _kernels; print(_kernels.VARIANT)", "auto")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == RUNNABLE[-1]


def test_info_names_the_variant():
    r = _run("import cyconv; cyconv.show_config()", RUNNABLE[0])
    assert r.returncode == 0, r.stderr
    assert f"kernels:         {RUNNABLE[0]} (forced by CYCONV_ISA" in r.stdout


def test_unknown_variant_is_a_clear_error():
    r = _run("import cyconv", "avx9000")
    assert r.returncode != 0
    assert "CYCONV_ISA='avx9000' is not a kernel variant" in r.stderr


def test_unsupported_variant_is_refused_not_executed(monkeypatch):
    # Pretend the CPU has no AVX at all: forcing avx2 must be refused up front.
    monkeypatch.setattr(_kernels, "cpu_features", lambda: {"SSE2": True})
    monkeypatch.setenv("CYCONV_ISA", "avx2")
    with pytest.raises(RuntimeError, match=r"CYCONV_ISA='avx2': this CPU lacks AVX, AVX2"):
        _kernels._select()
    monkeypatch.setenv("CYCONV_ISA", "auto")
    assert _kernels._select()[0] == "baseline"


def test_listing_built_variants_imports_none_of_them():
    # show_config and CI list every built variant; importing one compiled for
    # instructions the CPU lacks can die with SIGILL as it initialises (an
    # AVX-512 module on an AVX2-only CPU did), so built() only looks them up.
    code = ("import sys, cyconv; from cyconv import _kernels; b = _kernels.built(); "
            "cyconv.show_config(); "
            "print(b, sorted(m for m in sys.modules if m.startswith('cyconv._kernels._')))")
    r = _run(code, "baseline")
    assert r.returncode == 0, r.stderr
    listed, loaded = r.stdout.strip().splitlines()[-1].split("] [")
    assert "'baseline'" in listed and all(f"'{v}'" in listed for v in RUNNABLE)
    assert not [m for m in loaded.split(", ") if "avx" in m], loaded


def test_requirements_are_nested():
    # A CPU that runs a variant runs every narrower one.
    for narrow, wide in zip(_kernels.VARIANTS, _kernels.VARIANTS[1:]):
        assert set(_kernels.REQUIRES[narrow]) <= set(_kernels.REQUIRES[wide])


def test_importing_every_module_refuses_the_variants_the_cpu_lacks():
    # Tools that import every module of a package (documentation generators,
    # "does everything import" checks) would load a variant compiled for
    # instructions this CPU lacks, and an AVX-512 module on an AVX2-only CPU
    # dies with SIGILL as it initialises.  They get an ImportError instead.
    code = ("import importlib, pkgutil, cyconv\n"
            "for m in pkgutil.walk_packages(cyconv.__path__, 'cyconv.'):\n"
            "    try:\n"
            "        importlib.import_module(m.name)\n"
            "    except ImportError as exc:\n"
            "        print('refused' if exc.name == m.name else 'needs', m.name, exc.name,\n"
            "              '|', exc)\n")
    r = _run(code, "auto")
    assert r.returncode == 0, (r.returncode, r.stderr)
    lines = r.stdout.splitlines()
    refused = {line.split()[1]: line for line in lines if line.startswith("refused ")}
    # a module that needs an optional dependency which is not installed (the
    # [dask] extra, say) fails for that dependency, never for a cyconv module
    for line in lines:
        if line.startswith("needs "):
            assert not line.split()[2].startswith("cyconv"), line
    unsupported = [v for v in _kernels.built() if not _kernels.supported(v)]
    assert sorted(refused) == sorted(name for v in unsupported for name in _kernels._names(v))
    for name, line in refused.items():
        assert "this CPU lacks" in line and "illegal instruction" in line, line


def test_a_variant_the_cpu_lacks_is_refused_by_name():
    # Pretend the CPU has no AVX: the avx2 modules, built and runnable here or
    # not, are refused before they are loaded, and are still listed as built.
    code = ("import sys, cyconv; from cyconv import _kernels\n"
            "_kernels._refuse_unsupported({'SSE2': True})\n"
            "_kernels._refuse_unsupported({'SSE2': True})\n"
            "print(sum(type(f).__name__ == '_RefuseUnsupported' for f in sys.meta_path))\n"
            "print(_kernels.built())\n"
            "import cyconv._kernels._pool_avx2\n")
    r = _run(code, "baseline")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.splitlines()[0] == "1"
    assert r.stdout.splitlines()[1] == str(_kernels.built())
    assert ("ImportError: cyconv._kernels._pool_avx2 is cyconv's avx2 kernel variant, "
            "which needs AVX, AVX2, FMA3, F16C; this CPU lacks AVX, AVX2, FMA3, F16C"
            ) in r.stderr
