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
    cdef floating* dst
    if B == 0 or Ho == 0 or Wo == 0:
        return
    for item in prange(B * Ho, nogil=True, schedule="static", num_threads=num_threads):
        b = item // Ho
        i = item % Ho
        dst = &out[b, i, 0]
        j = 0
        while j + STRIP <= Wo:      # full strips: every tap accumulated in registers
            _strip(&x[b, i, j], W, &k[0, 0], kh, kw, dst + j)
            j = j + STRIP
        for j in range(j, Wo):      # the ragged end, one output at a time
            dst[j] = _point(&x[b, i, j], W, &k[0, 0], kh, kw)


cdef enum:
    STRIP = 8


cdef inline void _strip(const floating* src, Py_ssize_t W, const floating* k,
                        Py_ssize_t kh, Py_ssize_t kw, floating* dst) noexcept nogil:
    """dst[0:STRIP] = correlation at STRIP consecutive outputs; the
    accumulators stay in registers across all kh * kw taps."""
    cdef floating acc[STRIP]
    cdef Py_ssize_t a, e, j
    cdef floating w
    cdef const floating* row
    for j in range(STRIP):
        acc[j] = 0
    for a in range(kh):
        row = src + a * W
        for e in range(kw):
            w = k[a * kw + e]
            for j in range(STRIP):
                acc[j] = acc[j] + w * row[e + j]
    for j in range(STRIP):
        dst[j] = acc[j]


cdef inline floating _point(const floating* src, Py_ssize_t W, const floating* k,
                            Py_ssize_t kh, Py_ssize_t kw) noexcept nogil:
    cdef Py_ssize_t a, e
    cdef floating s = 0
    for a in range(kh):
        for e in range(kw):
            s = s + k[a * kw + e] * src[a * W + e]
    return s
