"""Accuracy of a PyTorch model and of artifacts on labelled images, plus paired agreement."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .backends.base import backend_for_path, get_backend
from .datasets import load_labelled
from .errors import InputError
from .manifest import MANIFEST_NAME, Manifest, listed, recorded_checkpoint, verify_artifact
from .models.weights import load_checkpoint, read_checkpoint
from .preprocessing import Preprocessing, load_image

EVAL_CHUNK = 256  # images preprocessed and run at a time


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
    folder: "Path | None" = None  # the convert folder it belongs to (None: a bare checkpoint)
    hidden: bool = False  # run only as the float reference of artifacts (not passed: no row)


@dataclass(frozen=True)
class BareInput:
    """How to feed artifacts no manifest describes (a reference model such as Google's .tflite):
    the input value range (preprocessing.NORMALISATIONS) and, optionally, class names; the input
    size and class count are read from the artifact."""

    normalisation: str
    labels: tuple[str, ...] | None = None


def candidates(paths: list[Path], bare: BareInput | None = None, verify: bool = True) -> list[Candidate]:
    """What to evaluate: exactly the paths given (a folder: its artifacts, checked against its
    manifest's sha256 unless not ``verify``). The checkpoint a build was converted from is added
    as a hidden float reference (no row) when its sha256 is recorded and matches."""
    out: list[Candidate] = []
    for path in map(Path, paths):
        if path.is_dir() or path.name == MANIFEST_NAME:
            manifest = Manifest.read(path)
            out.extend(_build_candidates(manifest, manifest.artifacts, verify))
        elif path.suffix in (".pth", ".pt", ".safetensors"):
            model = _eval_checkpoint(path)
            m = model.meta
            out.append(Candidate(path, "pytorch", "fp32", m.preprocessing, list(m.labels or []) or None,
                                 m.num_classes, path))
        else:
            if not path.exists():
                raise InputError(f"not found: {path}")
            backend = backend_for_path(path)  # a clear error for a file no backend runs
            found = listed(path)
            if found is None:
                if bare is None:
                    raise InputError(f"{path.name} has no {MANIFEST_NAME} beside it that lists it: give "
                                     "--normalisation (and --labels) to evaluate it as a bare model")
                out.append(_bare_candidate(path, backend, bare))
                continue
            manifest, record = found
            out.extend(_build_candidates(manifest, [record], verify, path))
    if not out:
        raise InputError("nothing to evaluate")
    shown = {c.path.resolve() for c in out if not c.hidden}
    out = [c for c in out if not (c.hidden and c.path.resolve() in shown)]  # passed too: a row
    unique = {c.path.resolve(): c for c in reversed(out)}  # a checkpoint named twice runs once
    return [c for c in out if unique[c.path.resolve()] is c]


def _build_candidates(manifest: Manifest, records, verify: bool, given: Path | None = None) -> list[Candidate]:
    meta = manifest.model_meta()
    labels = list(meta.labels or []) or None
    source, checked = recorded_checkpoint(manifest, verify)
    out = [Candidate(source, "pytorch", "fp32", meta.preprocessing, labels, meta.num_classes, source,
                     manifest.folder, hidden=True)] if checked else []
    for a in records:
        file = verify_artifact(manifest, a, verify)
        out.append(Candidate(given or file, a.backend, a.precision, meta.preprocessing, labels,
                             meta.num_classes, source, manifest.folder))
    return out


def _eval_checkpoint(path: Path):
    if read_checkpoint(path)[1] is None:
        raise InputError(f"{path} is a bare state_dict with no edgekit metadata (architecture, "
                         "preprocessing, labels): eval takes edgekit checkpoints, artifacts and convert "
                         f"folders; convert it first (edgekit convert TARGET --model NAME --weights {path}) "
                         "and evaluate the build")
    return load_checkpoint(path)


def _bare_candidate(path: Path, backend, bare: BareInput) -> Candidate:
    session = backend.load(path)
    spec = session.input
    size = spec.shape[2] if spec.layout == "NCHW" else spec.shape[1]
    classes = session.run(np.zeros((1, 3, size, size), np.float32)).shape[1]
    if bare.labels is not None and len(bare.labels) != classes:
        raise InputError(f"{len(bare.labels)} labels for {path.name}, which has {classes} outputs")
    pre = Preprocessing.torchvision(size).normalised(bare.normalisation)
    return Candidate(path, backend.name, backend.stored_precision(path), pre, list(bare.labels) if bare.labels else None,
                     classes)


def _reference(c: Candidate, cands: list[Candidate]) -> Candidate | None:
    """The float model ``c`` is compared with: the checkpoint it was converted from when that is
    being evaluated (or verified against its build's manifest: hidden), else the first fp32
    artifact of its own convert folder. None for a checkpoint
    and when neither is at hand: agreement with another model's outputs would mean nothing."""
    if c.backend == "pytorch":
        return None
    if c.float_source is not None:
        source = c.float_source.resolve()
        own = next((r for r in cands if r.backend == "pytorch" and r.path.resolve() == source), None)
        if own is not None:
            return own
    if c.folder is not None:
        folder = c.folder.resolve()
        fp32 = next((r for r in cands if r.backend != "pytorch" and r.precision == "fp32"
                     and r.folder is not None and r.folder.resolve() == folder), None)
        if fp32 is not c:
            return fp32
    return None


def _skipped_message(unreadable: list[Path], shown: int = 5) -> str:
    more = ", ..." if len(unreadable) > shown else ""
    return (f"skipped {len(unreadable)} unreadable image(s): "
            + ", ".join(str(f) for f in unreadable[:shown]) + more)


def _predictor(c: Candidate, check: np.ndarray, say):
    """A function images -> logits for ``c``; ``check``: its first real inputs."""
    if c.backend == "pytorch":
        # ONNX Runtime when it matches PyTorch on the first images: 10,000 CIFAR images through
        # MobileNetV3-Small take minutes in PyTorch eager, seconds there
        from .forward import fastest_runner

        model = load_checkpoint(c.path)
        runner = fastest_runner(model, model.meta, check)
        say(f"  run in {runner.runtime}" + (f" ({runner.why})" if runner.why else
                                           " (checked against PyTorch first)"))
        return runner.run
    return get_backend(c.backend).load(c.path).run


def _chunks(dataset, pres: list[Preprocessing]):
    """(images per preprocessing, targets, unreadable files) for EVAL_CHUNK files at a time: each
    file decoded once for every preprocessing, and never the whole set in memory (10,000 images
    at 224 px are 6 GB per preprocessing)."""
    files, targets = list(dataset.files), list(dataset.targets)
    for i in range(0, len(files), EVAL_CHUNK):
        arrays: dict[Preprocessing, list[np.ndarray]] = {p: [] for p in pres}
        kept, unreadable = [], []
        for f, t in zip(files[i:i + EVAL_CHUNK], targets[i:i + EVAL_CHUNK]):
            try:
                image = load_image(f)
                views = [p.apply(image) for p in pres]
            except InputError:
                unreadable.append(f)
                continue
            for p, v in zip(pres, views):
                arrays[p].append(v)
            kept.append(t)
        yield ({p: np.stack(v) for p, v in arrays.items()} if kept else {}), np.asarray(kept, np.int64), unreadable


def evaluate(paths: list[str | Path], data: str | Path, limit: int | None = None,
             progress=None, bare: BareInput | None = None, verify: bool = True) -> list[EvalResult]:
    """Top-1/top-5 of each path on ``data``; ``bare`` says how to feed artifacts without a
    manifest (their class names, if not given, are the other models'); ``verify``: check a build's
    files against its manifest's sha256."""
    say = progress or (lambda _m: None)
    cands = candidates([Path(p) for p in paths], bare, verify)
    cands = [c for c in cands if not c.hidden or any(_reference(o, cands) is c for o in cands)]
    first = cands[0]
    if any(c.num_classes != first.num_classes for c in cands):
        raise InputError("the models to compare have different numbers of classes")
    labels = next((c.labels for c in cands if c.labels), None)
    dataset = load_labelled(data, labels, first.num_classes, limit)
    say(f"{len(dataset)} labelled images from {dataset.source}")
    pres = list(dict.fromkeys(c.preprocessing for c in cands))
    predictors: dict[int, object] = {}
    outputs: dict[int, list[np.ndarray]] = {id(c): [] for c in cands}
    target_chunks, unreadable = [], []
    for arrays, chunk_targets, bad in _chunks(dataset, pres):
        unreadable += bad
        if not len(chunk_targets):
            continue
        target_chunks.append(chunk_targets)
        for c in cands:
            if id(c) not in predictors:
                say(f"{c.path.name}: {c.backend} {c.precision}" + (" (float reference)" if c.hidden else ""))
                predictors[id(c)] = _predictor(c, arrays[c.preprocessing], say)
            outputs[id(c)].append(predictors[id(c)](arrays[c.preprocessing]))
    if unreadable:
        say(_skipped_message(unreadable))
    if not target_chunks:
        raise InputError(f"none of the images in {dataset.source} could be read")
    targets = np.concatenate(target_chunks)
    logits = [(c, np.concatenate(outputs[id(c)]), targets, len(unreadable)) for c in cands]
    top1_of = {id(c): lg.argmax(1) for c, lg, _, _ in logits}
    results = []
    for c, lg, targets, skipped in logits:
        if c.hidden:
            continue
        top5 = np.argsort(-lg, axis=1)[:, :5]
        agree = None
        reference = _reference(c, cands)
        if reference is not None and len(top1_of[id(reference)]) == len(lg):
            agree = float(np.mean(lg.argmax(1) == top1_of[id(reference)]))
        results.append(EvalResult(str(c.path), c.backend, c.precision,
                                  float(np.mean(top5[:, 0] == targets)),
                                  float(np.mean([t in row for t, row in zip(targets, top5)])),
                                  len(targets), agree, skipped))
    return results
