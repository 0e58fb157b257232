"""What the demo runs: PATH (artifact, convert folder, checkpoint, or model name + weights) -> a
loaded ``Classifier`` with the preprocessing and labels that travel with the model.

For a convert folder the fastest artifact for this host is chosen: among the manifest's artifacts
whose runtime is installed (and whose parity check passed), the lowest p50 in a local
``bench.json`` beside the manifest when it covers them all, else a quick latency probe of each
(``Session.infer`` alone, as the benchmarks time it).
"""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backends.base import RuntimeInfo, Session, TensorSpec, artifact_suffixes, get_backend
from ..datasets import background_offset
from ..errors import EdgekitError, InputError
from ..limits import check_threads
from ..manifest import MANIFEST_NAME, ArtifactRecord, Manifest, record_for, verify_artifact
from ..models.meta import ModelMeta
from ..preprocessing import Preprocessing

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")  # models/weights.py's (which imports torch)
BENCH_RESULTS = "bench.json"
PROBE_RUNS = 20

Say = Callable[[str], None]


@dataclass
class Classifier:
    """A loaded model plus everything needed to read its output."""

    session: Session
    backend: str  # "pytorch" for a checkpoint
    precision: str
    path: Path
    preprocessing: Preprocessing
    labels: list[str] | None
    num_classes: int
    threads: int | None = None
    reason: str = ""  # why this artifact (convert folders)
    notices: list[str] = field(default_factory=list)

    @property
    def offset(self) -> int:
        """1 for TF's 1001-class ImageNet models: output 0 is "background", class k is output k+1."""
        return background_offset(self.labels, self.num_classes)

    @property
    def title(self) -> str:
        threads = f", {self.threads} thread{'s' if self.threads != 1 else ''}" if self.threads else ""
        return f"{self.backend} {self.precision}{threads}"

    def label(self, output_index: int) -> str:
        if self.labels and 0 <= output_index < len(self.labels):
            return self.labels[output_index]
        return f"class {output_index - self.offset}"

    def warm_up(self, runs: int = 2) -> None:
        x = self.session.prepare(np.zeros((3, self.preprocessing.size, self.preprocessing.size),
                                          np.float32))
        for _ in range(runs):
            self.session.infer(x)


class TorchSession(Session):
    """An edgekit PyTorch model behind the Session interface (fp32, NCHW)."""

    def __init__(self, module, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.module = module.eval()
        size = module.meta.resolution
        self.input = TensorSpec((1, 3, size, size), "float32", "NCHW")
        self.runtime = RuntimeInfo("pytorch", torch.__version__,
                                   {"threads": threads or torch.get_num_threads()})

    def infer(self, native: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():  # grad mode is per thread: set it where inference runs
            return self.module(torch.from_numpy(native)).numpy()


def check_model(path: str | Path | None, weights: str | None = None) -> None:
    """What load_classifier checks without loading anything: a model is given and its file (or
    name) exists. The demo runs it first: before a camera is opened or a probe runs."""
    if path is None and weights is None:
        raise InputError(f"give a model: an artifact ({'/'.join(artifact_suffixes())}), a convert output "
                         "folder, a checkpoint (.pth/.safetensors), or a model name with --weights")
    if weights is not None:  # PATH is a model name (or omitted): built in PyTorch
        if path is not None and Path(str(path)).suffix in CHECKPOINT_SUFFIXES + artifact_suffixes():
            raise InputError("--weights goes with a model name (e.g. mobilenet_v2), not a file")
        return
    path = Path(path)
    if path.is_dir() or path.name == MANIFEST_NAME:
        return
    if path.suffix in CHECKPOINT_SUFFIXES + artifact_suffixes():
        if not path.is_file():
            kind = "checkpoint" if path.suffix in CHECKPOINT_SUFFIXES else "artifact"
            raise InputError(f"{kind} not found: {path}")
        return
    if not path.exists():
        from ..models import list_models

        if str(path) in list_models():  # its built-in weights: said now if it has none
            from ..models import builtin

            if builtin.find(str(path)) is None:
                raise InputError(builtin.missing_message(str(path), None))
            return
        raise InputError(f"not found: {path} (expected an artifact, a convert folder, a checkpoint "
                         "or a model name with --weights)")
    raise InputError(f"cannot run {path.name}: expected {'/'.join(artifact_suffixes())} with a "
                     "manifest.json beside it, a convert output folder, or a .pth/.safetensors checkpoint")


def load_classifier(path: str | Path | None, weights: str | None = None, threads: int | None = None,
                    backend: str | None = None, precision: str | None = None,
                    say: Say | None = None, verify: bool = True) -> Classifier:
    """Resolve PATH (see module doc) into a loaded Classifier; a build's artifacts are checked
    against its manifest's sha256 first (unless not ``verify``)."""
    say = say or (lambda _m: None)
    check_threads(threads)
    check_model(path, weights)
    if weights is not None:
        return _torch_classifier(str(path) if path else None, weights, threads)
    path = Path(path)
    if path.is_dir() or path.name == MANIFEST_NAME:
        return _from_folder(path, threads, backend, precision, say, verify)
    if path.suffix in CHECKPOINT_SUFFIXES:
        return _torch_classifier(None, str(path), threads)
    if not path.exists():  # a model name (check_model): its built-in weights
        return _torch_classifier(str(path), None, threads)
    return _from_artifact(path, threads, verify)


def _meta(manifest: Manifest) -> ModelMeta:
    return manifest.model_meta()


def _torch_classifier(model: str | None, weights: str | None, threads: int | None) -> Classifier:
    from ..models.loading import load_model

    net = load_model(model, weights)
    m = net.meta
    session = TorchSession(net, threads)
    return Classifier(session, "pytorch", "fp32", Path(weights or m.weights), m.preprocessing,
                      list(m.labels) if m.labels else None, m.num_classes, threads)


def _from_artifact(path: Path, threads: int | None, verify: bool = True) -> Classifier:
    if not path.is_file():
        raise InputError(f"artifact not found: {path}")
    manifest, record = record_for(path, "the demo")
    verify_artifact(manifest, record, verify)
    be = get_backend(record.backend)
    be.require()
    meta = _meta(manifest)
    return Classifier(be.load(path, threads), record.backend, record.precision, path,
                      meta.preprocessing, list(meta.labels) if meta.labels else None,
                      meta.num_classes, threads)


def _from_folder(path: Path, threads: int | None, backend: str | None, precision: str | None,
                 say: Say, verify: bool = True) -> Classifier:
    manifest = Manifest.read(path)
    meta = _meta(manifest)
    records, skipped = [], []
    for a in manifest.artifacts:
        file = manifest.artifact_path(a)
        if backend and a.backend != backend or precision and a.precision != precision:
            continue
        try:
            be = get_backend(a.backend)
        except EdgekitError:
            skipped.append(f"{a.path} (unknown backend {a.backend})")
            continue
        if not file.is_file():
            skipped.append(f"{a.path} (file missing)")
        elif not be.available():
            skipped.append(f"{a.path} ({a.backend} runtime not installed: "
                           f"pip install 'edgekit[{be.extra}]')")
        else:
            records.append(a)
    if not records:
        wanted = " ".join(x for x in (backend, precision) if x)
        detail = f"; skipped: {', '.join(skipped)}" if skipped else ""
        raise InputError(f"{manifest.folder} has no {wanted + ' ' if wanted else ''}artifact this host "
                         f"can run{detail}")
    for a in records:  # every one the choice may load
        verify_artifact(manifest, a, verify)
    verified = [a for a in records if a.parity_ok is not False]
    notices = []
    if verified and len(verified) < len(records):
        notices.append("left out artifacts that failed their parity check: "
                       + ", ".join(a.path for a in records if a.parity_ok is False))
        records = verified
    if skipped:
        notices.append("cannot run here: " + "; ".join(skipped))
    wanted = " ".join(x for x in (backend, precision) if x)
    record, session, reason = _fastest(manifest, records, threads, meta, say, wanted)
    return Classifier(session, record.backend, record.precision, manifest.artifact_path(record),
                      meta.preprocessing, list(meta.labels) if meta.labels else None,
                      meta.num_classes, threads, reason, notices)


def _fastest(manifest: Manifest, records: list[ArtifactRecord], threads: int | None, meta: ModelMeta,
             say: Say, wanted: str = "") -> tuple[ArtifactRecord, Session, str]:
    def load(a: ArtifactRecord) -> Session:
        return get_backend(a.backend).load(manifest.artifact_path(a), threads)

    if len(records) == 1:
        a = records[0]
        kind = f"{wanted} artifact" if wanted else "artifact"
        return a, load(a), f"the only {kind} in {manifest.folder} this host can run"
    measured = _bench_results(manifest.folder / BENCH_RESULTS, threads)
    if all(a.path in measured for a in records):
        ranked = sorted(records, key=lambda a: measured[a.path])
        best = ranked[0]
        others = ", ".join(f"{a.backend} {a.precision} {measured[a.path]:.2f}" for a in ranked[1:])
        return best, load(best), (f"fastest in {BENCH_RESULTS} (p50 {measured[best.path]:.2f} ms; "
                                  f"others: {others} ms)")
    say(f"choosing among {len(records)} artifacts with a {PROBE_RUNS}-run latency probe")
    x = np.zeros((3, meta.preprocessing.size, meta.preprocessing.size), np.float32)
    results: list[tuple[float, ArtifactRecord, Session]] = []
    for a in records:
        session = load(a)
        native = session.prepare(x)
        for _ in range(3):
            session.infer(native)
        times = []
        for _ in range(PROBE_RUNS):
            t0 = time.perf_counter_ns()
            session.infer(native)
            times.append((time.perf_counter_ns() - t0) / 1e6)
        results.append((statistics.median(times), a, session))
    results.sort(key=lambda r: r[0])
    ms, best, session = results[0]
    others = ", ".join(f"{a.backend} {a.precision} {t:.2f}" for t, a, _ in results[1:])
    return best, session, (f"fastest in a {PROBE_RUNS}-run probe here (median {ms:.2f} ms; "
                           f"others: {others} ms)")


def _bench_results(path: Path, threads: int | None) -> dict[str, float]:
    """artifact file name -> p50 ms from an `edgekit bench --json` file, local runs only."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    best: dict[str, float] = {}
    for r in data if isinstance(data, list) else [data]:
        try:
            if r.get("device", "local") != "local" or r.get("emulated"):
                continue  # another device's numbers say nothing about this host
            if threads is not None and r.get("threads") not in (threads, None):
                continue
            name = Path(r["artifact"]).name
            p50 = float(r["latency_ms"]["p50"])
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
        best[name] = min(p50, best.get(name, p50))
    return best
