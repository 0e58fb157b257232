"""Latency profiling: the standalone runner, local runs in fresh processes, reports."""
from .local import BenchResult, bench, bench_artifact

__all__ = ["BenchResult", "bench", "bench_artifact"]
