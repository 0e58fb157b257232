"""`edgekit quant-report`: which layers lose most when a model goes int8."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import click
from rich.table import Table

from ..api import QUANT_REPORT_CALIB_SIZE, QUANT_REPORT_IMAGES, quant_report
from ..fileio import writable_folder, write_text_atomic
from ..quant.report import RANKING, QuantReport
from ..targets import DEFAULT_TARGET
from .console import console as make_console
from .convert_cmd import CALIB_METHODS
from .options import resolution_option, width_option


@click.command("quant-report")
@click.argument("build", required=False, type=click.Path(path_type=Path))
@click.option("--model", "-m", default=None, help="Model name or .onnx file (without BUILD).")
@click.option("--weights", "-w", default=None, help="Checkpoint, 'imagenet' or 'random' (without BUILD) [default: built-in ImageNet weights].")
@width_option
@resolution_option
@click.option("--target", "-t", default=None,
              help="Whose int8 settings to simulate (without BUILD): its ONNX Runtime build's, "
                   f"else its first int8 build's (said in the output) [default: {DEFAULT_TARGET}].")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Calibration images (without BUILD) [default: the bundled photos].")
@click.option("--calib-size", type=click.IntRange(min=1), default=None,
              help=f"How many calibration images (without BUILD) [default: {QUANT_REPORT_CALIB_SIZE}].")
@click.option("--calib-method", type=click.Choice(CALIB_METHODS), default=None,
              help="Calibration method (without BUILD) [default: the simulated backend's default, "
                   "percentile for ONNX Runtime]. The model is quantized with ONNX Runtime, which "
                   "has no mse: refused.")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Images the layers are compared on [default: the calibration images; with "
                   "BUILD, the images the build was calibrated on, as its manifest records].")
@click.option("-n", "n_images", type=click.IntRange(min=1), default=QUANT_REPORT_IMAGES, show_default=True,
              help="How many of them.")
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True,
              help="Rows in the table (JSON has every layer).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the whole report as JSON (its folder is created).")
def command(build, model, weights, width, resolution, target, calib, calib_size, calib_method,
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
        report = quant_report(build, model=model, weights=weights, width=width, resolution=resolution,
                              target=target, calib=calib, calib_size=calib_size, calib_method=calib_method,
                              images=images, n_images=n_images, progress=say)
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
