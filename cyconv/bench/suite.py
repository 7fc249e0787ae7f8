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
           "pool_peers_for", "filter_peers_for", "run_suite", "machine_info",
           "sgemm_ceiling", "workspace_peak", "peak_rss_mib"]


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


def _bias(s):
    return np.random.default_rng(1).standard_normal(s["C_out"]).astype(np.float32)


def _cyconv(s, threads):
    geo, x, w, gy = _problem(s)
    b = _bias(s)
    kw = dict(stride=s["stride"], padding=s["padding"], dilation=s["dilation"],
              groups=s["groups"])

    def forward():
        with cyconv.num_threads(threads):
            return cyconv.conv2d(x, w, b, **kw)

    def backward():
        with cyconv.num_threads(threads):
            return cyconv.conv2d_backward(gy, x, w, needs=("input", "weight", "bias"),
                                          **kw)

    return {"forward": forward, "backward": backward}


def _numpy(s, threads):
    """The NumPy im2col reference: sliding windows copied to a column matrix,
    one matmul per group; backward by matmuls and a kh*kw loop of slice adds."""
    from threadpoolctl import threadpool_limits

    geo, x, w, gy = _problem(s)
    b = _bias(s)
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
                yg = cols @ w[g * Kg:(g + 1) * Kg].reshape(Kg, -1).T + b[g * Kg:(g + 1) * Kg]
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
            return gxp[:, :, pt:pt + s["H"], pl:pl + s["W"]], gw, gy.sum(axis=(0, 2, 3))

    return {"forward": forward, "backward": backward}


def _torch(s, threads, channels_last=False):
    """PyTorch on the same NCHW float32 input.  With ``channels_last`` the input
    is converted to channels_last inside the timed call, as a user holding NCHW
    data must (weights are converted once, ahead).  Backward is autograd:
    torch.autograd.grad of the output for input, weight and bias."""
    import torch

    geo, x, w, gy = _problem(s)
    F = torch.nn.functional
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xt, gyt = torch.from_numpy(x), torch.from_numpy(gy)
    wt = torch.from_numpy(w).contiguous(memory_format=fmt)
    bt = torch.from_numpy(_bias(s))
    (pt, pb), (pl, pr) = geo.pads
    symmetric = pt == pb and pl == pr
    padding = (pt, pl) if symmetric else (0, 0)

    def run(xin, win, bin_):
        xin = xin.contiguous(memory_format=fmt)
        if not symmetric:
            xin = F.pad(xin, (pl, pr, pt, pb))
        return F.conv2d(xin, win, bin_, s["stride"], padding, s["dilation"], s["groups"])

    def forward():
        torch.set_num_threads(threads)
        with torch.no_grad():
            return run(xt, wt, bt)

    torch.set_num_threads(threads)
    leaves = [t.detach().clone().requires_grad_(True) for t in (xt, wt, bt)]
    y = run(*leaves)

    def backward():
        torch.set_num_threads(threads)
        return torch.autograd.grad(y, leaves, gyt, retain_graph=True)

    return {"forward": forward, "backward": backward}


def _onnx_session(graph_nodes, inputs, outputs, threads, initializers=()):
    import onnx
    import onnxruntime as ort
    from onnx import helper

    graph = helper.make_graph(graph_nodes, "bench", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    # Idle intra-op workers spin by default, stealing a core from the next peer.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def _onnxruntime(s, threads):
    """onnxruntime's Conv (CPU execution provider), forward only: plain
    onnxruntime has no backward."""
    from onnx import TensorProto, helper, numpy_helper

    geo, x, w, gy = _problem(s)
    (pt, pb), (pl, pr) = geo.pads
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[s["stride"]] * 2,
                            pads=[pt, pl, pb, pr], dilations=[s["dilation"]] * 2,
                            group=s["groups"], kernel_shape=[s["kernel"]] * 2)
    sess = _onnx_session(
        [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(geo.output_shape))],
        threads, [numpy_helper.from_array(w, "w"), numpy_helper.from_array(_bias(s), "b")])
    return {"forward": lambda: sess.run(None, {"x": x})[0]}


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
    x = torch.from_numpy(_pool_input(s))   # NCHW; channels_last converts in the call
    F = torch.nn.functional
    fn = F.max_pool2d if s["op"] == "max" else F.avg_pool2d

    def forward():
        torch.set_num_threads(threads)
        with torch.no_grad():
            return fn(x.contiguous(memory_format=fmt), s["kernel"], s["stride"],
                      s["padding"])

    return {"forward": forward}


def _pool_onnxruntime(s, threads):
    from onnx import TensorProto, helper

    x = _pool_input(s)
    geo = _pool_geometry(s)
    p = s["padding"]
    op = "MaxPool" if s["op"] == "max" else "AveragePool"
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[s["kernel"]] * 2,
                            strides=[s["stride"]] * 2, pads=[p] * 4)
    sess = _onnx_session(
        [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(geo.output_shape))],
        threads)
    return {"forward": lambda: sess.run(None, {"x": x})[0]}


def _importable(*modules):
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def _with_torch(peers, torch_peer, names, ort_peer=None):
    """Add PyTorch (NCHW and channels_last) and onnxruntime when importable;
    keep only ``names`` when given."""
    if _importable("torch"):
        peers["torch"] = torch_peer
        peers["torch_cl"] = lambda s, t: torch_peer(s, t, channels_last=True)
    if ort_peer is not None and _importable("onnxruntime", "onnx"):
        peers["onnxruntime"] = ort_peer
    if names:
        peers = {k: v for k, v in peers.items() if k in names}
    return peers


def pool_peers_for(names=None):
    """Pooling peers: cyconv and numpy always, PyTorch when importable."""
    return _with_torch({"cyconv": _pool_cyconv, "numpy": _pool_numpy}, _pool_torch, names,
                       _pool_onnxruntime)


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
    return _with_torch({"cyconv": _cyconv, "numpy": _numpy}, _torch, names, _onnxruntime)


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------

def _time_once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def rotated(names, r):
    """The peers' order in round r: ``names`` rotated left by r.

    The first call at a thread count follows calls at another count, and on
    a virtual machine it pays for CPUs that idled meanwhile (their caches
    and TLBs refilled, their threads woken).  Measured on the 2-vCPU
    benchmark VM, vgg_3x3 forward at 2 threads, 10 rounds per position,
    medians: 5.46 ms as the first of the five peers, 5.23-5.43 ms in the
    other positions.  With a fixed order that cost fell on cyconv (the first
    peer) in every round."""
    k = r % len(names) if names else 0
    return names[k:] + names[:k]


def run_suite(shapes, threads_list, peers, passes=("forward", "backward"), rounds=5,
              min_round_s=0.0, progress=None, work=None, unit="GFLOP/s", start=0,
              total=None):
    """Time every (shape, threads, pass) for every peer, interleaved by round:
    each round times every peer at every thread count in turn, so that the
    ratios between peers and the thread scaling both compare calls made
    moments apart (this machine's speed drifts over seconds).  The peers'
    order rotates from round to round (see ``rotated``), so that none is
    always the first call after a change of thread count.

    ``work(shape, pass)`` is the amount of work behind the rate column (FLOPs
    for convolution, the default; bytes moved for pooling).  Returns result
    rows (dicts) with median milliseconds per peer.
    """
    work = work or (lambda s, p: conv_flops(s) * (1 if p == "forward" else 2))
    rows = []
    total = total or len(shapes) * len(threads_list)
    done = start
    for s in shapes:
        if progress:
            progress(done + len(threads_list), total,
                     f"{s['name']} @ {','.join(map(str, threads_list))} thread(s)")
        done += len(threads_list)
        impls = {t: {name: make(s, t) for name, make in peers.items()} for t in threads_list}
        for p in passes:
            fns = {t: {name: impl[p] for name, impl in impls[t].items() if p in impl}
                   for t in threads_list}
            for t in threads_list:   # warm-up: allocations, caches, JIT paths
                for fn in fns[t].values():
                    fn()
            times = {t: {name: [] for name in fns[t]} for t in threads_list}
            for r in range(rounds):
                for t in threads_list:
                    for name in rotated(list(fns[t]), r):
                        fn = fns[t][name]
                        reps, el = 0, 0.0
                        while True:  # repeat very short calls within a round
                            el += _time_once(fn)
                            reps += 1
                            if el >= min_round_s:
                                break
                        times[t][name].append(el / reps)
            amount = work(s, p)
            for t in threads_list:
                ms = {name: statistics.median(v) * 1e3 for name, v in times[t].items()}
                rows.append({"shape": s["name"], "threads": t, "pass": p,
                             "work": amount, "unit": unit, "ms": ms,
                             "rate": {k: amount / (v * 1e6) for k, v in ms.items()},
                             "workspace_mib": workspace_peak(fns[t]["cyconv"]) / 2**20})
    return rows


def workspace_peak(fn):
    """Bytes a call allocates beyond what it returns: the peak of Python- and
    NumPy-traced allocations (tracemalloc) during one call made in a fresh
    thread, whose scratch buffers start empty, minus the returned arrays."""
    import threading
    import tracemalloc

    box = {}

    def target():
        tracemalloc.start()
        try:
            out = fn()
            box["peak"] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        outs = out if isinstance(out, tuple) else (out,)
        box["out"] = sum(getattr(o, "nbytes", 0) for o in outs)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    return max(0, box["peak"] - box["out"])


def sgemm_ceiling(threads, n=1536, rounds=5):
    """GFLOP/s of an n x n x n float32 sgemm at ``threads`` threads, the
    fastest round of SciPy's BLAS and NumPy's (the two cyconv's GEMMs may
    call, see cyconv._threads._install_gemm): the ceiling an im2col + GEMM
    convolution can reach."""
    from scipy.linalg import blas
    from threadpoolctl import threadpool_limits

    from cyconv import _threads

    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n), np.float32))
    b = np.asfortranarray(rng.standard_normal((n, n), np.float32))
    c = np.zeros((n, n), np.float32, order="F")
    calls = (lambda: blas.sgemm(1.0, a, b, c=c, overwrite_c=1),
             lambda: np.matmul(a, b, out=c))
    with threadpool_limits(limits=threads, user_api="blas"):
        _threads.blas_controllers()
        times = []
        for call in calls:
            call()  # warm-up
            times += [_time_once(call) for _ in range(rounds)]
    return 2 * n ** 3 / min(times) / 1e9   # a ceiling: the fastest round


def peak_rss_mib():
    """Peak resident memory of this process so far (MiB)."""
    try:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kib / 1024 if os.uname().sysname != "Darwin" else kib / 2**20
    except (ImportError, AttributeError):  # pragma: no cover - Windows
        return float("nan")


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
    import importlib

    for mod in ("scipy", "torch", "onnxruntime"):
        if _importable(mod):
            versions[mod] = importlib.import_module(mod).__version__
    return {
        "cpu": cpu,
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_features": features,
        "cyconv": info["version"],
        "openmp": info["openmp"],
        # every BLAS loaded, SciPy's first; "gemm" says which one cyconv calls
        "blas": sorted(info["blas"], key=lambda b: "numpy" in b),
        "gemm": info["gemm"],
        "cflags": info["cflags"],
        "kernels": info["kernels"],
        "kernels_reason": info["kernels_reason"],
        "openmp_runtime": info["openmp_runtime"],
        "versions": versions,
    }
