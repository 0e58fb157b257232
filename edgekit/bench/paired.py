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
    timings: list[PairedTiming]  # the baseline first
    ratios: list[Ratio]  # every other artifact against the baseline
    device: str = "local"
    host: dict = field(default_factory=dict)
    samples: list[np.ndarray] = field(default_factory=list, repr=False)  # per timing, paired by index

    @property
    def baseline(self) -> PairedTiming:
        return self.timings[0]

    def ratio(self, base: int, other: int) -> Ratio:
        """Any two of the artifacts: they all ran in the same alternation."""
        r, low, high = ratio_of_medians(self.samples[base], self.samples[other])
        return Ratio(self.timings[other].artifact, self.timings[base].artifact, r, low, high)

    def vs_fp32(self) -> dict[int, Ratio]:
        """Timing index -> its ratio to the fp32 artifact of the same backend and build."""
        out = {}
        for i, t in enumerate(self.timings):
            if t.precision == "fp32":
                continue
            fp32 = [j for j, u in enumerate(self.timings)
                    if u.precision == "fp32" and u.backend == t.backend and u.group == t.group]
            if fp32:
                out[i] = self.ratio(fp32[0], i)
        return out

    def fastest(self) -> int:
        return min(range(len(self.timings)), key=lambda i: self.timings[i].latency_ms["p50"])

    def to_dict(self) -> dict:
        vs = self.vs_fp32()
        return {"threads": self.threads, "pairs": self.pairs, "device": self.device, "host": self.host,
                "baseline": self.baseline.artifact,
                "timings": [{**asdict(t), "vs_fp32": _ratio_dict(vs[i]) if i in vs else None}
                            for i, t in enumerate(self.timings)],
                "ratios": [_ratio_dict(r) for r in self.ratios]}


def _ratio_dict(r: Ratio) -> dict:
    return {**asdict(r), "speedup": r.speedup, "distinguishable": r.distinguishable}


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
    result = PairedComparison(data["threads"], data["pairs"], timings, [], device, data.get("host", {}),
                              samples)
    result.ratios = [result.ratio(0, i) for i in range(1, len(timings))]
    return result


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
    from .remote import RemoteSession, require_paramiko, sidecars

    require_paramiko()
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
                for f in [*[x for x in sidecars(path) if x.is_file()], path]:
                    link = Path(tmp) / f"{i}_{f.name}"
                    link.symlink_to(f.resolve())
                    copied = session.put(link)
                remote.append(copied)
            data = session.run_runner({"paired": remote, "artifact": "paired run", "threads": threads,
                                       "pairs": pairs, "warmup": warmup, "ov_precision": ov_precision})
    finally:
        session.close()
    return compare(data, items, first, device=device.name)


def table(result: PairedComparison):
    """A rich table: p50/p90 per artifact, time vs the baseline and speed vs fp32, with intervals."""
    from rich.table import Table

    where = "" if result.device == "local" else f" on {result.device}"
    t = Table(title=f"edgekit bench --paired{where}: {result.pairs} alternating invocations each, "
                    f"threads {result.threads or 'default'}", title_justify="left")
    for c in ("artifact", "backend", "precision", "p50 ms", "p90 ms", "time vs baseline", "vs fp32"):
        t.add_column(c, justify="left" if c in ("artifact", "backend", "precision") else "right")
    vs = result.vs_fp32()
    fastest = result.fastest()
    for i, timing in enumerate(result.timings):
        lat = timing.latency_ms
        base = "baseline" if i == 0 else _interval(result.ratios[i - 1].ratio, result.ratios[i - 1].low,
                                                    result.ratios[i - 1].high)
        speed = "-" if i not in vs else _interval(vs[i].speedup, 1 / vs[i].high, 1 / vs[i].low) + " faster"
        p50 = f"{lat['p50']:.3f}" + (" *" if i == fastest else "")
        t.add_row(_short(timing), timing.backend, timing.precision, p50, f"{lat['p90']:.3f}", base, speed)
    t.caption = ("ratios of medians over the paired invocations, 95% bootstrap intervals in brackets; "
                 "* fastest")
    if len({timing.backend for timing in result.timings}) > 1:
        t.caption += ("; several runtimes share this process: one's idle worker threads can still "
                      "spin during another's invocation")
    return t


CSV_COLUMNS = ("device", "threads", "pairs", "artifact", "backend", "precision", "p50_ms", "p90_ms",
               "vs_baseline", "vs_baseline_low", "vs_baseline_high", "speedup_vs_fp32",
               "speedup_vs_fp32_low", "speedup_vs_fp32_high")


def to_csv(results: list[PairedComparison]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for result in results:
        vs = result.vs_fp32()
        for i, timing in enumerate(result.timings):
            base = result.ratios[i - 1] if i else None
            fp32 = vs.get(i)
            writer.writerow([result.device, result.threads or "", result.pairs, timing.artifact, timing.backend,
                             timing.precision, f"{timing.latency_ms['p50']:.4f}", f"{timing.latency_ms['p90']:.4f}",
                             *(("1", "1", "1") if base is None else
                               (f"{base.ratio:.4f}", f"{base.low:.4f}", f"{base.high:.4f}")),
                             *(("", "", "") if fp32 is None else
                               (f"{fp32.speedup:.4f}", f"{1 / fp32.high:.4f}", f"{1 / fp32.low:.4f}"))])
    return out.getvalue()


def _interval(value: float, low: float, high: float) -> str:
    return f"{value:.3f}x ({low:.3f}-{high:.3f})"


def _short(timing: PairedTiming) -> str:
    name = Path(timing.artifact).name
    return f"{Path(timing.group).name}/{name}" if timing.group and Path(timing.group).is_dir() else name
