"""`edgekit quant-report`: which layers lose most when a model goes int8."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from ..backends.base import ConvertOptions
from ..calibration import load_calibration
from ..errors import InputError
from ..manifest import Manifest
from ..source import ModelSource
from ..quant_report import QuantReport, onnx_report, simulated_report
from ..targets import DEFAULT_TARGET, load_target
from .console import console as make_console
from .convert_cmd import CALIB_METHODS
from .options import resolution_option, width_option

DEFAULT_IMAGES = 32


@click.command("quant-report")
@click.argument("build", required=False, type=click.Path(path_type=Path))
@click.option("--model", "-m", default=None, help="Model name or .onnx file (without BUILD).")
@click.option("--weights", "-w", default=None, help="Checkpoint (without BUILD).")
@width_option
@resolution_option
@click.option("--target", "-t", default=DEFAULT_TARGET, show_default=True,
              help="Whose ONNX Runtime int8 options to use (without BUILD).")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Calibration images (without BUILD) [default: the bundled photos].")
@click.option("--calib-size", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--calib-method", type=click.Choice(CALIB_METHODS), default="percentile", show_default=True)
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Images the layers are compared on [default: the calibration images].")
@click.option("-n", "n_images", type=click.IntRange(min=1), default=DEFAULT_IMAGES, show_default=True,
              help="How many of them.")
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True,
              help="Rows in the table (JSON has every layer).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the whole report as JSON.")
def command(build, model, weights, width, resolution, target, calib, calib_size, calib_method,
            images, n_images, top, json_path) -> None:
    """Per-layer int8 error: SQNR and cosine similarity of each layer's output against the float
    model, the noise each layer adds, and the logits' SQNR when only that layer is quantized
    (the ranking: what keeping the layer float would win back).

    BUILD is a convert output folder with ONNX Runtime fp32 and int8 artifacts (their real
    tensors are compared). Without BUILD the model given by --model/--weights is quantized for
    ONNX Runtime with --calib/--calib-method and compared with its float export: the ranking
    'edgekit convert --max-accuracy-drop' uses for every backend.
    """
    err = make_console(stderr=True)
    if build is not None:
        if model or weights or calib:
            raise click.UsageError("give BUILD or --model/--weights/--calib, not both")
        report = _report_on_build(build, images, n_images)
    else:
        from ..convert import resolve_source

        source = resolve_source(model, weights, width, resolution)
        calibration = load_calibration(calib, source.meta.preprocessing, calib_size, method=calib_method)
        probe = calibration.images if images is None else \
            load_calibration(images, source.meta.preprocessing, n_images).images
        err.print(f"quantizing for ONNX Runtime with {len(calibration)} images ({calib_method}), "
                  f"comparing on {min(n_images, len(probe))}...", highlight=False)
        if source.module is not None:  # the int8 weights convert builds (int8_weights.py)
            from ..convert import ROUNDING_IMAGES
            from ..int8_weights import round_weights

            prepared = round_weights(source.module, calibration.images[:ROUNDING_IMAGES])
            module = prepared.bias_corrected(calibration.method, calibration.options)
            source = ModelSource(meta=source.meta, module=module)
        report = simulated_report(source, calibration, _ort_options(target, calib_method),
                                  probe[:n_images])
    make_console().print(report_table(report, top))
    for note in report.notes:
        err.print(f"note: {note}", highlight=False)
    if json_path:
        json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")


def _ort_options(target: str, method: str) -> ConvertOptions:
    profile = load_target(target)
    build = next((b for b in profile.builds if b.backend == "onnxruntime"), None)
    if build is None:
        return ConvertOptions(calibration_method=method)
    return ConvertOptions(activation_type=build.activation_type, weight_type=build.weight_type,
                          per_channel=build.per_channel, calibration_method=method)


def _report_on_build(folder: Path, images: Path | None, n_images: int) -> QuantReport:
    manifest = Manifest.read(folder)
    by_precision = {r.precision: manifest.artifact_path(r) for r in manifest.artifacts
                    if r.backend == "onnxruntime"}
    if "int8" not in by_precision or "fp32" not in by_precision:
        raise InputError(f"{folder} has no ONNX Runtime fp32 + int8 pair; report on the model "
                         "instead: edgekit quant-report --weights CKPT --calib DIR")
    pre = manifest.model_meta().preprocessing
    calibration = load_calibration(images, pre, n_images)
    return onnx_report(by_precision["fp32"], by_precision["int8"], calibration.images)


def report_table(report: QuantReport, top: int) -> Table:
    table = Table(title=f"int8 error per layer ({report.backend}, {report.n_images} images; "
                        f"logits SQNR {report.output_sqnr_db:.1f} dB)", title_justify="left")
    for col in ("rank", "layer", "ops", "SQNR dB", "cosine", "loss dB", "added noise", "logits SQNR alone"):
        table.add_column(col, justify="left" if col in ("layer", "ops") else "right")
    for e in report.ranked()[:top]:
        table.add_row(str(e.rank), e.layer, e.ops, f"{e.sqnr_db:.1f}", f"{e.cosine:.4f}",
                      f"{e.loss_db:+.1f}", f"{e.added_noise:.2%}", f"{e.alone_sqnr_db:.1f}")
    return table
