"""2-D convolution kernels: tiled im2col + GEMM, col2im, OpenMP over tiles.

Kernels trust their inputs: cyconv.conv / cyconv.im2col have validated dtypes,
shapes and hyperparameters and made every array C-contiguous.

Layouts
-------
channels first: x (N, C, H, W), y (N, C_out, L) with L = H_out * W_out,
    a column matrix is (C_g * kh * kw, L_tile), rows ordered (c, i, j);
    weights are (C_out, C_g * kh * kw).
channels last:  x (N, H, W, C), y (N, L, C_out),
    a column matrix is (L_tile, kh * kw * C_g), columns ordered (i, j, c);
    weights are (C_out, kh * kw * C_g) (the caller transposes them).

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
    Py_ssize_t H, W        # input spatial size (unpadded)
    Py_ssize_t C           # channels moved by one transfer (channels per group)
    Py_ssize_t cstride     # channels last: distance between pixels (all channels)
    Py_ssize_t kh, kw, sh, sw, ph, pw, dh, dw   # ph/pw: padding before
    Py_ssize_t Ho, Wo


cdef inline Geom _geom(Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t cstride,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                       Py_ssize_t Ho, Py_ssize_t Wo) noexcept:
    cdef Geom g
    g.H = H; g.W = W; g.C = C; g.cstride = cstride
    g.kh = kh; g.kw = kw; g.sh = sh; g.sw = sw
    g.ph = ph; g.pw = pw; g.dh = dh; g.dw = dw
    g.Ho = Ho; g.Wo = Wo
    return g


cdef inline Geom _conv_geom(Py_ssize_t* shape, bint channels_last, Py_ssize_t groups,
                            Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                            Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                            Py_ssize_t Ho, Py_ssize_t Wo) noexcept:
    """Geometry of one group's transfer from the shape of a (N, ...) input:
    g.C is the group's channel count, g.cstride all the input's channels."""
    cdef Py_ssize_t C = shape[3] if channels_last else shape[1]
    cdef Py_ssize_t H = shape[1] if channels_last else shape[2]
    cdef Py_ssize_t W = shape[2] if channels_last else shape[3]
    return _geom(H, W, C // groups, C, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)


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

    to_col: col (C*kh*kw, l1-l0) <- patches of x (C, H, W), zeros for padding.
    else:   x += col scattered back (col2im: overlapping taps are summed).
    """
    cdef Py_ssize_t lt = l1 - l0
    cdef Py_ssize_t c, i, j, l, oh, ow, ow_end, ih, lo, hi, o, s, e, off
    cdef floating* row = col
    cdef floating* dst
    cdef floating* src
    for c in range(g.C):
        for i in range(g.kh):
            for j in range(g.kw):
                off = j * g.dw - g.pw                  # iw = ow * sw + off
                lo = _first_at_least(-off, g.sw)       # first ow with iw >= 0
                hi = _end_at_most(g.W - 1 - off, g.sw, g.Wo)  # ow past iw < W
                dst = row
                l = l0
                oh = l0 // g.Wo
                ow = l0 - oh * g.Wo
                while l < l1:
                    ow_end = min(g.Wo, ow + (l1 - l))
                    ih = oh * g.sh - g.ph + i * g.dh
                    s = max(lo, ow)
                    e = min(hi, ow_end)
                    if ih < 0 or ih >= g.H or s >= e:
                        if to_col:
                            memset(dst, 0, (ow_end - ow) * sizeof(floating))
                    else:
                        src = x + (c * g.H + ih) * g.W + off
                        if to_col:
                            if s > ow:
                                memset(dst, 0, (s - ow) * sizeof(floating))
                            if g.sw == 1:
                                memcpy(dst + (s - ow), src + s, (e - s) * sizeof(floating))
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
                    oh += 1
                    ow = 0
                row += lt


cdef void _transfer_cl(floating* x, const Geom* g, Py_ssize_t l0, Py_ssize_t l1,
                       floating* col, bint to_col) noexcept nogil:
    """Channels last, output positions [l0, l1).

    x points at channel c0 of pixel (0, 0) of one sample; pixels are
    g.cstride apart and g.C channels are moved.
    to_col: col (l1-l0, kh*kw*C) <- patches; else x += col scattered back.
    """
    cdef Py_ssize_t l, oh, ow, i, j, ih, iw, c
    cdef Py_ssize_t C = g.C
    cdef floating* dst = col
    cdef floating* src
    for l in range(l0, l1):
        oh = l // g.Wo
        ow = l - oh * g.Wo
        for i in range(g.kh):
            ih = oh * g.sh - g.ph + i * g.dh
            for j in range(g.kw):
                iw = ow * g.sw - g.pw + j * g.dw
                if ih >= 0 and ih < g.H and iw >= 0 and iw < g.W:
                    src = x + (ih * g.W + iw) * g.cstride
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


cdef inline floating* _plane(const floating* base, Py_ssize_t n, Py_ssize_t c0,
                             Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                             bint channels_last) noexcept nogil:
    """Address of channel c0 at pixel (0, 0) of sample n of a (N, ...) array."""
    if channels_last:
        return <floating*> base + n * H * W * C + c0
    return <floating*> base + (n * C + c0) * H * W


# --------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------

def conv2d_forward(const floating[:, :, :, ::1] x,      # in
                   const floating[:, ::1] w,             # in (C_out, K)
                   const floating[::1] bias,             # in (C_out,) or (0,)
                   floating[:, :, ::1] y,                # out
                   Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                   Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                   Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t groups,
                   bint channels_last,
                   floating[:, ::1] ws,                  # scratch (threads, K*tile)
                   Py_ssize_t tile, int num_threads):
    cdef Geom g = _conv_geom(x.shape, channels_last, groups, kh, kw, sh, sw, ph, pw,
                             dh, dw, Ho, Wo)
    cdef Py_ssize_t N = x.shape[0], C = g.cstride, H = g.H, W = g.W
    cdef Py_ssize_t C_out = w.shape[0], K = w.shape[1]
    cdef Py_ssize_t Cg = g.C, Kg = C_out // groups
    cdef Py_ssize_t L = Ho * Wo
    cdef Py_ssize_t ntiles = (L + tile - 1) // tile
    cdef Py_ssize_t nitems = N * groups * ntiles
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t item, n, grp, t, l0, l1, lt, k, l
    cdef floating* buf = NULL
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
            _to_col(_plane(&x[0, 0, 0, 0], n, grp * Cg, C, H, W, channels_last), &g, l0, l1, buf, channels_last)
            if channels_last:
                yp = &y[n, l0, grp * Kg]
                for l in range(lt):
                    for k in range(Kg):
                        yp[l * C_out + k] = bias[grp * Kg + k] if has_bias else 0
                # Y (lt x Kg) = col (lt x K) @ W_g^T
                gemm(False, True, <int> lt, <int> Kg, <int> K, 1, buf, <int> K,
                     &w[grp * Kg, 0], <int> K, 1, yp, <int> C_out)
            else:
                yp = &y[n, grp * Kg, l0]
                for k in range(Kg):
                    b = bias[grp * Kg + k] if has_bias else 0
                    for l in range(lt):
                        yp[k * L + l] = b
                # Y (Kg x lt) = W_g (Kg x K) @ col (K x lt)
                gemm(False, False, <int> Kg, <int> lt, <int> K, 1, &w[grp * Kg, 0],
                     <int> K, buf, <int> lt, 1, yp, <int> L)


# --------------------------------------------------------------------------
# Backward: weight gradient
# --------------------------------------------------------------------------

def conv2d_backward_weight(const floating[:, :, :, ::1] x,    # in
                           const floating[:, :, ::1] gy,      # in, layout of y
                           floating[:, ::1] gw,               # out (C_out, K)
                           floating[:, ::1] partial,          # scratch (P, C_out*K)
                           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                           Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t groups,
                           bint channels_last,
                           floating[:, ::1] ws, Py_ssize_t tile, int num_threads):
    """gw = sum over samples and tiles of dY_tile @ col_tile^T.

    The (sample, tile) items are split into P = partial.shape[0] contiguous
    buckets, a fixed function of the shape; each bucket sums its items in
    order into its own partial, and the partials are then added in bucket
    order.  The result is therefore the same for any number of threads.
    With P == 1 the single bucket accumulates straight into gw.
    """
    cdef Geom g = _conv_geom(x.shape, channels_last, groups, kh, kw, sh, sw, ph, pw,
                             dh, dw, Ho, Wo)
    cdef Py_ssize_t N = x.shape[0], C = g.cstride, H = g.H, W = g.W
    cdef Py_ssize_t C_out = gw.shape[0], K = gw.shape[1]
    cdef Py_ssize_t Cg = g.C, Kg = C_out // groups
    cdef Py_ssize_t L = Ho * Wo
    cdef Py_ssize_t ntiles = (L + tile - 1) // tile
    cdef Py_ssize_t nitems = N * ntiles
    cdef Py_ssize_t P = partial.shape[0] if partial.shape[0] > 1 else 1
    cdef Py_ssize_t bucket, item, n, grp, t, l0, l1, lt, e, q
    cdef floating* buf = NULL
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
                    _to_col(_plane(&x[0, 0, 0, 0], n, grp * Cg, C, H, W, channels_last), &g, l0, l1, buf,
                            channels_last)
                    if channels_last:
                        # dW_g (Kg x K) += dY^T (Kg x lt) @ col (lt x K)
                        gemm(True, False, <int> Kg, <int> K, <int> lt, 1,
                             &gy[n, l0, grp * Kg], <int> C_out, buf, <int> K, 1,
                             dst + grp * Kg * K, <int> K)
                    else:
                        # dW_g (Kg x K) += dY (Kg x lt) @ col^T (lt x K)
                        gemm(False, True, <int> Kg, <int> K, <int> lt, 1,
                             &gy[n, grp * Kg, l0], <int> L, buf, <int> lt, 1,
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
# Backward: input gradient
# --------------------------------------------------------------------------

cdef void _input_grad_tile(const floating* gy_tile, Py_ssize_t ld_gy,
                           const floating* w_g, Py_ssize_t Kg, Py_ssize_t K,
                           floating* gx_plane, const Geom* g,
                           Py_ssize_t l0, Py_ssize_t l1, floating* buf,
                           bint channels_last) noexcept nogil:
    cdef Py_ssize_t lt = l1 - l0
    if channels_last:
        # dcol (lt x K) = dY (lt x Kg) @ W_g (Kg x K)
        gemm(False, False, <int> lt, <int> K, <int> Kg, 1, gy_tile, <int> ld_gy,
             w_g, <int> K, 0, buf, <int> K)
    else:
        # dcol (K x lt) = W_g^T (K x Kg) @ dY (Kg x lt)
        gemm(True, False, <int> K, <int> lt, <int> Kg, 1, w_g, <int> K,
             gy_tile, <int> ld_gy, 0, buf, <int> lt)
    _from_col(gx_plane, g, l0, l1, buf, channels_last)


def conv2d_backward_input(const floating[:, :, ::1] gy,     # in, layout of y
                          const floating[:, ::1] w,         # in (C_out, K)
                          floating[:, :, :, ::1] gx,        # out, zero-filled
                          Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                          Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                          Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t groups,
                          bint channels_last,
                          floating[:, ::1] ws, Py_ssize_t tile, int num_threads):
    """gx = col2im(W^T @ dY), tile by tile.

    Tiles scatter into overlapping input rows, so two tiles of one
    (sample, group) never run at once unless their rows are disjoint.  When
    tiles are whole bands of output rows whose footprints only overlap their
    neighbours', even bands run in parallel, then odd bands (the order in
    which a pixel receives its sums is fixed, so results do not depend on the
    thread count).  Otherwise each (sample, group) walks its tiles in order.
    """
    cdef Geom g = _conv_geom(gx.shape, channels_last, groups, kh, kw, sh, sw, ph, pw,
                             dh, dw, Ho, Wo)
    cdef Py_ssize_t N = gx.shape[0], C = g.cstride, H = g.H, W = g.W
    cdef Py_ssize_t C_out = w.shape[0], K = w.shape[1]
    cdef Py_ssize_t Cg = g.C, Kg = C_out // groups
    cdef Py_ssize_t L = Ho * Wo
    cdef Py_ssize_t ntiles = (L + tile - 1) // tile
    cdef Py_ssize_t rows = tile // Wo
    cdef bint banded = (ntiles > 1 and tile % Wo == 0
                        and (rows + 1) * sh > (kh - 1) * dh)
    cdef Py_ssize_t phase, nb, item, n, grp, t, l0, l1
    cdef Py_ssize_t ld_gy = C_out if channels_last else L
    cdef floating* buf = NULL
    cdef const floating* gyp
    if N == 0:
        return
    if banded:
        for phase in range(2):
            nb = (ntiles - phase + 1) // 2
            with nogil, parallel(num_threads=num_threads):
                buf = &ws[cyconv_thread_num(), 0]
                for item in prange(N * groups * nb, schedule="static"):
                    n = item // (groups * nb)
                    grp = (item // nb) % groups
                    t = 2 * (item % nb) + phase
                    l0 = t * tile
                    l1 = min(L, l0 + tile)
                    gyp = &gy[n, l0, grp * Kg] if channels_last else &gy[n, grp * Kg, l0]
                    _input_grad_tile(gyp, ld_gy, &w[grp * Kg, 0], Kg, K,
                                     _plane(&gx[0, 0, 0, 0], n, grp * Cg, C, H, W, channels_last), &g,
                                     l0, l1, buf, channels_last)
    else:
        with nogil, parallel(num_threads=num_threads):
            buf = &ws[cyconv_thread_num(), 0]
            for item in prange(N * groups, schedule="static"):
                n = item // groups
                grp = item % groups
                for t in range(ntiles):
                    l0 = t * tile
                    l1 = min(L, l0 + tile)
                    gyp = &gy[n, l0, grp * Kg] if channels_last else &gy[n, grp * Kg, l0]
                    _input_grad_tile(gyp, ld_gy, &w[grp * Kg, 0], Kg, K,
                                     _plane(&gx[0, 0, 0, 0], n, grp * Cg, C, H, W, channels_last), &g,
                                     l0, l1, buf, channels_last)


# --------------------------------------------------------------------------
# Public im2col / col2im (whole matrices, no GEMM)
# --------------------------------------------------------------------------

def im2col(const floating[:, :, :, ::1] x,     # in
           floating[:, :, ::1] col,            # out: (N, C*kh*kw, L) or (N, L, kh*kw*C)
           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t Ho, Py_ssize_t Wo, bint channels_last, int num_threads):
    _whole(x, col, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, channels_last,
           num_threads, True)


def col2im(floating[:, :, :, ::1] x,           # out, zero-filled
           const floating[:, :, ::1] col,      # in
           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t Ho, Py_ssize_t Wo, bint channels_last, int num_threads):
    _whole(x, col, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, channels_last,
           num_threads, False)


cdef void _whole(const floating[:, :, :, ::1] x, const floating[:, :, ::1] col,
                 Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                 Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                 Py_ssize_t Ho, Py_ssize_t Wo, bint channels_last, int num_threads,
                 bint to_col) noexcept:
    """Whole-matrix transfer.  Channels first: one item per (n, c) plane (its
    rows of col are its own).  Channels last: im2col splits each sample into
    row blocks of col; col2im (overlapping scatter) takes one item per sample."""
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t C = x.shape[3] if channels_last else x.shape[1]
    # channels last moves every channel of a pixel at once, channels first one plane
    cdef Geom g = _conv_geom(x.shape, channels_last, 1 if channels_last else max(C, 1),
                             kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)
    cdef Py_ssize_t L = Ho * Wo, kk = kh * kw
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
            _transfer_cl(<floating*> &x[n, 0, 0, 0], &g, l0, l1,
                         <floating*> &col[n, l0, 0], to_col)
    else:
        for item in prange(N * C, nogil=True, schedule="static",
                           num_threads=num_threads):
            n = item // C
            c = item % C
            _transfer_cf(<floating*> &x[n, c, 0, 0], &g, 0, L,
                         <floating*> &col[n, c * kk, 0], to_col)
