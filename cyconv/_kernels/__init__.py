"""Compiled kernels (Cython + OpenMP).  Private: call the public ops instead.

The hot kernels (``_conv``, ``_pool``, ``_signal``) are compiled several times
from the same Cython source (``_*_impl.pxi``), once per instruction-set
variant.  At import, the widest variant that was built and that this CPU
supports is chosen (NumPy's runtime CPU feature detection decides), and exposed
here as ``conv``, ``pool`` and ``signal``.  ``CYCONV_ISA`` forces a variant.
A variant's modules that this CPU cannot run are refused at import (an
ImportError, not the illegal instruction their set-up code could execute).

=========  =====================================  ===========================
variant    compiled with (GCC/Clang)              needs (NumPy's CPU features)
=========  =====================================  ===========================
baseline   the platform default (x86-64: SSE2)    nothing
avx2       -mavx2 -mfma -mf16c                    AVX2, FMA3, F16C
avx512     avx2's flags + -mavx512{f,cd,vl,bw,dq} AVX512F, CD, VL, BW, DQ
=========  =====================================  ===========================
"""
import importlib
import importlib.machinery
import os
import sys

VARIANTS = ("baseline", "avx2", "avx512")   # narrowest first
REQUIRES = {
    "baseline": (),
    "avx2": ("AVX", "AVX2", "FMA3", "F16C"),
    "avx512": ("AVX", "AVX2", "FMA3", "F16C",
               "AVX512F", "AVX512CD", "AVX512VL", "AVX512BW", "AVX512DQ"),
}
_MODULES = ("_conv", "_pool", "_signal")
ENV = "CYCONV_ISA"


def cpu_features():
    """The CPU features NumPy detected at runtime (name -> bool)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # pragma: no cover - NumPy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return dict(__cpu_features__)


def supported(variant, features=None):
    """Whether this CPU can run ``variant``."""
    return not missing_features(variant, features)


def missing_features(variant, features=None):
    """The features ``variant`` needs that this CPU lacks."""
    features = cpu_features() if features is None else features
    return [f for f in REQUIRES[variant] if not features.get(f, False)]


def _names(variant):
    suffix = "" if variant == "baseline" else "_" + variant
    return [f"{__name__}.{m}{suffix}" for m in _MODULES]


def _load(variant):
    return tuple(importlib.import_module(name) for name in _names(variant))


def built():
    """The variants whose three kernel modules were built (installed).

    Only looked up, never imported: a module compiled for instructions this
    CPU lacks may execute one of them as it initialises (GCC uses AVX-512
    stores in module set-up code), which kills the process with SIGILL."""
    return [v for v in VARIANTS
            if all(importlib.machinery.PathFinder.find_spec(name, __path__) is not None
                   for name in _names(v))]


class _RefuseUnsupported:
    """An import finder that refuses the kernel modules this CPU cannot run.

    Importing one, say ``cyconv._kernels._conv_avx512`` on a CPU without
    AVX-512 (tools that import every module of a package do), would kill the
    process with SIGILL as the module initialises; an ImportError that says
    why is raised instead.  Only those modules' names are looked at: every
    other import passes through untouched."""

    def __init__(self, lacking):
        self.lacking = lacking      # module name -> (variant, features the CPU lacks)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.lacking:
            return None
        variant, missing = self.lacking[fullname]
        raise ImportError(
            f"{fullname} is cyconv's {variant} kernel variant, which needs "
            f"{', '.join(REQUIRES[variant])}; this CPU lacks {', '.join(missing)}, and "
            f"importing it would kill the process with an illegal instruction "
            f"(cyconv itself uses a variant the CPU supports: see cyconv.show_config())",
            name=fullname)


def _refuse_unsupported(features):
    """Put a :class:`_RefuseUnsupported` for ``features`` first on sys.meta_path
    (replacing one put there before), or none when every variant can run."""
    lacking = {}
    for v in VARIANTS:
        missing = missing_features(v, features)
        if missing:
            lacking.update((name, (v, missing)) for name in _names(v))
    sys.meta_path[:] = [f for f in sys.meta_path       # a reload's class is a new one
                        if (type(f).__module__, type(f).__name__)
                        != (__name__, "_RefuseUnsupported")]
    if lacking:
        sys.meta_path.insert(0, _RefuseUnsupported(lacking))


def _select():
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("", "auto"):
        features = cpu_features()
        for v in reversed(VARIANTS):
            if supported(v, features):
                try:
                    return v, "chosen from the CPU's features", _load(v)
                except ImportError:
                    continue
        raise ImportError("cyconv: no kernel variant could be imported")  # pragma: no cover
    if forced not in VARIANTS:
        raise ValueError(f"{ENV}={forced!r} is not a kernel variant; expected 'auto' or "
                         f"one of {', '.join(VARIANTS)}")
    if not supported(forced):
        missing = missing_features(forced)
        raise RuntimeError(f"{ENV}={forced!r}: this CPU lacks {', '.join(missing)}; "
                           f"running it would crash with an illegal instruction")
    try:
        return forced, f"forced by {ENV}", _load(forced)
    except ImportError as exc:
        raise ImportError(f"{ENV}={forced!r}: that variant was not built "
                          f"(built: {', '.join(built()) or 'none'})") from exc


_refuse_unsupported(cpu_features())
VARIANT, REASON, (conv, pool, signal) = _select()
