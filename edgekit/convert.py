"""The spine: model -> calibration -> target's builds -> artifacts -> parity -> manifest."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from .backends.base import PRECISIONS, ConvertOptions, get_backend
from .calibration import CalibrationSet, load_calibration
from .errors import InputError, ParityError
from .manifest import ArtifactRecord, Manifest, sha256_of
from .models.loading import load_model
from .parity import Tolerance, compare
from .source import ModelSource
from .targets import BuildSpec, TargetProfile, load_target

DEFAULT_CALIB_SIZE = 200
ARTIFACT_STEM = "model"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Job:
    build: BuildSpec
    precision: str

    @property
    def label(self) -> str:
        return f"{self.build.backend} {self.precision}"


def plan(target: TargetProfile, precision: str | None = None, backend: str | None = None) -> list[Job]:
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    jobs = [Job(b, p) for b in target.builds for p in b.precisions
            if (precision is None or p == precision) and (backend is None or b.backend == backend)]
    if not jobs:
        offered = ", ".join(f"{b.backend} {'/'.join(b.precisions)}" for b in target.builds)
        wanted = " ".join(x for x in (backend, precision) if x)
        raise InputError(f"target {target.name} builds no {wanted} artifact (it builds {offered})")
    return jobs


def resolve_source(model: nn.Module | str | Path | None, weights: str | None, width: float | None,
                   resolution: int | None) -> ModelSource:
    if isinstance(model, nn.Module):
        return ModelSource.from_module(model)
    if model is not None and str(model).endswith(".onnx"):
        if weights or width or resolution:
            raise InputError("--weights/--width/--resolution do not apply to an ONNX model")
        return ModelSource.from_onnx(model)
    return ModelSource.from_module(load_model(model, weights, width=width, resolution=resolution))


def tolerance_for(target: TargetProfile, precision: str) -> Tolerance:
    p = target.parity
    return {
        "fp32": Tolerance(max_abs_diff=p.fp32_max_abs_diff),
        "fp16": Tolerance(min_top1_agreement=p.fp16_min_agreement, min_sqnr_db=30.0),
        "int8": Tolerance(min_top1_agreement=p.int8_min_agreement, min_sqnr_db=p.int8_min_sqnr_db),
    }[precision]


def convert(target: str | TargetProfile = "rpi4", model: nn.Module | str | Path | None = None, *,
            weights: str | None = None, width: float | None = None, resolution: int | None = None,
            calib: str | Path | None = None, calib_size: int | None = None,
            calib_method: str = "minmax", calib_options: dict | None = None,
            precision: str | None = None, backend: str | None = None,
            out: str | Path | None = None, val: str | Path | None = None,
            val_size: int | None = None, check: bool = True,
            progress: Progress | None = None) -> Manifest:
    """Build, verify and record every artifact ``target`` lists (or the ``precision`` asked for).

    Raises ParityError after writing the manifest when an artifact is outside its tolerance.
    """
    say = progress or (lambda _msg: None)
    profile = target if isinstance(target, TargetProfile) else load_target(target)
    jobs = plan(profile, precision, backend)
    for job in jobs:  # fail on a missing runtime before spending minutes on the others
        get_backend(job.build.backend).require()
    out_dir = Path(out) if out is not None else Path("build") / profile.name
    _check_writable(out_dir)

    source = resolve_source(model, weights, width, resolution)
    notices = []
    if source.meta.weights == "random":
        notices.append("no --weights given: seeded random weights; the artifacts are real but "
                       "accuracy figures mean nothing and top-1 agreement is not enforced")
        for n in notices:
            say(f"notice: {n}")
    pre = source.meta.preprocessing
    calibration = load_calibration(calib, pre, calib_size or DEFAULT_CALIB_SIZE, method=calib_method,
                                   options=calib_options)
    say(f"calibration: {len(calibration)} images from {calibration.source}"
        + (f" ({calibration.skipped} unreadable skipped)" if calibration.skipped else ""))
    parity_set = (load_calibration(val, pre, val_size) if val is not None else calibration)
    reference = source.reference(parity_set.images)

    manifest = Manifest(target=profile.name, model=_model_record(source), notices=notices,
                        calibration=calibration.to_dict() if any(j.precision == "int8" for j in jobs) else None,
                        parity_images={"source": parity_set.source, "n_images": len(parity_set)})
    failures = []
    for job in jobs:
        record = _build_one(job, profile, source, calibration, parity_set.images, reference, out_dir,
                            check_agreement=source.meta.weights != "random", say=say)
        manifest.artifacts.append(record)
        if record.parity_failures:
            failures.append(f"{record.path}: {'; '.join(record.parity_failures)}")
    manifest.write(out_dir)
    say(f"manifest: {out_dir / 'manifest.json'}")
    if failures and check:
        raise ParityError("parity check failed for " + " | ".join(failures))
    return manifest


def _build_one(job: Job, profile: TargetProfile, source: ModelSource, calibration: CalibrationSet,
               images: np.ndarray, reference: np.ndarray, out_dir: Path, check_agreement: bool,
               say: Progress) -> ArtifactRecord:
    backend = get_backend(job.build.backend)
    b = job.build
    options = ConvertOptions(io_dtype=b.io_dtype, layout=b.layout, activation_type=b.activation_type,
                             weight_type=b.weight_type, per_channel=b.per_channel,
                             calibration_method=calibration.method, threads=profile.threads)
    path = out_dir / backend.filename(ARTIFACT_STEM, job.precision)
    say(f"{job.label}: converting -> {path.name}")
    start = time.perf_counter()
    artifact = backend.convert(source, job.precision, calibration if job.precision == "int8" else None,
                               path, options)
    seconds = time.perf_counter() - start
    session = backend.load(artifact)
    parity = compare(reference, session.run(images))
    tolerance = tolerance_for(profile, job.precision)
    failures = tolerance.failures(parity, check_agreement=check_agreement)
    say(f"{job.label}: {seconds:.1f} s, {artifact.size_bytes / 1e6:.2f} MB, top-1 agreement "
        f"{parity.top1_agreement:.1%}, max abs diff {parity.max_abs_diff:.2g}, SQNR "
        f"{parity.sqnr_db:.1f} dB" + (f"  FAILED: {'; '.join(failures)}" if failures else "  ok"))
    files = artifact.files or [artifact.path]
    return ArtifactRecord(
        path=artifact.path.name, backend=backend.name, precision=job.precision,
        size_bytes=artifact.size_bytes, sha256=sha256_of(files),
        input=artifact.input.to_dict() if artifact.input else session.input.to_dict(),
        runtime={"name": session.runtime.name, "version": session.runtime.version},
        parity=parity.to_dict(), parity_ok=not failures, parity_failures=failures,
        tolerance=tolerance.to_dict(), files=[f.name for f in files],
        convert_seconds=round(seconds, 2), details=artifact.details)


def _model_record(source: ModelSource) -> dict:
    m = source.meta
    return {"name": m.arch, "width": m.width, "resolution": m.resolution,
            "num_classes": m.num_classes, "padding": m.padding, "activation": m.activation,
            "preprocessing": m.preprocessing.to_dict(),
            "labels": list(m.labels) if m.labels else None, "weights": m.weights,
            "source": "onnx" if source.onnx_path else "pytorch"}


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".edgekit-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"output folder {folder} is not writable: {exc.strerror or exc}") from None
