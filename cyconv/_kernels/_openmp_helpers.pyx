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
