"""Public convolution ops, 1-D to 3-D, plain and transposed.

Each op validates through cyconv._params, chooses the dtype, makes its inputs
contiguous once and calls one kernel of cyconv._kernels._conv.  A transposed
convolution is the adjoint of a convolution: its forward pass is that
convolution's input gradient, and its input gradient is that convolution's
forward pass, so both reuse the same kernels.
"""
import math
from collections import namedtuple
from dataclasses import replace

import numpy as np

from . import _params as P
from . import _prepared, _workspace
from . import _kernels
from ._kernels import conv as _conv
from ._threads import blas_single_threaded, kernel_threads

__all__ = ["ConvGrads"]
__all__ += [f"conv{nd}d" for nd in (1, 2, 3)]
__all__ += [f"conv{nd}d_backward" for nd in (1, 2, 3)]
__all__ += [f"conv_transpose{nd}d" for nd in (1, 2, 3)]
__all__ += [f"conv_transpose{nd}d_backward" for nd in (1, 2, 3)]

ConvGrads = namedtuple("ConvGrads", ["input", "weight", "bias"])
ConvGrads.__doc__ = ("Gradients of a convolution; an entry not named in "
                     "``needs`` is None.")

_NP_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


# --------------------------------------------------------------------------
# Pieces shared by every convolution
# --------------------------------------------------------------------------

def _spatial_axes(geo):
    return tuple(range(1, 1 + geo.nd)) if geo.channels_last else tuple(range(2, 2 + geo.nd))


def _kernel_input(geo, x, dtype):
    """The input the kernel reads, and the zero padding the kernel applies.

    Zero padding is done by the kernel itself; the other padding modes are
    materialised here with numpy.pad (the result is input-sized)."""
    x = P.contiguous(x, dtype)
    if geo.padding_mode == "zeros":
        return x, geo.pads
    width = [(0, 0)] * x.ndim
    for axis, pair in zip(_spatial_axes(geo), geo.pads):
        width[axis] = pair
    return np.pad(x, width, mode=_NP_PAD_MODE[geo.padding_mode]), ((0, 0),) * geo.nd


def _pad_adjoint(g, geo):
    """Adjoint of numpy.pad in ``geo.padding_mode``: fold the gradient of the
    padded input back onto the input (padding taps add to their source)."""
    mode = geo.padding_mode
    for axis, n, (before, after) in zip(_spatial_axes(geo), geo.spatial, geo.pads):
        core = [slice(None)] * g.ndim
        core[axis] = slice(before, before + n)
        res = g[tuple(core)].copy()
        for p in list(range(before)) + list(range(before + n, before + n + after)):
            q = p - before
            if mode == "reflect":
                src = -q if q < 0 else 2 * (n - 1) - q
            elif mode == "replicate":
                src = min(max(q, 0), n - 1)
            else:  # circular
                src = q % n
            dst = [slice(None)] * g.ndim
            dst[axis] = src
            pick = [slice(None)] * g.ndim
            pick[axis] = p
            res[tuple(dst)] += g[tuple(pick)]
        g = res
    return np.ascontiguousarray(g)


def _weight_matrix(weight, dtype, channels_last):
    """(C_out, K) weights in the column order of the layout's im2col."""
    w = weight.transpose(0, *range(2, weight.ndim), 1) if channels_last else weight
    return np.ascontiguousarray(w, dtype=dtype).reshape(weight.shape[0], -1)


def _weight_from_matrix(gw2, weight_shape, channels_last):
    if not channels_last:
        return gw2.reshape(weight_shape)
    nd = len(weight_shape) - 2
    g = gw2.reshape(weight_shape[0], *weight_shape[2:], weight_shape[1])
    return np.ascontiguousarray(g.transpose(0, nd + 1, *range(1, nd + 1)))


def _flat(arr, geo, channels):
    """An activation as (N, C, L) or (N, L, C)."""
    L = math.prod(arr.shape[1:-1] if geo.channels_last else arr.shape[2:])
    return arr.reshape((arr.shape[0], L, channels) if geo.channels_last
                       else (arr.shape[0], channels, L))


def _in_place(geo, pads):
    """Whether the column matrix is the input itself (every kernel extent 1,
    stride 1, no padding): the kernels read it in place, with no im2col."""
    return (all(k == 1 for k in geo.kernel) and all(s == 1 for s in geo.stride)
            and all(p == 0 for pair in pads for p in pair))


def _launch(geo, pads):
    return (P.launch_geometry(geo.kernel, geo.stride, pads, geo.dilation, geo.out_spatial),
            geo.groups, geo.channels_last)


# Path choice (forward).  im2col + GEMM needs enough input channels per group
# (the GEMM's inner dimension is C_in / groups * prod(kernel), its M is
# C_out / groups) to amortise building the column matrix.  With one input
# channel per group (depthwise and channel-multiplier convolutions) the GEMM
# degenerates to a dot product per output, and a direct kernel is used for
# channels-first data: grouped_forward (register blocks of 4 output rows) in
# 1-D and 2-D, direct_forward in 3-D.  Measured at 2 threads (AVX-512):
# depthwise_3x3 4.8 ms with im2col, 3.6 ms with direct_forward, 2.9 ms with
# grouped_forward.


def _uses_direct(geo):
    # groups > 1: a plain convolution of a 1-channel input keeps im2col (C_out
    # output channels share each column there, and the GEMM wins)
    return not geo.channels_last and geo.groups > 1 and geo.C_in == geo.groups


# Winograd F(2x2, 3x3) (see _conv_impl.pxi) does 16 multiplications per 2x2
# output tile and channel pair where im2col + GEMM does 36; the transforms
# around its 16 GEMMs cost O(C) per tile, so it pays once both channel counts
# are a few dozen.  It is used for 2-D channels-first convolutions with a 3x3
# kernel, stride 1, any dilation and padding, groups 1,
# WINOGRAD_MIN_CHANNELS <= C_in, C_out, at least WINOGRAD_MIN_OUTPUTS output
# pixels per channel, and at least WINOGRAD_MIN_TILES tiles per work item
# inside the workspace budget.  Measured at 1 thread (AVX-512), ms, F(2x2) /
# F(4x4) / im2col: 64 channels at 56x56 14.7 / 10.3 / 26.6, at 28x28
# 6.9 / 5.0 / 7.8, at 14x14 2.9 / 3.3 / 2.6; 256 channels at 14x14
# 32.2 / 46.3 / 23.6.  Its rounding differs
# from the direct sum's by a few units in the last place (the transforms add
# and subtract inputs and products).  Inputs or weights with inf or NaN fall
# back to im2col, which propagates them as the definition does.
WINOGRAD_MIN_CHANNELS = 16
WINOGRAD_MIN_OUTPUTS = 400   # 14 x 14 outputs: im2col + GEMM measured faster
WINOGRAD_MIN_TILES = 32
WINOGRAD_MAX_DILATION = 16   # the kernel's row chunks hold 2 * 31 + 2 columns per phase

def _uses_winograd(geo, dtype):
    return (geo.nd == 2 and not geo.channels_last and geo.groups == 1
            and tuple(geo.kernel) == (3, 3) and tuple(geo.stride) == (1, 1)
            and max(geo.dilation) <= WINOGRAD_MAX_DILATION
            and min(geo.C_in, geo.C_out) >= WINOGRAD_MIN_CHANNELS
            and math.prod(geo.out_spatial) >= WINOGRAD_MIN_OUTPUTS
            and 16 * (geo.C_in + geo.C_out) * np.dtype(dtype).itemsize * WINOGRAD_MIN_TILES
            <= _workspace.TILE_BYTES)


# F(4x4, 3x3) does 36 products per 4x4 tile (2.25 per output, F(2x2, 3x3)
# does 4) and its transforms about twice as many additions per output.  It
# is used where both channel counts reach WINOGRAD4_MIN_CHANNELS and its 36
# transformed weight matrices fit WINOGRAD4_MAX_WEIGHT_BYTES (every work
# item streams all of them; beyond that F(2x2, 3x3) measured faster), with
# work items of up to _workspace.WINOGRAD4_BYTES (its 36 GEMMs per item
# need more tiles than F(2x2)'s 16 to run at the GEMM's speed).
WINOGRAD4_MIN_CHANNELS = 16
WINOGRAD4_MAX_WEIGHT_BYTES = 4 << 20
_WINO4_MAX_TILES = 256   # W4MAX of _conv_impl.pxi
_WINO_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
_WINO_G4 = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                     [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])


def _uses_winograd4(geo, itemsize):
    return (min(geo.C_in, geo.C_out) >= WINOGRAD4_MIN_CHANNELS
            and 36 * geo.C_in * geo.C_out * itemsize <= WINOGRAD4_MAX_WEIGHT_BYTES)


def _winograd_tiling(geo, pads, dtype, N, m=2):
    """(geo array, work items, tiles per item) of the Winograd F(m x m, 3x3)
    kernels for N samples: R tile rows x Bc column blocks per item, a
    function of the shape only."""
    (ph, _), (pw, _) = pads
    dh, dw = geo.dilation
    Ho, Wo = geo.out_spatial
    nbh, nbw = -(-Ho // (m * dh)), -(-Wo // (m * dw))
    T = _workspace.winograd_tiles(geo.C_in, geo.C_out, np.dtype(dtype).itemsize, (m + 2) ** 2)
    spare = 1 if m == 4 else 0   # F(4x4): one spare tile per run of Bc (see _conv_impl.pxi)
    if m == 4:
        T = min(T, _WINO4_MAX_TILES)
    if (nbw + spare) * dw <= T:
        Bc, R = nbw, max(1, min(nbh * dh, T // ((nbw + spare) * dw)))
    else:
        Bc, R = max(1, T // dw - spare), 1
    items = N * -(-(nbh * dh) // R) * -(-nbw // Bc)
    return (np.array((ph, pw, dh, dw, Ho, Wo, R, Bc, m), np.intp), items,
            R * dw * (Bc + spare))


# The weight gradient's G^T dU G (see _winograd_weight_grad) for every (k, c)
# at once is one GEMM with the Kronecker product of G with itself (16 x 9).
_WINO_KRON2 = np.kron(_WINO_G, _WINO_G)

# The forward transform G w G^T runs in winograd_weights, in double precision,
# WWB input channels of one output channel per work item.  NumPy's einsum over
# the four axes took 1.0-1.3 ms for 64 x 64 weights, serial, at every vgg_3x3
# call; a float64 GEMM with the Kronecker product (float64 copy, matmul,
# rounding copy, BLAS limits) 0.7-0.85 ms within the call, 10% of it at 2
# threads; winograd_weights 0.09 ms at 1 thread, 0.05 ms at 2 (weights in
# cache), 0.11-0.14 ms within the call.
_WINO_GS = {2: _WINO_G, 4: _WINO_G4}
_WINO_WEIGHTS_PER_THREAD = 2048   # (k, c) pairs per thread at least


def _winograd_weights(w, m):
    """(a2, K, C) transformed weights G w G^T of F(m x m, 3x3), in double
    precision, rounded once to w's dtype; None when w holds an inf or NaN."""
    K, C = w.shape[:2]
    G = _WINO_GS[m]
    u = np.empty((G.shape[0] ** 2, K, C), w.dtype)
    bad = _conv.winograd_weights(w.reshape(K, C, 9), G, u,
                                 kernel_threads(-(-K * C // _WINO_WEIGHTS_PER_THREAD)))
    return None if bad else u


def _winograd_plan(geo, pads, w2):
    """(U, pads, m) for winograd_forward, or None where it does not apply
    (weights with inf or NaN included)."""
    if not _uses_winograd(geo, w2.dtype):
        return None
    m = 4 if _uses_winograd4(geo, w2.dtype.itemsize) else 2
    u = _prepared.prepared(("winograd", m), w2.reshape(geo.C_out, geo.C_in, 3, 3),
                           lambda w: _winograd_weights(w, m))
    return None if u is None else (u, pads, m)


def _winograd_block(geo, plan, xk, b, y):
    """Winograd forward of a block of samples; False when it read inf or NaN."""
    u, pads, m = plan
    arr, items, T = _winograd_tiling(geo, pads, u.dtype, xk.shape[0], m)
    n = kernel_threads(items)
    ws = _workspace.scratch("col", (n, u.shape[0] * (geo.C_in + geo.C_out) * T), u.dtype)
    with blas_single_threaded():
        bad = _conv.winograd_forward(xk, u, b,
                                     _flat(y, geo, geo.C_out), arr, ws, n)
    return bad == 0


# The weight gradient of a Winograd-shaped convolution is computed in the
# transformed domain too: dU_j = sum over tiles of (A dy A^T)_j (B^T d B)_j^T
# (16 GEMMs of C_out x C_in per work item, where im2col + GEMM does 9 x 4
# per 2x2 tile), then dW = G^T dU G.  Each of its buckets of partial sums
# holds 16 C_out C_in values, so it is used only where the partial-sum
# budget (_workspace.PARTIAL_BYTES) still allows _WINOGRAD_WEIGHT_MIN_BUCKETS
# buckets, the parallelism of the weight gradient.  Measured at 2 threads
# (AVX-512), medians: vgg_3x3 weight gradient 16.4 ms with im2col + GEMM,
# 12.3 ms (dilated_3x3: 16.0 and 15.4 ms; its dilated rows are gathered).
_WINOGRAD_WEIGHT_MIN_BUCKETS = 4


def _winograd_weight_grad(geo, xk, pads, gy):
    """(C_out, C_in * 9) weight gradient by winograd_backward_weight, or None
    where Winograd does not apply or an input or grad_output value is inf or
    NaN (im2col then propagates it as the definition does)."""
    dtype = gy.dtype
    if not _uses_winograd(geo, dtype):
        return None
    K, C = geo.C_out, geo.C_in
    arr, items, T = _winograd_tiling(geo, pads, dtype, geo.N)
    nb = _workspace.buckets(items, 16 * K * C * dtype.itemsize)
    if nb < min(items, _WINOGRAD_WEIGHT_MIN_BUCKETS):
        return None
    n = kernel_threads(nb)
    ws = _workspace.scratch("col", (n, 16 * (C + K) * T), dtype)
    partial = (_workspace.scratch("partial", (nb, 16 * K * C), dtype) if nb > 1
               else np.empty((1, 1), dtype))
    du = np.empty((16, K, C), dtype)
    with blas_single_threaded():
        bad = _conv.winograd_backward_weight(xk, gy, partial, du, arr, ws, n)
    if bad:
        return None
    with blas_single_threaded():   # gw[(k, c), (a, b)] = sum over i, j of G[i, a] G[j, b] du[i, j, k, c]
        gw = du.reshape(16, K * C).T @ _WINO_KRON2.astype(dtype)
    return gw.reshape(K, C * 9)


def _forward(geo, xk, pads, w2, b, y):
    """y (output layout) = conv of the kernel input xk, with bias b, in blocks
    of samples (see _workspace.sample_blocks)."""
    L = math.prod(geo.out_spatial)
    plan = _winograd_plan(geo, pads, w2)
    for n0, n1 in _workspace.sample_blocks(geo.N, L * geo.C_out * w2.shape[1]):
        if plan is not None and _winograd_block(geo, plan, xk[n0:n1], b, y[n0:n1]):
            continue
        _forward_block(geo, xk[n0:n1], pads, w2, b, y[n0:n1])


# First layers (1 to SMALL_MAX_CHANNELS input channels, groups 1, 1-D or 2-D,
# channels first, at least SMALL_MIN_TAPS taps C_in * prod(kernel)) use
# small_forward: blocks of 4 output channels (3 or 8 in the AVX2 and AVX-512
# float32 builds, below) x 32 output columns accumulated
# in registers over every tap, with no im2col and no GEMM packing.  Measured
# at 2 threads (AVX-512) against im2col + GEMM: alexnet_conv1 14.9 -> 11.4 ms,
# cifar_5x5 5.6 -> 3.3 ms, single_image_large 5.6 -> 2.4 ms; with 9 taps
# (mnist_small) the per-block overhead dominates and im2col stays ahead
# (0.58 against 0.69 ms).
# The register block needs 16 vector registers of 8 or 16 floats: with the
# baseline (SSE2) variant it spills, and the benchmark measured it 2-4x
# slower than im2col + OpenBLAS (which dispatches by CPU itself), so the
# baseline variant keeps im2col.
SMALL_MAX_CHANNELS = 4
SMALL_MIN_TAPS = 16
SMALL_ENABLED = _kernels.VARIANT != "baseline"
# With AVX-512 (32 vector registers), float32 blocks are 8 output channels
# x 32 columns.  Measured at 2 threads, medians, ms, 4 / 8 channels per
# block: cifar_5x5 2.8 / 2.6, 7x7 stride-2 on 3 channels (64 output
# channels) 14.7 / 13.8, single_image_large 3.0 / 3.0.
SMALL_WIDE = _kernels.VARIANT == "avx512"
# With AVX2 (16 vector registers of 8 floats), float32 blocks are 3 output
# channels x 32 columns (12 accumulators; the last block of a row of
# channels takes the 1 or 2 left), not two halves of 4 channels x 16 columns
# (8 accumulators: with the FMA's 4-cycle latency, 2 FMAs per cycle need 8
# in flight, so any stall showed).  Measured at 1 / 2 threads (AVX2 Zen 3),
# medians of 41 interleaved calls, ms, 4 x 16 / 3 x 32: cifar_5x5 4.58 / 4.19
# and 2.52 / 2.38, single_image_large 5.54 / 4.86 and 3.26 / 2.86.  The
# kernel has this block in its AVX2 build only.
SMALL3 = _kernels.VARIANT == "avx2"
_SMALL_BAND_BYTES = 1 << 16   # input rows copied per work item, about


def _uses_small(geo):
    return (SMALL_ENABLED and geo.nd <= 2 and not geo.channels_last and geo.groups == 1
            and geo.C_in <= SMALL_MAX_CHANNELS
            and geo.C_in * math.prod(geo.kernel) >= SMALL_MIN_TAPS)


# Depthwise 2-D convolutions (one input channel per group, channels first)
# with a 3x3 kernel, stride 1 and no column dilation (any padding, any row
# dilation) use depthwise3_forward: two output rows per pass over the
# columns of a zero-padded band, sharing two of their four input rows,
# summed in registers and stored straight into the output, the next work
# item's input prefetched meanwhile.  Measured (AVX-512), medians, ms,
# grouped_forward / depthwise3_forward: depthwise_3x3 (8 x 128 channels,
# 56x56) forward 3.8 / 2.1 at 1 thread, 2.1 / 1.1 at 2 threads; its backward
# (the input gradient is the adjoint depthwise convolution) 4.9 / 3.9 at
# 2 threads.  The prefetch alone: 2.2 -> 1.8 ms at 2 threads.  With a
# variable column offset (column dilation) gcc does not vectorise the loop,
# so column-dilated kernels keep grouped_forward.
DEPTHWISE3_ENABLED = True


def _is_3x3_rows(geo):
    """What depthwise3_forward and single3x3_forward compute: 2-D, channels
    first, a 3x3 kernel, stride 1, no column dilation."""
    return (geo.nd == 2 and not geo.channels_last and tuple(geo.kernel) == (3, 3)
            and tuple(geo.stride) == (1, 1) and geo.dilation[1] == 1)


def _uses_depthwise3(geo):
    return DEPTHWISE3_ENABLED and _is_3x3_rows(geo) and _uses_direct(geo)


def _depthwise3(geo, xk, pads, w2, b, y):
    (pt, _), (pl, _) = pads
    dh = geo.dilation[0]
    Ho, Wo = geo.out_spatial
    plen = Wo + 2
    BH = max(1, min(Ho, _SMALL_BAND_BYTES // (plen * w2.dtype.itemsize) - 2 * dh))
    items = xk.shape[0] * geo.C_out * -(-Ho // BH)
    n = kernel_threads(items)
    ws = _workspace.scratch("col", (n, (BH + 3 * dh) * plen + Wo), w2.dtype)
    _conv.depthwise3_forward(xk, w2, b, _flat(y, geo, geo.C_out),
                             np.array((pt, pl, dh, Ho, Wo, BH), np.intp), ws, n)


# A one-channel input (groups 1) with the same 3x3 kernels, stride 1 and no
# column dilation uses single3x3_forward: the band copied once per work
# item, two output channels per pass over it as one flat array (narrow rows
# would leave most of a per-row vector loop to its scalar remainder), rows
# copied out.  Measured at 2 threads, medians of interleaved calls, ms,
# im2col + GEMM / single3x3_forward: mnist_small (128 x 28x28, 8 channels)
# AVX-512 0.42-0.47 / 0.33-0.43 (three runs); AVX2 0.46 / 0.39; baseline
# 0.59 / 0.57.
SINGLE3X3_ENABLED = True


def _uses_single3x3(geo):
    return SINGLE3X3_ENABLED and _is_3x3_rows(geo) and geo.C_in == 1 and geo.groups == 1


def _single3x3(geo, xk, pads, w2, b, y):
    (pt, _), (pl, _) = pads
    dh = geo.dilation[0]
    Ho, Wo = geo.out_spatial
    P = Wo + 2
    BH = max(1, min(Ho, _SMALL_BAND_BYTES // (3 * P * w2.dtype.itemsize) - dh))
    items = xk.shape[0] * -(-Ho // BH)
    n = kernel_threads(items)
    ws = _workspace.scratch("col", (n, (3 * BH + 2 * dh) * P + 2), w2.dtype)
    _conv.single3x3_forward(xk, w2, b, _flat(y, geo, geo.C_out),
                            np.array((pt, pl, dh, Ho, Wo, BH), np.intp), ws, n)


_BLOCKED_PARALLEL_MIN = 1 << 16   # weights below this many values are packed by one thread


def _blocked_weights(w2, block):
    """(C_out, K) weights as (ceil(C_out / block), K, block), zero padded:
    wb[b, t, o] = w2[b * block + o, t], the vector operand of the register
    blocks of pointwise_forward, packed_forward and band_forward; kept for
    later calls with the same weights (cyconv._prepared)."""
    return _prepared.prepared(("blocked", block), w2, lambda w: _block_weights(w, block))


def _block_weights(w2, block):
    C_out, K = w2.shape
    nb = -(-C_out // block)
    wb = _workspace.scratch("blocked", (nb, K, block), w2.dtype)
    # NumPy's copy of the transposed view took 1.5-1.9 ms, serial, of every
    # resnet_3x3_s2 call (1.2 MB of weights; 20% of the call at 2 threads);
    # block_weights, in pieces of 64 taps of one block, 0.3-0.45 ms within
    # the call (0.06-0.19 ms with the weights in cache).
    items = nb * -(-K // _conv.BLOCK_WEIGHTS_TAPS)   # block_weights' work items
    n = kernel_threads(items) if w2.size >= _BLOCKED_PARALLEL_MIN else 1
    _conv.block_weights(w2, wb, n)
    return wb


# With many taps (C_in * prod(kernel) >= BAND_MIN_TAPS) and at least
# PACKED_MIN_OUT output channels, float32 on AVX-512 or AVX2, the first layer
# runs band_forward instead: the same bands, but register blocks of 8 output
# positions x 32 output channels of packed weights (AVX2: 6 positions x 16
# channels) (small_forward's 32-column blocks waste up to 31 columns per
# row, 9 of 64 in alexnet_conv1's 55-column rows).  Measured at 2 threads,
# medians, ms, small_forward / band_forward: AVX-512 alexnet_conv1 12.7 /
# 10.7, AVX2 19.4 / 15.2; with fewer taps band_forward's per-block cost
# dominates: (AVX-512) cifar_5x5 (75 taps) 2.6 / 2.9, 7x7 stride-2 on 3
# channels (147 taps, 64 output channels) about equal, single_image_large
# 2.9 / 5.1; (AVX2) cifar_5x5 3.5 / 3.5, and 4.6 / 5.4 at 1 thread.
BAND_MIN_TAPS = 256
BAND_ENABLED = _kernels.VARIANT in ("avx2", "avx512")


def _uses_band(geo, dtype):
    return (BAND_ENABLED and np.dtype(dtype).itemsize in _PACKED_ITEMSIZES
            and geo.groups == 1 and geo.C_out >= PACKED_MIN_OUT
            and geo.C_in * math.prod(geo.kernel) >= BAND_MIN_TAPS)


def _banded(geo, xk, pads, w2, b, y, grouped):
    """small_forward (grouped=False) or grouped_forward on a block of samples:
    both copy bands of input rows into per-thread scratch (see
    _conv_impl.pxi) and take tap offsets into that band from here."""
    kh, kw = ((1,) + tuple(geo.kernel))[-2:]
    sh, sw = ((1,) + tuple(geo.stride))[-2:]
    dh, dw = ((1,) + tuple(geo.dilation))[-2:]
    pt, pl = (pair[0] for pair in (((0, 0),) + tuple(pads))[-2:])
    Ho, Wo = ((1,) + tuple(geo.out_spatial))[-2:]
    C, dtype = geo.C_in // geo.groups, w2.dtype
    nq = -(-Wo // 32)
    plen = nq * 32 + (kw - 1) * dw // sw + 1
    rowlen = sw * plen
    BH = max(1, min(Ho, _SMALL_BAND_BYTES // (C * sh * rowlen * dtype.itemsize)))
    if grouped:   # whole blocks of 4 output rows
        BH = -(-BH // 4) * 4
    BR = (BH - 1) * sh + (kh - 1) * dh + 1
    c, i, j = np.meshgrid(np.arange(C), np.arange(kh), np.arange(kw), indexing="ij")
    toff = np.ascontiguousarray(
        (c * BR * rowlen + i * dh * rowlen + (j * dw % sw) * plen + j * dw // sw).ravel(),
        np.intp)
    x4 = xk.reshape(xk.shape[0], geo.C_in, -1, xk.shape[-1])
    items = xk.shape[0] * geo.groups * -(-Ho // BH)
    n = kernel_threads(items)
    ws = _workspace.scratch("col", (n, C * BR * rowlen + _PK * _PQ), dtype)
    arr = (kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, BH)
    if grouped:
        _conv.grouped_forward(x4, w2, b, _flat(y, geo, geo.C_out),
                              np.array(arr + (geo.groups,), np.intp), toff, ws, n)
    elif _uses_band(geo, dtype):
        _conv.band_forward(x4, _blocked_weights(w2, _PQ), b, _flat(y, geo, geo.C_out),
                           np.array(arr, np.intp), toff, ws, n)
    else:
        dco = 4
        if dtype.itemsize == 4:
            dco = 8 if SMALL_WIDE else 3 if SMALL3 else 4
        wpad = np.zeros((-(-geo.C_out // dco) * dco, w2.shape[1]), dtype)
        wpad[:geo.C_out] = w2
        _conv.small_forward(x4, wpad, b, _flat(y, geo, geo.C_out), np.array(arr, np.intp),
                            toff, ws, n, dco)


# Pointwise convolutions (every kernel extent 1, stride 1, no padding, groups
# 1, channels first, float32) with at most POINTWISE_MAX_OUT output and at
# least POINTWISE_MIN_IN input channels use pointwise_forward: y[n] = W @ x[n]
# in register blocks of 8 output channels x 32 columns, the input copied
# block by block (the next block prefetched) instead of BLAS's packing pass,
# which few output channels do not amortise.  Measured at 2 threads
# (AVX-512), medians, ms, GEMM / pointwise_forward / PyTorch:
# pointwise_1x1 (256 -> 64 channels, 28x28, 8 samples) 2.18 / 1.85 / 2.22;
# 64 -> 64 at 56x56 2.39 / 2.13 / 2.21; 128 -> 32 at 28x28 0.62 / 0.54 /
# 0.56; with 128 output channels or 32 input channels the GEMM was as fast
# or faster.  Its register block needs 16 AVX-512 registers (float32): the
# other variants and float64 keep the GEMM.
POINTWISE_MAX_OUT = 64
POINTWISE_MIN_IN = 64
POINTWISE_ENABLED = _kernels.VARIANT == "avx512"
_POINTWISE_ITEMSIZES = (4,)
_POINTWISE_COLS = 256   # columns per work item, a multiple of the kernel's PQ = 32
_PK = 8                 # output channels per register block (PK of _conv_impl.pxi)


def _uses_pointwise(geo, pads, dtype):
    """pads: the padding the kernel applies (none once numpy.pad has made the
    other padding modes' input)."""
    return (POINTWISE_ENABLED and np.dtype(dtype).itemsize in _POINTWISE_ITEMSIZES
            and not geo.channels_last and geo.groups == 1
            and _in_place(geo, pads)
            and geo.C_out <= POINTWISE_MAX_OUT and geo.C_in >= POINTWISE_MIN_IN)


def _pointwise(geo, xk, w2, b, y):
    C, K, dtype = geo.C_in, geo.C_out, w2.dtype
    wp = _blocked_weights(w2, _PK)
    L = math.prod(geo.out_spatial)
    items = xk.shape[0] * -(-L // _POINTWISE_COLS)
    n = kernel_threads(items)
    ws = _workspace.scratch("col", (n, (C + _PK) * 32), dtype)
    _conv.pointwise_forward(xk.reshape(xk.shape[0], C, L), wp, b, _flat(y, geo, K),
                            _POINTWISE_COLS, ws, n)


# The other channels-first, groups-1 float32 convolutions (AVX-512) run the
# im2col tiles' GEMMs in packed_forward: register blocks of 32 output
# channels x 8 output positions, the weights packed once per call and read
# as vectors, the column matrix read in place, so no packing pass over the
# columns per tile.  Its weight blocks are streamed once per run of 64
# positions, so weights beyond PACKED_MAX_WEIGHT_BYTES stay with BLAS, as do
# fewer than PACKED_MIN_OUT output channels (a block's 32 channels would be
# mostly padding: mnist_small, 8 channels, 0.55 ms with GEMM, 1.1 ms packed).
# Measured (AVX-512), medians, ms, GEMM / packed_forward at 1 and 2 threads:
# resnet_3x3_s2 12.8 / 11.4 and 6.9 / 6.4; 256 channels at 14x14, 3x3
# 27.9 / 22.6 and 13.6 / 12.8; 64 channels at 28x28, 5x5 23.1 / 19.2 and
# 13.1 / 10.5; 512 channels at 7x7, 3x3 (9 MiB of weights) 31.5 / 35.7.
PACKED_ENABLED = _kernels.VARIANT == "avx512"
PACKED_MAX_WEIGHT_BYTES = 4 << 20
PACKED_MIN_OUT = 32
_PACKED_ITEMSIZES = (4,)
_PQ = 32   # output channels per register block of packed_forward (PQ of _conv_impl.pxi)


def _uses_packed(geo, pads, dtype):
    itemsize = np.dtype(dtype).itemsize
    in_place = _in_place(geo, pads)   # no im2col: a plain GEMM
    return (PACKED_ENABLED and itemsize in _PACKED_ITEMSIZES and not geo.channels_last
            and geo.groups == 1 and not in_place and geo.C_out >= PACKED_MIN_OUT
            and geo.C_out * geo.C_in * math.prod(geo.kernel) * itemsize
            <= PACKED_MAX_WEIGHT_BYTES)


def _packed(geo, xk, pads, w2, b, y):
    K = w2.shape[1]
    wq = _blocked_weights(w2, _PQ)
    L = math.prod(geo.out_spatial)
    tile = _workspace.tile_size(K, L, w2.dtype.itemsize)
    n = kernel_threads(xk.shape[0] * -(-L // tile))
    ws = _workspace.scratch("col", (n, K * tile + _PK + _PK * _PQ), w2.dtype)
    _conv.packed_forward(P.view5(xk, geo.nd, False), wq, b, _flat(y, geo, geo.C_out),
                         _launch(geo, pads)[0], ws, tile, n)


def _forward_block(geo, xk, pads, w2, b, y):
    N = xk.shape[0]
    if _uses_pointwise(geo, pads, w2.dtype):
        _pointwise(geo, xk, w2, b, y)
        return
    if _uses_small(geo):
        _banded(geo, xk, pads, w2, b, y, grouped=False)
        return
    if _uses_depthwise3(geo):
        _depthwise3(geo, xk, pads, w2, b, y)
        return
    if _uses_single3x3(geo):
        _single3x3(geo, xk, pads, w2, b, y)
        return
    if _uses_direct(geo) and geo.nd <= 2:
        _banded(geo, xk, pads, w2, b, y, grouped=True)
        return
    if _uses_direct(geo):
        _conv.direct_forward(P.view5(xk, geo.nd, False), w2, b, _flat(y, geo, geo.C_out),
                             _launch(geo, pads)[0], geo.groups,
                             kernel_threads(max(1, y.size // 4096)))
        return
    if _uses_packed(geo, pads, w2.dtype):
        _packed(geo, xk, pads, w2, b, y)
        return
    L = math.prod(geo.out_spatial)
    tile = _workspace.tile_size(w2.shape[1], L, w2.dtype.itemsize)
    n = kernel_threads(N * geo.groups * -(-L // tile))
    ws = _workspace.scratch("col", (n, w2.shape[1] * tile), w2.dtype)
    with blas_single_threaded():
        _conv.conv_forward(P.view5(xk, geo.nd, geo.channels_last), w2, b,
                           _flat(y, geo, geo.C_out), *_launch(geo, pads), ws, tile, n)


# The weight gradient of a convolution with one input channel per group
# (depthwise, channel multiplier; channels first) is a dot product per tap
# and output channel (direct_backward_weight), over at least
# _DIRECT_WEIGHT_ITEMS work items (channels x buckets of samples) where the
# batch allows.  Measured at 2 threads (AVX-512), medians: depthwise_3x3
# weight gradient 5.6 ms with im2col + GEMM, 3.0 ms direct (4.9 ms before
# _tap_sum took a same-size plane as one dot product instead of 56-wide rows).
_DIRECT_WEIGHT_ITEMS = 64


# The weight gradient of other channels-first, groups-1 convolutions with
# im2col runs by blocks of input channels (conv_backward_weight_blocks): a
# work item computes the gradient's columns of cb input channels, at least
# WEIGHT_BLOCK_COLUMNS of them (cb * prod(kernel)), over every sample in
# order.  Each column is computed by one item, so the result is the same for
# any thread count without partial sums; it is used where that gives at
# least WEIGHT_BLOCK_MIN_ITEMS items, else the samples are split into
# buckets of partial sums (conv_backward_weight), one partial of the whole
# gradient each, summed at the end.  Measured (AVX-512), weight gradient
# only, medians, ms, buckets / channel blocks at 1 and 2 threads:
# resnet_3x3_s2 (8 x 128 x 28 x 28, 256 out, stride 2; 16 channels per
# block) 12.05 / 11.78 and 7.23 / 6.49; 8 x 64 x 28 x 28, 64 out, 5x5
# (6 channels) 20.88 / 19.56 and 13.44 / 11.43.
WEIGHT_BLOCK_COLUMNS = 144
WEIGHT_BLOCK_MIN_ITEMS = 4


def _weight_blocks(geo, pads):
    """Input channels per item of conv_backward_weight_blocks, or 0 where
    the gradient goes through buckets of partial sums instead."""
    if geo.channels_last or geo.groups != 1 or _in_place(geo, pads):
        return 0
    cb = -(-WEIGHT_BLOCK_COLUMNS // math.prod(geo.kernel))
    return cb if -(-geo.C_in // cb) >= WEIGHT_BLOCK_MIN_ITEMS else 0


# The weight gradient of a pointwise convolution (every kernel extent 1,
# stride 1, no padding, groups 1, channels first, float32, AVX-512) runs
# pointwise_backward_weight where it has at most POINTWISE_WEIGHT_MAX_OUT
# output channels and at least POINTWISE_WEIGHT_MIN_L positions per sample:
# register blocks that read grad_output and the input along their rows, with
# no BLAS packing and no partial sums (see _conv_impl.pxi).  Each block's
# lanes are summed once per sample, which short rows do not amortise, and
# BLAS gains on it as both channel counts grow.  Measured (AVX-512, Zen 4),
# weight gradient only, medians, GEMM time / kernel time at 1 and 2 threads
# (N = 8; channels in -> out, positions per sample):
#   used:     256 -> 64, 784 (pointwise_1x1) 1.31, 1.30; 128 -> 128, 784
#             1.13, 1.14; 512 -> 128, 400 1.02, 1.15; 2048 -> 128, 400 1.33,
#             1.48; 128 -> 96, 1024 1.01, 1.04; 32 -> 32, 12544 1.51, 1.38;
#             3 -> 16, 65536 (N = 2) 3.68, 1.88
#   not used: 256 -> 128, 256 0.93, 0.95; 64 -> 128, 324 0.94, 0.90; 64 -> 64,
#             64 0.71, 0.70; 128 -> 512, 400 0.94, 0.94; 256 -> 256, 1024 0.93,
#             0.90; 256 -> 1024, 196 0.65, 0.64; 512 -> 2048, 49 0.34, 0.33
#             (and small gains missed: 64 -> 256, 3136 1.15, 1.06; 512 -> 512,
#             576 1.06, 1.07; 1024 -> 64, 256 1.10, 1.09).
POINTWISE_WEIGHT_ENABLED = _conv.POINTWISE_WEIGHT_BUILT   # the AVX-512 variant (gcc, clang)
POINTWISE_WEIGHT_MAX_OUT = 128
POINTWISE_WEIGHT_MIN_L = 384


def _uses_pointwise_weight(geo, pads, dtype):
    return (POINTWISE_WEIGHT_ENABLED and np.dtype(dtype) == np.float32
            and not geo.channels_last and geo.groups == 1 and _in_place(geo, pads)
            and geo.C_out <= POINTWISE_WEIGHT_MAX_OUT
            and math.prod(geo.out_spatial) >= POINTWISE_WEIGHT_MIN_L)


def _pointwise_weight(geo, xk, gy):
    x3 = np.ascontiguousarray(xk.reshape(xk.shape[0], geo.C_in, math.prod(geo.out_spatial)))
    gy = np.ascontiguousarray(gy)
    gw2 = np.zeros((geo.C_out, geo.C_in), gy.dtype)
    n = kernel_threads(-(-geo.C_in // _conv.POINTWISE_WEIGHT_CHANNELS))
    _conv.pointwise_backward_weight(x3, gy, gw2, n)
    return gw2


def _backward_weight(geo, xk, pads, gy):
    """(C_out, K) weight gradient from the kernel input and grad_output (N, ., .)."""
    K = geo.C_in // geo.groups * math.prod(geo.kernel)
    dtype = gy.dtype
    if _uses_pointwise_weight(geo, pads, dtype):
        return _pointwise_weight(geo, xk, gy)
    gw2 = _winograd_weight_grad(geo, xk, pads, gy)
    if gw2 is not None:
        return gw2
    if _uses_direct(geo):
        # one input channel per group: a dot product per tap and channel
        P_ = max(1, min(geo.N, -(-_DIRECT_WEIGHT_ITEMS // geo.C_out)))
        partial = _workspace.scratch("partial", (P_, geo.C_out, K), dtype)
        gw2 = np.empty((geo.C_out, K), dtype)
        _conv.direct_backward_weight(P.view5(xk, geo.nd, False), gy, gw2, partial,
                                     _launch(geo, pads)[0], geo.groups,
                                     kernel_threads(P_ * geo.C_out))
        # The kernel skips taps in the zero padding, where the definition
        # multiplies 0 by grad_output: the same unless grad_output holds inf
        # or NaN, which always leaves a non-finite tap; im2col then recomputes.
        if np.isfinite(gw2).all():
            return gw2
    L = math.prod(geo.out_spatial)
    cb = _weight_blocks(geo, pads)
    if cb:
        taps = math.prod(geo.kernel)
        tile = _workspace.tile_size(cb * taps, L, dtype.itemsize)
        n = kernel_threads(-(-geo.C_in // cb))
        ws = _workspace.scratch("col", (n, cb * taps * tile), dtype)
        gw2 = np.empty((geo.C_out, K), dtype)
        with blas_single_threaded():
            _conv.conv_backward_weight_blocks(P.view5(xk, geo.nd, False), gy, gw2,
                                              _launch(geo, pads)[0], ws, cb, tile, n)
        return gw2
    tile = _workspace.tile_size(K, L, dtype.itemsize)
    nb = _workspace.buckets(geo.N * -(-L // tile), geo.C_out * K * dtype.itemsize)
    n = kernel_threads(nb)
    ws = _workspace.scratch("col", (n, K * tile), dtype)
    partial = (_workspace.scratch("partial", (nb, geo.C_out * K), dtype) if nb > 1
               else np.empty((1, 1), dtype))
    gw2 = np.empty((geo.C_out, K), dtype)
    with blas_single_threaded():
        _conv.conv_backward_weight(P.view5(xk, geo.nd, geo.channels_last), gy, gw2,
                                   partial, *_launch(geo, pads), ws, tile, n)
    return gw2


def _backward_input(geo, gy, w2, pads, shape):
    """Gradient of the kernel input (``shape``) from grad_output (N, ., .), in
    blocks of samples."""
    L = math.prod(geo.out_spatial)
    tile = _workspace.row_aligned(_workspace.tile_size(w2.shape[1], L, w2.dtype.itemsize),
                                  geo.out_spatial[-1])
    gx = np.zeros(shape, w2.dtype)
    for n0, n1 in _workspace.sample_blocks(shape[0], L * geo.C_out * w2.shape[1]):
        n = kernel_threads((n1 - n0) * geo.groups * -(-L // tile))
        ws = _workspace.scratch("col", (n, w2.shape[1] * tile), w2.dtype)
        with blas_single_threaded():
            _conv.conv_backward_input(gy[n0:n1], w2,
                                      P.view5(gx[n0:n1], geo.nd, geo.channels_last),
                                      *_launch(geo, pads), ws, tile, n)
    return gx


# Input gradient of a stride-1 convolution as a forward convolution.  With
# stride 1 the input gradient is the convolution of grad_output with the
# kernel flipped in every spatial axis and its channel roles exchanged per
# group, zero padded by dilation * (k - 1) - pad on each side (the adjoint's
# output then has exactly the kernel input's size).  This lets the input
# gradient use the forward's fast paths (Winograd, grouped_forward) instead
# of GEMM + col2im; it is taken only where the adjoint takes one of them
# (padding at most dilation * (k - 1), so the adjoint's padding is not
# negative).  Measured at 2 threads (AVX-512): vgg_3x3 input gradient
# 14.7 -> 8.9 ms, dilated_3x3 14.3 -> 11.6 ms, depthwise_3x3 7.2 -> 3.2 ms.

def _adjoint_geometry(geo, pads, shape, dtype):
    """The forward geometry whose output is the kernel input's gradient
    (``shape``, channels first), or None where no fast path applies."""
    if geo.channels_last or any(s != 1 for s in geo.stride):
        return None
    reach = [d * (k - 1) for d, k in zip(geo.dilation, geo.kernel)]
    apads = tuple((r - lo, r - hi) for r, (lo, hi) in zip(reach, pads))
    out = tuple(o + lo + hi - r for o, (lo, hi), r in zip(geo.out_spatial, apads, reach))
    if any(p < 0 for pair in apads for p in pair) or out != tuple(shape[2:]):
        return None
    adj = replace(geo, C_in=geo.C_out, C_out=geo.C_in, spatial=tuple(geo.out_spatial),
                  pads=apads, out_spatial=tuple(shape[2:]), padding_mode="zeros")
    if _uses_winograd(adj, dtype) or (_uses_direct(adj) and adj.nd <= 2):
        return adj
    return None


def _adjoint_weight(weight, groups, dtype):
    """(C_in, C_out // groups, k...) weights of the adjoint convolution: per
    group the channel axes exchanged, every spatial axis reversed."""
    C_out, cg = weight.shape[:2]
    k = weight.shape[2:]
    w = weight.reshape(groups, C_out // groups, cg, *k).swapaxes(1, 2)
    w = w[(Ellipsis,) + (slice(None, None, -1),) * len(k)]
    return np.ascontiguousarray(w, dtype=dtype).reshape(groups * cg, C_out // groups, *k)


def _input_grad(geo, gy, weight, dtype, pads, shape):
    """Gradient of the kernel input (``shape``) from grad_output (N, ., .):
    a forward convolution where _adjoint_geometry finds a fast path, else
    GEMM + col2im."""
    # the adjoint also multiplies the weights by grad_output's zero padding,
    # which adds nothing only while every weight is finite
    adj = _adjoint_geometry(geo, pads, shape, dtype) if np.isfinite(weight).all() else None
    if adj is None:
        return _backward_input(geo, gy, _weight_matrix(weight, dtype, geo.channels_last),
                               pads, shape)
    gx = np.empty(shape, dtype)
    w2 = _adjoint_weight(weight, geo.groups, dtype).reshape(geo.C_in, -1)
    _forward(adj, gy.reshape(geo.N, geo.C_out, *geo.out_spatial), adj.pads, w2,
             np.empty(0, dtype), gx)
    return gx


def _reduce_bias(gy, geo):
    return gy.sum(axis=(0, 1) if geo.channels_last else (0, 2))


# --------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------

def _convolution(nd, x, weight, bias, stride, padding, dilation, groups, padding_mode,
                 channels_last, strict, out):
    op = f"conv{nd}d"
    x = P.as_array(op, "input", x)
    weight = P.as_array(op, "weight", weight)
    bias = None if bias is None else P.as_array(op, "bias", bias)
    dtype = P.compute_dtype(op, input=x, weight=weight, bias=bias)
    geo = P.conv_geometry(op, nd, x, weight, bias, stride, padding, dilation, groups,
                          padding_mode=padding_mode, channels_last=channels_last,
                          strict=strict)
    P.check_out(op, out, geo.output_shape, dtype,
                {"input": x, "weight": weight, "bias": bias})
    y = out if out is not None else np.empty(geo.output_shape, dtype)
    if geo.N == 0:
        return y
    xk, pads = _kernel_input(geo, x, dtype)
    b = P.contiguous(bias, dtype) if bias is not None else np.empty(0, dtype)
    _forward(geo, xk, pads, _weight_matrix(weight, dtype, geo.channels_last), b, y)
    return y


def _conv_backward(nd, grad_output, x, weight, stride, padding, dilation, groups,
                   padding_mode, channels_last, needs):
    op = f"conv{nd}d_backward"
    needs = P.check_needs(op, needs)
    grad_output = P.as_array(op, "grad_output", grad_output)
    x = P.as_array(op, "input", x)
    weight = P.as_array(op, "weight", weight)
    dtype = P.compute_dtype(op, grad_output=grad_output, input=x, weight=weight)
    geo = P.conv_geometry(op, nd, x, weight, None, stride, padding, dilation, groups,
                          padding_mode=padding_mode, channels_last=channels_last)
    if grad_output.shape != geo.output_shape:
        raise ValueError(f"{op}: grad_output has shape {grad_output.shape}, expected "
                         f"{geo.output_shape} (the shape of conv{nd}d's output)")
    gy = _flat(P.contiguous(grad_output, dtype), geo, geo.C_out)
    g_input = g_weight = g_bias = None
    if "bias" in needs:
        g_bias = _reduce_bias(gy, geo)
    if needs & {"input", "weight"}:
        xk, pads = _kernel_input(geo, x, dtype)
        if "weight" in needs:
            g_weight = _weight_from_matrix(_backward_weight(geo, xk, pads, gy),
                                           weight.shape, geo.channels_last)
        if "input" in needs:
            gxk = _input_grad(geo, gy, weight, dtype, pads, xk.shape)
            g_input = gxk if geo.padding_mode == "zeros" else _pad_adjoint(gxk, geo)
    return ConvGrads(g_input, g_weight, g_bias)


# --------------------------------------------------------------------------
# Transposed convolution
# --------------------------------------------------------------------------

def _conv_transpose(nd, x, weight, bias, stride, padding, output_padding, groups,
                    dilation, channels_last, out):
    op = f"conv_transpose{nd}d"
    x = P.as_array(op, "input", x)
    weight = P.as_array(op, "weight", weight)
    bias = None if bias is None else P.as_array(op, "bias", bias)
    dtype = P.compute_dtype(op, input=x, weight=weight, bias=bias)
    geo = P.transpose_geometry(op, nd, x, weight, bias, stride, padding, output_padding,
                               groups, dilation, channels_last=channels_last)
    # geo describes the adjoint convolution: its input is our output
    P.check_out(op, out, geo.input_shape, dtype,
                {"input": x, "weight": weight, "bias": bias})
    if geo.N == 0:
        return out if out is not None else np.empty(geo.input_shape, dtype)
    gy = _flat(P.contiguous(x, dtype), geo, geo.C_out)
    y = _input_grad(geo, gy, weight, dtype, geo.pads, geo.input_shape)
    if bias is not None:
        shape = (1,) * (nd + 1) + (-1,) if geo.channels_last else (1, -1) + (1,) * nd
        y += P.contiguous(bias, dtype).reshape(shape)
    if out is not None:
        out[...] = y
        return out
    return y


def _conv_transpose_backward(nd, grad_output, x, weight, stride, padding, output_padding,
                             groups, dilation, channels_last, needs):
    op = f"conv_transpose{nd}d_backward"
    needs = P.check_needs(op, needs)
    grad_output = P.as_array(op, "grad_output", grad_output)
    x = P.as_array(op, "input", x)
    weight = P.as_array(op, "weight", weight)
    dtype = P.compute_dtype(op, grad_output=grad_output, input=x, weight=weight)
    geo = P.transpose_geometry(op, nd, x, weight, None, stride, padding, output_padding,
                               groups, dilation, channels_last=channels_last)
    if grad_output.shape != geo.input_shape:
        raise ValueError(f"{op}: grad_output has shape {grad_output.shape}, expected "
                         f"{geo.input_shape} (the shape of conv_transpose{nd}d's output)")
    gy = P.contiguous(grad_output, dtype)
    g_input = g_weight = g_bias = None
    if "bias" in needs:
        g_bias = _reduce_bias(_flat(gy, geo, geo.C_in), geo)
    if "input" in needs and geo.N:
        # the adjoint convolution's forward pass
        g_input = np.empty(geo.output_shape, dtype)
        _forward(geo, gy, geo.pads, _weight_matrix(weight, dtype, geo.channels_last),
                 np.empty(0, dtype), g_input)
    elif "input" in needs:
        g_input = np.zeros(geo.output_shape, dtype)
    if "weight" in needs:
        # the adjoint convolution's weight gradient, with the roles of input
        # and grad_output exchanged
        gw2 = _backward_weight(geo, gy, geo.pads,
                               _flat(P.contiguous(x, dtype), geo, geo.C_out))
        g_weight = _weight_from_matrix(gw2, weight.shape, geo.channels_last)
    return ConvGrads(g_input, g_weight, g_bias)


# --------------------------------------------------------------------------
# Public functions, one per dimensionality
# --------------------------------------------------------------------------

_LAYOUT = {1: ("(N, C, L)", "(N, L, C)"), 2: ("(N, C, H, W)", "(N, H, W, C)"),
           3: ("(N, C, D, H, W)", "(N, D, H, W, C)")}
_KERNEL = {1: "kL", 2: "kH, kW", 3: "kD, kH, kW"}
_EX = {1: ("(1, 3, 8)", "(4, 3, 3)", "(1, 4, 8)"),
       2: ("(1, 3, 5, 5)", "(4, 3, 3, 3)", "(1, 4, 5, 5)"),
       3: ("(1, 3, 4, 4, 4)", "(4, 3, 3, 3, 3)", "(1, 4, 4, 4, 4)")}


_TRANSPOSE_OUT = {1: "(1, 2, 17)", 2: "(1, 2, 11, 11)", 3: "(1, 2, 9, 9, 9)"}


def _conv_doc(nd):
    first, last = _LAYOUT[nd]
    return f"""{nd}-D convolution (cross-correlation, as in every deep-learning library).

    Parameters
    ----------
    x : array_like, {first}, or {last} with channels_last
    weight : array_like, (C_out, C_in // groups, {_KERNEL[nd]})
    bias : array_like, (C_out,), optional
    stride, dilation : int or tuple of {nd} ints
        A tuple of one int counts as that int (here and in padding, as in PyTorch).
    padding : int, tuple of {nd} ints, tuple of {nd} (before, after) pairs, "valid" or "same"
        "same" gives an output of ``ceil(in / stride)`` with any stride, the
        odd unit of padding going after (TensorFlow SAME, ONNX SAME_UPPER).
    groups : int
        Input and output channels are split into this many groups;
        ``groups == C_in`` is a depthwise convolution.
    padding_mode : {{"zeros", "reflect", "replicate", "circular"}}
    channels_last : bool
        Input and output are {last}; the weight layout never changes.
    strict : bool
        Raise ValueError when ``(in + pad - dilation*(k-1) - 1) / stride`` is not
        an integer (input elements would be ignored), showing the arithmetic
        and the nearest paddings that fit.
    out : ndarray, optional
        C-contiguous array of the output's shape and dtype to write into.

    Returns
    -------
    ndarray
        float32 for float32 (and float16) operands, float64 otherwise.

    Notes
    -----
    Output positions are processed in tiles: im2col of a tile into a
    per-thread workspace, then one GEMM through scipy's BLAS (single-threaded
    inside the OpenMP loop).  2-D channels-first 3x3 convolutions with stride
    1, at least 16 input and output channels and at least 400 output pixels
    use Winograd's F(4x4, 3x3) instead (36 GEMMs on transformed tiles, 4x
    fewer multiplications), or F(2x2, 3x3) (2.25x fewer) where the channel
    counts are large; the rounding differs from the direct sum's by a few
    units in the last place, and inputs with inf or NaN take the im2col path.
    Beyond its input, output and weights (and, for reflect/replicate/circular
    padding, a padded copy of the input) a call uses at most 1 MiB of
    workspace per thread (2 MiB with F(4x4, 3x3); Winograd also holds its
    transformed weights, 4 or 1.8 times the weights), whatever the batch
    size.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> x = np.ones({_EX[nd][0]}, np.float32)
    >>> w = np.ones({_EX[nd][1]}, np.float32)
    >>> cyconv.conv{nd}d(x, w, padding=1).shape
    {_EX[nd][2]}
    """


def _conv_backward_doc(nd):
    return f"""Gradients of :func:`conv{nd}d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like
        Gradient of the loss with respect to ``conv{nd}d``'s output (its shape).
    x, weight, stride, padding, dilation, groups, padding_mode, channels_last
        As given to :func:`conv{nd}d`.
    needs : tuple of {{"input", "weight", "bias"}}
        The gradients to compute; the others are returned as None.

    Returns
    -------
    ConvGrads
        Named tuple ``(input, weight, bias)`` in the layouts of ``x``,
        ``weight`` and the bias.

    Notes
    -----
    The weight gradient is reduced through at most 16 partial sums of at most
    16 MiB in all (fixed by the shape, so results do not depend on the thread
    count); with im2col tiles of at most 1 MiB per thread, that is the whole
    workspace beyond the inputs and outputs, whatever the batch size.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> x = np.ones({_EX[nd][0]}); w = np.ones({_EX[nd][1]})
    >>> g = cyconv.conv{nd}d_backward(np.ones({_EX[nd][2]}), x, w, padding=1)
    >>> g.input.shape == x.shape, g.weight.shape == w.shape
    (True, True)
    """


def _transpose_doc(nd):
    first, last = _LAYOUT[nd]
    return f"""{nd}-D transposed convolution, as ``torch.nn.functional.conv_transpose{nd}d``.

    The adjoint of :func:`conv{nd}d` with respect to its input (sometimes
    called a fractionally strided convolution).

    Parameters
    ----------
    x : array_like, {first}, or {last} with channels_last
    weight : array_like, (C_in, C_out // groups, {_KERNEL[nd]})
    bias : array_like, (C_out,), optional
    stride, dilation : int or tuple of {nd} ints
    padding : int or tuple of {nd} ints
        Removed from both ends of the output.
    output_padding : int or tuple of {nd} ints
        Added to one end of the output; must be smaller than stride or dilation.
    groups : int
    channels_last : bool
    out : ndarray, optional

    Returns
    -------
    ndarray, size ``(in - 1) * stride - 2 * padding + dilation * (k - 1)
    + output_padding + 1`` per spatial dim.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> x = np.ones({_EX[nd][0]}); w = np.ones((3, 2) + (3,) * {nd})
    >>> cyconv.conv_transpose{nd}d(x, w, stride=2).shape
    {_TRANSPOSE_OUT[nd]}
    """


def _make(nd):
    def conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
             padding_mode="zeros", channels_last=False, strict=False, out=None):
        return _convolution(nd, x, weight, bias, stride, padding, dilation, groups,
                            padding_mode, channels_last, strict, out)

    def conv_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1,
                      *, padding_mode="zeros", channels_last=False,
                      needs=("input", "weight", "bias")):
        return _conv_backward(nd, grad_output, x, weight, stride, padding, dilation,
                              groups, padding_mode, channels_last, needs)

    def conv_transpose(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                       groups=1, dilation=1, *, channels_last=False, out=None):
        return _conv_transpose(nd, x, weight, bias, stride, padding, output_padding,
                               groups, dilation, channels_last, out)

    def conv_transpose_backward(grad_output, x, weight, stride=1, padding=0,
                                output_padding=0, groups=1, dilation=1, *,
                                channels_last=False, needs=("input", "weight", "bias")):
        return _conv_transpose_backward(nd, grad_output, x, weight, stride, padding,
                                        output_padding, groups, dilation, channels_last,
                                        needs)

    fns = {
        f"conv{nd}d": (conv, _conv_doc(nd)),
        f"conv{nd}d_backward": (conv_backward, _conv_backward_doc(nd)),
        f"conv_transpose{nd}d": (conv_transpose, _transpose_doc(nd)),
        f"conv_transpose{nd}d_backward": (conv_transpose_backward, f"""Gradients of
    :func:`conv_transpose{nd}d` with respect to its input, weight and bias.

    Arguments as for :func:`conv_transpose{nd}d`, plus ``grad_output`` (the
    shape of its output) and ``needs`` (as for :func:`conv{nd}d_backward`).
    Returns a :class:`ConvGrads`.
    """),
    }
    out = {}
    for name, (fn, doc) in fns.items():
        fn.__name__ = fn.__qualname__ = name
        fn.__doc__ = doc
        fn.__module__ = __name__
        out[name] = fn
    return out


for _nd in (1, 2, 3):
    globals().update(_make(_nd))
del _nd
