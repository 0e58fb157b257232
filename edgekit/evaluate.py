"""Accuracy of a PyTorch model and of artifacts on labelled images, plus paired agreement."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .backends.base import backend_for_path, get_backend
from .datasets import load_images, load_labelled
from .errors import InputError
from .manifest import MANIFEST_NAME, Manifest, record_for
from .models.weights import load_checkpoint
from .preprocessing import Preprocessing
from .source import ModelSource


@dataclass
class EvalResult:
    path: str
    backend: str
    precision: str
    top1: float
    top5: float
    n: int
    agreement_with_float: float | None = None
    skipped_unreadable: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Candidate:
    path: Path
    backend: str  # "pytorch" for the float model
    precision: str
    preprocessing: Preprocessing
    labels: list[str] | None
    num_classes: int
    float_source: "Path | None" = None  # checkpoint the artifact was converted from


def candidates(paths: list[Path]) -> list[Candidate]:
    out: list[Candidate] = []
    for path in map(Path, paths):
        if path.is_dir() or path.name == MANIFEST_NAME:
            manifest = Manifest.read(path)
            meta = manifest.model_meta()
            source = _checkpoint_of(manifest)
            if source is not None:
                out.append(Candidate(source, "pytorch", "fp32", meta.preprocessing,
                                     list(meta.labels or []) or None, meta.num_classes, source))
            for a in manifest.artifacts:
                out.append(Candidate(manifest.artifact_path(a), a.backend, a.precision,
                                     meta.preprocessing, list(meta.labels or []) or None, meta.num_classes,
                                     source))
        elif path.suffix in (".pth", ".pt", ".safetensors"):
            model = load_checkpoint(path)
            m = model.meta
            out.append(Candidate(path, "pytorch", "fp32", m.preprocessing, list(m.labels or []) or None,
                                 m.num_classes, path))
        else:
            if not path.exists():
                raise InputError(f"not found: {path}")
            backend_for_path(path)  # a clear error for a file no backend runs
            manifest, record = record_for(path, "evaluation")
            meta = manifest.model_meta()
            out.append(Candidate(path, record.backend, record.precision, meta.preprocessing,
                                 list(meta.labels or []) or None, meta.num_classes, _checkpoint_of(manifest)))
    if not out:
        raise InputError("nothing to evaluate")
    unique = {c.path.resolve(): c for c in reversed(out)}  # a checkpoint named twice runs once
    return [c for c in out if unique[c.path.resolve()] is c]


def _checkpoint_of(manifest: Manifest) -> Path | None:
    weights = manifest.model.get("weights")
    if weights and Path(weights).suffix in (".pth", ".pt", ".safetensors") and Path(weights).is_file():
        return Path(weights)
    return None


def _reference(c: Candidate, cands: list[Candidate]) -> Candidate | None:
    """What ``c`` is compared with: the checkpoint it was converted from when that is being
    evaluated, else the first PyTorch model, else the first fp32 artifact."""
    if c.float_source is not None:
        own = next((r for r in cands if r.backend == "pytorch" and r.float_source is not None
                    and r.float_source.resolve() == c.float_source.resolve()), None)
        if own is not None and own is not c:
            return own
    return next((r for r in cands if r.backend == "pytorch"),
                next((r for r in cands if r.precision == "fp32"), None))


def _predict(c: Candidate, images: np.ndarray) -> np.ndarray:
    if c.backend == "pytorch":
        return ModelSource.from_module(load_checkpoint(c.path)).reference(images)
    return get_backend(c.backend).load(c.path).run(images)


def evaluate(paths: list[str | Path], data: str | Path, limit: int | None = None,
             progress=None) -> list[EvalResult]:
    say = progress or (lambda _m: None)
    cands = candidates([Path(p) for p in paths])
    first = cands[0]
    if any(c.num_classes != first.num_classes for c in cands):
        raise InputError("the models to compare have different numbers of classes")
    dataset = load_labelled(data, first.labels, first.num_classes, limit)
    say(f"{len(dataset)} labelled images from {dataset.source}")
    cache: dict[Preprocessing, tuple[np.ndarray, np.ndarray, int]] = {}
    logits = []
    for c in cands:
        if c.preprocessing not in cache:
            cache[c.preprocessing] = load_images(dataset, c.preprocessing)
        images, targets, skipped = cache[c.preprocessing]
        say(f"{c.path.name}: {c.backend} {c.precision}")
        logits.append((c, _predict(c, images), targets, skipped))
    top1_of = {id(c): lg.argmax(1) for c, lg, _, _ in logits}
    results = []
    for c, lg, targets, skipped in logits:
        top5 = np.argsort(-lg, axis=1)[:, :5]
        agree = None
        reference = _reference(c, cands)
        if reference is not None and reference is not c and len(top1_of[id(reference)]) == len(lg):
            agree = float(np.mean(lg.argmax(1) == top1_of[id(reference)]))
        results.append(EvalResult(str(c.path), c.backend, c.precision,
                                  float(np.mean(top5[:, 0] == targets)),
                                  float(np.mean([t in row for t, row in zip(targets, top5)])),
                                  len(targets), agree, skipped))
    return results
