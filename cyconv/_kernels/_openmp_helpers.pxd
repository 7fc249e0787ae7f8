# The one place where cyconv touches OpenMP.  Every kernel cimports from here;
# when the build has no OpenMP (_OPENMP undefined) the same sources compile to
# serial code: prange pragmas vanish and these helpers report one thread.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CYCONV_HAVE_OPENMP 1
    static inline int cyconv_thread_num(void) { return omp_get_thread_num(); }
    #else
    #define CYCONV_HAVE_OPENMP 0
    static inline int cyconv_thread_num(void) { return 0; }
    #endif
    """
    const int CYCONV_HAVE_OPENMP
    int cyconv_thread_num() noexcept nogil
