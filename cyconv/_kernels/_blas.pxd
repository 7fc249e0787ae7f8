# GEMM, wrapped once for both float types.  It goes through
# scipy.linalg.cython_blas unless the Python layer has handed this module the
# addresses of another loaded BLAS's sgemm and dgemm with 64-bit integers
# (set_gemm64; cyconv._threads.install_gemm decides, see there).
# Callers must run BLAS single-threaded inside OpenMP regions (the Python layer
# does that with cyconv._threads.blas_single_threaded()).
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    /* Fortran sgemm/dgemm of an ILP64 BLAS (64-bit integer arguments), with
       the two hidden lengths of its character arguments. */
    typedef void (*cyconv_sgemm64_t)(const char*, const char*, const int64_t*,
        const int64_t*, const int64_t*, const float*, const float*,
        const int64_t*, const float*, const int64_t*, const float*, float*,
        const int64_t*, size_t, size_t);
    typedef void (*cyconv_dgemm64_t)(const char*, const char*, const int64_t*,
        const int64_t*, const int64_t*, const double*, const double*,
        const int64_t*, const double*, const int64_t*, const double*, double*,
        const int64_t*, size_t, size_t);
    static cyconv_sgemm64_t cyconv_sgemm64 = NULL;
    static cyconv_dgemm64_t cyconv_dgemm64 = NULL;

    static void cyconv_set_gemm64(size_t s, size_t d) {
        cyconv_sgemm64 = (s && d) ? (cyconv_sgemm64_t) s : NULL;
        cyconv_dgemm64 = (s && d) ? (cyconv_dgemm64_t) d : NULL;
    }
    static int cyconv_has_gemm64(void) { return cyconv_sgemm64 != NULL; }

    /* Column-major C = alpha op(A) op(B) + beta C through the ILP64 BLAS;
       0 when none is set (the caller then uses cython_blas). */
    static inline int cyconv_sgemm64_call(char ta, char tb, int m, int n, int k,
            float alpha, const float* a, int lda, const float* b, int ldb,
            float beta, float* c, int ldc) {
        cyconv_sgemm64_t f = cyconv_sgemm64;
        if (f == NULL) return 0;
        int64_t M = m, N = n, K = k, LA = lda, LB = ldb, LC = ldc;
        f(&ta, &tb, &M, &N, &K, &alpha, a, &LA, b, &LB, &beta, c, &LC, 1, 1);
        return 1;
    }
    static inline int cyconv_dgemm64_call(char ta, char tb, int m, int n, int k,
            double alpha, const double* a, int lda, const double* b, int ldb,
            double beta, double* c, int ldc) {
        cyconv_dgemm64_t f = cyconv_dgemm64;
        if (f == NULL) return 0;
        int64_t M = m, N = n, K = k, LA = lda, LB = ldb, LC = ldc;
        f(&ta, &tb, &M, &N, &K, &alpha, a, &LA, b, &LB, &beta, c, &LC, 1, 1);
        return 1;
    }
    """
    void cyconv_set_gemm64(size_t s, size_t d) noexcept nogil
    int cyconv_has_gemm64() noexcept nogil
    int cyconv_sgemm64_call(char ta, char tb, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb,
                            float beta, float* c, int ldc) noexcept nogil
    int cyconv_dgemm64_call(char ta, char tb, int m, int n, int k, double alpha,
                            const double* a, int lda, const double* b, int ldb,
                            double beta, double* c, int ldc) noexcept nogil


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb, floating beta,
                      floating* c, int ldc) noexcept nogil:
    """Row-major C (m x n) = alpha * op(A) @ op(B) + beta * C.

    A row-major matrix is the column-major transpose, so this is the
    column-major call C^T = op(B)^T @ op(A)^T with the operands swapped.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        if not cyconv_sgemm64_call(tb, ta, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc):
            sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda,
                  &beta, c, &ldc)
    else:
        if not cyconv_dgemm64_call(tb, ta, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc):
            dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda,
                  &beta, c, &ldc)
