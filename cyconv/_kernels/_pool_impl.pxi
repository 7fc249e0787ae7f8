"""Pooling kernels: max, average, Lp (forward), max and average backward.

One kernel serves 1-D, 2-D and 3-D pooling, regular and adaptive windows:
arrays are viewed as 5-D, (N, C, D, H, W) channels first or (N, D, H, W, C)
channels last (unit dims for 1-D and 2-D), and the windows are given per
spatial dim by tables computed in cyconv._params.pool_windows:

    first[dim, o]  first input position of window o that lies in the input
    count[dim, o]  number of window taps in the input (>= 1, validated)
    divc[dim, o]   the divisor's factor for that dim (average pooling)
    step[dim]      distance between taps (the dilation; 1 for adaptive)

Padding never appears explicitly: taps in the padding are simply not in the
tables, which is -inf for max and 0 for sums.  Index outputs are flat
positions within each (n, c) input plane, (d * H + h) * W + w.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, pow
from libc.stdint cimport int64_t

from ._openmp_helpers cimport cyconv_thread_num

cdef enum:
    OP_MAX = 0
    OP_AVG = 1
    OP_LP = 2
    CBLOCK = 16     # channels per work item in channels-last scatters


cdef struct Windows:
    # per-dim window tables (see the module docstring), d/h/w suffixed
    const Py_ssize_t* fd
    const Py_ssize_t* fh
    const Py_ssize_t* fw
    const Py_ssize_t* nd
    const Py_ssize_t* nh
    const Py_ssize_t* nw
    const Py_ssize_t* vd
    const Py_ssize_t* vh
    const Py_ssize_t* vw
    Py_ssize_t sd, sh, sw


cdef inline Windows _windows(const Py_ssize_t[:, ::1] first, const Py_ssize_t[:, ::1] count,
                             const Py_ssize_t[:, ::1] divc,
                             const Py_ssize_t[::1] step) noexcept:
    cdef Windows t
    t.fd = &first[0, 0]; t.fh = &first[1, 0]; t.fw = &first[2, 0]
    t.nd = &count[0, 0]; t.nh = &count[1, 0]; t.nw = &count[2, 0]
    t.vd = &divc[0, 0]; t.vh = &divc[1, 0]; t.vw = &divc[2, 0]
    t.sd = step[0]; t.sh = step[1]; t.sw = step[2]
    return t


cdef inline floating _lp_term(floating v, double p) noexcept nogil:
    if p == 1.0:
        return v
    if p == 2.0:
        return v * v
    return <floating> pow(<double> v, p)


cdef inline void _row_init(floating* dst, int64_t* idst, Py_ssize_t Wo, int op,
                           Py_ssize_t row0, const Py_ssize_t* fw) noexcept nogil:
    """Start an output row: -inf (max) or 0 (sums); indices at each window's
    first tap (row0 is the flat position of the window's first row)."""
    cdef Py_ssize_t o
    for o in range(Wo):
        dst[o] = -INFINITY if op == OP_MAX else 0
    if idst != NULL:
        for o in range(Wo):
            idst[o] = row0 + fw[o]


cdef inline void _run(const floating* row, floating* dst, int64_t* idst,
                      Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t s, Py_ssize_t off,
                      Py_ssize_t base, int op, double norm) noexcept nogil:
    """One tap for the interior outputs lo <= o < hi: input row[o * s + off].

    Branch-free, with the common strides as constants, so the compiler
    vectorises it.  Max propagates NaN: (v > m) | (v != v) takes v.
    """
    cdef Py_ssize_t o
    cdef floating v
    if op == OP_MAX:
        if idst != NULL:
            for o in range(lo, hi):
                v = row[o * s + off]
                if (v > dst[o]) | (v != v):
                    dst[o] = v
                    idst[o] = base + o * s + off
        elif s == 1:
            for o in range(lo, hi):
                v = row[o + off]
                dst[o] = v if (v > dst[o]) | (v != v) else dst[o]
        elif s == 2:
            for o in range(lo, hi):
                v = row[2 * o + off]
                dst[o] = v if (v > dst[o]) | (v != v) else dst[o]
        else:
            for o in range(lo, hi):
                v = row[o * s + off]
                dst[o] = v if (v > dst[o]) | (v != v) else dst[o]
    elif op == OP_AVG:
        if s == 1:
            for o in range(lo, hi):
                dst[o] = dst[o] + row[o + off]
        elif s == 2:
            for o in range(lo, hi):
                dst[o] = dst[o] + row[2 * o + off]
        else:
            for o in range(lo, hi):
                dst[o] = dst[o] + row[o * s + off]
    else:
        for o in range(lo, hi):
            dst[o] = dst[o] + _lp_term(row[o * s + off], norm)


cdef inline void _taps(const floating* row, floating* dst, int64_t* idst, Py_ssize_t o,
                       Py_ssize_t first, Py_ssize_t count, Py_ssize_t s,
                       Py_ssize_t base, int op, double norm) noexcept nogil:
    """Every tap of output o in this input row, from the window tables."""
    cdef Py_ssize_t e, pos
    cdef floating v
    for e in range(count):
        pos = first + e * s
        v = row[pos]
        if op == OP_MAX:
            if (v > dst[o]) | (v != v):
                dst[o] = v
                if idst != NULL:
                    idst[o] = base + pos
        elif op == OP_AVG:
            dst[o] = dst[o] + v
        else:
            dst[o] = dst[o] + _lp_term(v, norm)


cdef inline void _row_finish(floating* dst, Py_ssize_t Wo, int op, double norm,
                             double divisor, Py_ssize_t div_dh,
                             const Py_ssize_t* vw) noexcept nogil:
    cdef Py_ssize_t o
    if op == OP_AVG:
        for o in range(Wo):
            if divisor != 0:
                dst[o] = <floating> (dst[o] / divisor)
            else:
                dst[o] = dst[o] / <floating> (div_dh * vw[o])
    elif op == OP_LP:
        for o in range(Wo):
            dst[o] = <floating> pow(<double> dst[o], 1.0 / norm)


cdef inline void _pixel_tap(const floating* src, floating* dst, int64_t* idst,
                            Py_ssize_t C, Py_ssize_t pos, int op,
                            double norm) noexcept nogil:
    """Channels last: fold one input pixel's C channels into an output pixel."""
    cdef Py_ssize_t c
    cdef floating v
    if op == OP_MAX:
        if idst != NULL:
            for c in range(C):
                v = src[c]
                if (v > dst[c]) | (v != v):
                    dst[c] = v
                    idst[c] = pos
        else:
            for c in range(C):
                v = src[c]
                dst[c] = v if (v > dst[c]) | (v != v) else dst[c]
    elif op == OP_AVG:
        for c in range(C):
            dst[c] = dst[c] + src[c]
    else:
        for c in range(C):
            dst[c] = dst[c] + _lp_term(src[c], norm)


cdef inline floating _pick(floating m, floating v, int op) noexcept nogil:
    """max(m, v) taking NaN from either (as _run does), or m + v."""
    if op == OP_MAX:
        return v if (v > m) | (v != v) else m
    return m + v


cdef void _fold_rows(const floating* a, const floating* b, floating* buf, Py_ssize_t W,
                     int op) noexcept nogil:
    """buf[w] <- pick(a[w], b[w]) (a NULL: pick(buf[w], b[w]))."""
    cdef Py_ssize_t w
    if a == NULL:
        a = buf
    if op == OP_MAX:
        for w in range(W):
            buf[w] = _pick(a[w], b[w], OP_MAX)
    else:
        for w in range(W):
            buf[w] = a[w] + b[w]


cdef void _fold_cols(const floating* buf, floating* dst, Py_ssize_t lo, Py_ssize_t hi,
                     Py_ssize_t s, Py_ssize_t k, Py_ssize_t dl, Py_ssize_t off,
                     int op, double norm) noexcept nogil:
    """dst[o] <- the pick of buf[o * s + off + e * dl] over the k taps e, for
    the interior outputs lo <= o < hi; one pass for 2 or 3 adjacent taps
    with stride 2, else tap by tap into dst (already initialised)."""
    cdef Py_ssize_t o, e
    if s == 2 and dl == 1 and k == 2:
        if op == OP_MAX:
            for o in range(lo, hi):
                dst[o] = _pick(buf[2 * o + off], buf[2 * o + off + 1], OP_MAX)
        else:
            for o in range(lo, hi):
                dst[o] = buf[2 * o + off] + buf[2 * o + off + 1]
    elif s == 2 and dl == 1 and k == 3:
        if op == OP_MAX:
            for o in range(lo, hi):
                dst[o] = _pick(_pick(buf[2 * o + off], buf[2 * o + off + 1], OP_MAX),
                               buf[2 * o + off + 2], OP_MAX)
        else:
            for o in range(lo, hi):
                dst[o] = buf[2 * o + off] + buf[2 * o + off + 1] + buf[2 * o + off + 2]
    else:
        for e in range(k):
            _run(buf, dst, NULL, lo, hi, s, e * dl + off, 0, op, norm)


def pool_forward(const floating[:, :, :, :, ::1] x,     # in
                 floating[:, :, :, :, ::1] y,           # out
                 int64_t[:, :, :, :, ::1] idx,          # out (max), may be unused
                 const Py_ssize_t[:, ::1] first,
                 const Py_ssize_t[:, ::1] count,
                 const Py_ssize_t[:, ::1] divc,
                 const Py_ssize_t[::1] step,
                 const Py_ssize_t[::1] wrun,           # W-dim interior run
                 int op, double norm, double divisor, bint want_idx,
                 bint channels_last,
                 floating[:, ::1] ws,                   # scratch (threads, W), channels first
                 int num_threads):
    """op: 0 max, 1 average (a non-zero divisor overrides the tables), 2 Lp (norm)."""
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t C = x.shape[4] if channels_last else x.shape[1]
    cdef Py_ssize_t D = x.shape[1] if channels_last else x.shape[2]
    cdef Py_ssize_t H = x.shape[2] if channels_last else x.shape[3]
    cdef Py_ssize_t W = x.shape[3] if channels_last else x.shape[4]
    cdef Py_ssize_t Do = y.shape[1] if channels_last else y.shape[2]
    cdef Py_ssize_t Ho = y.shape[2] if channels_last else y.shape[3]
    cdef Py_ssize_t Wo = y.shape[3] if channels_last else y.shape[4]
    cdef Windows t = _windows(first, count, divc, step)
    cdef Py_ssize_t rk = wrun[0], rs = wrun[1], rdl = wrun[2], rp = wrun[3]
    cdef Py_ssize_t rlo = wrun[4], rhi = wrun[5]
    cdef const floating* xb
    cdef floating* yb
    cdef int64_t* ib = NULL
    cdef Py_ssize_t item, nitems, plane, r, od, oh, ow, a, b, e, c, dd, hh, ww, pos, n
    cdef const floating* src
    cdef floating* dst
    cdef int64_t* idst
    cdef floating v, m, s, inv
    cdef int64_t mi
    cdef floating* buf = NULL
    cdef const floating* first_row
    cdef bint fold
    if N == 0 or C == 0:
        return
    xb = &x[0, 0, 0, 0, 0]
    yb = &y[0, 0, 0, 0, 0]
    if want_idx:
        ib = &idx[0, 0, 0, 0, 0]
    if not channels_last:
        # One item per output row of one plane.  For each input row of the
        # windows: interior outputs one tap at a time (vectorised), the edge
        # outputs tap by tap from the tables.  Per output, taps are visited in
        # row-major order, so ties keep the first maximum.  Without indices,
        # max and average windows of several input rows are folded into one
        # row first (buf: their column maxima or sums), and the taps along
        # the row then run once on it: kh + kw passes where row by row takes
        # kh * kw (the order of a window's additions changes, not its set).
        # Measured at 2 threads (AVX-512), medians, ms, row by row / folded:
        # maxpool_2x2_s2 (8 x 64 x 112x112) 4.1 / 1.8-2.4, maxpool_3x3_s2_p1
        # 6.8 / 3.4-3.7.
        nitems = N * C * Do * Ho
        with nogil, parallel(num_threads=num_threads):
            buf = &ws[cyconv_thread_num(), 0]
            for item in prange(nitems, schedule="static"):
                plane = item // (Do * Ho)
                r = item % (Do * Ho)
                od = r // Ho
                oh = r % Ho
                src = xb + plane * D * H * W
                dst = yb + item * Wo
                idst = ib + item * Wo if want_idx else NULL
                fold = (not want_idx and op != OP_LP and t.nd[od] * t.nh[oh] > 1)
                _row_init(dst, idst, Wo, op, (t.fd[od] * H + t.fh[oh]) * W, t.fw)
                for a in range(t.nd[od]):
                    dd = t.fd[od] + a * t.sd
                    for b in range(t.nh[oh]):
                        hh = t.fh[oh] + b * t.sh
                        pos = (dd * H + hh) * W
                        if fold:   # the first two rows in one pass, then one at a time
                            if a == 0 and b == 0:
                                first_row = src + pos
                            else:
                                _fold_rows(first_row, src + pos, buf, W, op)
                                first_row = NULL
                            continue
                        for e in range(rk):
                            _run(src + pos, dst, idst, rlo, rhi, rs, e * rdl - rp, pos, op,
                                 norm)
                        for ow in range(rlo):
                            _taps(src + pos, dst, idst, ow, t.fw[ow], t.nw[ow], t.sw, pos, op,
                                  norm)
                        for ow in range(rhi, Wo):
                            _taps(src + pos, dst, idst, ow, t.fw[ow], t.nw[ow], t.sw, pos, op,
                                  norm)
                if fold:
                    _fold_cols(buf, dst, rlo, rhi, rs, rk, rdl, -rp, op, norm)
                    for ow in range(rlo):
                        _taps(buf, dst, NULL, ow, t.fw[ow], t.nw[ow], t.sw, 0, op, norm)
                    for ow in range(rhi, Wo):
                        _taps(buf, dst, NULL, ow, t.fw[ow], t.nw[ow], t.sw, 0, op, norm)
                _row_finish(dst, Wo, op, norm, divisor, t.vd[od] * t.vh[oh], t.vw)
    else:
        # one item per output pixel, all channels at once (vectorised over C)
        nitems = N * Do * Ho * Wo
        for item in prange(nitems, nogil=True, schedule="static",
                           num_threads=num_threads):
            n = item // (Do * Ho * Wo)
            r = item % (Do * Ho * Wo)
            od = r // (Ho * Wo)
            oh = (r // Wo) % Ho
            ow = r % Wo
            dst = yb + item * C
            idst = ib + item * C if want_idx else NULL
            for c in range(C):
                dst[c] = -INFINITY if op == OP_MAX else 0
            if want_idx:
                mi = (t.fd[od] * H + t.fh[oh]) * W + t.fw[ow]
                for c in range(C):
                    idst[c] = mi
            for a in range(t.nd[od]):
                dd = t.fd[od] + a * t.sd
                for b in range(t.nh[oh]):
                    hh = t.fh[oh] + b * t.sh
                    for e in range(t.nw[ow]):
                        ww = t.fw[ow] + e * t.sw
                        pos = (dd * H + hh) * W + ww
                        _pixel_tap(xb + (n * D * H * W + pos) * C, dst, idst, C, pos, op,
                                   norm)
            if op == OP_AVG:
                if divisor != 0:
                    inv = <floating> (1.0 / divisor)
                else:
                    inv = 1 / <floating> (t.vd[od] * t.vh[oh] * t.vw[ow])
                for c in range(C):
                    dst[c] = dst[c] * inv
            elif op == OP_LP:
                for c in range(C):
                    dst[c] = <floating> pow(<double> dst[c], 1.0 / norm)


def max_pool_backward(const floating[:, :, :, :, ::1] gy,   # in
                      const int64_t[:, :, :, :, ::1] idx,   # in, validated range
                      floating[:, :, :, :, ::1] gx,         # out, zero-filled
                      bint channels_last, int num_threads):
    """gx[plane, idx[j]] += gy[j]: one item per plane (channels first) or per
    (sample, block of channels) (channels last), so no two items write alike."""
    cdef Py_ssize_t N = gx.shape[0]
    cdef Py_ssize_t C = gx.shape[4] if channels_last else gx.shape[1]
    cdef Py_ssize_t S = gx.shape[1] * gx.shape[2] * gx.shape[3] if channels_last \
        else gx.shape[2] * gx.shape[3] * gx.shape[4]
    cdef Py_ssize_t So = gy.shape[1] * gy.shape[2] * gy.shape[3] if channels_last \
        else gy.shape[2] * gy.shape[3] * gy.shape[4]
    cdef Py_ssize_t ncb = (C + CBLOCK - 1) // CBLOCK
    cdef Py_ssize_t item, j, c, c0, c1, n
    cdef const floating* g
    cdef const int64_t* ix
    cdef floating* out
    if N == 0 or C == 0 or So == 0:
        return
    if not channels_last:
        for item in prange(N * C, nogil=True, schedule="static", num_threads=num_threads):
            g = &gy[0, 0, 0, 0, 0] + item * So
            ix = &idx[0, 0, 0, 0, 0] + item * So
            out = &gx[0, 0, 0, 0, 0] + item * S
            for j in range(So):
                out[ix[j]] += g[j]
    else:
        for item in prange(N * ncb, nogil=True, schedule="static", num_threads=num_threads):
            n = item // ncb
            c0 = (item % ncb) * CBLOCK
            c1 = min(C, c0 + CBLOCK)
            g = &gy[0, 0, 0, 0, 0] + n * So * C
            ix = &idx[0, 0, 0, 0, 0] + n * So * C
            out = &gx[0, 0, 0, 0, 0] + n * S * C
            for j in range(So):
                for c in range(c0, c1):
                    out[ix[j * C + c] * C + c] += g[j * C + c]


def avg_pool_backward(const floating[:, :, :, :, ::1] gy,   # in
                      floating[:, :, :, :, ::1] gx,         # out, zero-filled
                      const Py_ssize_t[:, ::1] first,
                      const Py_ssize_t[:, ::1] count,
                      const Py_ssize_t[:, ::1] divc,
                      const Py_ssize_t[::1] step,
                      double divisor, bint channels_last, int num_threads):
    """Each output's gradient / divisor goes to every tap of its window."""
    cdef Py_ssize_t N = gx.shape[0]
    cdef Py_ssize_t C = gx.shape[4] if channels_last else gx.shape[1]
    cdef Py_ssize_t D = gx.shape[1] if channels_last else gx.shape[2]
    cdef Py_ssize_t H = gx.shape[2] if channels_last else gx.shape[3]
    cdef Py_ssize_t W = gx.shape[3] if channels_last else gx.shape[4]
    cdef Py_ssize_t Do = gy.shape[1] if channels_last else gy.shape[2]
    cdef Py_ssize_t Ho = gy.shape[2] if channels_last else gy.shape[3]
    cdef Py_ssize_t Wo = gy.shape[3] if channels_last else gy.shape[4]
    cdef Windows t = _windows(first, count, divc, step)
    cdef Py_ssize_t ncb = (C + CBLOCK - 1) // CBLOCK
    cdef Py_ssize_t item, od, oh, ow, a, b, e, c, c0, c1, n, o, pos
    cdef const floating* g
    cdef floating* out
    cdef floating f
    if N == 0 or C == 0:
        return
    if not channels_last:
        for item in prange(N * C, nogil=True, schedule="static", num_threads=num_threads):
            g = &gy[0, 0, 0, 0, 0] + item * Do * Ho * Wo
            out = &gx[0, 0, 0, 0, 0] + item * D * H * W
            o = 0
            for od in range(Do):
                for oh in range(Ho):
                    for ow in range(Wo):
                        if divisor != 0:
                            f = <floating> (g[o] / divisor)
                        else:
                            f = g[o] / <floating> (t.vd[od] * t.vh[oh] * t.vw[ow])
                        o = o + 1
                        for a in range(t.nd[od]):
                            for b in range(t.nh[oh]):
                                pos = ((t.fd[od] + a * t.sd) * H + t.fh[oh] + b * t.sh) * W + t.fw[ow]
                                for e in range(t.nw[ow]):
                                    out[pos + e * t.sw] += f
    else:
        for item in prange(N * ncb, nogil=True, schedule="static", num_threads=num_threads):
            n = item // ncb
            c0 = (item % ncb) * CBLOCK
            c1 = min(C, c0 + CBLOCK)
            g = &gy[0, 0, 0, 0, 0] + n * Do * Ho * Wo * C
            out = &gx[0, 0, 0, 0, 0] + n * D * H * W * C
            o = 0
            for od in range(Do):
                for oh in range(Ho):
                    for ow in range(Wo):
                        if divisor != 0:
                            f = <floating> (1.0 / divisor)
                        else:
                            f = 1 / <floating> (t.vd[od] * t.vh[oh] * t.vw[ow])
                        for a in range(t.nd[od]):
                            for b in range(t.nh[oh]):
                                for e in range(t.nw[ow]):
                                    pos = (((t.fd[od] + a * t.sd) * H + t.fh[oh] + b * t.sh) * W
                                           + t.fw[ow] + e * t.sw) * C
                                    for c in range(c0, c1):
                                        out[pos + c] += g[o * C + c] * f
                        o = o + 1
