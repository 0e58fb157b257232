"""`edgekit quant-report`: which layers lose most when a model goes int8."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import click
from click.core import ParameterSource
from rich.table import Table

from ..backends.base import ConvertOptions, get_backend
from ..calibration import load_calibration
from ..errors import InputError
from ..fileio import writable_folder, write_text_atomic
from ..manifest import Manifest
from ..quant_report import RANKING, QuantReport, onnx_report, prepared_report
from ..targets import DEFAULT_TARGET, BuildSpec, TargetProfile, load_target
from .console import console as make_console
from .convert_cmd import CALIB_METHODS
from .options import resolution_option, width_option

DEFAULT_IMAGES = 32
# options that describe a model to quantize: a build folder's int8 artifact is quantized already
MODEL_ONLY = ("model", "weights", "width", "resolution", "target", "calib", "calib_size", "calib_method")


@click.command("quant-report")
@click.argument("build", required=False, type=click.Path(path_type=Path))
@click.option("--model", "-m", default=None, help="Model name or .onnx file (without BUILD).")
@click.option("--weights", "-w", default=None, help="Checkpoint, 'imagenet' or 'random' (without BUILD) [default: built-in ImageNet weights].")
@width_option
@resolution_option
@click.option("--target", "-t", default=DEFAULT_TARGET, show_default=True,
              help="Whose int8 settings to simulate (without BUILD): its ONNX Runtime build's, "
                   "else its first int8 build's (said in the output).")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Calibration images (without BUILD) [default: the bundled photos].")
@click.option("--calib-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="How many calibration images (without BUILD).")
@click.option("--calib-method", type=click.Choice(CALIB_METHODS), default=None,
              help="Calibration method (without BUILD) [default: the simulated backend's default, "
                   "percentile for ONNX Runtime]. The model is quantized with ONNX Runtime, which "
                   "has no mse: refused.")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Images the layers are compared on [default: the calibration images; with "
                   "BUILD, the images the build was calibrated on, as its manifest records].")
@click.option("-n", "n_images", type=click.IntRange(min=1), default=DEFAULT_IMAGES, show_default=True,
              help="How many of them.")
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True,
              help="Rows in the table (JSON has every layer).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the whole report as JSON (its folder is created).")
@click.pass_context
def command(ctx, build, model, weights, width, resolution, target, calib, calib_size, calib_method,
            images, n_images, top, json_path) -> None:
    """Per-layer int8 error: SQNR and cosine similarity of each layer's output against the float
    model, the noise each layer adds, and the logits' SQNR when only that layer is quantized.
    Layers are ranked by that last figure, lowest first (what keeping the layer float would win
    back), not by the noise they add.

    BUILD is a convert output folder with ONNX Runtime fp32 and int8 artifacts: their real
    tensors are compared, on the images the build was calibrated on. Without BUILD the model
    given by --model/--weights gets the int8 weights convert prepares (optimal rounding, bias
    correction), is quantized for ONNX Runtime with --calib/--calib-method and the --target's
    settings, and is compared with the float model: the ranking 'edgekit convert
    --max-accuracy-drop' uses for every backend.
    """
    err = make_console(stderr=True)
    said: set[str] = set()

    def say(msg: str) -> None:  # one line each, however long
        said.add(msg)
        err.print(msg, highlight=False, soft_wrap=True)

    # --json's folder is created and checked writable now, not after minutes of work
    with _json_folder(json_path) if json_path is not None else contextlib.nullcontext():
        if build is not None:
            report = _report_on_build(ctx, build, images, n_images, say)
        else:
            report = _report_on_model(model, weights, width, resolution, target, calib, calib_size,
                                      calib_method, images, n_images, say)
        make_console().print(report_table(report, top))
        for note in report.notes:
            if f"note: {note}" not in said:  # the notes said before the work are not repeated
                say(f"note: {note}")
        if json_path is not None:
            write_text_atomic(json_path, json.dumps(report.to_dict(), indent=2) + "\n")


@contextlib.contextmanager
def _json_folder(path: Path) -> Iterator[None]:
    """--json's folder, created and checked writable before the work (as bench --json, the
    folder is created); removed again if the work fails."""
    if path.is_dir():
        raise click.BadParameter(f"{path} is a folder; give a file name", param_hint="--json")
    with writable_folder(path.parent, what=f"cannot write --json {path}: folder"):
        yield


def _given(ctx: click.Context, names: tuple[str, ...]) -> list[str]:
    """The options among ``names`` given on the command line, as spelled there (--calib-method)."""
    params = {p.name: p for p in ctx.command.params}
    return [max(params[n].opts, key=len) for n in names
            if ctx.get_parameter_source(n) not in (ParameterSource.DEFAULT, None)]


def _calibration_text(record: dict | None) -> str:
    if not record:
        return ""
    method = record.get("method")
    method = ", ".join(f"{b} {m}" for b, m in method.items()) if isinstance(method, dict) else method
    return f"{method} on {record.get('n_images')} images from {record.get('source')}"


def _report_on_build(ctx: click.Context, folder: Path, images: Path | None, n_images: int,
                     say) -> QuantReport:
    given = _given(ctx, MODEL_ONLY)
    manifest = Manifest.read(folder)
    if given:
        calibrated = _calibration_text(manifest.calibration)
        raise click.UsageError(
            f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to a build folder: its "
            f"int8 artifact is quantized already" + (f" (calibrated with {calibrated})" if calibrated else "")
            + ". Compare on other images with --images DIR; to try other settings, report on the "
            "model: edgekit quant-report --weights CKPT --calib DIR --calib-method M")
    by_precision = {r.precision: manifest.artifact_path(r) for r in manifest.artifacts
                    if r.backend == "onnxruntime"}
    if "int8" not in by_precision or "fp32" not in by_precision:
        raise InputError(f"{folder} has no ONNX Runtime fp32 + int8 pair; report on the model "
                         "instead: edgekit quant-report --weights CKPT --calib DIR")
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
    report = onnx_report(by_precision["fp32"], by_precision["int8"], probe_images)
    calibrated = _calibration_text(manifest.calibration)
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


def _simulated_build(profile: TargetProfile) -> tuple[BuildSpec, str | None]:
    """The target's build whose int8 settings the simulation uses, and a note when it is not an
    ONNX Runtime one."""
    builds = [b for b in profile.builds if "int8" in b.precisions]
    if not builds:
        raise InputError(f"target {profile.name} builds no int8 artifact: there is no int8 error to report")
    ort = next((b for b in builds if b.backend == "onnxruntime"), None)
    if ort is not None:
        return ort, None
    b = builds[0]
    return b, (f"target {profile.name} has no ONNX Runtime build: its {b.backend} int8 settings were "
               f"simulated with ONNX Runtime (QDQ), which places quantizers where {b.backend}'s int8 "
               "kernels do; rounding, bias correction and calibration are edgekit's, not the "
               f"{b.backend} converter's")


def _settings(build: BuildSpec, method: str) -> str:
    return (f"{build.activation_type} activations, {build.weight_type} "
            f"{'per-channel' if build.per_channel else 'per-tensor'} weights, {method} calibration")


def _report_on_model(model, weights, width, resolution, target, calib, calib_size, calib_method,
                     images, n_images, say) -> QuantReport:
    from ..backends.ort_calibration import METHODS
    from ..convert import ROUNDING_IMAGES, resolve_source

    # everything that can be refused is checked before the model is loaded or quantized
    profile = load_target(target)
    spec, settings_note = _simulated_build(profile)
    method = calib_method or get_backend(spec.backend).default_calibration_method
    if method not in METHODS:
        raise click.BadParameter(
            f"ONNX Runtime, which quant-report quantizes the model with, has no '{method}' calibration "
            f"(it has {', '.join(METHODS)}); convert builds '{method}' with the backends that have it",
            param_hint="--calib-method")
    source = resolve_source(model, weights, width, resolution)
    calibration = load_calibration(calib, source.meta.preprocessing, calib_size, method=method)
    if images is None:
        probe = calibration.images[:n_images]
        described = f"{len(probe)} of the {len(calibration)} calibration images from {calibration.source}"
    else:
        loaded = load_calibration(images, source.meta.preprocessing, n_images)
        probe = loaded.images
        described = f"{len(probe)} images from {loaded.source} (--images)"
    settings = _settings(spec, method)
    notes = [settings_note] if settings_note else []
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
    say(f"quantizing for ONNX Runtime ({settings}) with {len(calibration)} images from "
        f"{calibration.source}, comparing on {len(probe)}...")
    options = ConvertOptions(activation_type=spec.activation_type, weight_type=spec.weight_type,
                             per_channel=spec.per_channel, calibration_method=method)
    report = prepared_report(source, calibration, options, probe)
    model_text = weights or model or source.meta.arch
    report.subject = (f"{source.meta.arch} ({model_text}) quantized as target {profile.name}'s "
                      f"{spec.backend} int8 build: {settings}; {weights_text}")
    report.images = described
    report.notes[:0] = notes
    return report


def report_table(report: QuantReport, top: int) -> Table:
    title = (f"int8 error per layer: {report.subject}\ncompared on {report.images}; {report.backend}; "
             f"logits SQNR {report.output_sqnr_db:.1f} dB\nranked by {RANKING}")
    table = Table(title=title, title_justify="left")
    for col in ("rank", "layer", "ops", "SQNR dB", "cosine", "loss dB", "added noise", "logits SQNR alone"):
        table.add_column(col, justify="left" if col in ("layer", "ops") else "right")
    for e in report.ranked()[:top]:
        table.add_row(str(e.rank), e.layer, e.ops, f"{e.sqnr_db:.1f}", f"{e.cosine:.4f}",
                      f"{e.loss_db:+.1f}", f"{e.added_noise:.2%}", f"{e.alone_sqnr_db:.1f}")
    return table
