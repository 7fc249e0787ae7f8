"""python -m cyconv.bench: cyconv against its peers on the standard shape suite.

Prints machine and build info, then per shape, thread count and pass the
median milliseconds, cyconv's GFLOP/s, and cyconv's time divided by each
peer's measured in the same run (below 1: cyconv is faster), then the
geometric means of those ratios.
"""
import argparse
import json
import math
import os
import sys
import time

from cyconv import get_num_threads
from cyconv.bench.suite import (filter_flops, filter_peers_for, load_shapes, machine_info,
                                peers_for, pool_bytes, pool_peers_for, run_suite)


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


def report(rows, peers, out=sys.stdout):
    if not rows:
        return
    others = [p for p in peers if p != "cyconv"]
    head = f"{'shape':<20}{'thr':>4} {'pass':<9}{'cyconv ms':>10}{rows[0]['unit']:>9}"
    for p in others:
        head += f"{p + ' ms':>13}{'ratio':>7}"
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        line = (f"{r['shape']:<20}{r['threads']:>4} {r['pass']:<9}"
                f"{r['ms']['cyconv']:>10.3f}{r['rate']['cyconv']:>9.1f}")
        for p in others:
            line += f"{r['ms'][p]:>13.3f}{r['ms']['cyconv'] / r['ms'][p]:>7.2f}"
        print(line, file=out)
    print("\nratio = cyconv time / peer time, median of rounds (below 1: cyconv faster)",
          file=out)
    print("geometric mean of ratios over the suite:", file=out)
    for threads in sorted({r["threads"] for r in rows}):
        for p in sorted({r["pass"] for r in rows}):
            sel = [r for r in rows if r["threads"] == threads and r["pass"] == p]
            parts = [f"vs {o} {_geomean([r['ms']['cyconv'] / r['ms'][o] for r in sel]):.2f}"
                     for o in others]
            print(f"  {threads} thread(s), {p:<9}: " + ", ".join(parts), file=out)


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
    ap.add_argument("--peers", help="comma-separated peers (cyconv,numpy,torch,torch_cl)")
    ap.add_argument("--passes", default="forward,backward")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
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
    print(f"build:   OpenMP {'on' if info['openmp'] else 'off'}, flags '{info['cflags']}', "
          f"BLAS {info['blas'][0] if info['blas'] else '?'}")
    print(f"peers:   {', '.join(peers)}  ({', '.join(f'{k} {v}' for k, v in info['versions'].items())})")
    print(f"threads: {threads}; rounds: {rounds}; OPENBLAS_THREAD_TIMEOUT="
          f"{os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset')}\n")

    t0 = time.perf_counter()
    total = (len(suite) + len(pools) + len(filters)) * len(threads)
    min_round = 0.0 if args.quick else 0.02
    rows = run_suite(suite, threads, peers, passes=args.passes.split(","), rounds=rounds,
                     min_round_s=min_round, progress=_progress, total=total)
    pool_peers = pool_peers_for(names)
    pool_rows = run_suite(pools, threads, pool_peers, passes=("forward",), rounds=rounds,
                          min_round_s=min_round, progress=_progress, work=pool_bytes,
                          unit="GB/s", start=len(suite) * len(threads), total=total)
    filter_peers = filter_peers_for(names)
    filter_rows = run_suite(filters, threads, filter_peers, passes=("forward",),
                            rounds=rounds, min_round_s=min_round, progress=_progress,
                            work=filter_flops, start=(len(suite) + len(pools)) * len(threads),
                            total=total)
    if rows:
        print("conv2d (rate: GFLOP/s of cyconv)")
        report(rows, list(peers))
    if pool_rows:
        print("\npool2d forward (rate: GB/s of cyconv, input read + output written)")
        report(pool_rows, list(pool_peers))
    if filter_rows:
        print("\nfilter2d: signal.correlate2d mode='same', float64 (rate: GFLOP/s of cyconv)")
        report(filter_rows, list(filter_peers))
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "threads": threads, "rounds": rounds,
                       "results": rows + pool_rows + filter_rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
