"""Slow, obviously-correct reference implementations: the oracle for every kernel.

Written from the definitions with explicit loops over output positions and
explicit index maps for padding; channels first, float64 throughout.  They
share no code with cyconv.
"""
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
