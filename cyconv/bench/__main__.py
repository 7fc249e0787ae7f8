"""python -m cyconv.bench: cyconv against its peers on the standard shape suite.

Prints machine and build info, then per shape, thread count and pass the
median milliseconds, cyconv's GFLOP/s and its share of the sgemm ceiling
measured in the same run, the workspace a call allocates, and cyconv's
speed-up over each peer measured in the same run (peer time / cyconv time:
above 1, cyconv is faster); then the geometric means of the speed-ups, with
"torch_best" the faster of PyTorch's two layouts per shape, and the speed-up
from 1 thread to each thread count.  Each round times every peer at every
thread count in turn, so ratios and scaling compare calls made moments apart.
"""
import argparse
import json
import math
import os
import sys
import time

from cyconv import get_num_threads
from cyconv.bench.suite import (filter_flops, filter_peers_for, load_shapes, machine_info,
                                peak_rss_mib, peers_for, pool_bytes, pool_peers_for,
                                run_suite, sgemm_ceiling)


def _threads_list(spec, quick):
    if spec:
        return [int(t) for t in spec.split(",")]
    n = get_num_threads()
    if quick:
        return sorted({1, n})
    out, t = [], 1
    while t < n:
        out.append(t)
        t *= 2
    return out + [n]


def _progress(i, total, what):
    sys.stderr.write(f"\r[{i}/{total}] {what:<48}")
    sys.stderr.flush()
    if i == total:
        sys.stderr.write("\n")


def _geomean(values):
    values = [v for v in values if v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def _speedup(r, peer):
    """Peer time / cyconv time; torch_best is the faster of torch and torch_cl."""
    if peer == "torch_best":
        t = min(r["ms"].get("torch", math.inf), r["ms"].get("torch_cl", math.inf))
    else:
        t = r["ms"].get(peer, math.nan)
    return t / r["ms"]["cyconv"]


def report(rows, peers, ceiling=None, out=sys.stdout):
    if not rows:
        return
    others = [p for p in peers if p != "cyconv"]
    head = f"{'shape':<20}{'thr':>4} {'pass':<9}{'cyconv ms':>10}{rows[0]['unit']:>9}"
    if ceiling:
        head += f"{'%sgemm':>7}"
    head += f"{'ws MiB':>7}"
    for p in others:
        head += f"{p + ' ms':>{max(10, len(p) + 4)}}{'x':>6}"
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        line = (f"{r['shape']:<20}{r['threads']:>4} {r['pass']:<9}"
                f"{r['ms']['cyconv']:>10.3f}{r['rate']['cyconv']:>9.1f}")
        if ceiling:
            line += f"{100 * r['rate']['cyconv'] / ceiling[r['threads']]:>6.0f}%"
        line += f"{r['workspace_mib']:>7.1f}"
        for p in others:
            width = max(10, len(p) + 4)
            if p in r["ms"]:
                line += f"{r['ms'][p]:>{width}.3f}{_speedup(r, p):>6.2f}"
            else:
                line += f"{'-':>{width}}{'-':>6}"
        print(line, file=out)
    print("\nx = peer time / cyconv time, medians of rounds (above 1: cyconv faster); "
          "ws = workspace a cyconv call allocates beyond its outputs", file=out)
    print("geometric mean of x over the suite:", file=out)
    if "torch" in others and "torch_cl" in others:
        others = others + ["torch_best"]
    for threads in sorted({r["threads"] for r in rows}):
        for p in sorted({r["pass"] for r in rows}):
            sel = [r for r in rows if r["threads"] == threads and r["pass"] == p]
            parts = []
            for o in others:
                vals = [_speedup(r, o) for r in sel]
                vals = [v for v in vals if v == v]
                if vals:
                    parts.append(f"vs {o} {_geomean(vals):.2f} (min {min(vals):.2f})")
            print(f"  {threads} thread(s), {p:<9}: " + ", ".join(parts), file=out)


def scaling(rows, out=sys.stdout):
    """cyconv's speed-up from 1 thread to each measured thread count."""
    threads = sorted({r["threads"] for r in rows})
    if len(threads) < 2 or threads[0] != 1:
        return
    print("\nthread scaling: cyconv time at 1 thread / time at t threads", file=out)
    print(f"{'shape':<20} {'pass':<9}" + "".join(f"{'t=' + str(t):>7}" for t in threads),
          file=out)
    keys = sorted({(r["shape"], r["pass"]) for r in rows}, key=lambda k: k[1])
    by = {(r["shape"], r["pass"], r["threads"]): r["ms"]["cyconv"] for r in rows}
    for shape, p in keys:
        base = by.get((shape, p, 1))
        print(f"{shape:<20} {p:<9}" + "".join(
            f"{base / by[(shape, p, t)]:>7.2f}" if (shape, p, t) in by else f"{'-':>7}"
            for t in threads), file=out)


def plot(path, rows, pool_rows, filter_rows, ceiling, info):
    """PNG: rate per shape for every peer at the largest thread count, and
    cyconv's thread scaling."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'cyconv[bench]'")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("conv2d forward (GFLOP/s)", [r for r in rows if r["pass"] == "forward"]),
              ("conv2d backward (GFLOP/s)", [r for r in rows if r["pass"] == "backward"]),
              ("pool2d (GB/s)", pool_rows), ("filter2d (GFLOP/s)", filter_rows)]
    groups = [(t, g) for t, g in groups if g]
    tmax = max(r["threads"] for _, g in groups for r in g)
    fig, axes = plt.subplots(len(groups) + 1, 1, figsize=(11, 3.2 * (len(groups) + 1)))
    for ax, (title, g) in zip(axes, groups):
        g = [r for r in g if r["threads"] == tmax]
        peers = list(g[0]["rate"])
        width = 0.8 / len(peers)
        for k, p in enumerate(peers):
            ax.bar([i + k * width for i in range(len(g))],
                   [r["rate"].get(p, 0) for r in g], width, label=p)
        if ceiling and "GFLOP" in title and "conv2d" in title:
            ax.axhline(ceiling[tmax], color="k", ls="--", lw=1, label="sgemm ceiling")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(g))])
        ax.set_xticklabels([r["shape"] for r in g], rotation=15, fontsize=8)
        ax.set_title(f"{title}, {tmax} thread(s)")
        ax.legend(fontsize=7, ncol=3)
    ax = axes[-1]
    threads = sorted({r["threads"] for r in rows})
    by = {(r["shape"], r["pass"], r["threads"]): r["ms"]["cyconv"] for r in rows}
    for shape, p in sorted({(r["shape"], r["pass"]) for r in rows}):
        if (shape, p, 1) in by:
            ax.plot(threads, [by[(shape, p, 1)] / by.get((shape, p, t), math.nan)
                              for t in threads], marker="o", lw=1,
                    ls="-" if p == "forward" else ":", label=f"{shape} {p}")
    ax.plot(threads, threads, color="k", lw=0.8, ls="--", label="linear")
    ax.set_xlabel("threads")
    ax.set_ylabel("speed-up over 1 thread")
    ax.set_title("cyconv conv2d thread scaling")
    ax.legend(fontsize=6, ncol=3)
    fig.suptitle(f"cyconv {info['cyconv']} ({info['kernels']} kernels) on {info['cpu']}, "
                 f"{info['cpus_available']} CPUs", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _isolate_peers(argv):
    """Re-run this command with OPENBLAS_THREAD_TIMEOUT=4 unless it is set.

    Idle OpenBLAS workers otherwise spin for about 2**28 cycles after each
    call, so a multithreaded NumPy peer steals a core from whichever peer runs
    next (measured: cyconv 18 ms -> 35 ms on vgg_3x3 at 2 threads).  OpenBLAS
    reads the variable when it loads, hence the re-exec.
    """
    if os.environ.get("OPENBLAS_THREAD_TIMEOUT") is None and argv is None:
        env = dict(os.environ, OPENBLAS_THREAD_TIMEOUT="4")
        os.execve(sys.executable, [sys.executable, "-m", "cyconv.bench", *sys.argv[1:]],
                  env)


def main(argv=None):
    _isolate_peers(argv)
    ap = argparse.ArgumentParser(prog="python -m cyconv.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="3 rounds, 1 and all threads: under a minute")
    ap.add_argument("--threads", help="comma-separated thread counts (default: 1..N)")
    ap.add_argument("--rounds", type=int, help="timed rounds per measurement")
    ap.add_argument("--shapes", help="comma-separated shape names (default: all)")
    ap.add_argument("--peers",
                    help="comma-separated peers (cyconv,numpy,torch,torch_cl,onnxruntime)")
    ap.add_argument("--passes", default="forward,backward")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--plot", metavar="PATH",
                    help="also write a PNG: rates per shape and thread scaling "
                         "(needs matplotlib, in the [bench] extra)")
    args = ap.parse_args(argv)

    shapes = load_shapes()
    suite, pools, filters = shapes["conv2d"], shapes["pool2d"], shapes["filter2d"]
    if args.shapes:
        wanted = args.shapes.split(",")
        known = [s["name"] for s in suite + pools + filters]
        unknown = sorted(set(wanted) - set(known))
        if unknown:
            ap.error(f"unknown shapes {unknown}; known: {known}")
        suite = [s for s in suite if s["name"] in wanted]
        pools = [s for s in pools if s["name"] in wanted]
        filters = [s for s in filters if s["name"] in wanted]
    names = args.peers.split(",") if args.peers else None
    if names and "cyconv" not in names:
        names.insert(0, "cyconv")
    peers = peers_for(names)
    threads = _threads_list(args.threads, args.quick)
    rounds = args.rounds or (3 if args.quick else 7)

    info = machine_info()
    print(f"cyconv {info['cyconv']} benchmark: conv2d and pool2d (float32, NCHW; torch_cl: "
          f"PyTorch channels_last), filter2d (float64)")
    print(f"machine: {info['cpu']}, {info['cpus_available']} CPUs available, "
          f"features {' '.join(info['cpu_features']) or '?'}")
    print(f"kernels: {info['kernels']} variant ({info['kernels_reason']})")
    print(f"build:   OpenMP {'on' if info['openmp'] else 'off'} "
          f"({', '.join(info['openmp_runtime']) or 'no runtime'}), flags '{info['cflags']}'")
    print(f"BLAS:    {'; '.join(info['blas']) or '?'}")
    print(f"GEMM:    {info['gemm']} (cyconv's GEMMs; CYCONV_GEMM chooses)")
    print(f"peers:   {', '.join(peers)}  ({', '.join(f'{k} {v}' for k, v in info['versions'].items())})")
    print(f"threads: {threads}; rounds: {rounds}; OPENBLAS_THREAD_TIMEOUT="
          f"{os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset')}\n")

    t0 = time.perf_counter()
    # The ceiling is measured before and after the conv2d suite, and the
    # faster is kept: on a shared VM the second vCPU can be starved for
    # seconds at a time (2-thread sgemm at the 1-thread rate).
    ceiling = {t: sgemm_ceiling(t, rounds=max(3, rounds)) for t in threads} if suite else {}
    total = (len(suite) + len(pools) + len(filters)) * len(threads)
    min_round = 0.0 if args.quick else 0.02
    rows = run_suite(suite, threads, peers, passes=args.passes.split(","), rounds=rounds,
                     min_round_s=min_round, progress=_progress, total=total)
    ceiling_runs = {t: (v, sgemm_ceiling(t, rounds=max(3, rounds))) for t, v in ceiling.items()}
    ceiling = {t: max(v) for t, v in ceiling_runs.items()}
    pool_peers = pool_peers_for(names)
    pool_rows = run_suite(pools, threads, pool_peers, passes=("forward",), rounds=rounds,
                          min_round_s=min_round, progress=_progress, work=pool_bytes,
                          unit="GB/s", start=len(suite) * len(threads), total=total)
    filter_peers = filter_peers_for(names)
    filter_rows = run_suite(filters, threads, filter_peers, passes=("forward",),
                            rounds=rounds, min_round_s=min_round, progress=_progress,
                            work=filter_flops, start=(len(suite) + len(pools)) * len(threads),
                            total=total)
    if ceiling:
        print("sgemm ceiling (the faster of SciPy's and NumPy's BLAS, 1536^3 float32, "
              f"fastest of {max(3, rounds)} rounds each, before / after the conv2d "
              "suite; the faster is used): " + ", ".join(
                  f"{a:.1f} / {b:.1f} GFLOP/s at {t} thread(s)"
                  for t, (a, b) in ceiling_runs.items()) + "\n")
    if rows:
        print("conv2d (rate: GFLOP/s of cyconv; backward = input, weight and bias "
              "gradients)")
        report(rows, list(peers), ceiling)
        scaling(rows)
    if pool_rows:
        print("\npool2d forward (rate: GB/s of cyconv, input read + output written)")
        report(pool_rows, list(pool_peers))
    if filter_rows:
        print("\nfilter2d: signal.correlate2d mode='same', float64 (rate: GFLOP/s of cyconv)")
        report(filter_rows, list(filter_peers))
    print(f"\npeak resident memory of this process: {peak_rss_mib():.0f} MiB "
          f"({time.perf_counter() - t0:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "threads": threads, "rounds": rounds,
                       "sgemm_ceiling_gflops": ceiling,
                       "sgemm_ceiling_before_after": ceiling_runs,
                       "peak_rss_mib": peak_rss_mib(),
                       "results": rows + pool_rows + filter_rows}, f, indent=1)
    if args.plot:
        plot(args.plot, rows, pool_rows, filter_rows, ceiling, info)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
