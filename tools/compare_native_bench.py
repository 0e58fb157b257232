"""Side-by-side p50 of `edgekit bench` and the runtimes' own benchmark tools on the same artifact,
threads and run length, interleaved over several rounds (these machines are noisy).

    python tools/compare_native_bench.py build/x86/model_int8.tflite build/x86/model_fp32.xml \
        --threads 1,2 --iterations 200 --rounds 3

TFLite: LiteRT's `litert-benchmark` (ships with ai-edge-litert). OpenVINO IR: `benchmark_app`
(ships with the openvino wheel; one stream, sync API, f32 as in edgekit's run: benchmark_app
allows -nthreads only with -hint none).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from edgekit.bench.local import BenchSettings, bench_artifact

BIN = Path(sys.executable).parent


def native_p50(artifact: Path, threads: int, iterations: int, warmup: int) -> float:
    if artifact.suffix == ".tflite":
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.json"
            subprocess.run([str(BIN / "litert-benchmark"), "--model", str(artifact), "--num_runs",
                            str(iterations), "--warmup_runs", str(warmup), "--num_threads", str(threads),
                            "--result_json", str(out)], check=True, capture_output=True, text=True)
            return float(json.loads(out.read_text())["latency"]["median_ms"])
    if artifact.suffix == ".xml":
        proc = subprocess.run([str(BIN / "benchmark_app"), "-m", str(artifact), "-d", "CPU",
                               "-hint", "none", "-nstreams", "1", "-api", "sync", "-niter", str(iterations),
                               "-nthreads", str(threads), "-infer_precision", "f32"],
                              check=True, capture_output=True, text=True)
        match = re.search(r"Median:\s+([0-9.]+) ms", proc.stdout)
        if not match:
            raise RuntimeError(f"no median in benchmark_app output:\n{proc.stdout[-2000:]}")
        return float(match.group(1))
    raise ValueError(f"no native tool for {artifact.suffix}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    print(f"{'artifact':28s} {'thr':>3s} {'edgekit p50':>11s} {'native p50':>10s} {'ratio':>6s}  "
          "per round (edgekit/native ms)")
    for artifact in args.artifacts:
        for t in threads:
            ours, theirs = [], []
            for _ in range(args.rounds):
                settings = BenchSettings(threads=t, warmup=args.warmup, iterations=args.iterations,
                                         ov_precision="f32" if artifact.suffix == ".xml" else None)
                ours.append(bench_artifact(artifact, "", "", settings).latency_ms["p50"])
                theirs.append(native_p50(artifact, t, args.iterations, args.warmup))
            a, b = statistics.median(ours), statistics.median(theirs)
            rounds = " ".join(f"{x:.2f}/{y:.2f}" for x, y in zip(ours, theirs))
            print(f"{artifact.parent.name + '/' + artifact.name:28s} {t:3d} {a:11.3f} {b:10.3f} "
                  f"{a / b:6.2f}  {rounds}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
