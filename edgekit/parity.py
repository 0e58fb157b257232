"""How close a converted artifact is to its source model, and whether that is close enough."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Parity:
    n_images: int
    max_abs_diff: float
    mean_abs_diff: float
    reference_max_abs: float  # scale of the logits the differences are measured against
    top1_agreement: float
    top5_overlap: float  # share of the source's top-1 that is in the artifact's top-5
    sqnr_db: float
    nonfinite_reference: int = 0  # NaN/inf values among the source model's outputs
    nonfinite_candidate: int = 0  # ... and the artifact's

    def to_dict(self) -> dict:
        return asdict(self)


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - candidate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")


def compare(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    reference = np.asarray(reference, np.float32)
    candidate = np.asarray(candidate, np.float32)
    if reference.shape != candidate.shape:
        raise ValueError(f"output shapes differ: source {reference.shape}, artifact {candidate.shape}")
    diff = np.abs(reference - candidate)
    ref_top1 = reference.argmax(axis=1)
    k = min(5, reference.shape[1])
    cand_top5 = np.argsort(-candidate, axis=1)[:, :k]
    return Parity(
        n_images=int(reference.shape[0]),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        reference_max_abs=float(np.abs(reference).max()),
        top1_agreement=float(np.mean(ref_top1 == candidate.argmax(axis=1))),
        top5_overlap=float(np.mean([r in c for r, c in zip(ref_top1, cand_top5)])),
        sqnr_db=float(sqnr_db(reference, candidate)),
        nonfinite_reference=int(np.size(reference) - np.isfinite(reference).sum()),
        nonfinite_candidate=int(np.size(candidate) - np.isfinite(candidate).sum()),
    )


@dataclass(frozen=True)
class Tolerance:
    """``max_abs_diff`` is scaled by the logits' size: allowed = max_abs_diff * max(1, |logits|max / 10).
    float32 rounding grows with the magnitude of what is summed; 1e-4 holds for logits up to ~10."""

    max_abs_diff: float | None = None
    min_top1_agreement: float | None = None
    min_sqnr_db: float | None = None

    def allowed_abs_diff(self, parity: Parity) -> float | None:
        if self.max_abs_diff is None:
            return None
        return self.max_abs_diff * max(1.0, parity.reference_max_abs / 10.0)

    def failures(self, parity: Parity, check_agreement: bool = True) -> list[str]:
        """What is outside the tolerance; any NaN or inf output always is (every comparison with
        NaN is false: it would pass the others)."""
        counts = (("source model", parity.nonfinite_reference), ("artifact", parity.nonfinite_candidate))
        out = [f"{n} of the {what}'s output values are NaN or infinite" for what, n in counts if n]
        measured = (parity.max_abs_diff, parity.mean_abs_diff, parity.reference_max_abs, parity.top1_agreement)
        if not out and not all(math.isfinite(v) for v in measured):
            out.append("the outputs' differences are not finite (NaN or inf outputs)")
        allowed = self.allowed_abs_diff(parity)
        if allowed is not None and parity.max_abs_diff > allowed:
            out.append(f"max abs diff {parity.max_abs_diff:.3g} > {allowed:.3g} "
                       f"({self.max_abs_diff:g} scaled to logits up to {parity.reference_max_abs:.3g})")
        if (check_agreement and self.min_top1_agreement is not None
                and parity.top1_agreement < self.min_top1_agreement):
            out.append(f"top-1 agreement {parity.top1_agreement:.1%} < {self.min_top1_agreement:.0%}")
        if self.min_sqnr_db is not None and parity.sqnr_db < self.min_sqnr_db:
            out.append(f"SQNR {parity.sqnr_db:.1f} dB < {self.min_sqnr_db:g} dB")
        return out

    def between_runs(self) -> "Tolerance":
        """For two runs of one artifact (another machine or architecture) instead of artifact vs
        source. Each run may be ``max_abs_diff`` from the source, so two may differ by twice that.
        Integer kernels round differently per architecture and a step's difference early on grows
        through the layers, so quantized outputs need not be bit-exact, but their difference must
        hold 10 dB (10x less noise) above the artifact-vs-source SQNR floor; top-1 agreement as is."""
        return Tolerance(
            max_abs_diff=None if self.max_abs_diff is None else 2 * self.max_abs_diff,
            min_top1_agreement=self.min_top1_agreement,
            min_sqnr_db=None if self.min_sqnr_db is None else self.min_sqnr_db + RUN_TO_RUN_MARGIN_DB)

    def describe(self) -> str:
        """"max abs diff <= 0.0001 (scaled to the logits)", "top-1 >= 85%, SQNR >= 10 dB"."""
        parts = []
        if self.max_abs_diff is not None:
            parts.append(f"max abs diff <= {self.max_abs_diff:g} (scaled to the logits)")
        if self.min_top1_agreement is not None:
            parts.append(f"top-1 >= {self.min_top1_agreement:.0%}")
        if self.min_sqnr_db is not None:
            parts.append(f"SQNR >= {self.min_sqnr_db:g} dB")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


RUN_TO_RUN_MARGIN_DB = 10.0
