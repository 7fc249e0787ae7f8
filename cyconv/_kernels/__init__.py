"""Compiled kernels (Cython + OpenMP).  Private: call the public ops instead.

The hot kernels (``_conv``, ``_pool``, ``_signal``) are compiled several times
from the same Cython source (``_*_impl.pxi``), once per instruction-set
variant.  At import, the widest variant that was built and that this CPU
supports is chosen (NumPy's runtime CPU feature detection decides), and exposed
here as ``conv``, ``pool`` and ``signal``.  ``CYCONV_ISA`` forces a variant.

=========  =====================================  ===========================
variant    compiled with (GCC/Clang)              needs (NumPy's CPU features)
=========  =====================================  ===========================
baseline   the platform default (x86-64: SSE2)    nothing
avx2       -mavx2 -mfma -mf16c                    AVX2, FMA3, F16C
avx512     avx2's flags + -mavx512{f,cd,vl,bw,dq} AVX512F, CD, VL, BW, DQ
=========  =====================================  ===========================
"""
import importlib
import importlib.util
import os

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
    features = cpu_features() if features is None else features
    return all(features.get(f, False) for f in REQUIRES[variant])


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
            if all(importlib.util.find_spec(name) is not None for name in _names(v))]


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
        missing = [f for f in REQUIRES[forced] if not cpu_features().get(f, False)]
        raise RuntimeError(f"{ENV}={forced!r}: this CPU lacks {', '.join(missing)}; "
                           f"running it would crash with an illegal instruction")
    try:
        return forced, f"forced by {ENV}", _load(forced)
    except ImportError as exc:
        raise ImportError(f"{ENV}={forced!r}: that variant was not built "
                          f"(built: {', '.join(built()) or 'none'})") from exc


VARIANT, REASON, (conv, pool, signal) = _select()
