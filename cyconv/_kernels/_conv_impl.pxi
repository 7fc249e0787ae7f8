"""Convolution kernels, 1-D to 3-D: tiled im2col + GEMM, col2im, OpenMP over tiles.

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
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memcpy, memset

from ._blas cimport gemm
from ._openmp_helpers cimport cyconv_thread_num


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
                                if s > ow:
                                    memset(dst, 0, (s - ow) * sizeof(floating))
                                if g.sw == 1:
                                    memcpy(dst + (s - ow), src + s,
                                           (e - s) * sizeof(floating))
                                else:
                                    for o in range(s, e):
                                        dst[o - ow] = src[o * g.sw]
                                if ow_end > e:
                                    memset(dst + (e - ow), 0, (ow_end - e) * sizeof(floating))
                            else:
                                if g.sw == 1:
                                    for o in range(s, e):
                                        src[o] += dst[o - ow]
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


cdef inline void _to_col(floating* x, const Geom* g, Py_ssize_t l0, Py_ssize_t l1,
                         floating* col, bint channels_last) noexcept nogil:
    if channels_last:
        _transfer_cl(x, g, l0, l1, col, True)
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
        for item in prange(nitems, schedule="static"):
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
                for item in prange(N * groups * nb, schedule="static"):
                    n = item // (groups * nb)
                    grp = (item // nb) % groups
                    t = 2 * (item % nb) + phase
                    _input_grad_tile(gyb, wb, gxb, &g, n, grp, t, tile, C_out, K, groups,
                                     buf, channels_last)
    else:
        with nogil, parallel(num_threads=num_threads):
            buf = &ws[cyconv_thread_num(), 0]
            for item in prange(N * groups, schedule="static"):
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
