"""Convolution kernels, 1-D to 3-D: tiled im2col + GEMM, col2im, OpenMP over tiles;
Winograd and register-blocked direct kernels for the shapes conv.py routes to them.

Kernels trust their inputs: the public ops have validated dtypes, shapes and
hyperparameters and made every array C-contiguous.  Every array is viewed as
3-D spatial (unit dims for 1-D and 2-D), and the geometry arrives as one
array ``geo`` = (kd, kh, kw, sd, sh, sw, pd, ph, pw, dd, dh, dw, Do, Ho, Wo),
where pd/ph/pw is the padding before (the padding after only shapes Do/Ho/Wo).

Layouts
-------
channels first: x (N, C, D, H, W), y (N, C_out, L) with L = Do * Ho * Wo;
    a column matrix is (C_g * kd * kh * kw, L_tile), rows ordered (c, a, i, j);
    weights are (C_out, C_g * kd * kh * kw).
channels last:  x (N, D, H, W, C), y (N, L, C_out);
    a column matrix is (L_tile, kd * kh * kw * C_g), columns ordered (a, i, j, c);
    weights are (C_out, kd * kh * kw * C_g) (the caller transposes them).

Work is split into tiles of at most ``tile`` output positions; the tile size
depends on the shape only, never on the thread count, so results are
bit-identical for every number of threads.

The forward kernels and the input gradient hand out their work items with
guided scheduling: large runs of consecutive items first, smaller ones at
the end, so a thread slowed by other work (on a shared VM, a vCPU the host
gives less time) no longer holds the call up for a whole static half of it.
Each item's result does not depend on the thread that computes it.  A/B at
2 threads against static (medians of 25 interleaved calls): 0.99-1.05x on
the benchmark's shapes when the machine was quiet; with another process
taking 1 ms of every 5 ms of one CPU, 0.90-1.46x (vgg_3x3 1.05-1.06x,
cifar_5x5 1.46x and single_image_large 1.44x with CPU 1 loaded).
pointwise_forward stays static (guided measured 0.95-0.99x there); plain
dynamic scheduling of single items lost locality (depthwise_3x3 0.77-0.88x).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memcmp, memcpy, memset

from ._blas cimport cyconv_has_gemm64, cyconv_set_gemm64, gemm
from ._openmp_helpers cimport cyconv_thread_num


def set_gemm64(size_t sgemm_address, size_t dgemm_address):
    """Route this module's GEMMs through the ILP64 Fortran sgemm and dgemm at
    these addresses (both nonzero), or back to scipy.linalg.cython_blas
    (either zero).  Returns whether an ILP64 BLAS is now in use."""
    cyconv_set_gemm64(sgemm_address, dgemm_address)
    return bool(cyconv_has_gemm64())


cdef bint TO_COL_ROWS = True   # _to_col takes _to_col_rows where it applies
cdef bint GATHER4 = True      # stride-4 rows through _gather4 where it applies


def set_gather4(bint on):
    """Whether the four stride-4 phases of a row are copied by _gather4 (tests
    run both it and four _gather calls); returns the previous setting."""
    global GATHER4
    cdef bint old = GATHER4
    GATHER4 = on
    return old


def set_to_col_rows(bint on):
    """Whether im2col of whole 2-D output rows takes _to_col_rows (tests run
    both it and _transfer_cf); returns the previous setting."""
    global TO_COL_ROWS
    cdef bint old = TO_COL_ROWS
    TO_COL_ROWS = on
    return old


cdef struct Geom:
    Py_ssize_t D, H, W       # input spatial size (unpadded)
    Py_ssize_t C             # channels moved by one transfer (channels per group)
    Py_ssize_t cstride       # channels last: distance between pixels (all channels)
    Py_ssize_t kd, kh, kw, sd, sh, sw, pd, ph, pw, dd, dh, dw
    Py_ssize_t Do, Ho, Wo
    bint direct              # pointwise: the input is its own column matrix


cdef inline Geom _geom(Py_ssize_t* shape, bint channels_last, Py_ssize_t groups,
                       const Py_ssize_t[::1] geo) noexcept:
    """Geometry of one group's transfer for a 5-D input of ``shape``:
    g.C is the group's channel count, g.cstride all the input's channels."""
    cdef Geom g
    cdef Py_ssize_t C = shape[4] if channels_last else shape[1]
    g.D = shape[1] if channels_last else shape[2]
    g.H = shape[2] if channels_last else shape[3]
    g.W = shape[3] if channels_last else shape[4]
    g.C = C // groups
    g.cstride = C
    g.kd = geo[0]; g.kh = geo[1]; g.kw = geo[2]
    g.sd = geo[3]; g.sh = geo[4]; g.sw = geo[5]
    g.pd = geo[6]; g.ph = geo[7]; g.pw = geo[8]
    g.dd = geo[9]; g.dh = geo[10]; g.dw = geo[11]
    g.Do = geo[12]; g.Ho = geo[13]; g.Wo = geo[14]
    g.direct = (g.kd == 1 and g.kh == 1 and g.kw == 1 and g.sd == 1 and g.sh == 1
                and g.sw == 1 and g.pd == 0 and g.ph == 0 and g.pw == 0
                and g.Do == g.D and g.Ho == g.H and g.Wo == g.W)
    return g


cdef inline Py_ssize_t _first_at_least(Py_ssize_t a, Py_ssize_t s) noexcept nogil:
    """Smallest o >= 0 with o * s >= a."""
    if a <= 0:
        return 0
    return (a + s - 1) // s


cdef inline Py_ssize_t _end_at_most(Py_ssize_t b, Py_ssize_t s, Py_ssize_t n) noexcept nogil:
    """One past the largest o with o * s <= b, clamped to [0, n]."""
    if b < 0:
        return 0
    return min(b // s + 1, n)


cdef inline void _copy_stride(floating* dst, const floating* src, Py_ssize_t lo,
                              Py_ssize_t hi, Py_ssize_t count,
                              Py_ssize_t stride) noexcept nogil:
    """dst[b] <- src[b * stride] for lo <= b < hi, zero for the other b <
    count (0 <= lo <= hi <= count): one row of im2col or of a band, its
    padding already worked out by the caller."""
    cdef Py_ssize_t b
    if lo > 0:
        memset(dst, 0, lo * sizeof(floating))
    if hi < count:
        memset(dst + hi, 0, (count - hi) * sizeof(floating))
    if stride == 1:
        memcpy(dst + lo, src + lo, (hi - lo) * sizeof(floating))
    elif stride == 2:   # constant strides vectorise
        for b in range(lo, hi):
            dst[b] = src[2 * b]
    elif stride == 4:
        for b in range(lo, hi):
            dst[b] = src[4 * b]
    elif stride == 8:
        for b in range(lo, hi):
            dst[b] = src[8 * b]
    else:
        for b in range(lo, hi):
            dst[b] = src[b * stride]


cdef void _transfer_cf(floating* x, const Geom* g, Py_ssize_t l0, Py_ssize_t l1,
                       floating* col, bint to_col) noexcept nogil:
    """Channels first, output positions [l0, l1).

    to_col: col (C*kd*kh*kw, l1-l0) <- patches of x (C, D, H, W), zeros for
            padding.
    else:   x += col scattered back (col2im: overlapping taps are summed).
    """
    cdef Py_ssize_t lt = l1 - l0
    cdef Py_ssize_t plane = g.Ho * g.Wo
    cdef Py_ssize_t c, a, i, j, l, od, oh, ow, ow_end, zd, ih, lo, hi, o, s, e, off
    cdef floating* row = col
    cdef floating* dst
    cdef floating* src
    for c in range(g.C):
        for a in range(g.kd):
            for i in range(g.kh):
                for j in range(g.kw):
                    off = j * g.dw - g.pw                  # iw = ow * sw + off
                    lo = _first_at_least(-off, g.sw)       # first ow with iw >= 0
                    hi = _end_at_most(g.W - 1 - off, g.sw, g.Wo)  # ow past iw < W
                    dst = row
                    l = l0
                    od = l0 // plane
                    oh = (l0 % plane) // g.Wo
                    ow = l0 % g.Wo
                    while l < l1:
                        ow_end = min(g.Wo, ow + (l1 - l))
                        zd = od * g.sd - g.pd + a * g.dd
                        ih = oh * g.sh - g.ph + i * g.dh
                        s = max(lo, ow)
                        e = min(hi, ow_end)
                        if zd < 0 or zd >= g.D or ih < 0 or ih >= g.H or s >= e:
                            if to_col:
                                memset(dst, 0, (ow_end - ow) * sizeof(floating))
                        else:
                            src = x + ((c * g.D + zd) * g.H + ih) * g.W + off
                            if to_col:
                                _copy_stride(dst, src + ow * g.sw, s - ow, e - ow,
                                             ow_end - ow, g.sw)
                            else:
                                if g.sw == 1:
                                    for o in range(s, e):
                                        src[o] += dst[o - ow]
                                elif g.sw == 2:
                                    for o in range(s, e):
                                        src[2 * o] += dst[o - ow]
                                else:
                                    for o in range(s, e):
                                        src[o * g.sw] += dst[o - ow]
                        dst += ow_end - ow
                        l += ow_end - ow
                        ow = 0
                        oh += 1
                        if oh == g.Ho:
                            oh = 0
                            od += 1
                    row += lt


cdef void _transfer_cl(floating* x, const Geom* g, Py_ssize_t l0, Py_ssize_t l1,
                       floating* col, bint to_col) noexcept nogil:
    """Channels last, output positions [l0, l1).

    x points at channel c0 of voxel (0, 0, 0) of one sample; voxels are
    g.cstride apart and g.C channels are moved.
    to_col: col (l1-l0, kd*kh*kw*C) <- patches; else x += col scattered back.
    """
    cdef Py_ssize_t l, od, oh, ow, a, i, j, zd, ih, iw, c
    cdef Py_ssize_t C = g.C
    cdef Py_ssize_t plane = g.Ho * g.Wo
    cdef floating* dst = col
    cdef floating* src
    for l in range(l0, l1):
        od = l // plane
        oh = (l % plane) // g.Wo
        ow = l % g.Wo
        for a in range(g.kd):
            zd = od * g.sd - g.pd + a * g.dd
            for i in range(g.kh):
                ih = oh * g.sh - g.ph + i * g.dh
                for j in range(g.kw):
                    iw = ow * g.sw - g.pw + j * g.dw
                    if (zd >= 0 and zd < g.D and ih >= 0 and ih < g.H
                            and iw >= 0 and iw < g.W):
                        src = x + ((zd * g.H + ih) * g.W + iw) * g.cstride
                        if to_col:
                            memcpy(dst, src, C * sizeof(floating))
                        else:
                            for c in range(C):
                                src[c] += dst[c]
                    elif to_col:
                        memset(dst, 0, C * sizeof(floating))
                    dst += C


cdef void _to_col_rows(const floating* x, const Geom* g, Py_ssize_t oh0, Py_ssize_t oh1,
                       floating* col) noexcept nogil:
    """_transfer_cf's im2col for a 2-D input (D = Do = 1) and the whole output
    rows [oh0, oh1): per tap, the rows whose input row is padding and the
    columns whose input column is padding are found once, so the loop over
    rows only copies.  _transfer_cf works out each row's bounds in the row
    loop: with short rows (14 columns in resnet_3x3_s2) that cost showed.
    Measured at 2 threads (AVX2), medians of 41 interleaved calls, ms,
    _transfer_cf / _to_col_rows: resnet_3x3_s2 forward 7.82 / 7.39 and
    7.99 / 7.57 (two runs), at 1 thread 15.3 / 14.4 and 13.1 / 12.9; its
    backward 18.3 / 17.8 ms."""
    cdef Py_ssize_t Wo = g.Wo, lt = (oh1 - oh0) * g.Wo
    cdef Py_ssize_t c, i, j, off, lo, hi, r0, r1, oh
    cdef floating* dst
    cdef const floating* src
    for c in range(g.C):
        for i in range(g.kh):
            # output rows whose input row oh * sh - ph + i * dh is in [0, H)
            r0 = min(oh1, max(oh0, _first_at_least(g.ph - i * g.dh, g.sh)))
            r1 = max(r0, min(oh1, _end_at_most(g.H - 1 + g.ph - i * g.dh, g.sh, g.Ho)))
            for j in range(g.kw):
                dst = col + ((c * g.kh + i) * g.kw + j) * lt
                off = j * g.dw - g.pw                  # iw = ow * sw + off
                lo = min(Wo, _first_at_least(-off, g.sw))
                hi = max(lo, _end_at_most(g.W - 1 - off, g.sw, Wo))
                if r0 > oh0:
                    memset(dst, 0, (r0 - oh0) * Wo * sizeof(floating))
                if r1 < oh1:
                    memset(dst + (r1 - oh0) * Wo, 0, (oh1 - r1) * Wo * sizeof(floating))
                if r1 == r0:
                    continue
                dst = dst + (r0 - oh0) * Wo
                src = x + (c * g.H + r0 * g.sh - g.ph + i * g.dh) * g.W + off
                for oh in range(r0, r1):
                    _copy_stride(dst, src, lo, hi, Wo, g.sw)
                    dst += Wo
                    src += g.sh * g.W


cdef inline void _to_col(floating* x, const Geom* g, Py_ssize_t l0, Py_ssize_t l1,
                         floating* col, bint channels_last) noexcept nogil:
    if channels_last:
        _transfer_cl(x, g, l0, l1, col, True)
    elif (TO_COL_ROWS and g.D == 1 and g.Do == 1 and g.kd == 1 and g.pd == 0
          and l0 % g.Wo == 0 and (l1 - l0) % g.Wo == 0):
        # (a 2-D input; with depth padding before it, a 3-D input of depth 1
        # has its one depth tap at -pd, in the padding: _transfer_cf zeroes it)
        _to_col_rows(x, g, l0 // g.Wo, l1 // g.Wo, col)
    else:
        _transfer_cf(x, g, l0, l1, col, True)


cdef inline void _from_col(floating* x, const Geom* g, Py_ssize_t l0, Py_ssize_t l1,
                           floating* col, bint channels_last) noexcept nogil:
    if channels_last:
        _transfer_cl(x, g, l0, l1, col, False)
    else:
        _transfer_cf(x, g, l0, l1, col, False)


cdef inline const floating* _columns(const floating* xb, const Geom* g, Py_ssize_t n,
                                    Py_ssize_t grp, Py_ssize_t l0, Py_ssize_t l1,
                                    floating* buf, bint channels_last,
                                    Py_ssize_t* ld) noexcept nogil:
    """The column matrix of a tile and, in ``ld``, its leading dimension.

    A pointwise convolution (1x1, stride 1, no padding) needs no im2col: its
    column matrix is the input itself, read in place.  Otherwise the tile is
    im2col'ed into ``buf``.
    """
    cdef Py_ssize_t L = g.Do * g.Ho * g.Wo
    if g.direct:
        if channels_last:
            ld[0] = g.cstride
            return xb + (n * L + l0) * g.cstride + grp * g.C
        ld[0] = L
        return xb + (n * g.cstride + grp * g.C) * L + l0
    _to_col(_plane(xb, n, grp * g.C, g, channels_last), g, l0, l1, buf, channels_last)
    ld[0] = g.C * g.kd * g.kh * g.kw if channels_last else l1 - l0
    return buf


cdef inline floating* _plane(const floating* base, Py_ssize_t n, Py_ssize_t c0,
                             const Geom* g, bint channels_last) noexcept nogil:
    """Address of channel c0 at voxel (0, 0, 0) of sample n of a (N, ...) array."""
    cdef Py_ssize_t vol = g.D * g.H * g.W
    if channels_last:
        return <floating*> base + n * vol * g.cstride + c0
    return <floating*> base + (n * g.cstride + c0) * vol


# --------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------

def conv_forward(const floating[:, :, :, :, ::1] x,   # in
                 const floating[:, ::1] w,             # in (C_out, K)
                 const floating[::1] bias,             # in (C_out,) or (0,)
                 floating[:, :, ::1] y,                # out, (N, C_out, L) or (N, L, C_out)
                 const Py_ssize_t[::1] geo, Py_ssize_t groups, bint channels_last,
                 floating[:, ::1] ws,                  # scratch (threads, K*tile)
                 Py_ssize_t tile, int num_threads):
    cdef Geom g = _geom(x.shape, channels_last, groups, geo)
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t C_out = w.shape[0], K = w.shape[1]
    cdef Py_ssize_t Cg = g.C, Kg = C_out // groups
    cdef Py_ssize_t L = g.Do * g.Ho * g.Wo
    cdef Py_ssize_t ntiles = (L + tile - 1) // tile
    cdef Py_ssize_t nitems = N * groups * ntiles
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t item, n, grp, t, l0, l1, lt, k, l, ld
    cdef floating* buf = NULL
    cdef const floating* cols
    cdef floating* yp
    cdef floating b
    if N == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        buf = &ws[cyconv_thread_num(), 0]
        for item in prange(nitems, schedule="guided"):
            n = item // (groups * ntiles)
            grp = (item // ntiles) % groups
            t = item % ntiles
            l0 = t * tile
            l1 = min(L, l0 + tile)
            lt = l1 - l0
            ld = 0   # assigned in the loop body, so Cython makes it thread-private
            cols = _columns(&x[0, 0, 0, 0, 0], &g, n, grp, l0, l1, buf, channels_last, &ld)
            if channels_last:
                yp = &y[n, l0, grp * Kg]
                for l in range(lt):
                    for k in range(Kg):
                        yp[l * C_out + k] = bias[grp * Kg + k] if has_bias else 0
                # Y (lt x Kg) = col (lt x K) @ W_g^T
                gemm(False, True, <int> lt, <int> Kg, <int> K, 1, cols, <int> ld,
                     &w[grp * Kg, 0], <int> K, 1, yp, <int> C_out)
            else:
                yp = &y[n, grp * Kg, l0]
                for k in range(Kg):
                    b = bias[grp * Kg + k] if has_bias else 0
                    for l in range(lt):
                        yp[k * L + l] = b
                # Y (Kg x lt) = W_g (Kg x K) @ col (K x lt)
                gemm(False, False, <int> Kg, <int> lt, <int> K, 1, &w[grp * Kg, 0],
                     <int> K, cols, <int> ld, 1, yp, <int> L)


# --------------------------------------------------------------------------
# Direct forward: channels first, few taps per output (small C_in / group)
# --------------------------------------------------------------------------

cdef enum:
    CHUNK = 64   # output columns accumulated in registers at a time


cdef inline void _direct_row(const floating* xn, const floating* wk, floating b,
                             floating* yr, const Geom* g, Py_ssize_t od,
                             Py_ssize_t oh) noexcept nogil:
    """One output row yr[0:Wo] of one output channel: bias plus every tap
    (c, a, i, j) of the group's input planes xn (C_g, D, H, W), CHUNK columns
    at a time so the partial sums stay in registers."""
    cdef floating acc[CHUNK]
    cdef Py_ssize_t q0, q1, qa, qb, q, c, a, i, j, tap, idd, ih, off
    cdef Py_ssize_t plane = g.D * g.H * g.W
    cdef const floating* xr
    cdef const floating* xr2
    cdef floating wv
    q0 = 0
    while q0 < g.Wo:
        q1 = min(g.Wo, q0 + CHUNK)
        for q in range(CHUNK):
            acc[q] = b
        tap = 0
        for c in range(g.C):
            for a in range(g.kd):
                idd = od * g.sd - g.pd + a * g.dd
                if idd < 0 or idd >= g.D:
                    tap += g.kh * g.kw
                    continue
                for i in range(g.kh):
                    ih = oh * g.sh - g.ph + i * g.dh
                    if ih < 0 or ih >= g.H:
                        tap += g.kw
                        continue
                    xr = xn + c * plane + (idd * g.H + ih) * g.W
                    for j in range(g.kw):
                        wv = wk[tap]
                        tap += 1
                        off = j * g.dw - g.pw
                        # columns q whose input q * sw + off lies inside [0, W)
                        qa = max(q0, _first_at_least(-off, g.sw))
                        qb = min(q1, _end_at_most(g.W - 1 - off, g.sw, g.Wo))
                        if g.sw == 1 and qa == q0 and qb == q0 + CHUNK:
                            xr2 = xr + q0 + off   # whole chunk inside: fixed trip count
                            for q in range(CHUNK):
                                acc[q] += wv * xr2[q]
                        elif g.sw == 1:
                            for q in range(qa, qb):
                                acc[q - q0] += wv * xr[q + off]
                        else:
                            for q in range(qa, qb):
                                acc[q - q0] += wv * xr[q * g.sw + off]
        for q in range(q1 - q0):
            yr[q0 + q] = acc[q]
        q0 += CHUNK


def direct_forward(const floating[:, :, :, :, ::1] x,   # in (N, C, D, H, W)
                   const floating[:, ::1] w,             # in (C_out, C_g * kd * kh * kw)
                   const floating[::1] bias,             # in (C_out,) or (0,)
                   floating[:, :, ::1] y,                # out (N, C_out, L)
                   const Py_ssize_t[::1] geo, Py_ssize_t groups, int num_threads):
    """Convolution without im2col: one work item per output row.  Pays where
    a column matrix would be short (few taps per output): depthwise and other
    thin groups, and first layers with 1 to 4 input channels."""
    cdef Geom g = _geom(x.shape, False, groups, geo)
    cdef Py_ssize_t N = x.shape[0], C_out = w.shape[0]
    cdef Py_ssize_t Kg = C_out // groups
    cdef Py_ssize_t rows = N * C_out * g.Do * g.Ho
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t item, n, k, od, oh, r
    cdef floating b
    if rows == 0 or g.Wo == 0:
        return
    for item in prange(rows, nogil=True, schedule="static", num_threads=num_threads):
        r = item % (g.Do * g.Ho)
        od = r // g.Ho
        oh = r % g.Ho
        k = (item // (g.Do * g.Ho)) % C_out
        n = item // (C_out * g.Do * g.Ho)
        b = bias[k] if has_bias else 0
        _direct_row(&x[n, (k // Kg) * g.C, 0, 0, 0], &w[k, 0], b,
                    &y[n, k, r * g.Wo], &g, od, oh)


# --------------------------------------------------------------------------
# Backward: weight gradient
# --------------------------------------------------------------------------

def conv_backward_weight(const floating[:, :, :, :, ::1] x,   # in
                         const floating[:, :, ::1] gy,        # in, layout of y
                         floating[:, ::1] gw,                 # out (C_out, K)
                         floating[:, ::1] partial,            # scratch (P, C_out*K)
                         const Py_ssize_t[::1] geo, Py_ssize_t groups,
                         bint channels_last,
                         floating[:, ::1] ws, Py_ssize_t tile, int num_threads):
    """gw = sum over samples and tiles of dY_tile @ col_tile^T.

    The (sample, tile) items are split into P = partial.shape[0] contiguous
    buckets, a fixed function of the shape; each bucket sums its items in
    order into its own partial, and the partials are then added in bucket
    order.  The result is therefore the same for any number of threads.
    With P == 1 the single bucket accumulates straight into gw.
    """
    cdef Geom g = _geom(x.shape, channels_last, groups, geo)
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t C_out = gw.shape[0], K = gw.shape[1]
    cdef Py_ssize_t Cg = g.C, Kg = C_out // groups
    cdef Py_ssize_t L = g.Do * g.Ho * g.Wo
    cdef Py_ssize_t ntiles = (L + tile - 1) // tile
    cdef Py_ssize_t nitems = N * ntiles
    cdef Py_ssize_t P = partial.shape[0] if partial.shape[0] > 1 else 1
    cdef Py_ssize_t bucket, item, n, grp, t, l0, l1, lt, e, q, ld
    cdef floating* buf = NULL
    cdef const floating* cols
    cdef floating* dst
    cdef floating s
    if N == 0:
        gw[:, :] = 0
        return
    with nogil, parallel(num_threads=num_threads):
        buf = &ws[cyconv_thread_num(), 0]
        for bucket in prange(P, schedule="static"):
            dst = &partial[bucket, 0] if P > 1 else &gw[0, 0]
            memset(dst, 0, C_out * K * sizeof(floating))
            for item in range(bucket * nitems // P, (bucket + 1) * nitems // P):
                n = item // ntiles
                t = item % ntiles
                l0 = t * tile
                l1 = min(L, l0 + tile)
                lt = l1 - l0
                for grp in range(groups):
                    ld = 0   # assigned in the loop body: thread-private (see above)
                    cols = _columns(&x[0, 0, 0, 0, 0], &g, n, grp, l0, l1, buf,
                                    channels_last, &ld)
                    if channels_last:
                        # dW_g (Kg x K) += dY^T (Kg x lt) @ col (lt x K)
                        gemm(True, False, <int> Kg, <int> K, <int> lt, 1,
                             &gy[n, l0, grp * Kg], <int> C_out, cols, <int> ld, 1,
                             dst + grp * Kg * K, <int> K)
                    else:
                        # dW_g (Kg x K) += dY (Kg x lt) @ col^T (lt x K)
                        gemm(False, True, <int> Kg, <int> K, <int> lt, 1,
                             &gy[n, grp * Kg, l0], <int> L, cols, <int> ld, 1,
                             dst + grp * Kg * K, <int> K)
    if P > 1:
        dst = &gw[0, 0]
        for e in prange(C_out * K, nogil=True, schedule="static",
                        num_threads=num_threads):
            s = 0
            for q in range(P):
                s = s + partial[q, e]
            dst[e] = s


def conv_backward_weight_blocks(const floating[:, :, :, :, ::1] x,   # in (N, C, D, H, W)
                                const floating[:, :, ::1] gy,        # in (N, C_out, L)
                                floating[:, ::1] gw,                 # out (C_out, C * taps)
                                const Py_ssize_t[::1] geo,
                                floating[:, ::1] ws,                 # scratch (threads, cb * taps * tile)
                                Py_ssize_t cb, Py_ssize_t tile, int num_threads):
    """gw = sum over samples and tiles of dY_tile @ col_tile^T (channels
    first, groups 1), by blocks of cb input channels: the work item of a
    block computes its cb * taps columns of gw, summing every sample's tiles
    in order into them, so no partial sums are needed and the result is the
    same for any number of threads."""
    cdef Geom g = _geom(x.shape, False, 1, geo)
    cdef Geom gs
    cdef Py_ssize_t N = x.shape[0], C = g.C
    cdef Py_ssize_t C_out = gw.shape[0], K = gw.shape[1]
    cdef Py_ssize_t taps = g.kd * g.kh * g.kw
    cdef Py_ssize_t L = g.Do * g.Ho * g.Wo
    cdef Py_ssize_t ntiles = (L + tile - 1) // tile
    cdef Py_ssize_t nblk = (C + cb - 1) // cb
    cdef Py_ssize_t blk, c0, nc, n, t, l0, l1
    cdef floating* buf = NULL
    cdef floating beta
    if K != C * taps or gy.shape[0] != N or gy.shape[1] != C_out or gy.shape[2] != L \
            or g.direct or cb < 1 or tile < 1 or ws.shape[1] < cb * taps * tile:
        raise ValueError("conv_backward_weight_blocks: inconsistent shapes or scratch")
    if N == 0 or L == 0:
        gw[:, :] = 0
        return
    with nogil, parallel(num_threads=num_threads):
        buf = &ws[cyconv_thread_num(), 0]
        for blk in prange(nblk, schedule="dynamic"):
            c0 = blk * cb
            nc = min(cb, C - c0)
            gs = g
            gs.C = nc
            beta = 0
            for n in range(N):
                for t in range(ntiles):
                    l0 = t * tile
                    l1 = min(L, l0 + tile)
                    _to_col(_plane(&x[0, 0, 0, 0, 0], n, c0, &g, False), &gs, l0, l1, buf,
                            False)
                    # dW[:, block] (C_out x nc taps) += dY (C_out x lt) @ col^T (lt x nc taps)
                    gemm(False, True, <int> C_out, <int> (nc * taps), <int> (l1 - l0), 1,
                         &gy[n, 0, l0], <int> L, buf, <int> (l1 - l0), beta,
                         &gw[0, c0 * taps], <int> K)
                    beta = 1


cdef enum:
    DOTW = 16   # lanes of the vectorised dot products in _tap_sum
    DOTH = 8    # DOTW / 2


cdef inline floating _dot(const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    """sum of a[o] * b[o] for o < n: two accumulators of DOTW lanes over
    pairs of DOTW values (two FMA chains in flight), then DOTH lanes, then
    two scalars, added up at the end in a fixed order."""
    cdef floating acc0[DOTW]
    cdef floating acc1[DOTW]
    cdef floating acc2[DOTH]
    cdef floating t0 = 0, t1 = 0, s = 0
    cdef Py_ssize_t q, ob, o = 0
    for q in range(DOTW):
        acc0[q] = 0
        acc1[q] = 0
    for q in range(DOTH):
        acc2[q] = 0
    for ob in range(n // (2 * DOTW)):
        for q in range(DOTW):
            acc0[q] += a[o + q] * b[o + q]
        for q in range(DOTW):
            acc1[q] += a[o + DOTW + q] * b[o + DOTW + q]
        o = o + 2 * DOTW
    if n - o >= DOTW:
        for q in range(DOTW):
            acc0[q] += a[o + q] * b[o + q]
        o = o + DOTW
    if n - o >= DOTH:
        for q in range(DOTH):
            acc2[q] += a[o + q] * b[o + q]
        o = o + DOTH
    while o + 1 < n:
        t0 += a[o] * b[o]
        t1 += a[o + 1] * b[o + 1]
        o = o + 2
    if o < n:
        t0 += a[o] * b[o]
    for q in range(DOTW):
        s += acc0[q] + acc1[q]
    for q in range(DOTH):
        s += acc2[q]
    return s + (t0 + t1)


cdef floating _tap_sum(const floating* xn, const floating* gn, const Geom* g,
                       Py_ssize_t a, Py_ssize_t i, Py_ssize_t j) noexcept nogil:
    """sum over output positions o of gy[o] * x[o * s - p + (a, i, j) * d]
    for one input plane xn (D, H, W) and grad_output plane gn (Do, Ho, Wo);
    positions whose input falls in the padding add nothing.

    With unit row and column strides and W == Wo, the tap's input rows are
    as far apart as its grad_output rows, so each depth slice is one _dot
    over the span from its first to its last valid position; the few
    positions of that span that wrap around a row end (their input column is
    padding) are then subtracted.  A wrapped value that is inf or NaN makes
    the sum NaN (the caller then recomputes by im2col).  Otherwise each row
    is a _dot (unit column stride) or a strided sum."""
    cdef Py_ssize_t od, oh, ow, idd, ih, r, span, sw = g.sw
    cdef Py_ssize_t offd = a * g.dd - g.pd, offh = i * g.dh - g.ph, offw = j * g.dw - g.pw
    cdef Py_ssize_t d0 = _first_at_least(-offd, g.sd)
    cdef Py_ssize_t d1 = _end_at_most(g.D - 1 - offd, g.sd, g.Do)
    cdef Py_ssize_t h0 = _first_at_least(-offh, g.sh)
    cdef Py_ssize_t h1 = _end_at_most(g.H - 1 - offh, g.sh, g.Ho)
    cdef Py_ssize_t w0 = _first_at_least(-offw, g.sw)
    cdef Py_ssize_t w1 = _end_at_most(g.W - 1 - offw, g.sw, g.Wo)
    cdef const floating* gr
    cdef const floating* xr
    cdef floating s = 0, e = 0, t = 0
    if h1 <= h0 or w1 <= w0:
        return 0
    for od in range(d0, d1):
        idd = od * g.sd + offd
        if sw == 1 and g.sh == 1 and g.W == g.Wo:
            gr = gn + (od * g.Ho + h0) * g.Wo + w0
            xr = xn + (idd * g.H + h0 + offh) * g.W + w0 + offw
            span = (h1 - h0 - 1) * g.Wo + (w1 - w0)
            s += _dot(gr, xr, span)
            for r in range(h1 - h0 - 1):   # wrapped: past a row's end, before the next's start
                for ow in range(w1, g.Wo):
                    e += gr[r * g.Wo + ow - w0] * xr[r * g.Wo + ow - w0]
                for ow in range(w0):
                    e += gr[(r + 1) * g.Wo + ow - w0] * xr[(r + 1) * g.Wo + ow - w0]
            continue
        for oh in range(h0, h1):
            ih = oh * g.sh + offh
            gr = gn + (od * g.Ho + oh) * g.Wo + w0
            xr = xn + (idd * g.H + ih) * g.W + w0 * sw + offw
            if sw == 1:
                s += _dot(gr, xr, w1 - w0)
            else:
                t = 0
                for ow in range(w1 - w0):
                    t += gr[ow] * xr[ow * sw]
                s += t
    return s - e


def direct_backward_weight(const floating[:, :, :, :, ::1] x,   # in (N, C, D, H, W)
                           const floating[:, :, ::1] gy,        # in (N, C_out, L)
                           floating[:, ::1] gw,                 # out (C_out, kd*kh*kw)
                           floating[:, :, ::1] partial,         # scratch (P, C_out, taps)
                           const Py_ssize_t[::1] geo, Py_ssize_t groups,
                           int num_threads):
    """Weight gradient of a convolution with one input channel per group
    (depthwise, channel multiplier) without im2col: each tap of each output
    channel is a dot product of its grad_output plane with the shifted
    input plane (_tap_sum).

    The samples are split into P = partial.shape[0] contiguous buckets, a
    function of the shape only; work item (bucket, channel) sums its samples
    in order, and the buckets are then added in order, so the result is the
    same for any number of threads."""
    cdef Geom g = _geom(x.shape, False, groups, geo)
    cdef Py_ssize_t N = x.shape[0], C_out = gw.shape[0], ntap = gw.shape[1]
    cdef Py_ssize_t Kg = C_out // groups
    cdef Py_ssize_t P = partial.shape[0]
    cdef Py_ssize_t item, bucket, k, n, t, a, i, j, plane = g.D * g.H * g.W
    cdef floating* dst
    cdef floating s
    with nogil:
        for item in prange(P * C_out, schedule="static", num_threads=num_threads):
            bucket = item // C_out
            k = item % C_out
            dst = &partial[bucket, k, 0]
            for t in range(ntap):
                dst[t] = 0
            for n in range(bucket * N // P, (bucket + 1) * N // P):
                t = 0
                for a in range(g.kd):
                    for i in range(g.kh):
                        for j in range(g.kw):
                            dst[t] += _tap_sum(&x[n, 0, 0, 0, 0] + (k // Kg) * plane,
                                               &gy[n, k, 0], &g, a, i, j)
                            t = t + 1
        for k in range(C_out):
            for t in range(ntap):
                s = 0
                for bucket in range(P):
                    s = s + partial[bucket, k, t]
                gw[k, t] = s


# --------------------------------------------------------------------------
# Backward: input gradient (also the forward pass of transposed convolution)
# --------------------------------------------------------------------------

cdef void _input_grad_tile(const floating* gyb, const floating* wb, floating* gxb,
                           const Geom* g, Py_ssize_t n, Py_ssize_t grp, Py_ssize_t t,
                           Py_ssize_t tile, Py_ssize_t C_out, Py_ssize_t K,
                           Py_ssize_t groups, floating* buf,
                           bint channels_last) noexcept nogil:
    """Tile t of sample n, group grp: dcol = W_g^T dY, scattered into gx."""
    cdef Py_ssize_t L = g.Do * g.Ho * g.Wo, Kg = C_out // groups
    cdef Py_ssize_t l0 = t * tile
    cdef Py_ssize_t l1 = min(L, l0 + tile)
    cdef Py_ssize_t lt = l1 - l0
    cdef const floating* w_g = wb + grp * Kg * K
    if g.direct:  # pointwise: the gradient's tile is the column matrix itself
        if channels_last:
            gemm(False, False, <int> lt, <int> K, <int> Kg, 1,
                 gyb + (n * L + l0) * C_out + grp * Kg, <int> C_out, w_g, <int> K, 0,
                 gxb + (n * L + l0) * g.cstride + grp * g.C, <int> g.cstride)
        else:
            gemm(True, False, <int> K, <int> lt, <int> Kg, 1, w_g, <int> K,
                 gyb + (n * C_out + grp * Kg) * L + l0, <int> L, 0,
                 gxb + (n * g.cstride + grp * g.C) * L + l0, <int> L)
        return
    if channels_last:
        # dcol (lt x K) = dY (lt x Kg) @ W_g (Kg x K)
        gemm(False, False, <int> lt, <int> K, <int> Kg, 1,
             gyb + (n * L + l0) * C_out + grp * Kg, <int> C_out, w_g, <int> K, 0, buf,
             <int> K)
    else:
        # dcol (K x lt) = W_g^T (K x Kg) @ dY (Kg x lt)
        gemm(True, False, <int> K, <int> lt, <int> Kg, 1, w_g, <int> K,
             gyb + (n * C_out + grp * Kg) * L + l0, <int> L, 0, buf, <int> lt)
    _from_col(_plane(gxb, n, grp * g.C, g, channels_last), g, l0, l1, buf, channels_last)


def conv_backward_input(const floating[:, :, ::1] gy,        # in, layout of y
                        const floating[:, ::1] w,            # in (C_out, K)
                        floating[:, :, :, :, ::1] gx,        # out, zero-filled
                        const Py_ssize_t[::1] geo, Py_ssize_t groups,
                        bint channels_last,
                        floating[:, ::1] ws, Py_ssize_t tile, int num_threads):
    """gx = col2im(W^T @ dY), tile by tile.

    Tiles scatter into overlapping input rows, so two tiles of one
    (sample, group) never run at once unless their rows are disjoint.  When
    the output has one depth slice and tiles are whole bands of output rows
    whose footprints only overlap their neighbours', even bands run in
    parallel, then odd bands (the order in which a pixel receives its sums is
    fixed, so results do not depend on the thread count).  Otherwise each
    (sample, group) walks its tiles in order.
    """
    cdef Geom g = _geom(gx.shape, channels_last, groups, geo)
    cdef Py_ssize_t N = gx.shape[0]
    cdef Py_ssize_t C_out = w.shape[0], K = w.shape[1]
    cdef Py_ssize_t L = g.Do * g.Ho * g.Wo
    cdef Py_ssize_t ntiles = (L + tile - 1) // tile
    cdef Py_ssize_t rows = tile // g.Wo
    cdef bint banded = (g.Do == 1 and ntiles > 1 and tile % g.Wo == 0
                        and (rows + 1) * g.sh > (g.kh - 1) * g.dh)
    cdef Py_ssize_t phase, nb, item, n, grp, t
    cdef floating* buf = NULL
    cdef const floating* gyb
    cdef const floating* wb
    cdef floating* gxb
    if N == 0:
        return
    gyb = &gy[0, 0, 0]
    wb = &w[0, 0]
    gxb = &gx[0, 0, 0, 0, 0]
    if banded:
        for phase in range(2):
            nb = (ntiles - phase + 1) // 2
            with nogil, parallel(num_threads=num_threads):
                buf = &ws[cyconv_thread_num(), 0]
                for item in prange(N * groups * nb, schedule="guided"):
                    n = item // (groups * nb)
                    grp = (item // nb) % groups
                    t = 2 * (item % nb) + phase
                    _input_grad_tile(gyb, wb, gxb, &g, n, grp, t, tile, C_out, K, groups,
                                     buf, channels_last)
    else:
        with nogil, parallel(num_threads=num_threads):
            buf = &ws[cyconv_thread_num(), 0]
            for item in prange(N * groups, schedule="guided"):
                n = item // groups
                grp = item % groups
                for t in range(ntiles):
                    _input_grad_tile(gyb, wb, gxb, &g, n, grp, t, tile, C_out, K, groups,
                                     buf, channels_last)


# --------------------------------------------------------------------------
# Public im2col / col2im (whole matrices, no GEMM)
# --------------------------------------------------------------------------

def im2col(const floating[:, :, :, :, ::1] x,     # in
           floating[:, :, ::1] col,               # out: (N, C*k, L) or (N, L, k*C)
           const Py_ssize_t[::1] geo, bint channels_last, int num_threads):
    _whole(x, col, geo, channels_last, num_threads, True)


def col2im(floating[:, :, :, :, ::1] x,           # out, zero-filled
           const floating[:, :, ::1] col,         # in
           const Py_ssize_t[::1] geo, bint channels_last, int num_threads):
    _whole(x, col, geo, channels_last, num_threads, False)


cdef void _whole(const floating[:, :, :, :, ::1] x, const floating[:, :, ::1] col,
                 const Py_ssize_t[::1] geo, bint channels_last, int num_threads,
                 bint to_col) noexcept:
    """Whole-matrix transfer.  Channels first: one item per (n, c) plane (its
    rows of col are its own).  Channels last: im2col splits each sample into
    row blocks of col; col2im (overlapping scatter) takes one item per sample."""
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t C = x.shape[4] if channels_last else x.shape[1]
    # channels last moves every channel of a voxel at once, channels first one plane
    cdef Geom g = _geom(x.shape, channels_last, 1 if channels_last else max(C, 1), geo)
    cdef Py_ssize_t L = g.Do * g.Ho * g.Wo, kk = g.kd * g.kh * g.kw
    cdef Py_ssize_t nblk = 1
    cdef Py_ssize_t item, n, c, b, l0, l1
    if N == 0 or C == 0:
        return
    if channels_last:
        if to_col:
            nblk = min(L, 64)
        for item in prange(N * nblk, nogil=True, schedule="static",
                           num_threads=num_threads):
            n = item // nblk
            b = item % nblk
            l0 = b * L // nblk
            l1 = (b + 1) * L // nblk
            _transfer_cl(<floating*> &x[n, 0, 0, 0, 0], &g, l0, l1,
                         <floating*> &col[n, l0, 0], to_col)
    else:
        for item in prange(N * C, nogil=True, schedule="static",
                           num_threads=num_threads):
            n = item // C
            c = item % C
            _transfer_cf(<floating*> &x[n, c, 0, 0, 0], &g, 0, L,
                         <floating*> &col[n, c * kk, 0], to_col)


# --------------------------------------------------------------------------
# Locally connected (unshared weights): one GEMM per output position
# --------------------------------------------------------------------------
# Weights w (L, C_out, K), one (C_out, K) matrix per output position l.
# Samples are taken in blocks of ``nb`` (a function of the shape): the block's
# patches at position l form P (nbk x K), and Y_l = P @ W_l^T.  Scratch per
# thread: nb * (K + C_out).

cdef inline void _gather_patches(const floating* xb, const Geom* g, Py_ssize_t n0,
                                 Py_ssize_t n1, Py_ssize_t l, Py_ssize_t K,
                                 floating* P, bint channels_last) noexcept nogil:
    cdef Py_ssize_t n
    for n in range(n0, n1):
        _to_col(_plane(xb, n, 0, g, channels_last), g, l, l + 1, P + (n - n0) * K,
                channels_last)


def lc_forward(const floating[:, :, :, :, ::1] x,    # in
               const floating[:, :, ::1] w,          # in (L, C_out, K)
               const floating[:, ::1] bias,          # in (C_out, L) or (0, 0)
               floating[:, :, ::1] y,                # out (N, C_out, L) or (N, L, C_out)
               const Py_ssize_t[::1] geo, bint channels_last,
               floating[:, ::1] ws, Py_ssize_t nb, int num_threads):
    cdef Geom g = _geom(x.shape, channels_last, 1, geo)
    cdef Py_ssize_t N = x.shape[0], L = w.shape[0], C_out = w.shape[1], K = w.shape[2]
    cdef Py_ssize_t nblocks = (N + nb - 1) // nb
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t item, l, blk, n0, n1, n, k
    cdef floating* buf = NULL
    cdef floating* Yb
    if N == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        buf = &ws[cyconv_thread_num(), 0]
        for item in prange(L * nblocks, schedule="static"):
            l = item // nblocks
            blk = item % nblocks
            n0 = blk * nb
            n1 = min(N, n0 + nb)
            Yb = buf + nb * K
            _gather_patches(&x[0, 0, 0, 0, 0], &g, n0, n1, l, K, buf, channels_last)
            # Yb (nbk x C_out) = P (nbk x K) @ W_l^T (K x C_out)
            gemm(False, True, <int> (n1 - n0), <int> C_out, <int> K, 1, buf, <int> K,
                 &w[l, 0, 0], <int> K, 0, Yb, <int> C_out)
            for n in range(n0, n1):
                for k in range(C_out):
                    if channels_last:
                        y[n, l, k] = Yb[(n - n0) * C_out + k] + (bias[k, l] if has_bias else 0)
                    else:
                        y[n, k, l] = Yb[(n - n0) * C_out + k] + (bias[k, l] if has_bias else 0)


def lc_backward_weight(const floating[:, :, :, :, ::1] x,   # in
                       const floating[:, :, ::1] gy,        # in, layout of y
                       floating[:, :, ::1] gw,              # out (L, C_out, K)
                       const Py_ssize_t[::1] geo, bint channels_last,
                       floating[:, ::1] ws, Py_ssize_t nb, int num_threads):
    """gW_l = sum over sample blocks of dY_l^T @ P_l; one item per position."""
    cdef Geom g = _geom(x.shape, channels_last, 1, geo)
    cdef Py_ssize_t N = x.shape[0], L = gw.shape[0], C_out = gw.shape[1], K = gw.shape[2]
    cdef Py_ssize_t l, n0, n1, n, k
    cdef floating* buf = NULL
    cdef floating* G
    with nogil, parallel(num_threads=num_threads):
        buf = &ws[cyconv_thread_num(), 0]
        for l in prange(L, schedule="static"):
            G = buf + nb * K
            memset(&gw[l, 0, 0], 0, C_out * K * sizeof(floating))
            n0 = 0
            while n0 < N:
                n1 = min(N, n0 + nb)
                _gather_patches(&x[0, 0, 0, 0, 0], &g, n0, n1, l, K, buf, channels_last)
                for n in range(n0, n1):
                    for k in range(C_out):
                        G[(n - n0) * C_out + k] = gy[n, l, k] if channels_last else gy[n, k, l]
                # gW_l (C_out x K) += G^T (C_out x nbk) @ P (nbk x K)
                gemm(True, False, <int> C_out, <int> K, <int> (n1 - n0), 1, G, <int> C_out,
                     buf, <int> K, 1, &gw[l, 0, 0], <int> K)
                n0 = n1


def lc_backward_input(const floating[:, :, ::1] gy,        # in, layout of y
                      const floating[:, :, ::1] w,         # in (L, C_out, K)
                      floating[:, :, :, :, ::1] gx,        # out, zero-filled
                      const Py_ssize_t[::1] geo, bint channels_last,
                      floating[:, ::1] ws, Py_ssize_t nb, int num_threads):
    """gx += scatter of dY_l @ W_l; windows of different positions overlap, so
    one item is one block of samples walking every position in order."""
    cdef Geom g = _geom(gx.shape, channels_last, 1, geo)
    cdef Py_ssize_t N = gx.shape[0], L = w.shape[0], C_out = w.shape[1], K = w.shape[2]
    cdef Py_ssize_t nblocks = (N + nb - 1) // nb
    cdef Py_ssize_t blk, l, n0, n1, n, k
    cdef floating* buf = NULL
    cdef floating* G
    if N == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        buf = &ws[cyconv_thread_num(), 0]
        for blk in prange(nblocks, schedule="static"):
            G = buf + nb * K
            n0 = blk * nb
            n1 = min(N, n0 + nb)
            for l in range(L):
                for n in range(n0, n1):
                    for k in range(C_out):
                        G[(n - n0) * C_out + k] = gy[n, l, k] if channels_last else gy[n, k, l]
                # dP (nbk x K) = G (nbk x C_out) @ W_l (C_out x K)
                gemm(False, False, <int> (n1 - n0), <int> K, <int> C_out, 1, G, <int> C_out,
                     &w[l, 0, 0], <int> K, 0, buf, <int> K)
                for n in range(n0, n1):
                    _from_col(_plane(&gx[0, 0, 0, 0, 0], n, 0, &g, channels_last), &g, l,
                              l + 1, buf + (n - n0) * K, channels_last)


# --------------------------------------------------------------------------
# Winograd F(2x2, 3x3): 3x3 stride-1 convolutions, channels first, 2-D
# --------------------------------------------------------------------------
# Lavin & Gray (2016).  Each output tile of 2 x 2 pixels is
# A^T [ (G g G^T) * (B^T d B) ] A, d the 4 x 4 input patch: 16 products per
# tile and channel pair instead of 36.  With dilation (dh, dw) a tile's
# pixels are dh rows and dw columns apart (rows oy, oy + dh), and the patch
# is read with the same dilation, so dilated kernels need no special case.
#
# Tiles: output rows come in blocks of 2 * dh; block bh holds the dh tile
# rows ty = bh * dh + py whose first row is bh * 2 * dh + py; columns
# likewise with blocks b and phases p.  A work item is (sample, a run of
# tile rows, a run of column blocks); within an item, tile (ty, p, b) is
# number ((ty - ty0) * dw + p) * nbi + (b - b0), so one phase of one tile row
# is contiguous.  Per item:
#   V (16, C, T)  <- B^T d B                  (input transform)
#   M_j (K, T)    =  U_j (K, C) @ V_j (C, T)  (16 GEMMs, j = 4 * row + col)
#   y             <- A^T m A + bias           (output transform)
# The item split is a function of the shape only, so results do not depend
# on the thread count.

cdef struct Wino:
    Py_ssize_t C, K, H, W, Ho, Wo, ph, pw, dh, dw
    Py_ssize_t m, a2        # output tile m x m (2 or 4); a2 = (m + 2)^2 products per tile
    Py_ssize_t nbh, nbw     # blocks of m * dh output rows / m * dw output columns
    Py_ssize_t R, Bc        # tile rows and column blocks per item
    Py_ssize_t T            # tiles per item at most: R * dw * Bc
    Py_ssize_t cb           # column blocks per chunk of the input transform


# The transforms work through fixed-size local arrays: the compiler then knows
# they cannot overlap the arrays it reads or writes through pointers, and
# vectorises the loops without runtime overlap checks (of which it allows only
# a few per loop).  An input row chunk holds dw phases of 2 * cb + 2 columns.
cdef enum:
    WROW = 1040    # columns of a local row chunk, all phases
    WCB = 64       # column blocks per chunk at most


cdef inline bint _nonfinite(floating v) noexcept nogil:
    """v is inf or NaN: v - v is then NaN, else 0 (no literal: Cython would
    make the product v * 0 a double)."""
    cdef floating d = v - v
    return d != d


cdef inline void _gather(const floating* src, Py_ssize_t W, Py_ssize_t start,
                         Py_ssize_t stride, Py_ssize_t count, floating* dst) noexcept nogil:
    """dst[b] <- src[start + b * stride] for b < count, zero outside [0, W)
    (src NULL: a row outside the input, all zero)."""
    cdef Py_ssize_t lo, hi
    if src == NULL:
        memset(dst, 0, count * sizeof(floating))
        return
    lo = min(count, _first_at_least(-start, stride))
    hi = max(lo, _end_at_most(W - 1 - start, stride, count))
    _copy_stride(dst, src + start, lo, hi, count, stride)


cdef inline void _gather4_edge(const floating* src, Py_ssize_t W, Py_ssize_t start,
                               Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t n,
                               floating* dst) noexcept nogil:
    """_gather4 for b0 <= b < b1, with a bounds check per value: the ends of
    a row, where some of the four phases fall in the padding."""
    cdef Py_ssize_t b, k, col
    for b in range(b0, b1):
        for k in range(4):
            col = start + 4 * b + k
            dst[k * n + b] = src[col] if 0 <= col < W else 0


cdef inline void _gather4(const floating* src, Py_ssize_t W, Py_ssize_t start,
                          Py_ssize_t count, Py_ssize_t n, floating* dst) noexcept nogil:
    """dst[k * n + b] <- src[start + k + 4 * b] for k < 4, b < count, zero
    outside [0, W): _gather's four phases of stride 4 in one pass (src NULL:
    all zero).  The interior, where all four are inside the row, is one loop
    of four stores per b, where four _gather calls (15 values each for
    vgg_3x3's F(4x4) rows) each work out their own bounds.  Measured
    (AVX2), medians of interleaved calls, ms, four _gather / _gather4:
    vgg_3x3 forward at 1 thread 12.09 / 11.25, 12.67 / 11.54 and 17.37 /
    15.55 (three runs), at 2 threads 10.84 / 9.91, 8.98 / 8.11 and 9.10 /
    8.29; alexnet_conv1 (stride-4 bands) 26.9 / 26.0 at 1 thread."""
    cdef Py_ssize_t b, k, lo, hi
    if src == NULL:
        for k in range(4):
            memset(dst + k * n, 0, count * sizeof(floating))
        return
    lo = min(count, _first_at_least(-start, 4))            # start + 4 b >= 0
    hi = max(lo, _end_at_most(W - 4 - start, 4, count))    # start + 4 b + 3 <= W - 1
    for b in range(lo, hi):
        dst[b] = src[start + 4 * b]
        dst[n + b] = src[start + 4 * b + 1]
        dst[2 * n + b] = src[start + 4 * b + 2]
        dst[3 * n + b] = src[start + 4 * b + 3]
    _gather4_edge(src, W, start, 0, lo, n, dst)
    _gather4_edge(src, W, start, hi, count, n, dst)


cdef inline void _wino_row(const floating* xn, const Wino* g, Py_ssize_t c, Py_ssize_t iy,
                           Py_ssize_t x0, Py_ssize_t plen, floating* r) noexcept nogil:
    """r[p * plen + m] <- input (c, iy, x0 + m * dw + p), zero outside the
    input, for the dw phases p."""
    cdef const floating* src = xn + (c * g.H + iy) * g.W if 0 <= iy < g.H else NULL
    cdef Py_ssize_t p
    for p in range(g.dw):
        _gather(src, g.W, x0 + p, g.dw, plen, r + p * plen)


cdef bint _wino_input(const floating* xn, const Wino* g, Py_ssize_t ty0, Py_ssize_t ty1,
                      Py_ssize_t b0, Py_ssize_t b1, floating* V) noexcept nogil:
    """V (16, C, T) <- B^T d B for the item's tiles, every input channel.
    Returns True when an input value read is inf or NaN (the caller then
    recomputes without Winograd, whose transforms would turn inf into NaN)."""
    cdef floating r[4][WROW]    # input rows, zero padded; r[i][p * plen + m] is
    cdef floating t[4][WROW]    # column x0 + m * dw + p; t = B^T r
    cdef Py_ssize_t nbi = b1 - b0
    cdef Py_ssize_t dw = g.dw
    cdef Py_ssize_t step = g.C * g.T
    cdef Py_ssize_t c, ty, iy0, i, q, p, b, c0, nb, plen, x0, n
    cdef floating* vi
    cdef floating a, e, f, h
    cdef int bad = 0
    for c in range(g.C):
        for ty in range(ty0, ty1):
            iy0 = (ty // g.dh) * 2 * g.dh + ty % g.dh - g.ph
            c0 = b0
            while c0 < b1:
                nb = min(b1, c0 + g.cb) - c0
                plen = 2 * nb + 2
                n = dw * plen
                x0 = c0 * 2 * dw - g.pw
                for i in range(4):
                    _wino_row(xn, g, c, iy0 + i * g.dh, x0, plen, &r[i][0])
                for q in range(n):   # B^T d, down the columns
                    a = r[0][q]
                    e = r[1][q]
                    f = r[2][q]
                    h = r[3][q]
                    t[0][q] = a - f
                    t[1][q] = e + f
                    t[2][q] = f - e
                    t[3][q] = e - h
                    if _nonfinite(a + e + f + h):
                        bad = 1
                for p in range(dw):  # (B^T d) B, along the rows: one loop per column
                    for i in range(4):
                        vi = V + (4 * i * g.C + c) * g.T + ((ty - ty0) * dw + p) * nbi + c0 - b0
                        q = p * plen
                        for b in range(nb):
                            vi[b] = t[i][q + 2 * b] - t[i][q + 2 * b + 2]
                        vi += step
                        for b in range(nb):
                            vi[b] = t[i][q + 2 * b + 1] + t[i][q + 2 * b + 2]
                        vi += step
                        for b in range(nb):
                            vi[b] = t[i][q + 2 * b + 2] - t[i][q + 2 * b + 1]
                        vi += step
                        for b in range(nb):
                            vi[b] = t[i][q + 2 * b + 1] - t[i][q + 2 * b + 3]
                c0 += nb
    return bad != 0


cdef void _wino_output(const floating* M, const Wino* g, Py_ssize_t ty0, Py_ssize_t ty1,
                       Py_ssize_t b0, Py_ssize_t b1, const floating* bias, bint has_bias,
                       floating* yn) noexcept nogil:
    """yn (K, Ho, Wo) <- A^T m A + bias for the item's tiles."""
    cdef floating s_[8][WCB]    # A^T m per block: rows 0+1+2 (s_[0:4]), 1-2-3 (s_[4:8])
    cdef Py_ssize_t nbi = b1 - b0
    cdef Py_ssize_t KT = g.K * g.T
    cdef Py_ssize_t dw = g.dw
    cdef Py_ssize_t s = 2 * dw
    cdef Py_ssize_t k, ty, oy, p, ox, nfull, nany, b, j, c0, nb, rows
    cdef const floating* m
    cdef floating* yr
    cdef floating bv
    for k in range(g.K):
        bv = bias[k] if has_bias else 0
        for ty in range(ty0, ty1):
            oy = (ty // g.dh) * 2 * g.dh + ty % g.dh
            if oy >= g.Ho:
                continue
            rows = 2 if oy + g.dh < g.Ho else 1
            for p in range(dw):
                c0 = b0
                while c0 < b1 and c0 * s + p < g.Wo:
                    nb = min(b1, c0 + WCB) - c0
                    ox = c0 * s + p
                    nany = min(nb, (g.Wo - ox + s - 1) // s)
                    nfull = min(nb, max(0, (g.Wo - dw - ox + s - 1) // s))
                    m = M + k * g.T + ((ty - ty0) * dw + p) * nbi + c0 - b0
                    for j in range(4):
                        for b in range(nany):
                            s_[j][b] = m[j * KT + b] + m[(4 + j) * KT + b] + m[(8 + j) * KT + b]
                    if rows == 2:
                        for j in range(4):
                            for b in range(nany):
                                s_[4 + j][b] = (m[(4 + j) * KT + b] - m[(8 + j) * KT + b]
                                                - m[(12 + j) * KT + b])
                    for j in range(0, 4 * rows, 4):   # output row oy, then oy + dh
                        yr = yn + (k * g.Ho + oy + (j // 4) * g.dh) * g.Wo + ox
                        if dw == 1:
                            for b in range(nfull):
                                yr[2 * b] = s_[j][b] + s_[j + 1][b] + s_[j + 2][b] + bv
                                yr[2 * b + 1] = s_[j + 1][b] - s_[j + 2][b] - s_[j + 3][b] + bv
                        else:
                            for b in range(nfull):
                                yr[b * s] = s_[j][b] + s_[j + 1][b] + s_[j + 2][b] + bv
                                yr[b * s + dw] = s_[j + 1][b] - s_[j + 2][b] - s_[j + 3][b] + bv
                        for b in range(nfull, nany):   # the second column is outside
                            yr[b * s] = s_[j][b] + s_[j + 1][b] + s_[j + 2][b] + bv
                    c0 += nb


# F(4x4, 3x3) (Lavin & Gray 2016, section 4.2): 6 x 6 input patches, 36
# products per 4 x 4 output tile and channel pair (2.25 per output where
# F(2x2, 3x3) does 4).  Interpolation points 0, 1, -1, 2, -2 and infinity:
#   B^T = [[4,  0, -5,  0, 1, 0],     A^T = [[1, 1,  1, 1,  1, 0],
#          [0, -4, -4,  1, 1, 0],            [0, 1, -1, 2, -2, 0],
#          [0,  4, -4, -1, 1, 0],            [0, 1,  1, 4,  4, 0],
#          [0, -2, -1,  2, 1, 0],            [0, 1, -1, 8, -8, 1]]
#          [0,  2, -1, -2, 1, 0],
#          [0,  4,  0, -5, 0, 1]]
# and G in conv.py.  Tiles and items are those of F(2x2, 3x3) with m = 4 in
# place of 2, but an item's tiles are numbered with one spare per run:
# tile (ty, p, b) is e = ((ty - ty0) * dw + p) * L + (b - b0), L = nbi + 1,
# and V (36, C, T), M (36, K, T) hold the spares too (j = 6 * row + col).
# Every transform is then one loop over e across the whole item (runs are
# only Wo / (4 dw) tiles long: 14 in vgg_3x3), on input rows gathered by
# column phase modulo 4, so that tile e's six columns are at e and e + 1 of
# four contiguous arrays.  A spare tile mixes the ends of two runs (finite
# inputs, a finite product) and its outputs are never stored.
cdef enum:
    W4MAX = 256    # tiles per F(4x4, 3x3) item at most, spares included


cdef bint _wino4_input(const floating* xn, const Wino* g, Py_ssize_t ty0, Py_ssize_t ty1,
                       Py_ssize_t b0, Py_ssize_t b1, floating* V) noexcept nogil:
    """V (36, C, T) <- B^T d B for the item's tiles (F(4x4, 3x3)); True when
    an input value read is inf or NaN."""
    cdef floating r[6][4 * W4MAX]   # r[i][k * n + e]: patch row i, column 4 b + k of tile e
    cdef floating t[6][4 * W4MAX]   # B^T r
    cdef Py_ssize_t dw = g.dw
    cdef Py_ssize_t L = b1 - b0 + 1
    cdef Py_ssize_t n = (ty1 - ty0) * dw * L
    cdef Py_ssize_t step = g.C * g.T
    cdef Py_ssize_t x0 = b0 * 4 * dw - g.pw
    cdef Py_ssize_t c, ty, iy, i, q, p, k, e, seg
    cdef floating* vi
    cdef const floating* src
    cdef floating r0, r1, r2, r3, r4, r5, u, v
    cdef floating c2 = 2, c4 = 4, c5 = 5   # typed: an int literal would make the product double
    cdef int bad = 0
    for c in range(g.C):
        for ty in range(ty0, ty1):
            for i in range(6):
                iy = (ty // g.dh) * 4 * g.dh + ty % g.dh - g.ph + i * g.dh
                src = xn + (c * g.H + iy) * g.W if 0 <= iy < g.H else NULL
                for p in range(dw):
                    seg = ((ty - ty0) * dw + p) * L
                    if dw == 1 and GATHER4:
                        _gather4(src, g.W, x0, L, n, &r[i][seg])
                        continue
                    for k in range(4):
                        _gather(src, g.W, x0 + p + k * dw, 4 * dw, L, &r[i][k * n + seg])
        for q in range(4 * n):   # B^T d, down the columns
            r0 = r[0][q]
            r1 = r[1][q]
            r2 = r[2][q]
            r3 = r[3][q]
            r4 = r[4][q]
            r5 = r[5][q]
            u = r4 - c4 * r2
            v = r3 - c4 * r1
            t[0][q] = c4 * r0 - c5 * r2 + r4
            t[1][q] = u + v
            t[2][q] = u - v
            u = r4 - r2
            v = c2 * (r3 - r1)
            t[3][q] = u + v
            t[4][q] = u - v
            t[5][q] = c4 * r1 - c5 * r3 + r5
            if _nonfinite(r0 + r1 + r2 + r3 + r4 + r5):
                bad = 1
        for i in range(6):   # (B^T d) B, along the rows: columns e (k = 0..3) and e + 1
            vi = V + 6 * i * step + c * g.T
            for e in range(n):
                vi[e] = c4 * t[i][e] - c5 * t[i][2 * n + e] + t[i][e + 1]
            vi += step
            for e in range(n):
                vi[e] = (t[i][e + 1] - c4 * t[i][2 * n + e]) + (t[i][3 * n + e] - c4 * t[i][n + e])
            vi += step
            for e in range(n):
                vi[e] = (t[i][e + 1] - c4 * t[i][2 * n + e]) - (t[i][3 * n + e] - c4 * t[i][n + e])
            vi += step
            for e in range(n):
                vi[e] = (t[i][e + 1] - t[i][2 * n + e]) + c2 * (t[i][3 * n + e] - t[i][n + e])
            vi += step
            for e in range(n):
                vi[e] = (t[i][e + 1] - t[i][2 * n + e]) - c2 * (t[i][3 * n + e] - t[i][n + e])
            vi += step
            for e in range(n):
                vi[e] = c4 * t[i][n + e] - c5 * t[i][3 * n + e] + t[i][n + e + 1]
    return bad != 0


cdef void _wino4_output(const floating* M, const Wino* g, Py_ssize_t ty0, Py_ssize_t ty1,
                        Py_ssize_t b0, Py_ssize_t b1, const floating* bias, bint has_bias,
                        floating* yn) noexcept nogil:
    """yn (K, Ho, Wo) <- A^T m A + bias for the item's tiles (F(4x4, 3x3))."""
    cdef floating s_[24][W4MAX]   # A^T m: s_[6 * row + col][e]
    cdef floating o[4][W4MAX]     # one output row of every tile: o[col][e]
    cdef Py_ssize_t nbi = b1 - b0
    cdef Py_ssize_t L = nbi + 1
    cdef Py_ssize_t dw = g.dw
    cdef Py_ssize_t n = (ty1 - ty0) * dw * L
    cdef Py_ssize_t KT = g.K * g.T
    cdef Py_ssize_t s = 4 * dw
    cdef Py_ssize_t k, ty, oy, p, ox, nfull, nany, b, j, r, cc, e, seg
    cdef const floating* m
    cdef floating* yr
    cdef floating bv, m0, m1, m2, m3, m4, m5, u, v
    cdef floating c2 = 2, c4 = 4, c8 = 8   # typed: an int literal would make the product double
    for k in range(g.K):
        bv = bias[k] if has_bias else 0
        m = M + k * g.T
        for j in range(6):   # A^T m, down the columns
            for e in range(n):
                m0 = m[j * KT + e]
                m1 = m[(6 + j) * KT + e]
                m2 = m[(12 + j) * KT + e]
                m3 = m[(18 + j) * KT + e]
                m4 = m[(24 + j) * KT + e]
                m5 = m[(30 + j) * KT + e]
                u = m1 - m2
                v = m3 - m4
                s_[j][e] = m0 + m1 + m2 + m3 + m4
                s_[6 + j][e] = u + c2 * v
                s_[12 + j][e] = (m1 + m2) + c4 * (m3 + m4)
                s_[18 + j][e] = u + c8 * v + m5
        for r in range(4):   # (A^T m) A, along the rows: output row r of every tile
            j = 6 * r
            for e in range(n):
                u = s_[j + 1][e] - s_[j + 2][e]
                v = s_[j + 3][e] - s_[j + 4][e]
                o[0][e] = s_[j][e] + s_[j + 1][e] + s_[j + 2][e] + s_[j + 3][e] + s_[j + 4][e] + bv
                o[1][e] = u + c2 * v + bv
                o[2][e] = (s_[j + 1][e] + s_[j + 2][e]) + c4 * (s_[j + 3][e] + s_[j + 4][e]) + bv
                o[3][e] = u + c8 * v + s_[j + 5][e] + bv
            for ty in range(ty0, ty1):
                oy = (ty // g.dh) * 4 * g.dh + ty % g.dh + r * g.dh
                if oy >= g.Ho:
                    continue
                for p in range(dw):
                    ox = b0 * s + p
                    if ox >= g.Wo:
                        continue
                    seg = ((ty - ty0) * dw + p) * L
                    nany = min(nbi, (g.Wo - ox + s - 1) // s)
                    nfull = min(nbi, max(0, (g.Wo - 3 * dw - ox + s - 1) // s))
                    yr = yn + (k * g.Ho + oy) * g.Wo + ox
                    if dw == 1:
                        for b in range(nfull):
                            yr[4 * b] = o[0][seg + b]
                            yr[4 * b + 1] = o[1][seg + b]
                            yr[4 * b + 2] = o[2][seg + b]
                            yr[4 * b + 3] = o[3][seg + b]
                    else:
                        for b in range(nfull):
                            yr[b * s] = o[0][seg + b]
                            yr[b * s + dw] = o[1][seg + b]
                            yr[b * s + 2 * dw] = o[2][seg + b]
                            yr[b * s + 3 * dw] = o[3][seg + b]
                    for b in range(nfull, nany):   # some columns are outside
                        for cc in range(4):
                            if ox + b * s + cc * dw < g.Wo:
                                yr[b * s + cc * dw] = o[cc][seg + b]


cdef Wino _wino_geom(Py_ssize_t* xshape, Py_ssize_t K, const Py_ssize_t[::1] geo) noexcept:
    """The Wino of input x (N, C, H, W) with K output channels; geo is
    (ph, pw, dh, dw, Ho, Wo, R, Bc, m)."""
    cdef Wino g
    g.C = xshape[1]; g.H = xshape[2]; g.W = xshape[3]; g.K = K
    g.ph = geo[0]; g.pw = geo[1]; g.dh = geo[2]; g.dw = geo[3]
    g.Ho = geo[4]; g.Wo = geo[5]; g.R = geo[6]; g.Bc = geo[7]; g.m = geo[8]
    g.a2 = (g.m + 2) * (g.m + 2)
    g.nbh = (g.Ho + g.m * g.dh - 1) // (g.m * g.dh)
    g.nbw = (g.Wo + g.m * g.dw - 1) // (g.m * g.dw)
    g.T = g.R * g.dw * (g.Bc + 1 if g.m == 4 else g.Bc)   # F(4x4): a spare tile per run
    g.cb = min(<Py_ssize_t> WCB, (WROW // g.dw - 2) // g.m)
    return g


cdef enum:
    WWB = 16   # kernels per work item of winograd_weights


cdef bint _wino_weights(const floating* g, Py_ssize_t n, const double* G, Py_ssize_t a,
                        floating* u, Py_ssize_t step) noexcept nogil:
    """u[(i a + j) step + e] = (G g_e G^T)[i, j] for the n <= WWB consecutive
    3x3 kernels g_e = g + 9 e, G (a, 3), in double precision, rounded once;
    True when one of their weights is inf or NaN.  The kernels are
    transposed first, so that every loop runs over e, and the results are
    gathered per (i, j): written kernel by kernel, the a * a rows, K C
    values apart, fell in one L1 set."""
    cdef double gl[9][WWB]     # locals, so private to the thread
    cdef double t[6][3][WWB]   # G g_e (a <= 6 rows)
    cdef double ub[36][WWB]
    cdef double c0, c1, c2
    cdef Py_ssize_t e, i, j, q
    cdef bint bad = False
    for q in range(9):
        for e in range(WWB):
            gl[q][e] = g[9 * e + q] if e < n else 0
    for q in range(9 * n):
        bad |= _nonfinite(g[q])
    for i in range(a):
        c0 = G[3 * i]
        c1 = G[3 * i + 1]
        c2 = G[3 * i + 2]
        for j in range(3):
            for e in range(WWB):
                t[i][j][e] = c0 * gl[j][e] + c1 * gl[3 + j][e] + c2 * gl[6 + j][e]
    for j in range(a):
        c0 = G[3 * j]
        c1 = G[3 * j + 1]
        c2 = G[3 * j + 2]
        for i in range(a):
            for e in range(WWB):
                ub[i * a + j][e] = t[i][0][e] * c0 + t[i][1][e] * c1 + t[i][2][e] * c2
    for i in range(a * a):
        for e in range(n):
            u[i * step + e] = <floating> ub[i][e]
    return bad


def winograd_weights(const floating[:, :, ::1] w,   # in (K, C, 9): 3x3 kernels
                     const double[:, ::1] G,          # in (a, 3)
                     floating[:, :, ::1] u,           # out (a * a, K, C)
                     int num_threads):
    """u[i a + j, k, c] = (G w[k, c] G^T)[i, j], in double precision and
    rounded once to u's dtype; WWB kernels of one output channel per work
    item.  Returns the number of work items that read an inf or NaN weight
    (u is then not the transform the Winograd kernels need)."""
    cdef Py_ssize_t K = w.shape[0], C = w.shape[1], a = G.shape[0]
    cdef Py_ssize_t nc = (C + WWB - 1) // WWB
    cdef Py_ssize_t item, k, c0
    cdef Py_ssize_t bad = 0
    if a > 6 or G.shape[1] != 3 or w.shape[2] != 9 or u.shape[0] != a * a \
            or u.shape[1] != K or u.shape[2] != C:
        raise ValueError(f"winograd_weights: {a} x 3 transform, weights {K} x {C}, "
                         f"{u.shape[0]} x {u.shape[1]} x {u.shape[2]} outputs")
    if K == 0 or C == 0:
        return 0
    with nogil, parallel(num_threads=num_threads):
        for item in prange(K * nc, schedule="static"):
            k = item // nc
            c0 = (item % nc) * WWB
            if _wino_weights(&w[k, c0, 0], min(WWB, C - c0), &G[0, 0], a, &u[0, k, c0],
                             K * C):
                bad += 1
    return bad


def winograd_forward(const floating[:, :, :, ::1] x,   # in (N, C, H, W)
                     const floating[:, :, ::1] u,      # in (a2, K, C): G g G^T
                     const floating[::1] bias,         # in (K,) or (0,)
                     floating[:, :, ::1] y,            # out (N, K, Ho * Wo)
                     const Py_ssize_t[::1] geo,        # ph, pw, dh, dw, Ho, Wo, R, Bc, m
                     floating[:, ::1] ws,              # scratch (threads, a2 (C + K) T)
                     int num_threads):
    """Winograd F(m x m, 3x3) forward, m = geo[8] (2 or 4); returns the
    number of work items that read an inf or NaN (their output is then not
    the convolution's)."""
    cdef Wino g = _wino_geom(x.shape, u.shape[1], geo)
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t TH = g.nbh * g.dh
    cdef Py_ssize_t nrg = (TH + g.R - 1) // g.R, ncg = (g.nbw + g.Bc - 1) // g.Bc
    cdef Py_ssize_t nitems = N * nrg * ncg
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t item, n, rg, cg, ty0, ty1, b0, b1, ti, j
    cdef Py_ssize_t bad = 0
    cdef floating* V = NULL
    cdef floating* Mb = NULL
    if (g.m != 2 and g.m != 4) or u.shape[0] != g.a2 or (g.m == 4 and g.T > W4MAX):
        raise ValueError(f"winograd_forward: tile {g.m}, {u.shape[0]} transformed weights, "
                         f"{g.T} tiles per item")
    if nitems == 0 or g.Ho == 0 or g.Wo == 0:
        return 0
    with nogil, parallel(num_threads=num_threads):
        V = &ws[cyconv_thread_num(), 0]
        Mb = V + g.a2 * g.C * g.T
        for item in prange(nitems, schedule="guided"):
            n = item // (nrg * ncg)
            rg = (item // ncg) % nrg
            cg = item % ncg
            ty0 = rg * g.R
            ty1 = min(TH, ty0 + g.R)
            b0 = cg * g.Bc
            b1 = min(g.nbw, b0 + g.Bc)
            ti = (ty1 - ty0) * g.dw * (b1 - b0 + (1 if g.m == 4 else 0))
            if g.m == 4:
                if _wino4_input(&x[n, 0, 0, 0], &g, ty0, ty1, b0, b1, V):
                    bad += 1
            elif _wino_input(&x[n, 0, 0, 0], &g, ty0, ty1, b0, b1, V):
                bad += 1
            for j in range(g.a2):
                # M_j (K x ti) = U_j (K x C) @ V_j (C x ti)
                gemm(False, False, <int> g.K, <int> ti, <int> g.C, 1, &u[j, 0, 0],
                     <int> g.C, V + j * g.C * g.T, <int> g.T, 0, Mb + j * g.K * g.T,
                     <int> g.T)
            if g.m == 4:
                _wino4_output(Mb, &g, ty0, ty1, b0, b1, &bias[0] if has_bias else NULL,
                              has_bias, &y[n, 0, 0])
            else:
                _wino_output(Mb, &g, ty0, ty1, b0, b1, &bias[0] if has_bias else NULL,
                             has_bias, &y[n, 0, 0])
    return bad


cdef bint _wino_grad(const floating* gn, const Wino* g, Py_ssize_t ty0, Py_ssize_t ty1,
                     Py_ssize_t b0, Py_ssize_t b1, floating* Gm) noexcept nogil:
    """Gm (16, K, T) <- A dy A^T for the item's tiles (the adjoint of the
    output transform; outputs past the edge are zero).  Returns True when a
    grad_output value read is inf or NaN."""
    cdef floating e[4][WCB]   # dy of the tile: (row 0, col 0), (0, 1), (1, 0), (1, 1)
    cdef floating t[4][WCB]   # A dy: rows 0 + 1 (cols 0, 1), rows 0 - 1 (cols 0, 1)
    cdef const floating* u0
    cdef const floating* u1
    cdef floating sg
    cdef Py_ssize_t i
    cdef Py_ssize_t nbi = b1 - b0
    cdef Py_ssize_t KT = g.K * g.T
    cdef Py_ssize_t dw = g.dw
    cdef Py_ssize_t s = 2 * dw
    cdef Py_ssize_t k, ty, oy, p, ox, b, r, c0, nb, nin, x0
    cdef const floating* row
    cdef floating* d
    cdef int bad = 0
    for k in range(g.K):
        for ty in range(ty0, ty1):
            oy = (ty // g.dh) * 2 * g.dh + ty % g.dh
            for p in range(dw):
                c0 = b0
                while c0 < b1:
                    nb = min(b1, c0 + WCB) - c0
                    ox = c0 * s + p
                    for r in range(2):
                        if oy + r * g.dh >= g.Ho:
                            for b in range(nb):
                                e[2 * r][b] = 0
                                e[2 * r + 1][b] = 0
                            continue
                        row = gn + (k * g.Ho + oy + r * g.dh) * g.Wo + ox
                        # blocks whose both columns are inside, then the rest
                        nin = min(nb, max(0, (g.Wo - dw - ox + s - 1) // s))
                        if dw == 1:
                            for b in range(nin):
                                e[2 * r][b] = row[2 * b]
                                e[2 * r + 1][b] = row[2 * b + 1]
                        else:
                            for b in range(nin):
                                e[2 * r][b] = row[b * s]
                                e[2 * r + 1][b] = row[b * s + dw]
                        for b in range(nin, nb):
                            x0 = ox + b * s
                            e[2 * r][b] = row[b * s] if x0 < g.Wo else 0
                            e[2 * r + 1][b] = row[b * s + dw] if x0 + dw < g.Wo else 0
                    for b in range(nb):   # inf or NaN: the products would hide it
                        if _nonfinite(e[0][b] + e[1][b] + e[2][b] + e[3][b]):
                            bad = 1
                    for b in range(nb):   # A dy, down the two columns
                        t[0][b] = e[0][b] + e[2][b]
                        t[1][b] = e[1][b] + e[3][b]
                        t[2][b] = e[0][b] - e[2][b]
                        t[3][b] = e[1][b] - e[3][b]
                    # (A dy) A^T, along the rows: one loop per output stream
                    d = Gm + k * g.T + ((ty - ty0) * dw + p) * nbi + c0 - b0
                    for i in range(4):
                        u0 = &e[0][0] if i == 0 else (&t[0][0] if i == 1 else (
                            &t[2][0] if i == 2 else &e[2][0]))
                        u1 = &e[1][0] if i == 0 else (&t[1][0] if i == 1 else (
                            &t[3][0] if i == 2 else &e[3][0]))
                        sg = -1 if i == 3 else 1
                        for b in range(nb):
                            d[b] = sg * u0[b]
                        d += KT
                        for b in range(nb):
                            d[b] = sg * (u0[b] + u1[b])
                        d += KT
                        for b in range(nb):
                            d[b] = sg * (u0[b] - u1[b])
                        d += KT
                        for b in range(nb):
                            d[b] = -sg * u1[b]
                        d += KT
                    c0 += nb
    return bad != 0


def winograd_backward_weight(const floating[:, :, :, ::1] x,   # in (N, C, H, W)
                             const floating[:, :, ::1] gy,     # in (N, K, Ho * Wo)
                             floating[:, ::1] partial,         # scratch (P, 16 K C)
                             floating[:, :, ::1] du,           # out (16, K, C)
                             const Py_ssize_t[::1] geo,        # as winograd_forward
                             floating[:, ::1] ws,              # scratch (threads, 16 (C + K) T)
                             int num_threads):
    """Winograd F(2x2, 3x3) weight gradient in the transformed domain:
    du_j = sum over tiles of (A dy A^T)_j (B^T d B)_j^T, 16 GEMMs per work
    item (the same items as winograd_forward); the weight gradient is then
    G^T du G.  The items are split into P = partial.shape[0] contiguous
    buckets, a function of the shape only, summed in order into their own
    partials and then added in bucket order (P == 1: straight into du), so
    the result does not depend on the thread count.  Returns the number of
    items that read an inf or NaN (du is then not the gradient's)."""
    cdef Wino g = _wino_geom(x.shape, gy.shape[1], geo)
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t TH = g.nbh * g.dh
    cdef Py_ssize_t nrg = (TH + g.R - 1) // g.R, ncg = (g.nbw + g.Bc - 1) // g.Bc
    cdef Py_ssize_t nitems = N * nrg * ncg
    cdef Py_ssize_t P = partial.shape[0] if partial.shape[0] > 1 else 1
    cdef Py_ssize_t KC = g.K * g.C
    cdef Py_ssize_t bucket, item, n, rg, cg, ty0, ty1, b0, b1, ti, j, e, q
    cdef Py_ssize_t bad = 0
    cdef floating* V = NULL
    cdef floating* Gm = NULL
    cdef floating* dst
    cdef floating sm
    if g.m != 2:
        raise ValueError(f"winograd_backward_weight: tile {g.m}, only 2 is implemented")
    if nitems == 0 or g.Ho == 0 or g.Wo == 0:
        du[:, :, :] = 0
        return 0
    with nogil, parallel(num_threads=num_threads):
        V = &ws[cyconv_thread_num(), 0]
        Gm = V + 16 * g.C * g.T
        for bucket in prange(P, schedule="static"):
            dst = &partial[bucket, 0] if P > 1 else &du[0, 0, 0]
            memset(dst, 0, 16 * KC * sizeof(floating))
            for item in range(bucket * nitems // P, (bucket + 1) * nitems // P):
                n = item // (nrg * ncg)
                rg = (item // ncg) % nrg
                cg = item % ncg
                ty0 = rg * g.R
                ty1 = min(TH, ty0 + g.R)
                b0 = cg * g.Bc
                b1 = min(g.nbw, b0 + g.Bc)
                ti = (ty1 - ty0) * g.dw * (b1 - b0)
                if _wino_input(&x[n, 0, 0, 0], &g, ty0, ty1, b0, b1, V):
                    bad += 1
                if _wino_grad(&gy[n, 0, 0], &g, ty0, ty1, b0, b1, Gm):
                    bad += 1
                for j in range(16):
                    # du_j (K x C) += Gm_j (K x ti) @ V_j^T (ti x C)
                    gemm(False, True, <int> g.K, <int> g.C, <int> ti, 1,
                         Gm + j * g.K * g.T, <int> g.T, V + j * g.C * g.T, <int> g.T, 1,
                         dst + j * KC, <int> g.C)
    if P > 1:
        dst = &du[0, 0, 0]
        for e in prange(16 * KC, nogil=True, schedule="static", num_threads=num_threads):
            sm = 0
            for q in range(P):
                sm = sm + partial[q, e]
            dst[e] = sm
    return bad


# --------------------------------------------------------------------------
# Direct forward for few input channels (first layers): register blocks
# --------------------------------------------------------------------------
# With C_in of 1 to 4 the im2col matrix has few rows (C_in * kh * kw) and
# GEMM spends much of its time packing it.  Here each block of DCO output
# channels x DQ output columns of one output row is accumulated in registers
# over every tap (c, i, j): the DCO accumulators are separate local arrays of
# fixed length, which the compiler keeps in vector registers.  The input rows
# a band of output rows needs are first copied, zero padded, into per-thread
# scratch, each row split into sw phases (column m of phase p is padded
# column m * sw + p), so that the DQ inputs of a tap are contiguous for any
# stride: tap (c, i, j) of output (row r, column q) reads
# band[c][r * sh + i * dh][(j * dw) % sw][q + (j * dw) // sw], whose offset
# from band[0][r * sh][0][q] is toff[tap] (computed by the caller).

cdef enum:
    DQ = 32     # output columns per register block
    DCO = 4     # output channels per register block


cdef void _small_block(const floating* xb, const Py_ssize_t* toff, Py_ssize_t ntap,
                       const floating* w, Py_ssize_t K, floating* out) noexcept nogil:
    """out (DCO, DQ) = sum over taps t of w[o * K + t] * xb[toff[t] + q]."""
    cdef floating a0[DQ]
    cdef floating a1[DQ]
    cdef floating a2[DQ]
    cdef floating a3[DQ]
    cdef Py_ssize_t t, q
    cdef floating w0, w1, w2, w3
    cdef const floating* xr
    for q in range(DQ):
        a0[q] = 0
        a1[q] = 0
        a2[q] = 0
        a3[q] = 0
    for t in range(ntap):
        xr = xb + toff[t]
        w0 = w[t]
        w1 = w[K + t]
        w2 = w[2 * K + t]
        w3 = w[3 * K + t]
        for q in range(DQ):
            a0[q] += w0 * xr[q]
        for q in range(DQ):
            a1[q] += w1 * xr[q]
        for q in range(DQ):
            a2[q] += w2 * xr[q]
        for q in range(DQ):
            a3[q] += w3 * xr[q]
    for q in range(DQ):
        out[q] = a0[q]
        out[DQ + q] = a1[q]
        out[2 * DQ + q] = a2[q]
        out[3 * DQ + q] = a3[q]


cdef void _small_block8(const floating* xb, const Py_ssize_t* toff, Py_ssize_t ntap,
                        const floating* w, Py_ssize_t K, floating* out) noexcept nogil:
    """out (2 * DCO, DQ) = sum over taps t of w[o * K + t] * xb[toff[t] + q]:
    _small_block for twice the output channels (16 AVX-512 accumulators;
    with 8-float vectors they would spill)."""
    cdef floating a0[DQ]
    cdef floating a1[DQ]
    cdef floating a2[DQ]
    cdef floating a3[DQ]
    cdef floating a4[DQ]
    cdef floating a5[DQ]
    cdef floating a6[DQ]
    cdef floating a7[DQ]
    cdef Py_ssize_t t, q
    cdef floating w0, w1, w2, w3, w4, w5, w6, w7
    cdef const floating* xr
    for q in range(DQ):
        a0[q] = 0
        a1[q] = 0
        a2[q] = 0
        a3[q] = 0
        a4[q] = 0
        a5[q] = 0
        a6[q] = 0
        a7[q] = 0
    for t in range(ntap):
        xr = xb + toff[t]
        w0 = w[t]
        w1 = w[K + t]
        w2 = w[2 * K + t]
        w3 = w[3 * K + t]
        w4 = w[4 * K + t]
        w5 = w[5 * K + t]
        w6 = w[6 * K + t]
        w7 = w[7 * K + t]
        for q in range(DQ):
            a0[q] += w0 * xr[q]
        for q in range(DQ):
            a1[q] += w1 * xr[q]
        for q in range(DQ):
            a2[q] += w2 * xr[q]
        for q in range(DQ):
            a3[q] += w3 * xr[q]
        for q in range(DQ):
            a4[q] += w4 * xr[q]
        for q in range(DQ):
            a5[q] += w5 * xr[q]
        for q in range(DQ):
            a6[q] += w6 * xr[q]
        for q in range(DQ):
            a7[q] += w7 * xr[q]
    for q in range(DQ):
        out[q] = a0[q]
        out[DQ + q] = a1[q]
        out[2 * DQ + q] = a2[q]
        out[3 * DQ + q] = a3[q]
        out[4 * DQ + q] = a4[q]
        out[5 * DQ + q] = a5[q]
        out[6 * DQ + q] = a6[q]
        out[7 * DQ + q] = a7[q]


# _small_block8 for float32 written with GCC's vector extensions (AVX-512
# builds only): its 16 accumulators stay in registers from the first tap to
# the stores, where gcc's code for the array version above initialises and
# stores them through the stack (about 100 cycles a block, a fifth of a
# 27-tap block's time).
cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__AVX512F__)
    #define CYCONV_HAVE_V16 1
    typedef float cyconv_v16 __attribute__((vector_size(64), aligned(4), may_alias));
    /* an 8 x 32 block of accumulators: channel k's 32 columns are ak, bk */
    #define CYCONV_ACC16 cyconv_v16 a0 = {0}, b0 = {0}, a1 = {0}, b1 = {0}, a2 = {0}, \
        b2 = {0}, a3 = {0}, b3 = {0}, a4 = {0}, b4 = {0}, a5 = {0}, b5 = {0}, a6 = {0}, \
        b6 = {0}, a7 = {0}, b7 = {0}
    /* one tap or channel of input: channel k += wk * (x0, x1) */
    #define CYCONV_FMA16(w0, w1, w2, w3, w4, w5, w6, w7) do { \
        a0 += (w0) * x0; b0 += (w0) * x1; a1 += (w1) * x0; b1 += (w1) * x1; \
        a2 += (w2) * x0; b2 += (w2) * x1; a3 += (w3) * x0; b3 += (w3) * x1; \
        a4 += (w4) * x0; b4 += (w4) * x1; a5 += (w5) * x0; b5 += (w5) * x1; \
        a6 += (w6) * x0; b6 += (w6) * x1; a7 += (w7) * x0; b7 += (w7) * x1; } while (0)
    /* channel k's 32 values to out + k * ldo, plus bv[k] (0 where bv is NULL) */
    #define CYCONV_PUT(k, a, b) do { float c_ = bv ? bv[k] : 0.0f; \
        cyconv_v16* o_ = (cyconv_v16*)(out + (k) * ldo); o_[0] = a + c_; o_[1] = b + c_; } while (0)
    #define CYCONV_STORE16 do { \
        CYCONV_PUT(0, a0, b0); CYCONV_PUT(1, a1, b1); CYCONV_PUT(2, a2, b2); \
        CYCONV_PUT(3, a3, b3); CYCONV_PUT(4, a4, b4); CYCONV_PUT(5, a5, b5); \
        CYCONV_PUT(6, a6, b6); CYCONV_PUT(7, a7, b7); } while (0)
    static void cyconv_small8_f32(const float* xb, const Py_ssize_t* toff, Py_ssize_t ntap,
                                  const float* w, Py_ssize_t K, const float* bv,
                                  float* out, Py_ssize_t ldo) {
        CYCONV_ACC16;
        Py_ssize_t t;
        for (t = 0; t < ntap; t++) {
            const cyconv_v16* xr = (const cyconv_v16*)(xb + toff[t]);
            cyconv_v16 x0 = xr[0], x1 = xr[1];
            float w0 = w[t], w1 = w[K + t], w2 = w[2 * K + t], w3 = w[3 * K + t],
                  w4 = w[4 * K + t], w5 = w[5 * K + t], w6 = w[6 * K + t], w7 = w[7 * K + t];
            CYCONV_FMA16(w0, w1, w2, w3, w4, w5, w6, w7);
        }
        CYCONV_STORE16;
    }
    /* _pw_block likewise: out (8, 32) (+ bias) = sum over c < C of
       wp[c * wld + o] * xr[c * ld + q]; prefetches pf + c * pld unless NULL */
    static void cyconv_pw8_f32(const float* xr, Py_ssize_t ld, Py_ssize_t C,
                               const float* wp, Py_ssize_t wld, const float* pf,
                               Py_ssize_t pld, const float* bv, float* out, Py_ssize_t ldo) {
        CYCONV_ACC16;
        Py_ssize_t c;
        for (c = 0; c < C; c++) {
            const cyconv_v16* x = (const cyconv_v16*)(xr + c * ld);
            const float* w = wp + c * wld;
            cyconv_v16 x0 = x[0], x1 = x[1];
            if (pf) {
                __builtin_prefetch(pf + c * pld, 0, 2);
                __builtin_prefetch(pf + c * pld + 16, 0, 2);
                __builtin_prefetch(pf + c * pld + 31, 0, 2);
            }
            CYCONV_FMA16(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]);
        }
        CYCONV_STORE16;
    }
    #else
    #define CYCONV_HAVE_V16 0
    static void cyconv_pw8_f32(const float* xr, Py_ssize_t ld, Py_ssize_t C,
                               const float* wp, Py_ssize_t wld, const float* pf,
                               Py_ssize_t pld, const float* bv, float* out, Py_ssize_t ldo) {
        (void)xr; (void)ld; (void)C; (void)wp; (void)wld; (void)pf; (void)pld; (void)bv;
        (void)out; (void)ldo;
    }
    static void cyconv_small8_f32(const float* xb, const Py_ssize_t* toff, Py_ssize_t ntap,
                                  const float* w, Py_ssize_t K, const float* bv,
                                  float* out, Py_ssize_t ldo) {
        (void)xb; (void)toff; (void)ntap; (void)w; (void)K; (void)bv; (void)out; (void)ldo;
    }
    #endif
    """
    const bint CYCONV_HAVE_V16
    void _small8_f32 "cyconv_small8_f32"(const float* xb, const Py_ssize_t* toff,
                                          Py_ssize_t ntap, const float* w, Py_ssize_t K,
                                          const float* bv, float* out,
                                          Py_ssize_t ldo) noexcept nogil
    void _pw8_f32 "cyconv_pw8_f32"(const float* xr, Py_ssize_t ld, Py_ssize_t C,
                                    const float* wp, Py_ssize_t wld, const float* pf,
                                    Py_ssize_t pld, const float* bv, float* out,
                                    Py_ssize_t ldo) noexcept nogil


# The AVX2 (+FMA) variant's register blocks, with 8-float vectors: 16 vector
# registers hold 12 accumulators at most, so the AVX-512 blocks above (16
# accumulators of 16 floats) are done in pieces.  small_forward's 4 x DQ
# block runs as two 4 x 16 halves (8 accumulators, 2 loads and 4 broadcasts
# per tap), or (float32 by default, see conv.SMALL3) as blocks of 3 x DQ
# (12 accumulators, 4 loads and 3 broadcasts per tap); gcc's code for the
# array version _small_block kept its 16 accumulators on the stack.
# band_forward's blocks are 16 output channels x V8P = 6 positions (12
# accumulators; 2 loads and 6 broadcasts per tap).
# Measured at 2 threads (AVX2 machine), medians, ms, before / after:
# cifar_5x5 4.9 / 3.1, single_image_large 5.2 / 2.4 (small_forward), and
# alexnet_conv1 19.4 / 15.2 (small_forward / band_forward).  The same 16 x 6
# block in packed_forward (resnet_3x3_s2: 8.8 / 11.5 ms) and 3 x 32 blocks in
# pointwise_forward (pointwise_1x1: 2.29 / 2.43 ms) were slower than
# OpenBLAS's GEMM, so those two kernels stay AVX-512 only (tried again with a
# 3 x 32 block that keeps all 12 accumulators in registers, in L1-sized
# chunks of input channels: pointwise_1x1 still 5% slower than the GEMM).
cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__AVX2__) && defined(__FMA__) \
        && !defined(__AVX512F__)
    #define CYCONV_HAVE_V8 1
    typedef float cyconv_v8 __attribute__((vector_size(32), aligned(4), may_alias));
    /* out[k * ldo + q] = sum over taps t of w[k * K + t] * xb[toff[t] + q]
       (+ bv[k] unless bv is NULL), k < 4, q < 16 */
    static void cyconv_small4_f32(const float* xb, const Py_ssize_t* toff, Py_ssize_t ntap,
                                  const float* w, Py_ssize_t K, const float* bv,
                                  float* out, Py_ssize_t ldo) {
        cyconv_v8 a0 = {0}, b0 = {0}, a1 = {0}, b1 = {0}, a2 = {0}, b2 = {0},
                  a3 = {0}, b3 = {0};
        Py_ssize_t t;
        for (t = 0; t < ntap; t++) {
            const cyconv_v8* xr = (const cyconv_v8*)(xb + toff[t]);
            cyconv_v8 x0 = xr[0], x1 = xr[1];
            float w0 = w[t], w1 = w[K + t], w2 = w[2 * K + t], w3 = w[3 * K + t];
            a0 += w0 * x0; b0 += w0 * x1; a1 += w1 * x0; b1 += w1 * x1;
            a2 += w2 * x0; b2 += w2 * x1; a3 += w3 * x0; b3 += w3 * x1;
        }
    #define CYCONV_PUT8(k, a, b) do { float c_ = bv ? bv[k] : 0.0f; \
        cyconv_v8* o_ = (cyconv_v8*)(out + (k) * ldo); o_[0] = a + c_; o_[1] = b + c_; } while (0)
        CYCONV_PUT8(0, a0, b0); CYCONV_PUT8(1, a1, b1);
        CYCONV_PUT8(2, a2, b2); CYCONV_PUT8(3, a3, b3);
    #undef CYCONV_PUT8
    }
    /* out[k * ldo + q] = sum over taps t of w[k * K + t] * xb[toff[t] + q]
       (+ bv[k] unless bv is NULL), k < nc <= 3, q < 32: 12 accumulators at
       most, 4 loads and nc broadcasts per tap */
    static inline __attribute__((always_inline)) void cyconv_s3_body(
            const float* xb, const Py_ssize_t* toff, Py_ssize_t ntap, const float* w,
            Py_ssize_t K, const float* bv, float* out, Py_ssize_t ldo, const int nc) {
        cyconv_v8 a0 = {0}, b0 = {0}, c0 = {0}, d0 = {0}, a1 = {0}, b1 = {0}, c1 = {0},
                  d1 = {0}, a2 = {0}, b2 = {0}, c2 = {0}, d2 = {0};
        Py_ssize_t t;
        for (t = 0; t < ntap; t++) {
            /* the broadcasts held, the input vectors loaded one at a time:
               12 accumulators + 3 broadcasts + 1 input = 16 registers */
            const cyconv_v8* xr = (const cyconv_v8*)(xb + toff[t]);
            float w0 = w[t], w1 = nc > 1 ? w[K + t] : 0.0f, w2 = nc > 2 ? w[2 * K + t] : 0.0f;
            cyconv_v8 v;
            v = xr[0]; a0 += w0 * v; if (nc > 1) a1 += w1 * v; if (nc > 2) a2 += w2 * v;
            v = xr[1]; b0 += w0 * v; if (nc > 1) b1 += w1 * v; if (nc > 2) b2 += w2 * v;
            v = xr[2]; c0 += w0 * v; if (nc > 1) c1 += w1 * v; if (nc > 2) c2 += w2 * v;
            v = xr[3]; d0 += w0 * v; if (nc > 1) d1 += w1 * v; if (nc > 2) d2 += w2 * v;
        }
    #define CYCONV_PUT32(k, a, b, c, d) do { float c_ = bv ? bv[k] : 0.0f; \
        cyconv_v8* o_ = (cyconv_v8*)(out + (k) * ldo); o_[0] = a + c_; o_[1] = b + c_; \
        o_[2] = c + c_; o_[3] = d + c_; } while (0)
        CYCONV_PUT32(0, a0, b0, c0, d0);
        if (nc > 1) CYCONV_PUT32(1, a1, b1, c1, d1);
        if (nc > 2) CYCONV_PUT32(2, a2, b2, c2, d2);
    #undef CYCONV_PUT32
    }
    static void cyconv_small3_f32(const float* xb, const Py_ssize_t* toff, Py_ssize_t ntap,
                                  const float* w, Py_ssize_t K, const float* bv,
                                  float* out, Py_ssize_t ldo, Py_ssize_t nc) {
        switch (nc) {
        case 1: cyconv_s3_body(xb, toff, ntap, w, K, bv, out, ldo, 1); break;
        case 2: cyconv_s3_body(xb, toff, ntap, w, K, bv, out, ldo, 2); break;
        default: cyconv_s3_body(xb, toff, ntap, w, K, bv, out, ldo, 3);
        }
    }
    /* out[o * 16 + q] = sum over taps t of xb[toff[t] + o] * wq[t * wstep + q],
       o < np, q < 16: 16 output channels of packed weights (two vectors) x
       np <= 6 output positions of a band broadcast, 12 accumulators at most */
    static inline __attribute__((always_inline)) void cyconv_cp16_body(
            const float* wq, Py_ssize_t wstep, Py_ssize_t ntap, const float* xb,
            const Py_ssize_t* toff, float* out, const int np) {
        cyconv_v8 c0 = {0}, d0 = {0}, c1 = {0}, d1 = {0}, c2 = {0}, d2 = {0},
                  c3 = {0}, d3 = {0}, c4 = {0}, d4 = {0}, c5 = {0}, d5 = {0};
        Py_ssize_t t;
        for (t = 0; t < ntap; t++) {
            const cyconv_v8* wr = (const cyconv_v8*)(wq + t * wstep);
            const float* v = xb + toff[t];
            cyconv_v8 w0 = wr[0], w1 = wr[1];
            c0 += v[0] * w0; d0 += v[0] * w1;
            if (np > 1) { c1 += v[1] * w0; d1 += v[1] * w1; }
            if (np > 2) { c2 += v[2] * w0; d2 += v[2] * w1; }
            if (np > 3) { c3 += v[3] * w0; d3 += v[3] * w1; }
            if (np > 4) { c4 += v[4] * w0; d4 += v[4] * w1; }
            if (np > 5) { c5 += v[5] * w0; d5 += v[5] * w1; }
        }
        cyconv_v8* o = (cyconv_v8*)out;
        o[0] = c0; o[1] = d0;
        if (np > 1) { o[2] = c1; o[3] = d1; }
        if (np > 2) { o[4] = c2; o[5] = d2; }
        if (np > 3) { o[6] = c3; o[7] = d3; }
        if (np > 4) { o[8] = c4; o[9] = d4; }
        if (np > 5) { o[10] = c5; o[11] = d5; }
    }
    /* the body specialised for each block width (np a constant in each) */
    static void cyconv_band16_f32(const float* wq, Py_ssize_t wstep, Py_ssize_t ntap,
                                  const float* xb, const Py_ssize_t* toff, float* out,
                                  Py_ssize_t np) {
        switch (np) {
        case 1: cyconv_cp16_body(wq, wstep, ntap, xb, toff, out, 1); break;
        case 2: cyconv_cp16_body(wq, wstep, ntap, xb, toff, out, 2); break;
        case 3: cyconv_cp16_body(wq, wstep, ntap, xb, toff, out, 3); break;
        case 4: cyconv_cp16_body(wq, wstep, ntap, xb, toff, out, 4); break;
        case 5: cyconv_cp16_body(wq, wstep, ntap, xb, toff, out, 5); break;
        default: cyconv_cp16_body(wq, wstep, ntap, xb, toff, out, 6);
        }
    }
    #else
    #define CYCONV_HAVE_V8 0
    static void cyconv_small4_f32(const float* xb, const Py_ssize_t* toff, Py_ssize_t ntap,
                                  const float* w, Py_ssize_t K, const float* bv,
                                  float* out, Py_ssize_t ldo) {
        (void)xb; (void)toff; (void)ntap; (void)w; (void)K; (void)bv; (void)out; (void)ldo;
    }
    static void cyconv_small3_f32(const float* xb, const Py_ssize_t* toff, Py_ssize_t ntap,
                                  const float* w, Py_ssize_t K, const float* bv,
                                  float* out, Py_ssize_t ldo, Py_ssize_t nc) {
        (void)xb; (void)toff; (void)ntap; (void)w; (void)K; (void)bv; (void)out; (void)ldo;
        (void)nc;
    }
    static void cyconv_band16_f32(const float* wq, Py_ssize_t wstep, Py_ssize_t ntap,
                                  const float* xb, const Py_ssize_t* toff, float* out,
                                  Py_ssize_t np) {
        (void)wq; (void)wstep; (void)ntap; (void)xb; (void)toff; (void)out; (void)np;
    }
    #endif
    """
    const bint CYCONV_HAVE_V8
    void _band16_f32 "cyconv_band16_f32"(const float* wq, Py_ssize_t wstep, Py_ssize_t ntap,
                                          const float* xb, const Py_ssize_t* toff, float* out,
                                          Py_ssize_t np) noexcept nogil
    void _small3_f32 "cyconv_small3_f32"(const float* xb, const Py_ssize_t* toff,
                                          Py_ssize_t ntap, const float* w, Py_ssize_t K,
                                          const float* bv, float* out, Py_ssize_t ldo,
                                          Py_ssize_t nc) noexcept nogil
    void _small4_f32 "cyconv_small4_f32"(const float* xb, const Py_ssize_t* toff,
                                          Py_ssize_t ntap, const float* w, Py_ssize_t K,
                                          const float* bv, float* out,
                                          Py_ssize_t ldo) noexcept nogil


cdef void _copy_band(const floating* xc, Py_ssize_t nc, Py_ssize_t H, Py_ssize_t W,
                     Py_ssize_t row0, Py_ssize_t BR, Py_ssize_t sw, Py_ssize_t pl,
                     Py_ssize_t plen, floating* band) noexcept nogil:
    """band (nc, BR, sw, plen) <- rows row0 .. row0 + BR - 1 of the nc planes
    (H, W) at xc, zero padded (input row ih = row0 + r, column
    iw = m * sw + p - pl)."""
    cdef Py_ssize_t rowlen = sw * plen
    cdef Py_ssize_t c, r, ih, p
    cdef Py_ssize_t lo = min(plen, max(0, pl))
    cdef Py_ssize_t hi = max(lo, min(plen, pl + W))
    cdef floating* dst
    cdef const floating* src
    for c in range(nc):
        for r in range(BR):
            dst = band + (c * BR + r) * rowlen
            ih = row0 + r
            if ih < 0 or ih >= H:
                memset(dst, 0, rowlen * sizeof(floating))
                continue
            src = xc + (c * H + ih) * W
            if sw == 1:
                memset(dst, 0, lo * sizeof(floating))
                memcpy(dst + lo, src + lo - pl, (hi - lo) * sizeof(floating))
                memset(dst + hi, 0, (plen - hi) * sizeof(floating))
            elif sw == 4 and GATHER4:   # the four phases in one pass
                _gather4(src, W, -pl, plen, plen, dst)
            else:   # phase p, column m: input column m * sw + p - pl
                for p in range(sw):
                    _gather(src, W, p - pl, sw, plen, dst + p * plen)


def small_forward(const floating[:, :, :, ::1] x,   # in (N, C, H, W)
                  const floating[:, ::1] w,         # in (C_out rounded up to dco, C*kh*kw)
                  const floating[::1] bias,         # in (C_out,) or (0,)
                  floating[:, :, ::1] y,            # out (N, C_out, Ho * Wo)
                  const Py_ssize_t[::1] geo,        # kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, BH
                  const Py_ssize_t[::1] toff,       # in (C*kh*kw,) tap offsets
                  floating[:, ::1] ws,              # scratch (threads, band + dco * DQ)
                  int num_threads,
                  Py_ssize_t dco=DCO):   # output channels per block: DCO, 2 * DCO or 3 (AVX2)
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t C_out = y.shape[1], K = w.shape[1]
    cdef Py_ssize_t kh = geo[0], kw = geo[1], sh = geo[2], sw = geo[3]
    cdef Py_ssize_t pt = geo[4], pl = geo[5], dh = geo[6], dw = geo[7]
    cdef Py_ssize_t Ho = geo[8], Wo = geo[9], BH = geo[10]
    cdef Py_ssize_t nq = (Wo + DQ - 1) // DQ
    cdef Py_ssize_t plen = nq * DQ + ((kw - 1) * dw) // sw + 1   # columns per phase
    cdef Py_ssize_t rowlen = sw * plen
    cdef Py_ssize_t BR = (BH - 1) * sh + (kh - 1) * dh + 1      # input rows per band
    cdef Py_ssize_t nbands = (Ho + BH - 1) // BH
    cdef Py_ssize_t band_len = C * BR * rowlen
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t item, n, oh0, oh1, cb, co, o, oh, qi, q, nv
    cdef floating* band = NULL
    cdef floating* blk = NULL
    cdef floating* yr
    cdef floating bv
    cdef bint whole
    if N == 0 or Ho == 0 or Wo == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        band = &ws[cyconv_thread_num(), 0]
        blk = band + band_len
        for item in prange(N * nbands, schedule="guided"):
            n = item // nbands
            oh0 = (item % nbands) * BH
            oh1 = min(Ho, oh0 + BH)
            # the band's input rows, zero padded and split into phases
            _copy_band(&x[n, 0, 0, 0], C, H, W, oh0 * sh - pt, BR, sw, pl, plen, band)
            for cb in range((C_out + dco - 1) // dco):
                co = cb * dco
                for oh in range(oh0, oh1):
                    for qi in range(nq):
                        if (floating is float and CYCONV_HAVE_V16 and dco == 2 * DCO
                                and co + dco <= C_out and (qi + 1) * DQ <= Wo):
                            # a whole block: bias added and stored straight into y
                            _small8_f32(band + (oh - oh0) * sh * rowlen + qi * DQ,
                                        &toff[0], K, &w[co, 0], K,
                                        &bias[co] if has_bias else NULL,
                                        &y[n, co, oh * Wo + qi * DQ], Ho * Wo)
                            continue
                        if floating is float and CYCONV_HAVE_V8 and dco == 3:
                            # 3 (or, the last block, fewer) channels x DQ
                            # columns, straight into y for whole columns
                            whole = (qi + 1) * DQ <= Wo
                            _small3_f32(band + (oh - oh0) * sh * rowlen + qi * DQ,
                                        &toff[0], K, &w[co, 0], K,
                                        &bias[co] if whole and has_bias else NULL,
                                        &y[n, co, oh * Wo + qi * DQ] if whole else blk,
                                        Ho * Wo if whole else DQ, min(dco, C_out - co))
                            if whole:
                                continue
                        elif floating is float and CYCONV_HAVE_V8 and dco == DCO:
                            # two 4 x 16 halves, straight into y (bias added)
                            # for a whole block, else into blk
                            whole = co + dco <= C_out and (qi + 1) * DQ <= Wo
                            yr = &y[n, co, oh * Wo + qi * DQ] if whole else blk
                            for o in range(2):
                                _small4_f32(band + (oh - oh0) * sh * rowlen + qi * DQ
                                            + o * (DQ // 2), &toff[0], K, &w[co, 0], K,
                                            &bias[co] if whole and has_bias else NULL,
                                            yr + o * (DQ // 2), Ho * Wo if whole else DQ)
                            if whole:
                                continue
                        elif dco == DCO:
                            _small_block(band + (oh - oh0) * sh * rowlen + qi * DQ, &toff[0],
                                         K, &w[co, 0], K, blk)
                        elif floating is float and CYCONV_HAVE_V16:
                            _small8_f32(band + (oh - oh0) * sh * rowlen + qi * DQ,
                                        &toff[0], K, &w[co, 0], K, NULL, blk, DQ)
                        else:
                            _small_block8(band + (oh - oh0) * sh * rowlen + qi * DQ,
                                          &toff[0], K, &w[co, 0], K, blk)
                        nv = min(DQ, Wo - qi * DQ)
                        for o in range(min(dco, C_out - co)):
                            bv = bias[co + o] if has_bias else 0
                            yr = &y[n, co + o, oh * Wo + qi * DQ]
                            for q in range(nv):
                                yr[q] = blk[o * DQ + q] + bv


# --------------------------------------------------------------------------
# Direct forward for depthwise / thin groups, 1-D and 2-D: register blocks
# of 4 output rows x DQ columns of one output channel, over the group's taps
# --------------------------------------------------------------------------

cdef void _rows_block(const floating* xb, const Py_ssize_t* toff, Py_ssize_t ntap,
                      const floating* w, Py_ssize_t rstep, floating* out) noexcept nogil:
    """out (4, DQ): row o = sum over taps t of w[t] * xb[toff[t] + o * rstep + q]."""
    cdef floating a0[DQ]
    cdef floating a1[DQ]
    cdef floating a2[DQ]
    cdef floating a3[DQ]
    cdef Py_ssize_t t, q
    cdef floating wv
    cdef const floating* xr
    for q in range(DQ):
        a0[q] = 0
        a1[q] = 0
        a2[q] = 0
        a3[q] = 0
    for t in range(ntap):
        xr = xb + toff[t]
        wv = w[t]
        for q in range(DQ):
            a0[q] += wv * xr[q]
        for q in range(DQ):
            a1[q] += wv * xr[rstep + q]
        for q in range(DQ):
            a2[q] += wv * xr[2 * rstep + q]
        for q in range(DQ):
            a3[q] += wv * xr[3 * rstep + q]
    for q in range(DQ):
        out[q] = a0[q]
        out[DQ + q] = a1[q]
        out[2 * DQ + q] = a2[q]
        out[3 * DQ + q] = a3[q]


def grouped_forward(const floating[:, :, :, ::1] x,   # in (N, C, H, W)
                    const floating[:, ::1] w,         # in (C_out, C_g * kh * kw)
                    const floating[::1] bias,         # in (C_out,) or (0,)
                    floating[:, :, ::1] y,            # out (N, C_out, Ho * Wo)
                    const Py_ssize_t[::1] geo,        # kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, BH, groups
                    const Py_ssize_t[::1] toff,       # in (C_g * kh * kw,) tap offsets
                    floating[:, ::1] ws,              # scratch (threads, band + 4 * DQ)
                    int num_threads):
    """Grouped convolution, one work item per (sample, group, band of BH
    output rows; BH a multiple of 4).  The band's input rows of the group's
    channels are copied as in small_forward (zero padded, split into stride
    phases), then each output channel of the group is computed 4 rows x DQ
    columns at a time."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t C_out = y.shape[1], K = w.shape[1]
    cdef Py_ssize_t kh = geo[0], kw = geo[1], sh = geo[2], sw = geo[3]
    cdef Py_ssize_t pt = geo[4], pl = geo[5], dh = geo[6], dw = geo[7]
    cdef Py_ssize_t Ho = geo[8], Wo = geo[9], BH = geo[10], groups = geo[11]
    cdef Py_ssize_t Cg = C // groups, Kg = C_out // groups
    cdef Py_ssize_t nq = (Wo + DQ - 1) // DQ
    cdef Py_ssize_t plen = nq * DQ + ((kw - 1) * dw) // sw + 1
    cdef Py_ssize_t rowlen = sw * plen
    cdef Py_ssize_t BR = (BH - 1) * sh + (kh - 1) * dh + 1
    cdef Py_ssize_t nbands = (Ho + BH - 1) // BH
    cdef Py_ssize_t band_len = Cg * BR * rowlen
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t item, n, grp, oh0, oh1, k, o, ob, oh, qi, q, nv
    cdef floating* band = NULL
    cdef floating* blk = NULL
    cdef floating* yr
    cdef floating bv
    if N == 0 or Ho == 0 or Wo == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        band = &ws[cyconv_thread_num(), 0]
        blk = band + band_len
        for item in prange(N * groups * nbands, schedule="guided"):
            n = item // (groups * nbands)
            grp = (item // nbands) % groups
            oh0 = (item % nbands) * BH
            oh1 = min(Ho, oh0 + BH)
            _copy_band(&x[n, grp * Cg, 0, 0], Cg, H, W, oh0 * sh - pt, BR, sw, pl, plen,
                       band)
            for k in range(grp * Kg, grp * Kg + Kg):
                bv = bias[k] if has_bias else 0
                for ob in range((oh1 - oh0 + 3) // 4):
                    oh = oh0 + 4 * ob
                    for qi in range(nq):
                        _rows_block(band + (oh - oh0) * sh * rowlen + qi * DQ, &toff[0], K,
                                    &w[k, 0], sh * rowlen, blk)
                        nv = min(DQ, Wo - qi * DQ)
                        for o in range(min(4, oh1 - oh)):
                            yr = &y[n, k, (oh + o) * Wo + qi * DQ]
                            for q in range(nv):
                                yr[q] = blk[o * DQ + q] + bv


# A software prefetch into L2 (a no-op for other compilers)
cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define CYCONV_PREFETCH(p) __builtin_prefetch((p), 0, 2)
    #else
    #define CYCONV_PREFETCH(p) ((void)(p))
    #endif
    """
    void _prefetch "CYCONV_PREFETCH"(const void* p) noexcept nogil


# --------------------------------------------------------------------------
# Depthwise 3x3, stride 1: two output rows per pass over a zero-padded band
# --------------------------------------------------------------------------
# With one input channel per group, a 3x3 kernel, stride 1 and no column
# dilation, output rows oh and oh + dh read input rows oh, oh + dh,
# oh + 2 dh and oh + 3 dh (row dilation dh) of the band, two of them shared: one loop over the columns computes both
# rows from 12 loads and 18 multiply-adds per column, accumulating in
# registers and storing straight into y (the compiler vectorises the loop
# over columns).  _rows_block's blocks of 4 rows x DQ columns instead load
# every tap of every row (36 loads per 36 multiply-adds), go through scratch
# and waste the columns past Wo of the last block.

cdef void _dw3_pair(const floating* r, Py_ssize_t rs, const floating* w, floating bv,
                    floating* y0, floating* y1, Py_ssize_t n) noexcept nogil:
    """y0[q] = sum over i, j < 3 of w[3 i + j] * r[q + i rs + j] + bv and y1
    the same one row (rs) further, for q < n (taps summed in order).  The
    column offsets are constants: with a variable one (column dilation) gcc
    does not vectorise the loop."""
    cdef floating w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4]
    cdef floating w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8]
    cdef floating a0, a1, a2, b0, b1, b2, c0, c1, c2, e0, e1, e2
    cdef Py_ssize_t q
    for q in range(n):
        a0 = r[q]
        a1 = r[q + 1]
        a2 = r[q + 2]
        b0 = r[rs + q]
        b1 = r[rs + q + 1]
        b2 = r[rs + q + 2]
        c0 = r[2 * rs + q]
        c1 = r[2 * rs + q + 1]
        c2 = r[2 * rs + q + 2]
        e0 = r[3 * rs + q]
        e1 = r[3 * rs + q + 1]
        e2 = r[3 * rs + q + 2]
        y0[q] = w0 * a0 + w1 * a1 + w2 * a2 + w3 * b0 + w4 * b1 + w5 * b2 + w6 * c0 + w7 * c1 + w8 * c2 + bv
        y1[q] = w0 * b0 + w1 * b1 + w2 * b2 + w3 * c0 + w4 * c1 + w5 * c2 + w6 * e0 + w7 * e1 + w8 * e2 + bv


def depthwise3_forward(const floating[:, :, :, ::1] x,   # in (N, C, H, W)
                       const floating[:, ::1] w,         # in (C_out, 9), C_out a multiple of C
                       const floating[::1] bias,         # in (C_out,) or (0,)
                       floating[:, :, ::1] y,            # out (N, C_out, Ho * Wo)
                       const Py_ssize_t[::1] geo,        # pt, pl, dh, Ho, Wo, BH
                       floating[:, ::1] ws,              # scratch (threads, (BH + 3 dh) * (Wo + 2) + Wo)
                       int num_threads):
    """Depthwise (one input channel per group) 3x3 convolution, stride 1,
    column dilation 1, row dilation dh: output channel k reads input channel k // (C_out // C).  One work item
    per (sample, output channel, band of BH output rows): the band's input
    rows are copied zero padded (as in small_forward), then output rows are
    computed in pairs (r, r + dh) by _dw3_pair; a row without a partner
    writes its second row into scratch (it reads dh rows past the band's
    copied rows, scratch that is allocated but not meaningful)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t C_out = y.shape[1]
    cdef Py_ssize_t pt = geo[0], pl = geo[1], dh = geo[2]
    cdef Py_ssize_t Ho = geo[3], Wo = geo[4], BH = geo[5]
    cdef Py_ssize_t mult = C_out // C
    cdef Py_ssize_t plen = Wo + 2
    cdef Py_ssize_t BR = BH + 2 * dh
    cdef Py_ssize_t nbands = (Ho + BH - 1) // BH
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t total = N * C * H * W
    cdef Py_ssize_t line = 64 // sizeof(floating)
    cdef Py_ssize_t item, n, k, oh0, nb, blk, r, pf, q
    cdef const floating* x0 = &x[0, 0, 0, 0]
    cdef floating* band = NULL
    cdef floating* spare = NULL
    cdef floating* yk
    cdef floating bv
    if N == 0 or Ho == 0 or Wo == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        band = &ws[cyconv_thread_num(), 0]
        spare = band + (BR + dh) * plen
        for item in prange(N * C_out * nbands, schedule="guided"):
            n = item // (C_out * nbands)
            k = (item // nbands) % C_out
            oh0 = (item % nbands) * BH
            nb = min(BH, Ho - oh0)
            _copy_band(&x[n, k // mult, 0, 0], 1, H, W, oh0 - pt, nb + 2 * dh, 1, pl, plen,
                       band)
            bv = bias[k] if has_bias else 0
            yk = &y[n, k, oh0 * Wo]
            # the input that follows this band's rows in memory, about what the
            # thread's next item copies: fetched into L2 while this one computes
            pf = ((n * C + k // mult) * H + min(H, max(0, oh0 - pt + nb + 2 * dh))) * W
            # rows blk .. blk + dh - 1 pair with the dh rows after them
            for blk in range((nb + 2 * dh - 1) // (2 * dh)):
                for r in range(2 * dh * blk, min(nb, 2 * dh * blk + dh)):
                    for q in range((2 * W + line - 1) // line):
                        if pf + q * line < total:
                            _prefetch(x0 + pf + q * line)
                    pf = pf + 2 * W   # not +=: Cython would make pf a reduction
                    if r + dh < nb:
                        _dw3_pair(band + r * plen, dh * plen, &w[k, 0], bv, yk + r * Wo,
                                  yk + (r + dh) * Wo, Wo)
                    else:   # no partner: the second row goes to scratch
                        _dw3_pair(band + r * plen, dh * plen, &w[k, 0], bv, yk + r * Wo,
                                  spare, Wo)


# One input channel (groups 1): every output channel reads the same band,
# copied once per work item.  Narrow rows (28 columns in mnist_small) leave
# most of _dw3_pair's vector loop to its scalar remainder, so the band is
# treated as one flat array of pitch P = Wo + 2: output p = r P + q is the
# sum of w[3 i + j] * band[p + i dh P + j] (q < Wo; the two columns past
# each row are computed and dropped), one loop over the whole band, then
# copied out row by row.

cdef void _flat3(const floating* b, Py_ssize_t rs, const floating* w, const floating* v,
                 floating bw, floating bv, floating* o, floating* u, Py_ssize_t n) noexcept nogil:
    """o[p] = sum over i, j < 3 of w[3 i + j] * b[p + i rs + j] + bw and u[p]
    the same with weights v and bias bv, p < n: two output channels from
    each load."""
    cdef floating w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4]
    cdef floating w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8]
    cdef floating v0 = v[0], v1 = v[1], v2 = v[2], v3 = v[3], v4 = v[4]
    cdef floating v5 = v[5], v6 = v[6], v7 = v[7], v8 = v[8]
    cdef floating a0, a1, a2, c0, c1, c2, e0, e1, e2
    cdef const floating* b1 = b + rs
    cdef const floating* b2 = b1 + rs
    cdef Py_ssize_t p
    for p in range(n):
        a0 = b[p]
        a1 = b[p + 1]
        a2 = b[p + 2]
        c0 = b1[p]
        c1 = b1[p + 1]
        c2 = b1[p + 2]
        e0 = b2[p]
        e1 = b2[p + 1]
        e2 = b2[p + 2]
        o[p] = w0 * a0 + w1 * a1 + w2 * a2 + w3 * c0 + w4 * c1 + w5 * c2 + w6 * e0 + w7 * e1 + w8 * e2 + bw
        u[p] = v0 * a0 + v1 * a1 + v2 * a2 + v3 * c0 + v4 * c1 + v5 * c2 + v6 * e0 + v7 * e1 + v8 * e2 + bv


def single3x3_forward(const floating[:, :, :, ::1] x,   # in (N, 1, H, W)
                      const floating[:, ::1] w,         # in (C_out, 9)
                      const floating[::1] bias,         # in (C_out,) or (0,)
                      floating[:, :, ::1] y,            # out (N, C_out, Ho * Wo)
                      const Py_ssize_t[::1] geo,        # pt, pl, dh, Ho, Wo, BH
                      floating[:, ::1] ws,              # scratch (threads, (3 BH + 2 dh) (Wo + 2) + 2)
                      int num_threads):
    """3x3 convolution of a one-channel input, stride 1, column dilation 1,
    row dilation dh.  One work item per (sample, band of BH output rows):
    the band is copied zero padded (as in small_forward), then each output
    channel is computed over the flat band by _flat3 into scratch and its
    rows copied into y."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t C_out = y.shape[1]
    cdef Py_ssize_t pt = geo[0], pl = geo[1], dh = geo[2]
    cdef Py_ssize_t Ho = geo[3], Wo = geo[4], BH = geo[5]
    cdef Py_ssize_t P = Wo + 2
    cdef Py_ssize_t nbands = (Ho + BH - 1) // BH
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t item, n, kp, k, k1, oh0, nb, r, q
    cdef floating* band = NULL
    cdef floating* o = NULL
    cdef floating* yr
    cdef floating* orow
    if N == 0 or Ho == 0 or Wo == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        band = &ws[cyconv_thread_num(), 0]
        o = band + (BH + 2 * dh) * P + 2
        for item in prange(N * nbands, schedule="guided"):
            n = item // nbands
            oh0 = (item % nbands) * BH
            nb = min(BH, Ho - oh0)
            _copy_band(&x[n, 0, 0, 0], 1, H, W, oh0 - pt, nb + 2 * dh, 1, pl, P, band)
            for kp in range((C_out + 1) // 2):   # output channels k and k + 1
                k = 2 * kp
                k1 = min(k + 1, C_out - 1)   # an odd last channel is computed twice
                _flat3(band, dh * P, &w[k, 0], &w[k1, 0], bias[k] if has_bias else 0,
                       bias[k1] if has_bias else 0, o, o + BH * P, nb * P)
                for k1 in range(k, min(k + 2, C_out)):
                    for r in range(nb):
                        yr = &y[n, k1, (oh0 + r) * Wo]
                        orow = o + ((k1 - k) * BH + r) * P
                        for q in range(Wo):
                            yr[q] = orow[q]


# --------------------------------------------------------------------------
# Register-blocked GEMMs without BLAS: PK x PQ blocks (16 AVX-512 registers)
# --------------------------------------------------------------------------
# A pointwise convolution (1x1, stride 1, no padding, groups 1, channels
# first) is y[n] (K, L) = W (K, C) @ x[n] (C, L).  A BLAS GEMM packs x[n]
# into its own panel layout first, a full pass over the input that a
# convolution with few output channels does not amortise.  pointwise_forward
# instead copies x[n] PQ columns at a time into scratch (the next block is
# prefetched while the current one is computed) and computes PK output
# channels x PQ columns per _pw_block; only the weights are packed (by the
# caller, once): wp[kb, c, o] = W[kb * PK + o, c].  packed_forward uses the
# same block with the roles exchanged (PQ output channels of packed weights
# as vectors, PK positions of an im2col tile broadcast in place), and
# band_forward its variant _tap_block over small_forward's bands.

cdef enum:
    PQ = 32     # columns per register block
    PK = 8      # output channels per register block
    PSB = 64    # positions per weight block pass in packed_forward
    V8P = 6     # output positions per AVX2 block of band_forward
    WBT = 64    # taps per work item of block_weights


cdef void _pw_block(const floating* xr, Py_ssize_t ld, Py_ssize_t C,
                    const floating* wp, Py_ssize_t wld, floating* out, const floating* pf,
                    Py_ssize_t pld) noexcept nogil:
    """out (PK, PQ) = sum over c < C of wp[c * wld + o] * xr[c * ld + q];
    unless pf is NULL, also prefetches the PQ values at pf + c * pld."""
    cdef floating a0[PQ]
    cdef floating a1[PQ]
    cdef floating a2[PQ]
    cdef floating a3[PQ]
    cdef floating a4[PQ]
    cdef floating a5[PQ]
    cdef floating a6[PQ]
    cdef floating a7[PQ]
    cdef Py_ssize_t c, q
    cdef floating w0, w1, w2, w3, w4, w5, w6, w7
    cdef const floating* x
    cdef const floating* w
    for q in range(PQ):
        a0[q] = 0
        a1[q] = 0
        a2[q] = 0
        a3[q] = 0
        a4[q] = 0
        a5[q] = 0
        a6[q] = 0
        a7[q] = 0
    for c in range(C):
        x = xr + c * ld
        w = wp + c * wld
        w0 = w[0]
        w1 = w[1]
        w2 = w[2]
        w3 = w[3]
        w4 = w[4]
        w5 = w[5]
        w6 = w[6]
        w7 = w[7]
        if pf != NULL:
            _prefetch(pf + c * pld)
            _prefetch(pf + c * pld + PQ // 2)
            _prefetch(pf + c * pld + PQ - 1)
        for q in range(PQ):
            a0[q] += w0 * x[q]
        for q in range(PQ):
            a1[q] += w1 * x[q]
        for q in range(PQ):
            a2[q] += w2 * x[q]
        for q in range(PQ):
            a3[q] += w3 * x[q]
        for q in range(PQ):
            a4[q] += w4 * x[q]
        for q in range(PQ):
            a5[q] += w5 * x[q]
        for q in range(PQ):
            a6[q] += w6 * x[q]
        for q in range(PQ):
            a7[q] += w7 * x[q]
    for q in range(PQ):
        out[q] = a0[q]
        out[PQ + q] = a1[q]
        out[2 * PQ + q] = a2[q]
        out[3 * PQ + q] = a3[q]
        out[4 * PQ + q] = a4[q]
        out[5 * PQ + q] = a5[q]
        out[6 * PQ + q] = a6[q]
        out[7 * PQ + q] = a7[q]


BLOCK_WEIGHTS_TAPS = WBT   # for the caller's team size (conv._blocked_weights)


def same_bytes(const unsigned char[::1] a, const unsigned char[::1] b):
    """Whether a and b hold the same bytes (cyconv._prepared's check that
    weights are those of an earlier call)."""
    cdef int r
    if a.shape[0] != b.shape[0]:
        return False
    if a.shape[0] == 0:
        return True
    with nogil:
        r = memcmp(&a[0], &b[0], a.shape[0])
    return r == 0


def block_weights(const floating[:, ::1] w2,   # in (C_out, K)
                  floating[:, :, ::1] wb,      # out (ceil(C_out / B), K, B)
                  int num_threads):
    """wb[b, t, o] = w2[b * B + o, t], zero where b * B + o >= C_out: the
    weights as the vector operand of the register blocks, a run of WBT taps
    of one block per work item (its reads are whole row segments, its writes
    stay in L1)."""
    cdef Py_ssize_t C_out = w2.shape[0], K = w2.shape[1]
    cdef Py_ssize_t nb = wb.shape[0], B = wb.shape[2]
    cdef Py_ssize_t nt = (K + WBT - 1) // WBT
    cdef Py_ssize_t item, b, t0, t1, o, t, r
    if nb == 0 or K == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        for item in prange(nb * nt, schedule="static"):
            b = item // nt
            t0 = (item % nt) * WBT
            t1 = min(K, t0 + WBT)
            for o in range(B):
                r = b * B + o
                if r < C_out:
                    for t in range(t0, t1):
                        wb[b, t, o] = w2[r, t]
                else:
                    for t in range(t0, t1):
                        wb[b, t, o] = 0


cdef inline void _copy_pq(floating* dst, const floating* src) noexcept nogil:
    cdef Py_ssize_t q
    for q in range(PQ):
        dst[q] = src[q]


def pointwise_forward(const floating[:, :, ::1] x,    # in (N, C, L)
                      const floating[:, :, ::1] wp,   # in (ceil(K / PK), C, PK), packed
                      const floating[::1] bias,       # in (K,) or (0,)
                      floating[:, :, ::1] y,          # out (N, K, L)
                      Py_ssize_t cols,                # columns per work item, a multiple of PQ
                      floating[:, ::1] ws,            # scratch (threads, C * PQ + PK * PQ)
                      int num_threads):
    """y[n] = W @ x[n] (+ bias), one work item per (sample, run of ``cols``
    columns), PQ columns at a time: the block's columns of every channel are
    copied into scratch (C, PQ), zero padded past the end of the row, so
    that the register blocks read them sequentially, and the first pass over
    the weights prefetches the next block's.  Every output is the same sum in
    the same order whatever the split, so results do not depend on the
    thread count."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Py_ssize_t K = y.shape[1], nkb = wp.shape[0]
    cdef Py_ssize_t nt = (L + cols - 1) // cols
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t item, n, l0, l1, b, l, nv, kb, o, q, c
    cdef const floating* pf
    cdef floating* pan = NULL
    cdef floating* blk = NULL
    cdef floating* yr
    cdef floating bv
    if N == 0 or L == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        pan = &ws[cyconv_thread_num(), 0]
        blk = pan + C * PQ
        for item in prange(N * nt, schedule="static"):
            n = item // nt
            l0 = (item % nt) * cols
            l1 = min(L, l0 + cols)
            for b in range((l1 - l0 + PQ - 1) // PQ):
                l = l0 + b * PQ
                nv = min(PQ, l1 - l)
                if nv == PQ:
                    for c in range(C):
                        _copy_pq(pan + c * PQ, &x[n, c, l])
                else:
                    for c in range(C):
                        memcpy(pan + c * PQ, &x[n, c, l], nv * sizeof(floating))
                        memset(pan + c * PQ + nv, 0, (PQ - nv) * sizeof(floating))
                # the first pass fetches the next block's rows into L2
                pf = &x[n, 0, l + PQ] if l + 2 * PQ <= L else NULL
                for kb in range(nkb):
                    if floating is float and CYCONV_HAVE_V16 and PK == 8 and PQ == 32:
                        if nv == PQ and (kb + 1) * PK <= K:   # straight into y
                            _pw8_f32(pan, PQ, C, &wp[kb, 0, 0], PK, pf, L,
                                     &bias[kb * PK] if has_bias else NULL,
                                     &y[n, kb * PK, l], L)
                            pf = NULL
                            continue
                        _pw8_f32(pan, PQ, C, &wp[kb, 0, 0], PK, pf, L, NULL, blk, PQ)
                    else:
                        _pw_block(pan, PQ, C, &wp[kb, 0, 0], PK, blk, pf, L)
                    pf = NULL
                    for o in range(min(PK, K - kb * PK)):
                        bv = bias[kb * PK + o] if has_bias else 0
                        yr = &y[n, kb * PK + o, l]
                        for q in range(nv):
                            yr[q] = blk[o * PQ + q] + bv


# The weight gradient of a pointwise convolution (1x1, stride 1, no padding,
# groups 1, channels first) is gw (K, C) = sum over samples n of
# gy[n] (K, L) @ x[n] (C, L)^T: both operands are read along their rows, the
# reduction axis.  pointwise_backward_weight computes it in register blocks
# of WGO output channels x WGC input channels, one AVX-512 accumulator of 16
# positions per pair, each reduced across its lanes once per sample and
# added to gw; a work item owns a run of input channels, so every gradient
# value is the same sum in the same order whatever the thread count, with
# no partial sums.  Within an item the samples are outermost (a sample's
# grad_output, 200 KiB for pointwise_1x1, stays in L2) and each block of
# WGC input rows stays in L1 while grad_output's rows stream past it.
cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__AVX512F__)
    #include <immintrin.h>
    #define CYCONV_HAVE_WG 1
    #define CYCONV_WGO 4
    #define CYCONV_WGC 6
    /* gw[o * ldw + c] += sum over l < L of g[o * ldg + l] * x[c * ldx + l]
       for o < no <= 4, c < nc <= 6; rows past no or nc repeat row 0 (read,
       not stored), so nothing outside the operands is read. */
    static void cyconv_wg_block(const float* g, Py_ssize_t ldg, const float* x, Py_ssize_t ldx,
                                Py_ssize_t L, int no, int nc, float* gw, Py_ssize_t ldw) {
        const float* gr[CYCONV_WGO];
        const float* xr[CYCONV_WGC];
        __m512 a[CYCONV_WGO][CYCONV_WGC];
        __m512 gv[CYCONV_WGO];
        __m512 xv;
        Py_ssize_t l;
        int i, j;
        for (i = 0; i < CYCONV_WGO; i++) gr[i] = g + (i < no ? i : 0) * ldg;
        for (j = 0; j < CYCONV_WGC; j++) xr[j] = x + (j < nc ? j : 0) * ldx;
        for (i = 0; i < CYCONV_WGO; i++)
            for (j = 0; j < CYCONV_WGC; j++) a[i][j] = _mm512_setzero_ps();
        for (l = 0; l + 16 <= L; l += 16) {
            for (i = 0; i < CYCONV_WGO; i++) gv[i] = _mm512_loadu_ps(gr[i] + l);
            for (j = 0; j < CYCONV_WGC; j++) {
                xv = _mm512_loadu_ps(xr[j] + l);
                for (i = 0; i < CYCONV_WGO; i++) a[i][j] = _mm512_fmadd_ps(gv[i], xv, a[i][j]);
            }
        }
        if (l < L) {   /* the last L % 16 positions; the other lanes load 0 */
            __mmask16 m = (__mmask16)((1u << (L - l)) - 1u);
            for (i = 0; i < CYCONV_WGO; i++) gv[i] = _mm512_maskz_loadu_ps(m, gr[i] + l);
            for (j = 0; j < CYCONV_WGC; j++) {
                xv = _mm512_maskz_loadu_ps(m, xr[j] + l);
                for (i = 0; i < CYCONV_WGO; i++) a[i][j] = _mm512_fmadd_ps(gv[i], xv, a[i][j]);
            }
        }
        for (i = 0; i < no; i++)
            for (j = 0; j < nc; j++) gw[i * ldw + j] += _mm512_reduce_add_ps(a[i][j]);
    }
    #else
    #define CYCONV_HAVE_WG 0
    #define CYCONV_WGO 4
    #define CYCONV_WGC 6
    static void cyconv_wg_block(const float* g, Py_ssize_t ldg, const float* x, Py_ssize_t ldx,
                                Py_ssize_t L, int no, int nc, float* gw, Py_ssize_t ldw) {
        (void)g; (void)ldg; (void)x; (void)ldx; (void)L; (void)no; (void)nc; (void)gw;
        (void)ldw;
    }
    #endif
    """
    const bint CYCONV_HAVE_WG
    const int WGO "CYCONV_WGO"
    const int WGC "CYCONV_WGC"
    void _wg_block "cyconv_wg_block"(const float* g, Py_ssize_t ldg, const float* x,
                                     Py_ssize_t ldx, Py_ssize_t L, int no, int nc, float* gw,
                                     Py_ssize_t ldw) noexcept nogil


POINTWISE_WEIGHT_BUILT = CYCONV_HAVE_WG   # for the caller (conv._uses_pointwise_weight)
POINTWISE_WEIGHT_CHANNELS = WGC          # input channels per register block


def pointwise_backward_weight(const float[:, :, ::1] x,    # in (N, C, L)
                              const float[:, :, ::1] gy,   # in (N, K, L)
                              float[:, ::1] gw,            # out (K, C), zeroed by the caller
                              int num_threads):
    """gw += sum over n of gy[n] @ x[n]^T (AVX-512 builds, float32), one
    work item per thread, each a run of consecutive blocks of WGC input
    channels."""
    if not CYCONV_HAVE_WG:
        raise RuntimeError("pointwise_backward_weight needs the AVX-512 kernels")
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], K = gy.shape[1]
    cdef Py_ssize_t ncb = (C + WGC - 1) // WGC
    cdef Py_ssize_t ldx = x.strides[1] // sizeof(float), ldg = gy.strides[1] // sizeof(float)
    cdef Py_ssize_t ldw = gw.strides[0] // sizeof(float)
    cdef Py_ssize_t items = max(1, min(<Py_ssize_t>num_threads, ncb))
    cdef Py_ssize_t item, n, cb, c, o, ob
    if N == 0 or C == 0 or K == 0 or L == 0:
        return
    with nogil:
        for item in prange(items, schedule="static", num_threads=num_threads):
            for n in range(N):
                for cb in range(ncb * item // items, ncb * (item + 1) // items):
                    c = cb * WGC
                    for ob in range((K + WGO - 1) // WGO):
                        o = ob * WGO
                        _wg_block(&gy[n, o, 0], ldg, &x[n, c, 0], ldx, L,
                                  <int>min(WGO, K - o), <int>min(WGC, C - c), &gw[o, c],
                                  ldw)


def packed_forward(const floating[:, :, :, :, ::1] x,   # in (N, C, D, H, W)
                   const floating[:, :, ::1] wq,        # in (ceil(C_out / PQ), K, PQ), packed
                   const floating[::1] bias,            # in (C_out,) or (0,)
                   floating[:, :, ::1] y,               # out (N, C_out, L)
                   const Py_ssize_t[::1] geo,
                   floating[:, ::1] ws,                 # scratch (threads, K * tile + PK + PK * PQ)
                   Py_ssize_t tile, int num_threads):
    """conv_forward (channels first, groups 1) with the GEMM of each im2col
    tile done by _pw_block instead of BLAS: register blocks of PQ output
    channels x PK output positions, the weights (packed once by the caller)
    read as vectors and the column matrix broadcast in place, so no packing
    pass over the columns and at most PK - 1 wasted positions per tile.
    The blocks of a tile's last partial run of PK positions read up to
    PK - 1 values past its rows (scratch padding); they only reach outputs
    that are not written."""
    cdef Geom g = _geom(x.shape, False, 1, geo)
    cdef Py_ssize_t N = x.shape[0], C_out = y.shape[1]
    cdef Py_ssize_t K = wq.shape[1], nkb = wq.shape[0]
    cdef Py_ssize_t L = g.Do * g.Ho * g.Wo
    cdef Py_ssize_t ntiles = (L + tile - 1) // tile
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t item, n, t, l0, l1, lt, ld, sb, cb, q0, nv, kb, k0, nk, o, q
    cdef floating* buf = NULL
    cdef floating* blk = NULL
    cdef const floating* cols
    cdef floating* yr
    cdef floating bv
    if N == 0 or L == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        buf = &ws[cyconv_thread_num(), 0]
        blk = buf + K * tile + PK
        for item in prange(N * ntiles, schedule="guided"):
            n = item // ntiles
            t = item % ntiles
            l0 = t * tile
            l1 = min(L, l0 + tile)
            lt = l1 - l0
            ld = 0   # assigned in the loop body, so Cython makes it thread-private
            cols = _columns(&x[0, 0, 0, 0, 0], &g, n, 0, l0, l1, buf, False, &ld)
            # runs of PSB positions: one packed weight block (K, PQ) serves
            # all of a run's register blocks from L2
            for sb in range((lt + PSB - 1) // PSB):
                for kb in range(nkb):
                    k0 = kb * PQ
                    nk = min(PQ, C_out - k0)
                    for cb in range(sb * PSB // PK, (min(lt, sb * PSB + PSB) + PK - 1) // PK):
                        q0 = cb * PK
                        nv = min(PK, lt - q0)
                        _pw_block(&wq[kb, 0, 0], PQ, K, cols + q0, ld, blk, NULL, 0)
                        for q in range(nk):
                            bv = bias[k0 + q] if has_bias else 0
                            yr = &y[n, k0 + q, l0 + q0]
                            for o in range(nv):
                                yr[o] = blk[o * PQ + q] + bv


cdef void _tap_block(const floating* wq, Py_ssize_t ntap, const floating* xb,
                     const Py_ssize_t* toff, floating* out) noexcept nogil:
    """out (PK, PQ) = sum over taps t of xb[toff[t] + o] * wq[t * PQ + q]: PK
    consecutive output positions of a band (see small_forward) x PQ output
    channels of packed weights."""
    cdef floating a0[PQ]
    cdef floating a1[PQ]
    cdef floating a2[PQ]
    cdef floating a3[PQ]
    cdef floating a4[PQ]
    cdef floating a5[PQ]
    cdef floating a6[PQ]
    cdef floating a7[PQ]
    cdef Py_ssize_t t, q
    cdef floating v0, v1, v2, v3, v4, v5, v6, v7
    cdef const floating* w
    cdef const floating* v
    for q in range(PQ):
        a0[q] = 0
        a1[q] = 0
        a2[q] = 0
        a3[q] = 0
        a4[q] = 0
        a5[q] = 0
        a6[q] = 0
        a7[q] = 0
    for t in range(ntap):
        w = wq + t * PQ
        v = xb + toff[t]
        v0 = v[0]
        v1 = v[1]
        v2 = v[2]
        v3 = v[3]
        v4 = v[4]
        v5 = v[5]
        v6 = v[6]
        v7 = v[7]
        for q in range(PQ):
            a0[q] += v0 * w[q]
        for q in range(PQ):
            a1[q] += v1 * w[q]
        for q in range(PQ):
            a2[q] += v2 * w[q]
        for q in range(PQ):
            a3[q] += v3 * w[q]
        for q in range(PQ):
            a4[q] += v4 * w[q]
        for q in range(PQ):
            a5[q] += v5 * w[q]
        for q in range(PQ):
            a6[q] += v6 * w[q]
        for q in range(PQ):
            a7[q] += v7 * w[q]
    for q in range(PQ):
        out[q] = a0[q]
        out[PQ + q] = a1[q]
        out[2 * PQ + q] = a2[q]
        out[3 * PQ + q] = a3[q]
        out[4 * PQ + q] = a4[q]
        out[5 * PQ + q] = a5[q]
        out[6 * PQ + q] = a6[q]
        out[7 * PQ + q] = a7[q]


def band_forward(const floating[:, :, :, ::1] x,   # in (N, C, H, W)
                 const floating[:, :, ::1] wq,     # in (ceil(C_out / PQ), C*kh*kw, PQ), packed
                 const floating[::1] bias,         # in (C_out,) or (0,)
                 floating[:, :, ::1] y,            # out (N, C_out, Ho * Wo)
                 const Py_ssize_t[::1] geo,        # kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, BH
                 const Py_ssize_t[::1] toff,       # in (C*kh*kw,) tap offsets
                 floating[:, ::1] ws,              # scratch (threads, band + PK * PQ)
                 int num_threads):
    """small_forward with the roles of input and weights exchanged: the same
    bands of input rows (copied, zero padded, split into stride phases), but
    register blocks of PK output positions of a row x PQ output channels,
    the packed weights read as vectors and the band's values broadcast.  A
    row's last block computes up to PK - 1 positions past its end (inside
    the band's padded columns) that are not written."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t C_out = y.shape[1], K = wq.shape[1], nkb = wq.shape[0]
    cdef Py_ssize_t kh = geo[0], kw = geo[1], sh = geo[2], sw = geo[3]
    cdef Py_ssize_t pt = geo[4], pl = geo[5], dh = geo[6], dw = geo[7]
    cdef Py_ssize_t Ho = geo[8], Wo = geo[9], BH = geo[10]
    cdef Py_ssize_t nq = (Wo + DQ - 1) // DQ
    cdef Py_ssize_t plen = nq * DQ + ((kw - 1) * dw) // sw + 1   # columns per phase
    cdef Py_ssize_t rowlen = sw * plen
    cdef Py_ssize_t BR = (BH - 1) * sh + (kh - 1) * dh + 1      # input rows per band
    cdef Py_ssize_t nbands = (Ho + BH - 1) // BH
    cdef Py_ssize_t band_len = C * BR * rowlen
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t item, n, oh0, oh1, oh, cb, q0, nv, kb, k0, nk, o, q
    cdef floating* band = NULL
    cdef floating* blk = NULL
    cdef floating* yr
    cdef floating bv
    if N == 0 or Ho == 0 or Wo == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        band = &ws[cyconv_thread_num(), 0]
        blk = band + band_len
        for item in prange(N * nbands, schedule="guided"):
            n = item // nbands
            oh0 = (item % nbands) * BH
            oh1 = min(Ho, oh0 + BH)
            _copy_band(&x[n, 0, 0, 0], C, H, W, oh0 * sh - pt, BR, sw, pl, plen, band)
            if floating is float and CYCONV_HAVE_V8:
                # AVX2: blocks of 16 output channels x V8P positions
                for kb in range(2 * nkb):
                    k0 = kb * (PQ // 2)
                    if k0 >= C_out:
                        break
                    nk = min(PQ // 2, C_out - k0)
                    for oh in range(oh0, oh1):
                        for cb in range((Wo + V8P - 1) // V8P):
                            q0 = cb * V8P
                            nv = min(V8P, Wo - q0)
                            _band16_f32(&wq[kb // 2, 0, (kb % 2) * (PQ // 2)], PQ, K,
                                        band + (oh - oh0) * sh * rowlen + q0, &toff[0],
                                        blk, nv)
                            for q in range(nk):
                                bv = bias[k0 + q] if has_bias else 0
                                yr = &y[n, k0 + q, oh * Wo + q0]
                                for o in range(nv):
                                    yr[o] = blk[o * (PQ // 2) + q] + bv
                continue
            for kb in range(nkb):
                k0 = kb * PQ
                nk = min(PQ, C_out - k0)
                for oh in range(oh0, oh1):
                    for cb in range((Wo + PK - 1) // PK):
                        q0 = cb * PK
                        nv = min(PK, Wo - q0)
                        _tap_block(&wq[kb, 0, 0], K, band + (oh - oh0) * sh * rowlen + q0,
                                   &toff[0], blk)
                        for q in range(nk):
                            bv = bias[k0 + q] if has_bias else 0
                            yr = &y[n, k0 + q, oh * Wo + q0]
                            for o in range(nv):
                                yr[o] = blk[o * PQ + q] + bv
