"""Build script for cyconv's Cython kernels.

Environment switches
--------------------
CYCONV_NO_OPENMP=1  build without OpenMP (serial kernels, same sources).
CYCONV_DEBUG=1      turn Cython's boundscheck and initializedcheck back on
                    (and wraparound), and compile with -O0 -g.
CYCONV_VARIANTS=... comma-separated instruction-set variants to build
                    (default: every variant the target supports).

Instruction-set variants: the hot kernels (_conv, _pool, _signal) are built
once per variant from the same source (_*_impl.pxi, included by the thin
_*.pyx, _*_avx2.pyx and _*_avx512.pyx stubs) with that variant's flags;
cyconv._kernels picks one at import from the CPU's features.  On x86-64
the variants are baseline, avx2 and avx512; elsewhere only baseline.

OpenMP is detected by test-compiling and linking a tiny OpenMP program with
the same compiler that build_ext uses; when that fails the build is serial and
says so.  Release builds use -O3 and never -march=native or -ffast-math.
"""
import os
import shutil
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HELPERS = ["_openmp_helpers"]
KERNELS = ["_conv", "_pool", "_signal"]
VARIANTS = ("baseline", "avx2", "avx512")
# Flags per variant and compiler family.  Never -march=native: a wheel must run
# on any CPU that has the variant's features, and the baseline on every x86-64.
VARIANT_FLAGS = {
    "unix": {
        "baseline": [],
        "avx2": ["-mavx2", "-mfma", "-mf16c"],
        "avx512": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512cd", "-mavx512vl",
                   "-mavx512bw", "-mavx512dq", "-mprefer-vector-width=512"],
    },
    "msvc": {"baseline": [], "avx2": ["/arch:AVX2"], "avx512": ["/arch:AVX512"]},
}

OPENMP_PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d\n", n);
    return n > 0 ? 0 : 1;
}
"""


def _is_x86_64():
    import platform
    import sysconfig

    plat = sysconfig.get_platform().lower()   # honours cross-compiling wheel builders
    if "arm" in plat or "aarch64" in plat or "ppc" in plat or "s390" in plat:
        return False
    if plat.startswith("macosx") and plat.endswith("universal2"):
        return False
    return platform.machine().lower() in ("x86_64", "amd64", "x64") or "x86_64" in plat \
        or plat == "win-amd64"


def _variants():
    """The instruction-set variants to build for this target."""
    wanted = os.environ.get("CYCONV_VARIANTS", "").strip()
    if wanted:
        names = [v.strip() for v in wanted.split(",") if v.strip()]
        bad = [v for v in names if v not in VARIANTS]
        if bad or "baseline" not in names:
            raise SystemExit(f"CYCONV_VARIANTS={wanted!r}: expected a comma-separated "
                             f"subset of {', '.join(VARIANTS)} that includes baseline")
        return [v for v in VARIANTS if v in names]
    return list(VARIANTS) if _is_x86_64() else ["baseline"]


def _module_variant(name):
    for v in VARIANTS[1:]:
        if name.endswith("_" + v):
            return v
    return "baseline"


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _openmp_flags(compiler):
    """Return (compile_args, link_args) for OpenMP, or None when unavailable."""
    ctype = compiler.compiler_type
    if ctype == "msvc":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    tmp = tempfile.mkdtemp(prefix="cyconv-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        for cflags, lflags in candidates:
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=lflags)
            except Exception:  # noqa: BLE001 - any failure means "no OpenMP"
                continue
            return cflags, lflags
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """build_ext that probes OpenMP with the compiler it is about to use."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:   # compile the variants side by side
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        debug = _env_flag("CYCONV_DEBUG")
        ctype = self.compiler.compiler_type
        if ctype == "msvc":
            base = ["/Od", "/Zi"] if debug else ["/O2"]
        else:
            base = ["-O0", "-g"] if debug else ["-O3"]
            base += ["-Wno-unused-function", "-Wno-unreachable-code"]

        omp = None
        if _env_flag("CYCONV_NO_OPENMP"):
            print("cyconv: CYCONV_NO_OPENMP is set: building serial kernels (no OpenMP)")
        else:
            omp = _openmp_flags(self.compiler)
            if omp is None:
                print("cyconv: WARNING: the compiler cannot build OpenMP programs: "
                      "building serial kernels (no OpenMP)")
            else:
                print("cyconv: OpenMP enabled with %s" % " ".join(omp[0]))
        cflags = base + (omp[0] if omp else [])
        lflags = omp[1] if omp else []
        family = "msvc" if ctype == "msvc" else "unix"
        for ext in self.extensions:
            variant = _module_variant(ext.name)
            ext.extra_compile_args = list(cflags) + VARIANT_FLAGS[family][variant]
            ext.extra_link_args = list(lflags)
        _write_build_info(self, cflags, lflags, omp is not None, debug, _variants())
        super().build_extensions()


def _write_build_info(cmd, cflags, lflags, openmp, debug, variants):
    text = (
        "# Generated by setup.py at build time; do not edit.\n"
        f"OPENMP = {openmp!r}\n"
        f"DEBUG = {debug!r}\n"
        f"COMPILER = {cmd.compiler.compiler_type!r}\n"
        f"CFLAGS = {' '.join(cflags)!r}\n"
        f"LDFLAGS = {' '.join(lflags)!r}\n"
        f"VARIANTS = {tuple(variants)!r}\n"
    )
    targets = [os.path.join("cyconv", "_build_info.py")]
    if not cmd.inplace:
        targets.append(os.path.join(cmd.build_lib, "cyconv", "_build_info.py"))
    for path in targets:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def _extensions():
    from Cython.Build import cythonize
    from Cython.Compiler import Options

    debug = _env_flag("CYCONV_DEBUG")
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": True,
        "embedsignature": True,
    }
    names = list(HELPERS)
    for v in _variants():
        suffix = "" if v == "baseline" else "_" + v
        names += [k + suffix for k in KERNELS]
    exts = [
        Extension(f"cyconv._kernels.{name}", [f"cyconv/_kernels/{name}.pyx"])
        for name in names
    ]
    # A prange without nogil only warns in Cython 3: every warning is fatal here.
    Options.warning_errors = True
    # force: compiler directives (the debug switch) are not part of Cython's
    # staleness check, so always regenerate the C sources.
    return cythonize(exts, compiler_directives=directives, quiet=True, force=True,
                     nthreads=os.cpu_count() or 1)


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
