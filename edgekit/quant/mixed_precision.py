"""Accuracy-budgeted mixed precision: keep the layers int8 hurts most in float until the int8
artifact is within the budget.

The budget is in percentage points: the top-1 drop on a labelled validation set, or top-1
disagreement with the float model when the images have no labels. Layers are tried in the order
of the per-layer report (quant/report.py: logits SQNR with only that layer quantized), 1, 2, 4,
... of them, then the smallest count that meets the budget is found by bisection. Layers are named by module path, so
the same choice applies to every backend (ConvertOptions.float_layers).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from ..backends.base import Artifact, Session

MAX_FLOAT_SHARE = 0.5  # by default at most half the layers stay float
TIMING_RUNS = 40


@dataclass(frozen=True)
class Evaluation:
    """How an int8 build scores against the float model on the validation images."""

    drop_points: float  # top-1 drop (labelled) or disagreement (unlabelled), in points
    top1: float | None
    agreement: float


@dataclass
class Trial:
    float_layers: list[str]
    drop_points: float
    agreement: float
    size_bytes: int


@dataclass
class MixedPrecision:
    budget_points: float
    metric: str
    ranking: list[dict]  # the report's top layers: name, added noise, SQNR
    trials: list[Trial] = field(default_factory=list)
    float_layers: list[str] = field(default_factory=list)
    met: bool = False
    latency_ms: dict[str, float] = field(default_factory=dict)  # quick in-process p50, 1 thread

    def to_dict(self) -> dict:
        return asdict(self)


def _points(fraction: float) -> float:
    """Percentage points of a fraction of images, without the float residue that made 10 of
    200 images read 5.000000000000004 > a budget of 5."""
    return round(100.0 * fraction, 9)


def evaluate(logits: np.ndarray, reference: np.ndarray, targets: np.ndarray | None) -> Evaluation:
    agreement = float(np.mean(logits.argmax(1) == reference.argmax(1)))
    if targets is None:
        return Evaluation(_points(1.0 - agreement), None, agreement)
    top1 = float(np.mean(logits.argmax(1) == targets))
    float_top1 = float(np.mean(reference.argmax(1) == targets))
    return Evaluation(_points(float_top1 - top1), top1, agreement)


def fit_budget(build: Callable[[tuple[str, ...]], tuple[Artifact, Evaluation]], ranking: list[str],
               budget: float, first: tuple[Artifact, Evaluation], metric: str,
               ranking_details: list[dict], max_float: int | None = None,
               say: Callable[[str], None] = lambda _m: None) -> tuple[Artifact, MixedPrecision]:
    """Try float layer sets from ``ranking`` until ``build(layers)`` scores within ``budget``.

    ``first`` is the all-int8 build. Returns the chosen artifact (the all-int8 one when it
    already meets the budget, the best try when nothing does) and the record of the search.
    """
    record = MixedPrecision(budget, metric, ranking_details)
    artifact, score = first
    record.trials.append(Trial([], round(score.drop_points, 2), score.agreement, artifact.size_bytes))
    if score.drop_points <= budget:
        record.met = True
        return artifact, record
    tried: dict[int, tuple[Artifact, Evaluation]] = {0: first}

    def attempt(k: int) -> tuple[Artifact, Evaluation]:
        if k not in tried:
            layers = tuple(ranking[:k])
            say(f"mixed precision: {k} layer(s) in float: {', '.join(layers)}")
            tried[k] = build(layers)
            a, s = tried[k]
            record.trials.append(Trial(list(layers), round(s.drop_points, 2), s.agreement, a.size_bytes))
            say(f"mixed precision: {k} float -> {metric} {s.drop_points:.1f} points "
                f"(budget {budget:g})")
        return tried[k]

    if max_float is None:
        max_float = max(1, round(len(ranking) * MAX_FLOAT_SHARE))
    limit = min(max_float, len(ranking))
    low, high, k = 0, None, 1
    while k <= limit:
        if attempt(k)[1].drop_points <= budget:
            high = k
            break
        low = k
        k = k * 2 if k * 2 <= limit or k == limit else limit
    if high is None:
        best = min(tried, key=lambda n: (tried[n][1].drop_points, n))
        record.float_layers = list(ranking[:best])
        return tried[best][0], record
    while high - low > 1:  # smallest count that meets the budget (assumes more float never hurts)
        mid = (low + high) // 2
        if attempt(mid)[1].drop_points <= budget:
            high = mid
        else:
            low = mid
    record.float_layers = list(ranking[:high])
    record.met = True
    return tried[high][0], record


def quick_latency(sessions: dict[str, Session], image: np.ndarray, runs: int = TIMING_RUNS) -> dict[str, float]:
    """p50 of ``runs`` interleaved inferences per session, in ms: a side-by-side estimate for
    the report, not a benchmark (``edgekit bench`` is)."""
    native = {name: s.prepare(image) for name, s in sessions.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for name, s in sessions.items():
        for _ in range(3):
            s.infer(native[name])
    for _ in range(runs):
        for name, s in sessions.items():
            start = time.perf_counter()
            s.infer(native[name])
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: round(float(np.median(t)), 3) for name, t in times.items()}
