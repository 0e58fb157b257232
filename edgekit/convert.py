"""The spine: model -> calibration -> target's builds -> artifacts -> parity -> manifest."""
from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from torch import nn

from .backends.base import Artifact, Backend, ConvertOptions, get_backend
from .calibration import CalibrationSet, load_calibration
from .choices import DEFAULT_CALIB_SIZE
from .convert_plan import (BACKEND_DEFAULT, BuildPlan, Job, QuantPlan, abridged, plan_build,
                           resolve_source)
from .convert_worker import ConvertWorker, result as worker_result
from .datasets import load_images, load_labelled
from .errors import EdgekitError, InputError, ParityError
from .fileio import cleanup_on_sigterm, publish, staged_folder
from .manifest import BENCH_CHART, CHECKPOINT_SHA256, MANIFEST_NAME, ArtifactRecord, Manifest, sha256_of
from .parity import Tolerance, compare
from .source import ModelSource
from .targets import TargetProfile
from .quant import PreparedInt8, prepare_int8
from .quant.mixed_precision import evaluate, fit_budget, quick_latency
from .quant.report import simulated_report

__all__ = ["BuildPlan", "QuantPlan", "convert", "resolve_source", "run", "tolerance_for"]

ARTIFACT_STEM = "model"
MIN_AGREEMENT_IMAGES = 50  # fewer parity images: top-1 agreement is too coarse to enforce

REPORT_IMAGES = 32  # images the per-layer report runs on when mixed precision needs a ranking

Progress = Callable[[str], None]


@dataclass
class Validation:
    """The images every artifact is checked on, their labels when the images are labelled (a TSV
    or class folders), else None, and the float model's logits for them (computed when first
    needed: the worker process converts meanwhile)."""

    images: np.ndarray
    targets: np.ndarray | None
    source: str
    model: ModelSource = field(repr=False)

    @cached_property
    def reference(self) -> np.ndarray:
        return self.model.reference(self.images)


def tolerance_for(target: TargetProfile, precision: str) -> Tolerance:
    return target.parity.tolerance(precision)


def convert(target: str | TargetProfile = "rpi4", model: nn.Module | str | Path | None = None, *,
            weights: str | None = None, width: float | None = None, resolution: int | None = None,
            calib: str | Path | None = None, calib_size: int | None = None,
            calib_method: str | None = None, calib_options: dict | None = None,
            precision: str | Iterable[str] | None = None, backend: str | Iterable[str] | None = None,
            out: str | Path | None = None, val: str | Path | None = None,
            val_size: int | None = None, check: bool = True,
            max_accuracy_drop: float | None = None, float_layers: str | Iterable[str] = (),
            max_float_layers: int | None = None, weight_rounding: str = "optimal",
            bias_correction: bool = True, parallel: bool = True, normalisation: str | None = None,
            labels: list[str] | None = None, progress: Progress | None = None) -> Manifest:
    """Build, verify and record every artifact ``target`` lists (or the ``precision`` asked for).

    ``max_accuracy_drop`` (points of top-1 on a labelled ``val``, else of disagreement with the
    float model): int8 builds that miss it keep their most sensitive layers in float until they
    meet it. ``float_layers`` names such layers by hand (module paths).
    ``weight_rounding``: "optimal" rounds int8 weights for least layer output error on the
    calibration images, once for every backend; "nearest" as the backends would.
    ``bias_correction``: correct each layer's bias for the output shift int8 causes (for the
    backends that do not do it themselves). Both: the int8 recipe, quant/__init__.py.
    ``normalisation``: the input value range, when the model does not record the right one;
    ``labels``: its class names, likewise.
    ``parallel``: convert the backends that are single-threaded Python work in a worker process
    beside the others (convert_worker.py).
    The arguments become a QuantPlan and a BuildPlan (convert_plan.py), checked whole before any
    work; ``run`` builds them. Raises ParityError after writing the manifest when an artifact is
    outside its tolerance.
    """
    quant = QuantPlan(calib=calib, calib_size=DEFAULT_CALIB_SIZE if calib_size is None else calib_size,
                      calib_method=calib_method or BACKEND_DEFAULT, calib_options=calib_options or {},
                      weight_rounding=weight_rounding, bias_correction=bias_correction,
                      float_layers=float_layers, max_accuracy_drop=max_accuracy_drop,
                      max_float_layers=max_float_layers)
    plan = plan_build(target, model, quant=quant, weights=weights, width=width, resolution=resolution,
                      normalisation=normalisation, labels=labels, precision=precision, backend=backend,
                      out=out, val=val, val_size=val_size, check=check, parallel=parallel)
    return run(plan, quant, progress)


@dataclass(frozen=True)
class Inputs:
    """What every job of a run shares once the preparation is done: the calibration set, the
    images the artifacts are checked on, the int8-prepared model, the staging folder the
    artifacts are written to, and whether top-1 agreement is enforced."""

    calibration: CalibrationSet
    validation: Validation
    prepared: PreparedInt8
    folder: Path
    check_agreement: bool


@cleanup_on_sigterm()
def run(plan: BuildPlan, quant: QuantPlan, progress: Progress | None = None) -> Manifest:
    """Build ``plan``'s jobs quantized as ``quant`` says: calibration, int8 weights, conversions
    (some in the worker process), parity, then the manifest, published atomically into plan.out."""
    say = progress or (lambda _msg: None)
    source, jobs, budget = plan.source, list(plan.jobs), quant.max_accuracy_drop
    with staged_folder(plan.out) as staging:
        notices = []
        if source.meta.weights == "random":
            notices.append("--weights random: seeded random weights; the artifacts are real but "
                           "accuracy figures mean nothing and top-1 agreement is not enforced")
            for n in notices:
                say(f"notice: {n}")
        elif str(source.meta.weights).startswith("builtin:"):
            say(f"weights: built-in ImageNet {source.meta.weights.removeprefix('builtin:')} "
                "(Google's published TFLite MobileNet, Apache-2.0); --weights FILE|random for others")
        calibration = load_calibration(quant.calib, source.meta.preprocessing, quant.calib_size,
                                       method=quant.calib_method, options=quant.calib_options)
        say(f"calibration: {len(calibration)} images from {calibration.source}"
            + (f" ({calibration.skipped} unreadable skipped: {abridged(calibration.unreadable)})"
               if calibration.skipped else ""))
        with ConvertWorker(enabled=plan.parallel) as worker:
            # int8 conversions that are Python work go to the worker once the weights are rounded;
            # it imports their converters meanwhile, and this process builds the rest alongside
            offload = [job for job in jobs if job.precision == "int8" and worker.takes(job.build.backend, source)
                       and (budget is None or not get_backend(job.build.backend).mixed_precision)]
            worker.start({job.build.backend for job in offload})
            validation = _validation(plan, calibration)
            check_agreement = _agreement_checked(source, validation, notices, say)
            prepared = _int8_weights(plan, quant, calibration, notices, say)
            if budget is not None:
                metric = "top-1 drop" if validation.targets is not None else "top-1 disagreement"
                say(f"accuracy budget: {budget:g} points of {metric} on {len(validation.images)} "
                    f"images from {validation.source}")
            inputs = Inputs(calibration, validation, prepared, staging, check_agreement)
            pending = {job: _submit(worker, job, plan, quant, inputs, say) for job in offload}
            pending = {job: future for job, future in pending.items() if future is not None}

            manifest = Manifest(target=plan.target.name, model=_model_record(source), notices=notices,
                                calibration=_calibration_record(calibration, plan, prepared),
                                parity_images={"source": validation.source, "n_images": len(validation.images),
                                               "labelled": validation.targets is not None,
                                               "agreement_enforced": check_agreement})
            records = {}
            for job in [j for j in jobs if j not in pending] + list(pending):
                records[job] = _build_one(job, plan, quant, inputs, say, built=pending.get(job))
        failures = []
        for job in jobs:
            manifest.artifacts.append(records[job])
            if records[job].parity_failures:
                failures.append(f"{records[job].path}: {'; '.join(records[job].parity_failures)}")
        manifest.write(staging)
        _publish(manifest, staging, plan.out, say)
        say(f"manifest: {plan.out / MANIFEST_NAME}")
        if failures and plan.check:
            raise ParityError("parity check failed for " + " | ".join(failures))
        return manifest


def _publish(manifest: Manifest, staging: Path, out_dir: Path, say: Progress) -> None:
    """Move the build into ``out_dir``; the files of a previous build there that this one does
    not replace go with its manifest, so the folder holds this build and nothing it does not list
    (nor the chart `edgekit bench` drew of the previous build's artifacts)."""
    new = [name for record in manifest.artifacts for name in record.files]
    try:
        old = Manifest.read(out_dir) if (out_dir / MANIFEST_NAME).is_file() else None
    except EdgekitError:
        old = None  # an unreadable manifest lists nothing we could safely remove
    stale = sorted({Path(name).name for record in (old.artifacts if old else []) for name in record.files} - set(new))
    stale = [name for name in stale if (out_dir / name).is_file()]
    if stale:
        say(f"removed from {out_dir} the previous build's {', '.join(stale)} (not in this build)")
    if (out_dir / BENCH_CHART).is_file() and BENCH_CHART not in new:
        stale.append(BENCH_CHART)
        say(f"removed {out_dir / BENCH_CHART}: it charts the previous build (run `edgekit bench {out_dir}` again)")
    publish(staging, out_dir, new, MANIFEST_NAME, stale)
    manifest.folder = out_dir


def _int8_weights(plan: BuildPlan, quant: QuantPlan, calibration: CalibrationSet, notices: list[str],
                  say: Progress) -> PreparedInt8:
    """The int8 recipe (quant.prepare_int8) for the int8 builds, with a notice when it cannot apply."""
    source = plan.source
    if (quant.weight_rounding == "nearest" and not quant.bias_correction) or not plan.int8_backends:
        return PreparedInt8(source)
    if source.module is None:
        notices.append("int8 weights of an ONNX model are rounded to nearest by each backend, "
                       "without bias correction (both need the PyTorch model)")
        say(f"notice: {notices[-1]}")
        return PreparedInt8(source)
    return prepare_int8(source, calibration, quant.weight_rounding, quant.bias_correction, progress=say)


def _calibration_record(calibration: CalibrationSet, plan: BuildPlan, prepared: PreparedInt8) -> dict | None:
    """The calibration as the manifest records it, with the method each int8 build used."""
    backends = plan.int8_backends
    if not backends:
        return None
    record = calibration.to_dict()
    record["weight_rounding"] = prepared.to_dict()
    if calibration.method == BACKEND_DEFAULT:
        methods = {b: get_backend(b).default_calibration_method for b in backends}
        record["method"] = next(iter(methods.values())) if len(set(methods.values())) == 1 else methods
    return record


def _agreement_checked(source: ModelSource, validation: Validation, notices: list[str],
                       say: Progress) -> bool:
    """Top-1 agreement is a tolerance only for real weights on enough images: on the 13 bundled
    photos one image is 7.7 points, and a sound int8 build can land anywhere from 70 to 100%."""
    if source.meta.weights == "random":
        return False
    n = len(validation.images)
    if n >= MIN_AGREEMENT_IMAGES:
        return True
    notice = (f"top-1 agreement is reported, not enforced: {n} parity images (one image = "
              f"{100 / n:.1f} points); give --calib or --val at least {MIN_AGREEMENT_IMAGES} photos")
    notices.append(notice)
    say(f"notice: {notice}")
    return False


def _validation(plan: BuildPlan, calibration: CalibrationSet) -> Validation:
    source, val = plan.source, plan.val
    pre = source.meta.preprocessing
    if val is None:
        return Validation(calibration.images, None, calibration.source, source)
    labelled = None
    if val.suffix.lower() == ".tsv" or (val.is_dir() and any(p.is_dir() for p in val.iterdir())):
        labels = list(source.meta.labels) if source.meta.labels else None
        try:
            labelled = load_labelled(val, labels, source.meta.num_classes, limit=plan.val_size)
        except InputError:
            if val.suffix.lower() == ".tsv":
                raise
    if labelled is not None:
        images, targets, _ = load_images(labelled, pre)
        return Validation(images, targets, str(val), source)
    images = load_calibration(val, pre, plan.val_size).images
    return Validation(images, None, str(val), source)


@dataclass(frozen=True)
class JobSetup:
    """What one job converts with: its backend, calibration (method resolved), options and path."""

    backend: Backend
    calibration: CalibrationSet
    options: ConvertOptions
    path: Path


def _setup(job: Job, plan: BuildPlan, quant: QuantPlan, inputs: Inputs) -> JobSetup:
    backend = get_backend(job.build.backend)
    b = job.build
    calibration = inputs.calibration
    if calibration.method == BACKEND_DEFAULT:
        calibration = replace(calibration, method=backend.default_calibration_method)
    int8 = job.precision == "int8"
    options = ConvertOptions(io_dtype=b.io_dtype, layout=b.layout, activation_type=b.activation_type,
                             weight_type=b.weight_type, per_channel=b.per_channel,
                             calibration_method=calibration.method, threads=plan.target.threads,
                             float_layers=quant.float_layers if int8 and backend.mixed_precision else ())
    return JobSetup(backend, calibration, options, inputs.folder / backend.filename(ARTIFACT_STEM, job.precision))


def _built_from(job: Job, setup: JobSetup, inputs: Inputs) -> ModelSource:
    if job.precision != "int8":
        return inputs.prepared.source
    return inputs.prepared.for_backend(setup.backend, setup.calibration, setup.options.float_layers)


def _submit(worker: ConvertWorker, job: Job, plan: BuildPlan, quant: QuantPlan, inputs: Inputs,
            say: Progress) -> Future | None:
    setup = _setup(job, plan, quant, inputs)
    int8 = job.precision == "int8"
    future = worker.submit(setup.backend.name, _built_from(job, setup, inputs), job.precision,
                           setup.calibration if int8 else None, setup.path, setup.options)
    if future is not None:
        say(f"{job.label}: converting in a worker process -> {setup.path.name}")
    return future


def _build_one(job: Job, plan: BuildPlan, quant: QuantPlan, inputs: Inputs, say: Progress,
               built: Future | None = None) -> ArtifactRecord:
    """Convert (or take the worker's ``built`` artifact), check parity, describe."""
    setup = _setup(job, plan, quant, inputs)
    backend, calibration, options, path = setup.backend, setup.calibration, setup.options, setup.path
    int8, budget = job.precision == "int8", quant.max_accuracy_drop
    if int8 and budget is not None and not backend.mixed_precision:
        say(f"{job.label}: {backend.name} needs a fully integer model: no layer can stay float, "
            "the accuracy budget is not applied")
    done = worker_result(built) if built is not None else None
    if done is not None:
        artifact, seconds = done
    else:
        if built is not None:
            say(f"{job.label}: the worker process could not convert it; converting here")
        else:
            say(f"{job.label}: converting -> {path.name}")
        start = time.perf_counter()
        if int8 and budget is not None and backend.mixed_precision:
            artifact = _within_budget(setup, quant, inputs, lambda m: say(f"{job.label}: {m}"))
        else:
            artifact = backend.convert(_built_from(job, setup, inputs), job.precision,
                                       calibration if int8 else None, path, options)
        seconds = time.perf_counter() - start
    if artifact.details.get("notice"):
        say(f"{job.label}: note: {artifact.details['notice']}")
    session = backend.load(artifact)
    validation = inputs.validation
    parity = compare(validation.reference, session.run(validation.images))
    tolerance = tolerance_for(plan.target, job.precision)
    failures = tolerance.failures(parity, check_agreement=inputs.check_agreement)
    mixed = artifact.details.get("mixed_precision")
    if mixed and not mixed["met"]:
        best = min(t["drop_points"] for t in mixed["trials"])
        failures.append(f"accuracy budget not met: {mixed['metric']} {best:.1f} > {budget:g} points "
                        f"with up to {max(len(t['float_layers']) for t in mixed['trials'])} layers float")
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


def _within_budget(setup: JobSetup, quant: QuantPlan, inputs: Inputs, say: Progress) -> Artifact:
    """Build int8, and when it misses the accuracy budget keep the layers the report ranks worst
    in float (mixed_precision.fit_budget). Tries are built in a scratch folder; the chosen one is
    moved to the job's path. The choice and its cost (size, quick latency) go into the
    artifact's details."""
    backend, calibration, options, path = setup.backend, setup.calibration, setup.options, setup.path
    prepared, validation, budget = inputs.prepared, inputs.validation, quant.max_accuracy_drop
    metric = "top-1 drop" if validation.targets is not None else "top-1 disagreement"
    with tempfile.TemporaryDirectory(prefix=".edgekit-mixed-", dir=path.parent) as scratch:
        def build(layers: tuple[str, ...]):
            name = f"{len(layers)}-{path.name}"
            tried = replace(options, float_layers=tuple(options.float_layers) + layers)
            artifact = backend.convert(prepared.for_backend(backend, calibration, tried.float_layers), "int8",
                                       calibration, Path(scratch) / name, tried)
            logits = backend.load(artifact).run(validation.images)
            return artifact, evaluate(logits, validation.reference, validation.targets)

        first = build(())
        say(f"all int8: {metric} {first[1].drop_points:.1f} points (budget {budget:g})")
        ranking, details = [], []
        if first[1].drop_points > budget:
            say(f"per-layer report on {REPORT_IMAGES} calibration images...")
            # compared with the float model, not with the bias-corrected weights for_backend gives
            report = simulated_report(prepared.for_backend(backend, calibration), calibration, options,
                                      calibration.images[:REPORT_IMAGES], reference=prepared.reference)
            ranked = [e for e in report.ranked() if e.layer not in options.float_layers]
            ranking = [e.layer for e in ranked]
            details = [{"layer": e.layer, "alone_sqnr_db": e.alone_sqnr_db, "added_noise": e.added_noise,
                        "sqnr_db": e.sqnr_db} for e in ranked[:10]]
        chosen, record = fit_budget(build, ranking, budget, first, metric, details, quant.max_float_layers, say=say)
        if record.float_layers:
            record.latency_ms = quick_latency({"all_int8": backend.load(first[0], threads=1),
                                               "mixed": backend.load(chosen, threads=1)},
                                              validation.images[0])
        final = [path.parent / (f.name.removeprefix(f"{len(record.float_layers)}-")) for f in chosen.files]
        for src, dst in reversed(list(zip(chosen.files, final))):  # the main file (.xml) last
            shutil.move(src, dst)
        artifact = replace(chosen, path=final[0], files=final)
    artifact.details["mixed_precision"] = record.to_dict()
    verdict = "met" if record.met else "NOT met"
    say(f"budget {verdict}: {len(record.float_layers)} layer(s) in float"
        + (f" ({', '.join(record.float_layers)})" if record.float_layers else ""))
    return artifact


def _model_record(source: ModelSource) -> dict:
    m = source.meta
    return {"name": m.arch, "width": m.width, "resolution": m.resolution,
            "num_classes": m.num_classes, "padding": m.padding, "activation": m.activation,
            "preprocessing": m.preprocessing.to_dict(),
            "labels": list(m.labels) if m.labels else None, "weights": m.weights,
            # eval runs that checkpoint as the artifacts' float reference only while it is unchanged
            CHECKPOINT_SHA256: sha256_of([Path(m.weights)]) if m.weights and Path(m.weights).is_file() else None,
            "source": "onnx" if source.onnx_path else "pytorch"}
