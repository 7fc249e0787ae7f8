"""Build and runtime facts for show_config() and ``python -m cyconv info``."""
import platform
import sys

from ._version import __version__


def build_info():
    """A dict of what this build is and what it runs on."""
    from . import _prepared, _threads
    from ._kernels import _openmp_helpers

    try:
        from . import _build_info as bi
        flags = {"compiler": bi.COMPILER, "cflags": bi.CFLAGS, "ldflags": bi.LDFLAGS,
                 "debug": bi.DEBUG}
    except ImportError:  # pragma: no cover - built by something other than setup.py
        flags = {"compiler": "unknown", "cflags": "unknown", "ldflags": "unknown",
                 "debug": False}
    from threadpoolctl import threadpool_info

    _threads.blas_controllers()  # make sure scipy's BLAS is loaded first
    libs = threadpool_info()
    blas = [f"{lib.get('internal_api')} {lib.get('version')} "
            f"({lib.get('architecture') or lib.get('threading_layer') or '?'}) "
            f"{lib.get('filepath')}" for lib in libs if lib.get("user_api") == "blas"]
    omp = [lib.get("filepath") for lib in libs if lib.get("user_api") == "openmp"]
    n, src = _threads.default_num_threads()
    from . import _kernels

    features = _kernels.cpu_features()
    isa = [f for f in ("SSE42", "AVX", "AVX2", "FMA3", "AVX512F", "AVX512_SKX")
           if features.get(f)]
    return {
        "kernels": _kernels.VARIANT,
        "kernels_reason": _kernels.REASON,
        "kernels_built": _kernels.built(),
        "cpu_features": isa,
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "openmp": _openmp_helpers.have_openmp(),
        "openmp_runtime": omp,
        "blas": blas,
        "gemm": _threads.gemm_library(),
        "threads": _threads.get_num_threads(),
        "threads_default": n,
        "threads_source": src,
        "bind_threads": ("unavailable (needs Linux and OpenMP)"
                         if _threads._openmp_helpers() is None
                         else "on (CYCONV_BIND_THREADS=0 turns it off)" if _threads.BIND_THREADS
                         else "off"),
        "weight_cache": (f"on, at most {_prepared.MAX_BYTES >> 20} MiB "
                         "(CYCONV_WEIGHT_CACHE=0 turns it off)" if _prepared.ENABLED
                         else "off"),
        **flags,
    }


def show_config():
    """Print cyconv's version, OpenMP and BLAS, thread default and build flags.

    Examples
    --------
    >>> import cyconv
    >>> cyconv.show_config()  # doctest: +SKIP
    """
    from . import _threads

    info = build_info()
    lines = [
        f"cyconv {info['version']} (Python {info['python']}, {info['platform']})",
        f"  OpenMP:          {'on' if info['openmp'] else 'off (serial build)'}",
        f"  OpenMP runtime:  {', '.join(info['openmp_runtime']) or 'none loaded'}",
        f"  BLAS:            {'; '.join(info['blas']) or 'none found'}",
        f"  GEMM:            {info['gemm']} ({_threads.GEMM_ENV} chooses)",
        f"  threads:         {info['threads']} (default {info['threads_default']} "
        f"from {info['threads_source']})",
        f"  worker binding:  {info['bind_threads']}",
        f"  weight cache:    {info['weight_cache']}",
        f"  compiler:        {info['compiler']}",
        f"  compile flags:   {info['cflags']}",
        f"  link flags:      {info['ldflags'] or '(none)'}",
        f"  debug checks:    {'on' if info['debug'] else 'off'}",
        f"  kernels:         {info['kernels']} ({info['kernels_reason']}; "
        f"built: {', '.join(info['kernels_built'])}; CYCONV_ISA forces one)",
        f"  CPU features:    {' '.join(info['cpu_features']) or 'baseline only'}",
    ]
    print("\n".join(lines))
