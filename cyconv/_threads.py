"""Thread counts: the process default, per-thread overrides, and BLAS limits.

Every kernel receives its thread count explicitly (``num_threads=`` on each
OpenMP region), so no other library that shares the OpenMP runtime (PyTorch
ships a libgomp of the same name) can change cyconv's team size.
"""
import contextlib
import operator
import os
import threading

__all__ = ["get_num_threads", "set_num_threads", "num_threads"]


def _flag(var, default):
    raw = os.environ.get(var, "").strip().lower()
    return default if not raw else raw not in ("0", "false", "no", "off")

_local = threading.local()
_lock = threading.Lock()
_state = {"default": None, "source": None, "parallel_used": False,
          "forked_after_parallel": False}


def _positive_int(name, value):
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a positive int, got {value!r} "
                        f"of type {type(value).__name__}") from None
    if isinstance(value, bool) or n < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return n


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))  # affinity aware (Linux)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _from_env(var):
    raw = os.environ.get(var, "").strip()
    if not raw:
        return None
    first = raw.split(",")[0].strip()  # OMP_NUM_THREADS may list nested levels
    try:
        n = int(first)
    except ValueError:
        return None
    return n if n >= 1 else None


def default_num_threads():
    """(count, source): CYCONV_NUM_THREADS, else OMP_NUM_THREADS, else CPUs."""
    for var in ("CYCONV_NUM_THREADS", "OMP_NUM_THREADS"):
        n = _from_env(var)
        if n is not None:
            return n, var
    return _cpu_count(), "CPU affinity"


def get_num_threads():
    """Number of threads cyconv's kernels use in the calling thread.

    Returns
    -------
    int
        The innermost active ``num_threads`` context of this thread, else
        the process default set by :func:`set_num_threads`, else
        ``CYCONV_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the number of
        CPUs this process may run on.  Always 1 in a process forked (``fork``
        start method) after its parent ran a parallel kernel: GNU libgomp's
        thread pool does not survive a fork, and a team of more than one
        thread would wait for it forever.

    Examples
    --------
    >>> import cyconv
    >>> with cyconv.num_threads(1):
    ...     cyconv.get_num_threads()
    1
    """
    if _state["forked_after_parallel"]:
        return 1
    stack = getattr(_local, "stack", None)
    if stack:
        n = stack[-1]
    else:
        if _state["default"] is None:
            _state["default"], _state["source"] = default_num_threads()
        n = _state["default"]
    if n > 1:
        _state["parallel_used"] = True  # the ops call this right before a kernel
    return n


def _after_fork_in_child():
    if _state["parallel_used"]:
        _state["forked_after_parallel"] = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n):
    """Set the process-wide default number of threads for cyconv's kernels.

    Parameters
    ----------
    n : int
        A positive count.  An active ``num_threads`` context of the calling
        thread still takes precedence until it exits.

    Examples
    --------
    >>> import cyconv
    >>> cyconv.set_num_threads(2)
    """
    n = _positive_int("n", n)
    _state["default"], _state["source"] = n, "set_num_threads"


@contextlib.contextmanager
def num_threads(n):
    """Context manager: use ``n`` threads in the calling thread only.

    Other Python threads keep their own setting.  Contexts nest.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> x = np.ones((1, 1, 4, 4)); w = np.ones((1, 1, 3, 3))
    >>> with cyconv.num_threads(1):
    ...     y = cyconv.conv2d(x, w)
    """
    n = _positive_int("n", n)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(n)
    try:
        yield n
    finally:
        stack.pop()


# --------------------------------------------------------------------------
# Worker binding
# --------------------------------------------------------------------------
# Between calls the OpenMP worker threads sleep.  On a virtual machine whose
# host deschedules an idle vCPU, Linux then treats that CPU as busy and may
# wake a worker on the CPU of the thread that woke it, where it waits behind
# it for a scheduler tick or until that thread finishes its own share: a
# 2-thread kernel then takes longer than with 1 thread.  Measured on the
# 2-vCPU benchmark VM, medians, depthwise 3x3 (8 x 64 x 56 x 56) at 2
# threads: 0.7 ms called back to back, 7.5 ms after 0.1 s idle (the second
# thread started 3.8 ms late); with the workers bound 1.2 ms.  So each
# worker of a team is bound to one CPU of the process's affinity mask, never
# the one its master thread ran on when it was bound (the master itself is
# never bound, and the workers are bound again when it has moved), unless
# the team is larger than the mask.  CYCONV_BIND_THREADS=0 turns it off.
BIND_THREADS = _flag("CYCONV_BIND_THREADS", True)
_omp = []


def _openmp_helpers():
    if not _omp:
        from ._kernels import _openmp_helpers as h
        _omp.append(h if h.can_bind() and hasattr(os, "sched_getaffinity") else None)
    return _omp[0]


def bind_workers(n):
    """Bind the workers of this thread's OpenMP team of ``n`` threads (see
    above), unless they already are for ``n`` threads and this CPU."""
    h = _openmp_helpers()
    if h is None:
        return
    cpu = h.current_cpu()
    if getattr(_local, "bound", None) == (n, cpu):
        return
    allowed = sorted(os.sched_getaffinity(0))
    cpus = []
    if cpu in allowed and n <= len(allowed):
        i = allowed.index(cpu)
        cpus = (allowed[i + 1:] + allowed[:i])[:n - 1]
    import numpy as np
    done = np.zeros(n, np.intc)
    h.bind_workers(n, np.array(cpus, np.intc), np.array(allowed, np.intc), done)
    _local.bound = (n, cpu)


def kernel_threads(items=None):
    """Team size for a kernel about to run in the calling thread: the thread
    count (get_num_threads), at most ``items`` (its work items) and at least
    1, with the team's workers bound first (BIND_THREADS).

    The binding is for exactly this team size: a smaller team makes libgomp
    end the workers it no longer needs, and a larger one starts new, unbound
    ones."""
    n = get_num_threads()
    if items is not None:
        n = max(1, min(n, items))
    if n > 1 and BIND_THREADS:
        bind_workers(n)
    return n


def default_source():
    get_num_threads()
    return _state["source"]


# --------------------------------------------------------------------------
# BLAS inside OpenMP regions
# --------------------------------------------------------------------------
# GEMMs run inside cyconv's OpenMP loops, so the BLAS they call must be
# single-threaded while a kernel runs, or the two pools multiply (OpenBLAS
# also warns and slows down 2-7x).  The limit is reference counted so that
# concurrent calls from several Python threads restore the user's setting only
# when the last one leaves.
#
# An OpenBLAS built with its own threads (pthreads, as NumPy's and SciPy's
# wheels are) has one process-wide count, which cyconv gets and sets by
# calling OpenBLAS's own two functions from _openmp_helpers.  threadpoolctl's
# setter for it does nothing when called from a Python thread other than the
# first that set a limit, so a kernel run from a worker thread after one run
# from the main thread left OpenBLAS multi-threaded inside its OpenMP region;
# through threadpoolctl (or ctypes), with the caches a kernel leaves behind,
# the limit also cost 0.08-0.1 ms per call.  Other BLAS libraries go through
# threadpoolctl.

_blas = {"controllers": None, "others": None, "helpers": None, "active": 0, "saved": None,
         "gemm": None}
_OPENBLAS_AFFIXES = [(p, s) for p in ("scipy_", "") for s in ("", "64_", "_64")]


def _loaded_symbols(path, name_sets):
    """Addresses of the first set of names in ``name_sets`` that the already
    loaded library at ``path`` exports in full, and that set; or None."""
    import ctypes

    try:
        lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
    except OSError:
        return None
    for names in name_sets:
        if all(hasattr(lib, name) for name in names):
            return tuple(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                         for name in names), names
    return None


def _openblas_functions(path):
    """Addresses of the get and set thread-count functions of the loaded
    OpenBLAS at ``path``, or None."""
    found = _loaded_symbols(path, [tuple(f"{prefix}openblas_{op}_num_threads{suffix}"
                                         for op in ("get", "set"))
                                   for prefix, suffix in _OPENBLAS_AFFIXES])
    return None if found is None else found[0]


def blas_controllers():
    """threadpoolctl controllers of the BLAS libraries loaded in the process.

    Created after the kernels (and so scipy.linalg.cython_blas and its
    OpenBLAS) are loaded: a controller made earlier would not see that
    library and its limits would silently do nothing.
    """
    if _blas["controllers"] is None:
        import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS)
        from threadpoolctl import ThreadpoolController

        from . import _kernels  # noqa: F401

        ctl = ThreadpoolController()
        _blas["controllers"] = [c for c in ctl.lib_controllers
                                if c.user_api == "blas"]
    return _blas["controllers"]


def _blas_others():
    """Register every pthreads OpenBLAS with _openmp_helpers (once) and
    return the threadpoolctl controllers of the other BLAS libraries."""
    if _blas["others"] is None:
        from ._kernels import _openmp_helpers as h

        controllers = blas_controllers()
        with _lock:   # two threads' first calls must not register a library twice
            if _blas["others"] is None:
                _install_gemm(controllers)   # first: if it raises, nothing is registered yet
                others = []
                for c in controllers:
                    fns = None
                    if (c.internal_api == "openblas"
                            and getattr(c, "threading_layer", "") == "pthreads"):
                        fns = _openblas_functions(c.filepath)
                    if fns is None or not h.blas_register(*fns):
                        others.append(c)
                _blas["helpers"], _blas["others"] = h, others
    return _blas["others"]


# cyconv's GEMMs (im2col tiles, Winograd's transformed tiles, 1x1 and other
# in-place convolutions where no register-blocked kernel takes them) call
# sgemm/dgemm through scipy.linalg.cython_blas, that is SciPy's OpenBLAS.
# NumPy's wheels bundle an OpenBLAS of their own, built with 64-bit integers
# (Fortran symbols scipy_sgemm_64_, scipy_dgemm_64_), often a newer release.
# Measured on the 2-vCPU AVX2 benchmark VM (AMD EPYC; both libraries run
# OpenBLAS's Haswell kernels), NumPy 2.4.6's OpenBLAS 0.3.31 against SciPy
# 1.17.1's 0.3.30, 1 thread, medians of 200 interleaved calls, row-major
# M x N x K as cyconv calls them, ms, SciPy's / NumPy's: resnet_3x3_s2's
# per-sample GEMM 256 x 196 x 1152 1.52 / 1.45; pointwise_1x1's
# 64 x 784 x 256 0.42 / 0.35; 64 x 3136 x 576 4.02 / 3.32;
# 128 x 196 x 2304 1.71 / 1.51; mnist_small's 8 x 784 x 9 0.0070 / 0.0042.
# So the GEMMs go to the newest OpenBLAS loaded: with CYCONV_GEMM unset or
# "auto", an ILP64 OpenBLAS whose version is above that of every other
# OpenBLAS in the process (SciPy's among them) takes them; "scipy" keeps
# cython_blas, "ilp64" takes a loaded ILP64 OpenBLAS whatever its version.
# Both libraries are held to one thread inside kernels (blas_single_threaded).
GEMM_ENV = "CYCONV_GEMM"
_ILP64_GEMM = (("scipy_sgemm_64_", "scipy_dgemm_64_"), ("sgemm_64_", "dgemm_64_"))


def _version_key(version):
    key = []
    for part in str(version or "").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        key.append(int(digits))
    return tuple(key)


def _ilp64_gemm(path):
    """((sgemm, dgemm) addresses, sgemm's name) of the ILP64 GEMM of the
    loaded library at ``path``, or None."""
    found = _loaded_symbols(path, _ILP64_GEMM)
    return None if found is None else (found[0], found[1][0])


def _gemm_mode():
    mode = os.environ.get(GEMM_ENV, "").strip().lower() or "auto"
    if mode not in ("auto", "scipy", "ilp64"):
        raise ValueError(f"{GEMM_ENV}={mode!r}: expected 'auto', 'scipy' or 'ilp64'")
    return mode


_gemm_mode()   # a bad CYCONV_GEMM fails the import, as a bad CYCONV_ISA does


def _install_gemm(controllers):
    """Choose the BLAS behind the kernels' GEMMs (see above) and record it."""
    from ._kernels import conv

    mode = _gemm_mode()
    choice, plain = None, []
    for c in controllers:
        if c.internal_api != "openblas":
            continue
        found = _ilp64_gemm(c.filepath) if mode != "scipy" else None
        if found is None:
            plain.append(_version_key(c.version))
        elif choice is None or _version_key(c.version) > _version_key(choice[0].version):
            choice = (c, found)
    if choice is not None and mode == "auto" and (not plain or max(plain) >= _version_key(
            choice[0].version)):
        choice = None
    if choice is not None and conv.set_gemm64(*choice[1][0]):
        c = choice[0]
        _blas["gemm"] = f"OpenBLAS {c.version} ({choice[1][1]}, 64-bit integers) {c.filepath}"
    else:
        conv.set_gemm64(0, 0)
        _blas["gemm"] = "scipy.linalg.cython_blas"


def gemm_library():
    """Which BLAS the kernels' GEMMs call (a line of text)."""
    _blas_others()
    return _blas["gemm"]


class _BlasSingleThreaded:
    """Context manager: every loaded BLAS at one thread while it is open."""
    __slots__ = ()

    def __enter__(self):
        others = _blas["others"]
        if others is None:
            others = _blas_others()
        with _lock:
            if _blas["active"] == 0:
                _blas["helpers"].blas_limit()
                if others:
                    _blas["saved"] = [c.num_threads for c in others]
                    for c in others:
                        c.set_num_threads(1)
            _blas["active"] += 1

    def __exit__(self, *exc):
        with _lock:
            _blas["active"] -= 1
            if _blas["active"] == 0:
                _blas["helpers"].blas_restore()
                for c, n in zip(_blas["others"], _blas["saved"] or ()):
                    c.set_num_threads(n)
        return False


_BLAS_SINGLE = _BlasSingleThreaded()


def blas_single_threaded():
    """Limit every loaded BLAS to one thread while the ``with`` block runs."""
    return _BLAS_SINGLE
