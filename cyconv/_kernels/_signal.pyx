"""Direct 2-D correlation for cyconv.signal: out = valid correlation of a
(pre-padded) image batch with one kernel, one output row per work item."""
from cython cimport floating
from cython.parallel cimport prange


def correlate_valid(const floating[:, :, ::1] x,     # in (B, H, W), already padded
                    const floating[:, ::1] k,        # in (kh, kw)
                    floating[:, :, ::1] out,         # out (B, H - kh + 1, W - kw + 1)
                    int num_threads):
    cdef Py_ssize_t B = out.shape[0], Ho = out.shape[1], Wo = out.shape[2]
    cdef Py_ssize_t H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t kh = k.shape[0], kw = k.shape[1]
    cdef Py_ssize_t item, b, i, a, e, j
    cdef const floating* src
    cdef floating* dst
    cdef floating w
    if B == 0 or Ho == 0 or Wo == 0:
        return
    for item in prange(B * Ho, nogil=True, schedule="static", num_threads=num_threads):
        b = item // Ho
        i = item % Ho
        dst = &out[b, i, 0]
        for j in range(Wo):
            dst[j] = 0
        for a in range(kh):
            for e in range(kw):
                w = k[a, e]
                src = &x[b, i + a, e]
                for j in range(Wo):          # contiguous: vectorised
                    dst[j] = dst[j] + w * src[j]
