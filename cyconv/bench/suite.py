"""The standard shape suite, the peers, and an interleaved timer.

Every peer runs the same shape at the same thread count in the same round,
one after the other, so machine noise hits all of them alike; the report
quotes medians over rounds and ratios between peers of one run.
"""
import json
import os
import platform
import statistics
import time
from importlib import resources

import numpy as np

import cyconv
from cyconv import _params

__all__ = ["load_shapes", "conv_flops", "pool_bytes", "filter_flops", "peers_for",
           "pool_peers_for", "filter_peers_for", "run_suite", "machine_info"]


def load_shapes():
    with resources.files("cyconv.bench").joinpath("shapes.json").open() as f:
        return json.load(f)


def _geometry(s):
    x = np.empty((s["N"], s["C_in"], s["H"], s["W"]), np.float32)
    w = np.empty((s["C_out"], s["C_in"] // s["groups"], s["kernel"], s["kernel"]),
                 np.float32)
    return _params.conv_geometry("bench", 2, x, w, None, s["stride"], s["padding"],
                                 s["dilation"], s["groups"])


def conv_flops(s):
    """2 * N * C_out * prod(out) * (C_in / groups) * prod(kernel), as the suite says."""
    geo = _geometry(s)
    return (2 * s["N"] * s["C_out"] * int(np.prod(geo.out_spatial))
            * (s["C_in"] // s["groups"]) * s["kernel"] ** 2)


# --------------------------------------------------------------------------
# Peers: each returns {"forward": fn, "backward": fn} of zero-argument callables
# --------------------------------------------------------------------------

def _problem(s, seed=0):
    rng = np.random.default_rng(seed)
    geo = _geometry(s)
    x = rng.standard_normal((s["N"], s["C_in"], s["H"], s["W"]), np.float32)
    w = rng.standard_normal((s["C_out"], s["C_in"] // s["groups"], s["kernel"],
                             s["kernel"]), np.float32)
    gy = rng.standard_normal(geo.output_shape, np.float32)
    return geo, x, w, gy


def _cyconv(s, threads):
    geo, x, w, gy = _problem(s)
    kw = dict(stride=s["stride"], padding=s["padding"], dilation=s["dilation"],
              groups=s["groups"])

    def forward():
        with cyconv.num_threads(threads):
            return cyconv.conv2d(x, w, **kw)

    def backward():
        with cyconv.num_threads(threads):
            return cyconv.conv2d_backward(gy, x, w, needs=("input", "weight"), **kw)

    return {"forward": forward, "backward": backward}


def _numpy(s, threads):
    """The NumPy im2col reference: sliding windows copied to a column matrix,
    one matmul per group; backward by matmuls and a kh*kw loop of slice adds."""
    from threadpoolctl import threadpool_limits

    geo, x, w, gy = _problem(s)
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.stride, geo.dilation
    (pt, pb), (pl, pr) = geo.pads
    Ho, Wo = geo.out_spatial
    G, N = geo.groups, s["N"]
    Cg, Kg = geo.C_in // G, geo.C_out // G

    def cols_of(xp):
        win = np.lib.stride_tricks.sliding_window_view(
            xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
        win = win[:, :, :(Ho - 1) * sh + 1:sh, :(Wo - 1) * sw + 1:sw, ::dh, ::dw]
        return [win[:, g * Cg:(g + 1) * Cg].transpose(0, 2, 3, 1, 4, 5)
                .reshape(N * Ho * Wo, Cg * kh * kw) for g in range(G)]

    def forward():
        with threadpool_limits(threads, user_api="blas"):
            xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
            y = np.empty((N, geo.C_out, Ho, Wo), np.float32)
            for g, cols in enumerate(cols_of(xp)):
                yg = cols @ w[g * Kg:(g + 1) * Kg].reshape(Kg, -1).T
                y[:, g * Kg:(g + 1) * Kg] = yg.reshape(N, Ho, Wo, Kg).transpose(0, 3, 1, 2)
            return y

    def backward():
        with threadpool_limits(threads, user_api="blas"):
            xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
            gxp = np.zeros_like(xp)
            gw = np.empty_like(w)
            for g, cols in enumerate(cols_of(xp)):
                gyg = gy[:, g * Kg:(g + 1) * Kg].transpose(1, 0, 2, 3).reshape(Kg, -1)
                wg = w[g * Kg:(g + 1) * Kg].reshape(Kg, -1)
                gw[g * Kg:(g + 1) * Kg] = (gyg @ cols).reshape(Kg, Cg, kh, kw)
                dcols = (gyg.T @ wg).reshape(N, Ho, Wo, Cg, kh, kw)
                for i in range(kh):
                    for j in range(kw):
                        gxp[:, g * Cg:(g + 1) * Cg,
                            i * dh:i * dh + (Ho - 1) * sh + 1:sh,
                            j * dw:j * dw + (Wo - 1) * sw + 1:sw] += \
                            dcols[..., i, j].transpose(0, 3, 1, 2)
            return gxp[:, :, pt:pt + s["H"], pl:pl + s["W"]], gw

    return {"forward": forward, "backward": backward}


def _torch(s, threads, channels_last=False):
    import torch

    geo, x, w, gy = _problem(s)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xt = torch.from_numpy(x).contiguous(memory_format=fmt)
    wt = torch.from_numpy(w).contiguous(memory_format=fmt)
    gyt = torch.from_numpy(gy).contiguous(memory_format=fmt)
    (pt, pb), (pl, pr) = geo.pads
    symmetric = pt == pb and pl == pr
    padding = (pt, pl) if symmetric else (0, 0)

    def prep():
        torch.set_num_threads(threads)
        return xt if symmetric else torch.nn.functional.pad(xt, (pl, pr, pt, pb))

    def forward():
        with torch.no_grad():
            return torch.nn.functional.conv2d(prep(), wt, None, s["stride"], padding,
                                              s["dilation"], s["groups"])

    def backward():
        with torch.no_grad():
            return torch.ops.aten.convolution_backward(
                gyt, prep(), wt, None, [s["stride"]] * 2, list(padding),
                [s["dilation"]] * 2, False, [0, 0], s["groups"], [True, True, False])

    return {"forward": forward, "backward": backward}


def pool_bytes(s, _pass="forward"):
    """Bytes a pooling pass must move: the float32 input read, the output written."""
    geo = _pool_geometry(s)
    return 4 * (s["N"] * s["C"] * s["H"] * s["W"] + int(np.prod(geo.output_shape)))


def _pool_geometry(s):
    x = np.empty((s["N"], s["C"], s["H"], s["W"]), np.uint8)
    return _params.pool_geometry("bench", 2, x, s["kernel"], s["stride"], s["padding"],
                                 1, False)


def _pool_input(s):
    rng = np.random.default_rng(0)
    return rng.standard_normal((s["N"], s["C"], s["H"], s["W"]), np.float32)


def _pool_cyconv(s, threads):
    x = _pool_input(s)
    fn = cyconv.max_pool2d if s["op"] == "max" else cyconv.avg_pool2d

    def forward():
        with cyconv.num_threads(threads):
            return fn(x, s["kernel"], s["stride"], s["padding"])

    return {"forward": forward}


def _pool_numpy(s, threads):
    """NumPy reference: padded sliding windows reduced with max or mean."""
    x = _pool_input(s)
    k, st, p = s["kernel"], s["stride"], s["padding"]
    fill = -np.inf if s["op"] == "max" else 0.0

    def forward():
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill) if p else x
        win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
        win = win[:, :, ::st, ::st]
        return win.max(axis=(4, 5)) if s["op"] == "max" else win.mean(axis=(4, 5))

    return {"forward": forward}


def _pool_torch(s, threads, channels_last=False):
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.from_numpy(_pool_input(s)).contiguous(memory_format=fmt)
    F = torch.nn.functional
    fn = F.max_pool2d if s["op"] == "max" else F.avg_pool2d

    def forward():
        torch.set_num_threads(threads)
        with torch.no_grad():
            return fn(x, s["kernel"], s["stride"], s["padding"])

    return {"forward": forward}


def _with_torch(peers, torch_peer, names):
    """Add PyTorch (NCHW and channels_last) when importable; keep ``names``."""
    try:
        import torch  # noqa: F401

        peers["torch"] = torch_peer
        peers["torch_cl"] = lambda s, t: torch_peer(s, t, channels_last=True)
    except ImportError:
        pass
    if names:
        peers = {k: v for k, v in peers.items() if k in names}
    return peers


def pool_peers_for(names=None):
    """Pooling peers: cyconv and numpy always, PyTorch when importable."""
    return _with_torch({"cyconv": _pool_cyconv, "numpy": _pool_numpy}, _pool_torch, names)


def filter_flops(s, _pass="forward"):
    """2 * H * W * k * k: one multiply-add per kernel tap per output pixel."""
    return 2 * s["H"] * s["W"] * s["kernel"] ** 2


def _filter_problem(s):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((s["H"], s["W"])).astype(s["dtype"]),
            rng.standard_normal((s["kernel"], s["kernel"])).astype(s["dtype"]))


def _filter_cyconv(s, threads):
    from cyconv import signal

    image, kernel = _filter_problem(s)

    def forward():
        with cyconv.num_threads(threads):
            return signal.correlate2d(image, kernel, mode="same")

    return {"forward": forward}


def _filter_scipy(s, threads):
    """scipy.signal.correlate2d: single-threaded whatever ``threads`` says."""
    import scipy.signal

    image, kernel = _filter_problem(s)
    return {"forward": lambda: scipy.signal.correlate2d(image, kernel, mode="same")}


def filter_peers_for(names=None):
    peers = {"cyconv": _filter_cyconv, "scipy": _filter_scipy}
    if names:
        peers = {k: v for k, v in peers.items() if k in names or k == "scipy"}
    return peers


def peers_for(names=None):
    """Convolution peers: cyconv and numpy always, PyTorch when importable."""
    return _with_torch({"cyconv": _cyconv, "numpy": _numpy}, _torch, names)


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------

def _time_once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_suite(shapes, threads_list, peers, passes=("forward", "backward"), rounds=5,
              min_round_s=0.0, progress=None, work=None, unit="GFLOP/s", start=0,
              total=None):
    """Time every (shape, threads, pass) for every peer, interleaved by round.

    ``work(shape, pass)`` is the amount of work behind the rate column (FLOPs
    for convolution, the default; bytes moved for pooling).  Returns result
    rows (dicts) with median milliseconds per peer.
    """
    work = work or (lambda s, p: conv_flops(s) * (1 if p == "forward" else 2))
    rows = []
    total = total or len(shapes) * len(threads_list)
    done = start
    for s in shapes:
        for threads in threads_list:
            done += 1
            if progress:
                progress(done, total, f"{s['name']} @ {threads} thread(s)")
            impls = {name: make(s, threads) for name, make in peers.items()}
            for p in passes:
                fns = {name: impl[p] for name, impl in impls.items()}
                for fn in fns.values():  # warm-up: allocations, caches, JIT paths
                    fn()
                times = {name: [] for name in fns}
                for _ in range(rounds):
                    for name, fn in fns.items():
                        reps, t = 0, 0.0
                        while True:  # repeat very short calls within a round
                            t += _time_once(fn)
                            reps += 1
                            if t >= min_round_s:
                                break
                        times[name].append(t / reps)
                amount = work(s, p)
                ms = {name: statistics.median(v) * 1e3 for name, v in times.items()}
                rows.append({"shape": s["name"], "threads": threads, "pass": p,
                             "work": amount, "unit": unit, "ms": ms,
                             "rate": {k: amount / (v * 1e6) for k, v in ms.items()}})
    return rows


def machine_info():
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from cyconv._config import build_info

    info = build_info()
    try:
        features = [k for k, v in np._core._multiarray_umath.__cpu_features__.items()
                    if v and k in ("AVX2", "FMA3", "AVX512F", "AVX512_SPR", "NEON", "SVE")]
    except AttributeError:
        features = []
    versions = {"numpy": np.__version__}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:
        pass
    return {
        "cpu": cpu,
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_features": features,
        "cyconv": info["version"],
        "openmp": info["openmp"],
        # the BLAS cyconv calls (scipy's), not NumPy's
        "blas": sorted(info["blas"], key=lambda b: "numpy" in b)[:1],
        "cflags": info["cflags"],
        "versions": versions,
    }
