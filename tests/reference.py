"""Slow, obviously-correct reference implementations: the oracle for every kernel.

Written from the definitions with explicit loops over output positions and
explicit index maps for padding; channels first, float64 throughout.  They
share no code with cyconv.
"""
import itertools

import numpy as np


def pad_index(q, n, mode):
    """Source index in [0, n) of padded coordinate q (q may be < 0 or >= n),
    or None for zero padding outside the input."""
    if 0 <= q < n:
        return q
    if mode == "zeros":
        return None
    if mode == "reflect":      # mirror without repeating the edge
        return -q if q < 0 else 2 * (n - 1) - q
    if mode == "replicate":    # repeat the edge
        return 0 if q < 0 else n - 1
    if mode == "circular":     # wrap around
        return q % n
    raise ValueError(mode)


def padded_input(x, pads, mode="zeros"):
    """x (N, C, H, W) padded by pads ((top, bottom), (left, right))."""
    N, C, H, W = x.shape
    (t, b), (l, r) = pads
    out = np.zeros((N, C, H + t + b, W + l + r))
    for i in range(H + t + b):
        si = pad_index(i - t, H, mode)
        for j in range(W + l + r):
            sj = pad_index(j - l, W, mode)
            if si is not None and sj is not None:
                out[:, :, i, j] = x[:, :, si, sj]
    return out


def unpad_gradient(gp, shape, pads, mode="zeros"):
    """Adjoint of padded_input: each padded position's gradient goes to its source."""
    N, C, H, W = shape
    (t, b), (l, r) = pads
    g = np.zeros(shape)
    for i in range(gp.shape[2]):
        si = pad_index(i - t, H, mode)
        for j in range(gp.shape[3]):
            sj = pad_index(j - l, W, mode)
            if si is not None and sj is not None:
                g[:, :, si, sj] += gp[:, :, i, j]
    return g


def out_size(n, k, s, d, before, after):
    return (n + before + after - d * (k - 1) - 1) // s + 1


def conv2d(x, w, b=None, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1),
           groups=1, mode="zeros"):
    """y[n, k, p, q] = b[k] + sum_{c, i, j} xpad[n, g*Cg + c, p*sh + i*dh, q*sw + j*dw]
    * w[k, c, i, j], where g is the group of output channel k."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, C, H, W = x.shape
    K, Cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    xp = padded_input(x, pads, mode)
    Ho = out_size(H, kh, sh, dh, *pads[0])
    Wo = out_size(W, kw, sw, dw, *pads[1])
    Kg = K // groups
    y = np.zeros((N, K, Ho, Wo))
    for n in range(N):
        for p in range(Ho):
            for q in range(Wo):
                for k in range(K):
                    g = k // Kg
                    patch = xp[n, g * Cg:(g + 1) * Cg,
                               p * sh:p * sh + dh * (kh - 1) + 1:dh,
                               q * sw:q * sw + dw * (kw - 1) + 1:dw]
                    y[n, k, p, q] = np.sum(patch * w[k])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def conv2d_backward(gy, x, w, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1),
                    groups=1, mode="zeros"):
    """Gradients of conv2d by the chain rule, scattering each output position's
    gradient onto the inputs and weights that produced it."""
    gy = np.asarray(gy, np.float64)
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, C, H, W = x.shape
    K, Cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    xp = padded_input(x, pads, mode)
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    Kg = K // groups
    for n in range(N):
        for p in range(gy.shape[2]):
            for q in range(gy.shape[3]):
                for k in range(K):
                    g = k // Kg
                    sl = (n, slice(g * Cg, (g + 1) * Cg),
                          slice(p * sh, p * sh + dh * (kh - 1) + 1, dh),
                          slice(q * sw, q * sw + dw * (kw - 1) + 1, dw))
                    gxp[sl] += gy[n, k, p, q] * w[k]
                    gw[k] += gy[n, k, p, q] * xp[sl]
    gx = unpad_gradient(gxp, x.shape, pads, mode)
    return gx, gw, gy.sum(axis=(0, 2, 3))


def im2col(x, kernel, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1)):
    """cols[n, c*kh*kw + i*kw + j, p*Wo + q] = xpad[n, c, p*sh + i*dh, q*sw + j*dw]."""
    x = np.asarray(x, np.float64)
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    xp = padded_input(x, pads)
    Ho = out_size(H, kh, sh, dh, *pads[0])
    Wo = out_size(W, kw, sw, dw, *pads[1])
    cols = np.zeros((N, C * kh * kw, Ho * Wo))
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                for p in range(Ho):
                    for q in range(Wo):
                        cols[:, (c * kh + i) * kw + j, p * Wo + q] = \
                            xp[:, c, p * sh + i * dh, q * sw + j * dw]
    return cols


def col2im(cols, size, kernel, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1)):
    """The adjoint of im2col: every column entry is added back to its pixel."""
    cols = np.asarray(cols, np.float64)
    (H, W), (kh, kw), (sh, sw), (dh, dw) = size, kernel, stride, dilation
    N, C = cols.shape[0], cols.shape[1] // (kh * kw)
    Ho = out_size(H, kh, sh, dh, *pads[0])
    Wo = out_size(W, kw, sw, dw, *pads[1])
    (t, _), (l, _) = pads
    x = np.zeros((N, C, H, W))
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                for p in range(Ho):
                    for q in range(Wo):
                        hi, wi = p * sh + i * dh - t, q * sw + j * dw - l
                        if 0 <= hi < H and 0 <= wi < W:
                            x[:, c, hi, wi] += cols[:, (c * kh + i) * kw + j, p * Wo + q]
    return x


def same_pads(size, kernel, stride, dilation):
    """TensorFlow SAME: out = ceil(size / stride), odd padding unit after."""
    pads = []
    for n, k, s, d in zip(size, kernel, stride, dilation):
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


# --------------------------------------------------------------------------
# Pooling (channels first, any number of spatial dims)
# --------------------------------------------------------------------------

def pool_out_size(n, k, s, d, before, after, ceil_mode=False):
    """PyTorch's rule; with ceil_mode a last window starting in the end
    padding is dropped."""
    span = n + before + after - d * (k - 1) - 1
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= n + before:
        out -= 1
    return out


def _window_taps(o, k, s, d, before):
    return [o * s - before + i * d for i in range(k)]


def pool(x, op, kernel, stride, pads, dilation, ceil_mode=False, count_include_pad=True,
         divisor_override=None, norm=2.0):
    """op 'max' -> (values, indices), 'avg' or 'lp' -> values.  Windows list
    their taps; taps outside the input are padding (skipped by max and sums,
    counted by the average's divisor when count_include_pad and inside the
    padded extent)."""
    x = np.asarray(x, np.float64)
    N, C, *spatial = x.shape
    nd = len(spatial)
    outs = [pool_out_size(spatial[i], kernel[i], stride[i], dilation[i], *pads[i],
                          ceil_mode) for i in range(nd)]
    y = np.zeros((N, C, *outs))
    idx = np.zeros((N, C, *outs), np.int64)
    for o in itertools.product(*[range(v) for v in outs]):
        taps = [_window_taps(o[i], kernel[i], stride[i], dilation[i], pads[i][0])
                for i in range(nd)]
        inside = [[t for t in taps[i] if 0 <= t < spatial[i]] for i in range(nd)]
        padded = [[t for t in taps[i] if -pads[i][0] <= t < spatial[i] + pads[i][1]]
                  for i in range(nd)]
        for n in range(N):
            for c in range(C):
                if op == "max":
                    best, where = -np.inf, None
                    for p in itertools.product(*inside):
                        v = x[(n, c, *p)]
                        if where is None:
                            where = p
                        if v > best or np.isnan(v):
                            best, where = v, p
                    y[(n, c, *o)] = best
                    idx[(n, c, *o)] = np.ravel_multi_index(where, spatial)
                else:
                    vals = [x[(n, c, *p)] for p in itertools.product(*inside)]
                    if op == "avg":
                        if divisor_override is not None:
                            div = divisor_override
                        elif count_include_pad:
                            div = np.prod([len(t) for t in padded])
                        else:
                            div = np.prod([len(t) for t in inside])
                        y[(n, c, *o)] = np.sum(vals) / div
                    else:
                        y[(n, c, *o)] = np.sum(np.power(vals, norm)) ** (1.0 / norm)
    return (y, idx) if op == "max" else y


def adaptive_pool(x, out_size, op):
    """Window o of a dim of n covers [floor(o*n/out), ceil((o+1)*n/out))."""
    x = np.asarray(x, np.float64)
    N, C, *spatial = x.shape
    y = np.zeros((N, C, *out_size))
    idx = np.zeros((N, C, *out_size), np.int64)
    for o in itertools.product(*[range(v) for v in out_size]):
        sl = tuple(slice((o[i] * spatial[i]) // out_size[i],
                         -((-(o[i] + 1) * spatial[i]) // out_size[i]))
                   for i in range(len(spatial)))
        for n in range(N):
            for c in range(C):
                win = x[(n, c, *sl)]
                if op == "avg":
                    y[(n, c, *o)] = win.mean()
                else:
                    flat = int(np.argmax(win))  # first maximum
                    if np.isnan(win).any():
                        flat = int(np.flatnonzero(np.isnan(win.ravel()))[-1])
                    local = np.unravel_index(flat, win.shape)
                    y[(n, c, *o)] = win[local]
                    idx[(n, c, *o)] = np.ravel_multi_index(
                        tuple(s.start + v for s, v in zip(sl, local)), spatial)
    return (y, idx) if op == "max" else y


def max_pool_backward(gy, idx, input_shape):
    """Each output's gradient goes to the input position its index names."""
    gx = np.zeros(input_shape)
    N, C = input_shape[:2]
    for n in range(N):
        for c in range(C):
            plane = gx[n, c].reshape(-1)
            for g, i in zip(np.asarray(gy)[n, c].reshape(-1), np.asarray(idx)[n, c].reshape(-1)):
                plane[i] += g
    return gx


def avg_pool_backward(gy, input_shape, kernel, stride, pads, dilation, ceil_mode=False,
                      count_include_pad=True, divisor_override=None):
    """Each output's gradient, divided by its window's divisor, goes to every
    tap of the window that lies in the input."""
    gy = np.asarray(gy, np.float64)
    N, C, *spatial = input_shape
    nd = len(spatial)
    gx = np.zeros(input_shape)
    for o in np.ndindex(*gy.shape[2:]):
        taps = [_window_taps(o[i], kernel[i], stride[i], dilation[i], pads[i][0])
                for i in range(nd)]
        inside = [[t for t in taps[i] if 0 <= t < spatial[i]] for i in range(nd)]
        padded = [[t for t in taps[i] if -pads[i][0] <= t < spatial[i] + pads[i][1]]
                  for i in range(nd)]
        if divisor_override is not None:
            div = divisor_override
        elif count_include_pad:
            div = np.prod([len(t) for t in padded])
        else:
            div = np.prod([len(t) for t in inside])
        for p in itertools.product(*inside):
            gx[(slice(None), slice(None), *p)] += gy[(slice(None), slice(None), *o)] / div
    return gx


# --------------------------------------------------------------------------
# N-d and transposed convolution
# --------------------------------------------------------------------------

def padded_nd(x, pads, mode="zeros"):
    """x (N, C, *spatial) padded per dim by (before, after) pairs."""
    N, C, *spatial = x.shape
    out_shape = [n + b + a for n, (b, a) in zip(spatial, pads)]
    out = np.zeros((N, C, *out_shape))
    for pos in np.ndindex(*out_shape):
        src = [pad_index(q - b, n, mode) for q, (b, _), n in zip(pos, pads, spatial)]
        if None not in src:
            out[(slice(None), slice(None), *pos)] = x[(slice(None), slice(None), *src)]
    return out


def unpad_nd(gp, shape, pads, mode="zeros"):
    """Adjoint of padded_nd."""
    N, C, *spatial = shape
    g = np.zeros(shape)
    for pos in np.ndindex(*gp.shape[2:]):
        src = [pad_index(q - b, n, mode) for q, (b, _), n in zip(pos, pads, spatial)]
        if None not in src:
            g[(slice(None), slice(None), *src)] += gp[(slice(None), slice(None), *pos)]
    return g


def conv_nd(x, w, b, stride, pads, dilation, groups=1, mode="zeros"):
    """y[n, k, o] = b[k] + sum_{c, t} xpad[n, g*Cg + c, o*s + t*d] * w[k, c, t]."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    N, C, *spatial = x.shape
    K, Cg, *kernel = w.shape
    xp = padded_nd(x, pads, mode)
    out = [out_size(n, k, s, d, *p) for n, k, s, d, p in
           zip(spatial, kernel, stride, dilation, pads)]
    Kg = K // groups
    y = np.zeros((N, K, *out))
    for o in np.ndindex(*out):
        win = tuple(slice(oo * s, oo * s + d * (k - 1) + 1, d)
                    for oo, s, d, k in zip(o, stride, dilation, kernel))
        for k in range(K):
            g = k // Kg
            patch = xp[(slice(None), slice(g * Cg, (g + 1) * Cg), *win)]
            y[(slice(None), k, *o)] = np.tensordot(patch, w[k], axes=w[k].ndim)
    if b is not None:
        y += np.asarray(b, np.float64).reshape(1, K, *([1] * len(spatial)))
    return y


def conv_nd_backward(gy, x, w, stride, pads, dilation, groups=1, mode="zeros"):
    """Chain rule, output position by output position."""
    gy, x, w = (np.asarray(a, np.float64) for a in (gy, x, w))
    K, Cg, *kernel = w.shape
    xp = padded_nd(x, pads, mode)
    gxp, gw = np.zeros_like(xp), np.zeros_like(w)
    Kg = K // groups
    for o in np.ndindex(*gy.shape[2:]):
        win = tuple(slice(oo * s, oo * s + d * (k - 1) + 1, d)
                    for oo, s, d, k in zip(o, stride, dilation, kernel))
        for k in range(K):
            g = k // Kg
            sl = (slice(None), slice(g * Cg, (g + 1) * Cg), *win)
            coeff = gy[(slice(None), k, *o)].reshape(-1, *([1] * (1 + len(kernel))))
            gxp[sl] += coeff * w[k]
            gw[k] += np.sum(coeff * xp[sl], axis=0)
    axes = tuple(i for i in range(gy.ndim) if i != 1)
    return unpad_nd(gxp, x.shape, pads, mode), gw, gy.sum(axis=axes)


def conv_transpose_nd(x, w, b, stride, padding, output_padding, groups, dilation):
    """PyTorch's definition, as a scatter: each input element adds
    x[n, c, i] * w[c, o, t] to output position i*s - p + t*d of channel
    g*Cog + o (positions outside [0, out) are cropped)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    N, C, *spatial = x.shape
    _, Cog, *kernel = w.shape
    out = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in
           zip(spatial, stride, padding, dilation, kernel, output_padding)]
    y = np.zeros((N, Cog * groups, *out))
    Cg = C // groups
    for i in np.ndindex(*spatial):
        for c in range(C):
            g = c // Cg
            for t in np.ndindex(*kernel):
                pos = [ii * s - p + tt * d for ii, s, p, tt, d in
                       zip(i, stride, padding, t, dilation)]
                if all(0 <= q < n for q, n in zip(pos, out)):
                    y[(slice(None), slice(g * Cog, (g + 1) * Cog), *pos)] += \
                        x[(slice(None), c, *i)][:, None] * w[(c, slice(None), *t)][None, :]
    if b is not None:
        y += np.asarray(b, np.float64).reshape(1, -1, *([1] * len(spatial)))
    return y


def conv_transpose_nd_backward(gy, x, w, stride, padding, output_padding, groups, dilation):
    """Gradients of the scatter above, element by element."""
    gy, x, w = (np.asarray(a, np.float64) for a in (gy, x, w))
    N, C, *spatial = x.shape
    _, Cog, *kernel = w.shape
    out = gy.shape[2:]
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    Cg = C // groups
    for i in np.ndindex(*spatial):
        for c in range(C):
            g = c // Cg
            for t in np.ndindex(*kernel):
                pos = [ii * s - p + tt * d for ii, s, p, tt, d in
                       zip(i, stride, padding, t, dilation)]
                if all(0 <= q < n for q, n in zip(pos, out)):
                    go = gy[(slice(None), slice(g * Cog, (g + 1) * Cog), *pos)]  # (N, Cog)
                    gx[(slice(None), c, *i)] += go @ w[(c, slice(None), *t)]
                    gw[(c, slice(None), *t)] += x[(slice(None), c, *i)] @ go
    axes = tuple(a for a in range(gy.ndim) if a != 1)
    return gx, gw, gy.sum(axis=axes)


def locally_connected2d(x, w, b, stride, pads, dilation):
    """y[n, k, p, q] = b[k, p, q] + sum_{c,i,j} xpad[n, c, p*sh + i*dh, q*sw + j*dw]
    * w[p, q, k, c, i, j]: a convolution whose filters differ at every position."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    Ho, Wo, K, C, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    xp = padded_input(x, pads)
    y = np.zeros((x.shape[0], K, Ho, Wo))
    for p in range(Ho):
        for q in range(Wo):
            patch = xp[:, :, p * sh:p * sh + dh * (kh - 1) + 1:dh,
                       q * sw:q * sw + dw * (kw - 1) + 1:dw]
            y[:, :, p, q] = np.tensordot(patch, w[p, q], axes=([1, 2, 3], [1, 2, 3]))
    if b is not None:
        y += np.asarray(b, np.float64)[None]
    return y


def locally_connected2d_backward(gy, x, w, stride, pads, dilation):
    gy, x, w = (np.asarray(a, np.float64) for a in (gy, x, w))
    Ho, Wo, K, C, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    xp = padded_input(x, pads)
    gxp, gw = np.zeros_like(xp), np.zeros_like(w)
    for p in range(Ho):
        for q in range(Wo):
            sl = (slice(None), slice(None), slice(p * sh, p * sh + dh * (kh - 1) + 1, dh),
                  slice(q * sw, q * sw + dw * (kw - 1) + 1, dw))
            gxp[sl] += np.tensordot(gy[:, :, p, q], w[p, q], axes=([1], [0]))
            gw[p, q] = np.tensordot(gy[:, :, p, q], xp[sl], axes=([0], [0]))
    return unpad_gradient(gxp, x.shape, pads), gw, gy.sum(axis=0)
