"""Paired benchmarks: comparisons that survive a noisy machine.

Separate runs of two artifacts drift apart on a shared or throttled machine (p50 ratios of one
pair ranged 0.82-1.06 over four runs an hour apart here). Loading both in one process and
alternating single invocations makes every slow spell hit both: the ratio of their medians is then
stable, and a bootstrap over the paired samples says how sure it is.
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..limits import check_threads
from .local import RUNNER, artifacts_in, run_runner

DEFAULT_PAIRS = 1000
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass
class PairedTiming:
    artifact: str
    backend: str
    precision: str
    runtime: dict
    latency_ms: dict  # p50, p90, ... over the paired invocations
    n: int
    group: str | None = None

    @property
    def label(self) -> str:
        return f"{Path(self.artifact).name} ({self.backend} {self.precision})"


@dataclass
class Ratio:
    """time(artifact) / time(baseline), ratio of medians, with a bootstrap confidence interval."""
    artifact: str
    baseline: str
    ratio: float
    low: float
    high: float
    confidence: float = CONFIDENCE

    @property
    def speedup(self) -> float:
        return 1.0 / self.ratio

    def describe(self) -> str:
        return f"{self.ratio:.3f}x the time ({self.low:.3f}-{self.high:.3f})"

    @property
    def distinguishable(self) -> bool:
        """The interval excludes 1.0: one is measurably faster."""
        return not self.low <= 1.0 <= self.high


@dataclass
class PairedComparison:
    threads: int | None
    pairs: int
    timings: list[PairedTiming]
    ratios: list[Ratio]
    device: str = "local"
    host: dict = field(default_factory=dict)

    @property
    def baseline(self) -> PairedTiming:
        return self.timings[0]

    def to_dict(self) -> dict:
        return {"threads": self.threads, "pairs": self.pairs, "device": self.device, "host": self.host,
                "baseline": self.baseline.artifact,
                "timings": [asdict(t) for t in self.timings],
                "ratios": [{**asdict(r), "speedup": r.speedup, "distinguishable": r.distinguishable}
                           for r in self.ratios]}


def ratio_of_medians(baseline: np.ndarray, other: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                     confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float, float]:
    """median(other) / median(baseline) and its percentile-bootstrap interval, resampling the
    pairs (index i keeps both invocations of round i together)."""
    a, b = np.asarray(baseline, float), np.asarray(other, float)
    if a.shape != b.shape or a.size < 2:
        raise InputError("paired samples must be two equal-length series of at least 2")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))) or a.min() <= 0 or b.min() <= 0:
        raise InputError("paired samples must be finite positive times")
    rng = np.random.default_rng(seed)
    ratio = float(np.median(b) / np.median(a))
    boot = np.empty(resamples)
    for chunk in range(0, resamples, 200):  # bounded memory for long runs
        idx = rng.integers(0, a.size, size=(min(200, resamples - chunk), a.size))
        boot[chunk:chunk + len(idx)] = np.median(b[idx], axis=1) / np.median(a[idx], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return ratio, float(low), float(high)


def compare(data: dict, items: list[tuple[str, Path, str, str]], baseline: int = 0,
            device: str = "local") -> PairedComparison:
    """The runner's paired output -> timings and each artifact's ratio to the baseline."""
    results = data["results"]
    timings = [PairedTiming(str(path), backend, precision, r["runtime"], r["latency_ms"], len(r["samples_ms"]),
                            group) for (group, path, backend, precision), r in zip(items, results)]
    order = [baseline] + [i for i in range(len(timings)) if i != baseline]
    timings = [timings[i] for i in order]
    samples = [np.asarray(results[i]["samples_ms"]) for i in order]
    ratios = []
    for timing, s in zip(timings[1:], samples[1:]):
        ratio, low, high = ratio_of_medians(samples[0], s)
        ratios.append(Ratio(timing.artifact, timings[0].artifact, ratio, low, high))
    return PairedComparison(data["threads"], data["pairs"], timings, ratios, device, data.get("host", {}))


MAX_PAIRS = 1_000_000


def check_pairs(pairs: int) -> None:
    if not 2 <= int(pairs) <= MAX_PAIRS:
        raise InputError(f"--pairs must be between 2 and {MAX_PAIRS}, not {pairs}")


def paired_items(paths: list[str | Path], verify: bool = True) -> list[tuple[str, Path, str, str]]:
    items = [(str(p), artifact, backend, precision)
             for p in paths for artifact, backend, precision, _parity in artifacts_in(Path(p), verify)]
    if len(items) < 2:
        raise InputError("--paired compares artifacts: give at least two (files or convert folders)")
    return items


def pick_baseline(items: list[tuple[str, Path, str, str]], baseline: str | None) -> int:
    if baseline is None:
        return 0
    for i, (_g, path, _b, _p) in enumerate(items):
        if baseline in (str(path), path.name):
            return i
    raise InputError(f"--baseline {baseline} is none of the artifacts compared "
                     f"({', '.join(path.name for _g, path, _b, _p in items)})")


def bench_paired(paths: list[str | Path], threads: int | None = None, pairs: int = DEFAULT_PAIRS,
                 warmup: int = 50, baseline: str | None = None, ov_precision: str | None = None,
                 verify: bool = True) -> PairedComparison:
    """Alternate single invocations of every artifact in one local process (see the module doc)."""
    check_threads(threads)
    check_pairs(pairs)
    items = paired_items(paths, verify)
    first = pick_baseline(items, baseline)
    config = {"paired": [str(path) for _g, path, _b, _p in items], "threads": threads, "pairs": pairs,
              "warmup": warmup, "ov_precision": ov_precision}
    data = run_runner([sys.executable, str(RUNNER)], {**config, "artifact": "paired run"})
    return compare(data, items, first)


def bench_paired_device(paths: list[str | Path], device, threads: int | None = None,
                        pairs: int = DEFAULT_PAIRS, warmup: int = 50, baseline: str | None = None,
                        ov_precision: str | None = None, verify: bool = True,
                        trust_new_host: bool = False) -> PairedComparison:
    """The same on a device over SSH: its runner does the alternation there."""
    from .remote import RemoteSession, _paramiko, _sidecars

    _paramiko()
    check_threads(threads)
    check_pairs(pairs)
    items = paired_items(paths, verify)
    first = pick_baseline(items, baseline)
    session = RemoteSession(device, trust_new_host)
    try:
        with tempfile.TemporaryDirectory(prefix="edgekit-paired-") as tmp:
            remote = []
            for i, (_g, path, _b, _p) in enumerate(items):
                # numbered names: two builds' model_int8.tflite must not overwrite each other there
                for f in [*[x for x in _sidecars(path) if x.is_file()], path]:
                    link = Path(tmp) / f"{i}_{f.name}"
                    link.symlink_to(f.resolve())
                    copied = session.put(link)
                remote.append(copied)
            data = session.run_runner({"paired": remote, "artifact": "paired run", "threads": threads,
                                       "pairs": pairs, "warmup": warmup, "ov_precision": ov_precision})
    finally:
        session.close()
    return compare(data, items, first, device=device.name)
