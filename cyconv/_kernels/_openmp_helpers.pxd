# The one place where cyconv touches OpenMP.  Every kernel cimports from here;
# when the build has no OpenMP (_OPENMP undefined) the same sources compile to
# serial code: prange pragmas vanish and these helpers report one thread.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CYCONV_HAVE_OPENMP 1
    static inline int cyconv_thread_num(void) { return omp_get_thread_num(); }
    static inline int cyconv_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define CYCONV_HAVE_OPENMP 0
    static inline int cyconv_thread_num(void) { return 0; }
    static inline int cyconv_omp_max_threads(void) { return 1; }
    #endif
    """
    const int CYCONV_HAVE_OPENMP
    int cyconv_thread_num() noexcept nogil
    int cyconv_omp_max_threads() noexcept nogil
