"""Python-visible facts about the OpenMP build (see _openmp_helpers.pxd)."""
from cython.parallel cimport parallel


def have_openmp():
    """True when the kernels were compiled with OpenMP."""
    return bool(CYCONV_HAVE_OPENMP)


def team_size(int num_threads):
    """Size of the team an OpenMP region asked for ``num_threads`` really gets."""
    cdef int n = 1
    cdef int* shared_n = &n       # assignments in a parallel block are private
    with nogil, parallel(num_threads=num_threads):
        if cyconv_thread_num() == 0:
            shared_n[0] = _team_size()
    return n


cdef extern from *:
    """
    #ifdef _OPENMP
    static inline int cyconv_team_size(void) { return omp_get_num_threads(); }
    #else
    static inline int cyconv_team_size(void) { return 1; }
    #endif
    """
    int _team_size "cyconv_team_size"() noexcept nogil


# Worker binding (see cyconv._threads.kernel_threads).  Linux only: elsewhere
# nothing is bound and current_cpu() is -1.
cdef extern from *:
    """
    #if defined(__linux__)
    #include <sched.h>
    #define CYCONV_CAN_BIND 1
    /* the CPU this thread was bound to: -1 for a set of CPUs, -2 never */
    static __thread int cyconv_bound_cpu = -2;
    static int cyconv_bind_self(const int* cpus, int n) {
        cpu_set_t set;
        int i, one = n == 1 ? cpus[0] : -1;
        if (one >= 0 && one == cyconv_bound_cpu) return 1;
        CPU_ZERO(&set);
        for (i = 0; i < n; i++)
            if (cpus[i] >= 0 && cpus[i] < CPU_SETSIZE) CPU_SET(cpus[i], &set);
        if (CPU_COUNT(&set) == 0 || sched_setaffinity(0, sizeof(set), &set) != 0) {
            cyconv_bound_cpu = -2;
            return 0;
        }
        cyconv_bound_cpu = one;
        return 1;
    }
    static int cyconv_current_cpu(void) { return sched_getcpu(); }
    #else
    #define CYCONV_CAN_BIND 0
    static int cyconv_bind_self(const int* cpus, int n) { (void)cpus; (void)n; return 0; }
    static int cyconv_current_cpu(void) { return -1; }
    #endif
    """
    const int CYCONV_CAN_BIND
    int _bind_self "cyconv_bind_self"(const int* cpus, int n) noexcept nogil
    int _current_cpu "cyconv_current_cpu"() noexcept nogil


def can_bind():
    """True where worker threads can be bound to CPUs (Linux with OpenMP)."""
    return bool(CYCONV_CAN_BIND and CYCONV_HAVE_OPENMP)


def current_cpu():
    """The CPU the calling thread runs on now, or -1 where unknown."""
    return _current_cpu()


def bind_workers(int num_threads, const int[::1] cpus, const int[::1] allowed,
                 int[::1] bound):
    """Bind the worker threads of the calling thread's OpenMP team of
    ``num_threads``: team thread t (1 <= t < num_threads) to the one CPU
    cpus[t - 1] where cpus has it, else to every CPU of ``allowed`` (unbound
    within the process's CPUs).  The calling (team master) thread is never
    touched.  bound[t] is set to 1 where thread t's binding succeeded."""
    cdef int t
    if allowed.shape[0] == 0 or bound.shape[0] < num_threads:
        raise ValueError("bind_workers: no allowed CPUs or too short a result array")
    with nogil, parallel(num_threads=num_threads):
        t = cyconv_thread_num()
        if t > 0:
            if t <= cpus.shape[0]:
                bound[t] = _bind_self(&cpus[t - 1], 1)
            else:
                bound[t] = _bind_self(&allowed[0], <int>allowed.shape[0])


# BLAS thread counts (see cyconv._threads, "BLAS inside OpenMP regions"):
# OpenBLAS's openblas_get_num_threads and openblas_set_num_threads, called
# through addresses registered once.  Through ctypes each call cost 3-30 us
# with the caches a kernel leaves behind; here the whole limit costs one
# Python call.
ctypedef int (*_get_threads_t)() noexcept nogil
ctypedef void (*_set_threads_t)(int) noexcept nogil

cdef enum:
    MAX_BLAS = 8

cdef _get_threads_t _blas_get[MAX_BLAS]
cdef _set_threads_t _blas_set[MAX_BLAS]
cdef int _blas_saved[MAX_BLAS]
cdef int _blas_n = 0


def blas_register(size_t get_address, size_t set_address):
    """Add one BLAS by the addresses of its get and set functions (C
    signatures ``int get(void)`` and ``void set(int)``).  Returns False when
    MAX_BLAS are registered already."""
    global _blas_n
    if _blas_n >= MAX_BLAS or get_address == 0 or set_address == 0:
        return False
    _blas_get[_blas_n] = <_get_threads_t> get_address
    _blas_set[_blas_n] = <_set_threads_t> set_address
    _blas_saved[_blas_n] = 1
    _blas_n += 1
    return True


def blas_limit():
    """Save every registered BLAS's thread count and set it to 1."""
    cdef int i
    for i in range(_blas_n):
        _blas_saved[i] = _blas_get[i]()
        if _blas_saved[i] != 1:
            _blas_set[i](1)


def blas_restore():
    """Set every registered BLAS back to the count blas_limit saved."""
    cdef int i
    for i in range(_blas_n):
        if _blas_saved[i] != 1:
            _blas_set[i](_blas_saved[i])
