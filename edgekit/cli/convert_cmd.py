"""`edgekit convert`: build, verify and record a target's artifacts."""
from __future__ import annotations

from pathlib import Path

import click
from .console import console as make_console
from rich.table import Table

from ..backends.base import PRECISIONS, list_calibration_methods
from ..choices import DEFAULT_CALIB_SIZE, ROUNDINGS
from ..datasets import read_labels
from ..manifest import Manifest
from ..targets import DEFAULT_TARGET
from .options import normalisation_option, resolution_option, width_option

CALIB_METHODS = tuple(list_calibration_methods())  # the union of the backends' (each checks its own)


@click.command("convert")
@click.option("--target", "-t", default=DEFAULT_TARGET, show_default=True,
              help="Target name (see 'edgekit targets') or a target .yaml file.")
@click.option("--model", "-m", default=None,
              help="Model name (default mobilenet_v2, or the checkpoint's), a .onnx file, or your "
                   "own PyTorch classifier as FILE.py:FUNCTION (FUNCTION() returns the nn.Module).")
@click.option("--weights", "-w", default=None,
              help="An edgekit checkpoint, a torchvision-format state_dict, 'imagenet' (built-in, "
                   "else torchvision's) or 'random' (seeded, accuracy meaningless); with "
                   "FILE.py:FUNCTION, a state_dict for that model. [default: the built-in ImageNet "
                   "weights: mobilenet_v1 0.25/0.5/0.75, mobilenet_v2 1.0, mobilenet_v3_small 1.0]")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Class names, one per line in output order (for a model that records none).")
@width_option
@resolution_option
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Folder of calibration images [default: the photos bundled in calibration/].")
@click.option("--calib-size", type=click.IntRange(min=1), default=DEFAULT_CALIB_SIZE,
              show_default=True, help="Images sampled (seeded) from --calib.")
@click.option("--calib-method", type=click.Choice(CALIB_METHODS), default=None,
              help="How int8 activation ranges are chosen [default: each backend's best measured: "
                   "openvino mean_minmax, the others percentile].")
@click.option("--precision", "-p", type=click.Choice(PRECISIONS), multiple=True,
              help="Build only this precision (repeatable) [default: every precision the target lists].")
@click.option("--backend", "-b", multiple=True, metavar="NAME[,NAME]",
              help="Build only these backends' artifacts (repeatable or comma-separated).")
@click.option("--val", type=click.Path(path_type=Path), default=None,
              help="Images for the parity check: a folder, or labelled (class subfolders or a "
                   "TSV of path<TAB>class) [default: the calibration images].")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=None, metavar="POINTS",
              help="int8 budget: top-1 drop on a labelled --val (else disagreement with the float "
                   "model), in points. Missed: the layers int8 hurts most stay float until met.")
@click.option("--max-float-layers", type=click.IntRange(min=1), default=None,
              help="With --max-accuracy-drop: most layers kept float [default: half of them].")
@click.option("--float-layers", default="", metavar="LAYER,...",
              help="Keep these layers (module paths, see 'edgekit quant-report') float in int8 builds.")
@click.option("--weight-rounding", type=click.Choice(ROUNDINGS), default="optimal", show_default=True,
              help="int8 weights: 'optimal' rounds each layer for least output error on the "
                   "calibration images (once, for every backend); 'nearest' is plain rounding.")
@click.option("--bias-correction/--no-bias-correction", default=True, show_default=True,
              help="Correct each int8 layer's bias for the output shift quantization causes "
                   "(OpenVINO does its own).")
@normalisation_option
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: build/<target>].")
@click.option("--no-check", is_flag=True, help="Record parity failures but exit 0.")
@click.option("--serial", is_flag=True,
              help="Convert everything in this process (default: TFLite converts in a second process "
                   "beside the other backends).")
def command(target, model, weights, labels, width, resolution, calib, calib_size, calib_method, precision,
            backend, val, max_accuracy_drop, max_float_layers, float_layers, weight_rounding,
            bias_correction, normalisation, out, no_check, serial) -> None:
    """Convert a model into every artifact a target needs, verify each against the source model,
    and write DIR/manifest.json."""
    from ..convert import convert

    console = make_console(stderr=True)
    with console.status("converting...") as status:
        def progress(message: str) -> None:
            console.print(message, highlight=False)
            status.update(message)

        manifest = convert(target, model, weights=weights, width=width, resolution=resolution,
                           calib=calib, calib_size=calib_size, calib_method=calib_method,
                           precision=precision or None, backend=backend or None, out=out, val=val,
                           max_accuracy_drop=max_accuracy_drop, max_float_layers=max_float_layers,
                           float_layers=float_layers, weight_rounding=weight_rounding,
                           bias_correction=bias_correction, check=not no_check,
                           parallel=not serial, normalisation=normalisation,
                           labels=read_labels(labels) if labels else None, progress=progress)
    print_summary(manifest)


def print_summary(manifest: Manifest) -> None:
    table = Table(title=f"{manifest.model['name']} for {manifest.target} -> {manifest.folder}",
                  title_justify="left")
    for col in ("artifact", "backend", "precision", "size", "input", "top-1 agree", "max |diff|",
                "SQNR dB", "parity"):
        table.add_column(col, justify="right" if col in ("size", "top-1 agree", "max |diff|", "SQNR dB") else "left")
    for a in manifest.artifacts:
        p = a.parity or {}
        sqnr = p.get("sqnr_db")
        table.add_row(a.path, a.backend, a.precision, f"{a.size_bytes / 1e6:.2f} MB",
                      f"{a.input.get('dtype')} {a.input.get('layout')}",
                      f"{p.get('top1_agreement', 0):.1%}", f"{p.get('max_abs_diff', 0):.2g}",
                      sqnr if isinstance(sqnr, str) else f"{sqnr:.1f}",
                      "ok" if a.parity_ok else "FAILED")
    make_console().print(table)
    for a in manifest.artifacts:
        mixed = (a.details or {}).get("mixed_precision")
        if mixed:
            make_console().print(mixed_precision_line(a.path, a.size_bytes, mixed), highlight=False)


def mixed_precision_line(path: str, size_bytes: int, mixed: dict) -> str:
    first, layers = mixed["trials"][0], mixed["float_layers"]
    chosen = next((t for t in mixed["trials"] if t["float_layers"] == layers), first)
    line = (f"{path}: {mixed['metric']} {first['drop_points']:.1f} -> {chosen['drop_points']:.1f} points "
            f"(budget {mixed['budget_points']:g}, {'met' if mixed['met'] else 'NOT met'})")
    if layers:
        line += (f"; {len(layers)} layer(s) kept float: {', '.join(layers)}; size "
                 f"{first['size_bytes'] / 1e6:.2f} -> {size_bytes / 1e6:.2f} MB")
        lat = mixed.get("latency_ms") or {}
        if lat:
            line += f"; quick p50 (1 thread) {lat['all_int8']:.2f} -> {lat['mixed']:.2f} ms"
    return line
