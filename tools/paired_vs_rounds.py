#!/usr/bin/env python3
"""How stable is "B is x times A"? Runs the paired method and the unpaired --rounds method RUNS
times each on the same two artifacts and prints every run's ratio of p50s and the spread.

    python tools/paired_vs_rounds.py A B [--threads 2] [--runs 5] [--pairs 3000] [--iterations 1000]
"""
from __future__ import annotations

import argparse
import statistics
import time

from edgekit.bench.local import bench
from edgekit.bench.paired import bench_paired


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    paired, unpaired = [], []
    for run in range(args.runs):
        t0 = time.time()
        p = bench_paired([args.a, args.b], threads=args.threads, pairs=args.pairs)
        r = p.ratios[0]
        paired.append(r.ratio)
        t1 = time.time()
        results = bench([args.a, args.b], threads=[args.threads], iterations=args.iterations, rounds=args.rounds)
        u = results[1].latency_ms["p50"] / results[0].latency_ms["p50"]
        unpaired.append(u)
        print(f"run {run + 1}: paired {r.ratio:.3f} ({r.low:.3f}-{r.high:.3f}) [{t1 - t0:.0f} s] | "
              f"unpaired --rounds {args.rounds}: {u:.3f} [{time.time() - t1:.0f} s] | "
              f"p50 A/B paired {p.timings[0].latency_ms['p50']:.3f}/{p.timings[1].latency_ms['p50']:.3f} ms, "
              f"unpaired {results[0].latency_ms['p50']:.3f}/{results[1].latency_ms['p50']:.3f} ms", flush=True)
    for name, values in (("paired", paired), (f"unpaired --rounds {args.rounds}", unpaired)):
        print(f"{name}: ratios {', '.join(f'{v:.3f}' for v in values)}; range {min(values):.3f}-{max(values):.3f} "
              f"(spread {max(values) - min(values):.3f})"
              + (f", stdev {statistics.stdev(values):.4f}" if len(values) > 1 else ""))


if __name__ == "__main__":
    main()
