"""Per-layer quantization error: where an int8 model loses what its float model computes.

A layer is a weighted op's block (conv + norm + activation, a squeeze-excite, the classifier),
named by its PyTorch module path (backends/layer_names.py). For each layer the report compares
the int8 model's output of that layer (the dequantized tensor its consumers read) with the float
model's, over real images:

  * ``sqnr_db``: 10 log10(signal / noise) summed over the images: all error accumulated so far;
  * ``cosine``: mean per-image cosine similarity of the two tensors;
  * ``loss_db``: SQNR of the layer's input minus SQNR of its output;
  * ``added_noise``: noise-to-signal power ratio of the output minus that of the input: the
    error the layer adds where it sits;
  * ``alone_sqnr_db``: SQNR of the model's *logits* when only this layer is quantized (its
    weights and the activations it reads; everything else float). The ranking (``rank``) is by
    this, lowest first: it is what keeping the layer float would win back. (The layer-local figures above mislead as a
    ranking: on MobileNetV3-Small keeping the 27 layers that add most noise float changed top-1
    disagreement by under a point.)

Tensors are read from the real runtime, by the backend that can (``Backend.layer_report_runtime``:
ONNX Runtime runs both models with every layer output added as a graph output,
backends/onnxruntime_report.py). For other backends the same model and calibration are quantized
for that runtime (QDQ), which places quantizers where the int8 kernels of OpenVINO and LiteRT do.
This module is the report, its data and the two ways to make one (``report_on_build``,
``report_on_model``); it never names a backend.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..backends.base import Backend, ConvertOptions, get_backend, list_backends
from ..calibration import CalibrationSet, load_calibration
from ..errors import EdgekitError, InputError
from ..manifest import Manifest
from ..targets import BuildSpec, TargetProfile, load_target
from . import ROUNDING_IMAGES, prepare_int8

if TYPE_CHECKING:
    from ..source import ModelSource

MAX_DB = 99.0  # what "no error at all" (an unquantized input, say) counts as


@dataclass(frozen=True)
class LayerError:
    layer: str
    ops: str
    sqnr_db: float
    cosine: float
    loss_db: float
    added_noise: float
    alone_sqnr_db: float = MAX_DB
    rank: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


RANKING = "logits SQNR with only that layer quantized, lowest first"


@dataclass
class QuantReport:
    backend: str
    n_images: int
    layers: list[LayerError]  # in graph order
    output_sqnr_db: float
    notes: list[str] = field(default_factory=list)
    subject: str = ""  # what was compared: a build folder, or the model and the settings simulated
    images: str = ""  # which images the layers were compared on

    def ranked(self) -> list[LayerError]:
        return sorted(self.layers, key=lambda e: e.rank)

    def to_dict(self) -> dict:
        return {"backend": self.backend, "subject": self.subject, "images": self.images,
                "n_images": self.n_images, "ranking": RANKING,
                "output_sqnr_db": self.output_sqnr_db, "notes": self.notes,
                "layers": [e.to_dict() for e in self.layers]}



class Accumulator:
    """Signal and noise power (and per-image cosines) of a tensor over images."""

    def __init__(self):
        self.signal = 0.0
        self.noise = 0.0
        self.cosines: list[float] = []

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        ref = ref.astype(np.float64).ravel()
        got = got.astype(np.float64).ravel()
        self.signal += float(ref @ ref)
        self.noise += float((ref - got) @ (ref - got))
        norm = math.sqrt(float(ref @ ref) * float(got @ got))
        self.cosines.append(float(ref @ got) / norm if norm > 0 else 1.0)

    @property
    def sqnr_db(self) -> float:
        if self.noise == 0.0:
            return MAX_DB
        return min(MAX_DB, 10.0 * math.log10(self.signal / self.noise)) if self.signal > 0 else -MAX_DB

    @property
    def cosine(self) -> float:
        return float(np.mean(self.cosines)) if self.cosines else 1.0


def reporter() -> Backend:
    """The backend that reads every layer's tensors (Backend.layer_report_runtime)."""
    for name in list_backends():
        backend = get_backend(name)
        if backend.layer_report_runtime:
            return backend
    raise EdgekitError("no backend can report the int8 error per layer")


def simulated_report(source: ModelSource, calibration: CalibrationSet, options: ConvertOptions,
                     images: np.ndarray, reference: ModelSource | None = None) -> QuantReport:
    """The report for any backend's int8 build: the same model, calibration images and method
    quantized for the reporting backend's runtime (QDQ) and compared with the float export of
    ``reference``.

    ``source`` is what gets quantized: with int8 weights prepared as convert does
    (PreparedInt8.for_backend), pass them here and the float model as ``reference``
    (PreparedInt8.reference). Bias correction moves a layer's float output by the shift int8
    will cause, so the prepared model is no float reference: for MobileNetV3-Small its float
    logits are ~4 dB SQNR from the real float model's. Default: ``source``."""
    return reporter().simulated_layer_report(source, calibration, options, images, reference)


def prepared_report(source: ModelSource, calibration: CalibrationSet, options: ConvertOptions,
                    images: np.ndarray) -> QuantReport:
    """``simulated_report`` for the int8 model ``edgekit convert`` builds from ``source``: its int8
    weights prepared by the same recipe (prepare_int8: optimal rounding, then bias correction for
    ``calibration``'s method), quantized, and compared with the float model. An ONNX model (no
    PyTorch module) is quantized as it is: each backend rounds its weights to nearest, as in
    convert."""
    prepared = prepare_int8(source, calibration)
    return simulated_report(prepared.for_backend(reporter(), calibration), calibration, options, images,
                            reference=prepared.reference)


def calibration_text(record: dict | None) -> str:
    """A manifest's calibration record in words: "percentile on 100 images from DIR"."""
    if not record:
        return ""
    method = record.get("method")
    method = ", ".join(f"{b} {m}" for b, m in method.items()) if isinstance(method, dict) else method
    return f"{method} on {record.get('n_images')} images from {record.get('source')}"


def report_on_build(folder: Path, images: Path | None, n_images: int, say: Callable[[str], None],
                    manifest: Manifest | None = None) -> QuantReport:
    """The report on a convert output folder's fp32 + int8 artifacts of the reporting backend,
    compared on ``images`` (default: the first ``n_images`` the build was calibrated on)."""
    manifest = manifest or Manifest.read(folder)
    backend = reporter()
    by_precision = {r.precision: manifest.artifact_path(r) for r in manifest.artifacts
                    if r.backend == backend.name}
    if "int8" not in by_precision or "fp32" not in by_precision:
        raise InputError(f"{folder} has no {backend.layer_report_runtime} fp32 + int8 pair; report on the "
                         "model instead: edgekit quant-report --weights CKPT --calib DIR")
    pre = manifest.model_meta().preprocessing
    notes = []
    if images is not None:
        probe = load_calibration(images, pre, n_images)
        described = f"{len(probe)} images from {probe.source} (--images)"
        probe_images = probe.images
    else:
        probe_images, described, notes = _build_images(manifest, pre, n_images)
    for note in notes:  # a fallback is said before the work, not only after it
        say(f"note: {note}")
    say(f"comparing {by_precision['int8'].name} with {by_precision['fp32'].name} on {described}...")
    report = backend.layer_report(by_precision["fp32"], by_precision["int8"], probe_images)
    calibrated = calibration_text(manifest.calibration)
    report.subject = (f"build {folder} (target {manifest.target}, {by_precision['int8'].name}"
                      + (f", calibrated with {calibrated}" if calibrated else "") + ")")
    report.images = described
    report.notes[:0] = notes
    return report


def _build_images(manifest: Manifest, pre, n_images: int):
    """The first ``n_images`` of the images the build was calibrated on (the same seeded sample
    convert took), when they are still there; else the bundled photos, with a note saying so."""
    record = manifest.calibration or {}
    source, count = record.get("source"), record.get("n_images")
    notes = []
    if not source:
        reason = "the build's manifest records no calibration images"
    elif not Path(source).is_dir():
        reason = f"the images the build was calibrated on ({source}) are not there any more"
    else:
        size = count + int(record.get("skipped_unreadable") or 0) if isinstance(count, int) else None
        try:
            calibration = load_calibration(source, pre, size)
        except InputError as exc:
            reason = f"the images the build was calibrated on cannot be read ({exc})"
        else:
            if isinstance(count, int) and len(calibration) != count:
                notes.append(f"{source} has changed since the build ({len(calibration)} usable images, "
                             f"{count} when it was calibrated): the images compared on differ from its "
                             "calibration sample")
            n = min(n_images, len(calibration))
            return (calibration.images[:n],
                    f"{n} of the {len(calibration)} images the build was calibrated on ({source})", notes)
    bundled = load_calibration(None, pre, n_images)
    notes.append(f"{reason}: compared on {len(bundled)} bundled photos ({bundled.source}) instead; "
                 "--images DIR chooses others")
    return bundled.images, f"{len(bundled)} bundled photos ({bundled.source})", notes


@dataclass(frozen=True)
class Simulation:
    """Whose int8 settings a report on a model simulates: a target's build, and its method."""

    profile: TargetProfile
    build: BuildSpec
    method: str
    note: str | None  # said when the build is not the reporting backend's own

    @property
    def settings(self) -> str:
        b = self.build
        return (f"{b.activation_type} activations, {b.weight_type} "
                f"{'per-channel' if b.per_channel else 'per-tensor'} weights, {self.method} calibration")

    @property
    def options(self) -> ConvertOptions:
        b = self.build
        return ConvertOptions(activation_type=b.activation_type, weight_type=b.weight_type,
                              per_channel=b.per_channel, calibration_method=self.method)


def simulation(target: str | TargetProfile, method: str | None = None) -> Simulation:
    """The target's build whose int8 settings a report on a model uses (the reporting backend's
    own, else its first int8 build, with a note), and the calibration ``method`` (default: that
    build's backend's), checked before any work."""
    profile = target if isinstance(target, TargetProfile) else load_target(target)
    builds = [b for b in profile.builds if "int8" in b.precisions]
    if not builds:
        raise InputError(f"target {profile.name} builds no int8 artifact: there is no int8 error to report")
    backend = reporter()
    runtime = backend.layer_report_runtime
    own = next((b for b in builds if b.backend == backend.name), None)
    if own is not None:
        spec, note = own, None
    else:
        spec = builds[0]
        note = (f"target {profile.name} has no {runtime} build: its {spec.backend} int8 settings were "
                f"simulated with {runtime} (QDQ), which places quantizers where {spec.backend}'s int8 "
                "kernels do; rounding, bias correction and calibration are edgekit's, not the "
                f"{spec.backend} converter's")
    method = method or get_backend(spec.backend).default_calibration_method
    if method not in backend.calibration_methods:
        raise InputError(
            f"{runtime}, which quant-report quantizes the model with, has no '{method}' calibration "
            f"(it has {', '.join(backend.calibration_methods)}); convert builds '{method}' with the "
            "backends that have it")
    return Simulation(profile, spec, method, note)


def report_on_model(source: ModelSource, sim: Simulation, calib: str | Path | None, calib_size: int | None,
                    images: Path | None, n_images: int, say: Callable[[str], None],
                    model_text: str | None = None) -> QuantReport:
    """The report on ``source`` prepared by convert's int8 recipe and quantized with ``sim``'s
    settings, compared with the float model on ``images`` (default: the first ``n_images``
    calibration images)."""
    calibration = load_calibration(calib, source.meta.preprocessing, calib_size, method=sim.method)
    if images is None:
        probe = calibration.images[:n_images]
        described = f"{len(probe)} of the {len(calibration)} calibration images from {calibration.source}"
    else:
        loaded = load_calibration(images, source.meta.preprocessing, n_images)
        probe = loaded.images
        described = f"{len(probe)} images from {loaded.source} (--images)"
    notes = [sim.note] if sim.note else []
    if source.meta.weights == "random":
        notes.append("--weights random: seeded random weights; the figures say nothing about a trained model")
    for note in notes:
        say(f"note: {note}")
    if source.module is not None:
        say(f"int8 weights: optimal rounding and bias correction on "
            f"{min(ROUNDING_IMAGES, len(calibration))} calibration images, as convert prepares them...")
        weights_text = "int8 weights prepared as convert does (optimal rounding, bias correction)"
    else:
        weights_text = "int8 weights rounded to nearest (an ONNX model: no rounding or bias correction)"
    say(f"quantizing for {reporter().layer_report_runtime} ({sim.settings}) with {len(calibration)} images "
        f"from {calibration.source}, comparing on {len(probe)}...")
    report = prepared_report(source, calibration, sim.options, probe)
    report.subject = (f"{source.meta.arch} ({model_text or source.meta.arch}) quantized as target "
                      f"{sim.profile.name}'s {sim.build.backend} int8 build: {sim.settings}; {weights_text}")
    report.images = described
    report.notes[:0] = notes
    return report
