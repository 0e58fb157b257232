"""`edgekit weights`: import published TensorFlow MobileNets, fetch and inspect checkpoints."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click
from rich.table import Table

from ..datasets import read_labels
from ..errors import InputError
from ..models import list_models
from ..models.registry import MAX_WIDTH, TORCHVISION_WEIGHTS
from .console import console as make_console
from .options import json_option, normalisation_option


@click.group()
def weights() -> None:
    """Import, fetch and inspect model weights."""


@weights.command("import")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--arch", required=True, type=click.Choice(list_models()),
              help="Architecture of the source model.")
@click.option("--width", type=click.FloatRange(0, MAX_WIDTH, min_open=True), default=None,
              help="Width multiplier (inferred when omitted).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Text file with one class name per line, stored in the checkpoint.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Checkpoint to write (.pth or .safetensors).")
@normalisation_option
def import_cmd(src: Path, arch: str, width: float | None, labels: Path | None, out: Path,
               normalisation: str | None) -> None:
    """Import a published TensorFlow MobileNet (.tflite, or Keras .h5) into an edgekit checkpoint."""
    from ..models import importers
    from ..models.weights import save_checkpoint

    if not src.is_file():
        raise InputError(f"source model not found: {src}")
    if out.suffix not in (".pth", ".pt", ".safetensors"):
        raise InputError(f"--out must end in .pth, .pt or .safetensors, got {out.name}")
    model = importers.import_model(src, arch=arch, width=width, labels=read_labels(labels) if labels else None)
    if normalisation is not None:  # a float file does not say what range it was trained on
        model.meta = replace(model.meta, preprocessing=model.meta.preprocessing.normalised(normalisation))
    save_checkpoint(model, out)
    m = model.meta
    click.echo(f"imported {src.name} as {m.arch} width {m.width:g} at {m.resolution}px, "
               f"{m.num_classes} classes, padding {m.padding} -> {out}")


@weights.command("fetch")
@click.argument("arch", type=click.Choice(sorted(TORCHVISION_WEIGHTS)))
def fetch(arch: str) -> None:
    """Put torchvision's published ImageNet checkpoint for ARCH in the torch hub cache.

    torchvision publishes no MobileNet V1: import TensorFlow's with `edgekit weights import`."""
    from ..models.weights import resolve_imagenet

    click.echo(str(resolve_imagenet(arch)))


@weights.command("info")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@json_option
def info(checkpoint: Path, as_json: bool) -> None:
    """Show the metadata stored in an edgekit checkpoint (.pth, .pt or .safetensors)."""
    from ..models.weights import read_checkpoint

    state, meta = read_checkpoint(checkpoint)
    data = meta.to_dict() if meta else {"arch": None, "note": "bare state_dict, no edgekit metadata"}
    data["tensors"] = len(state)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"{checkpoint}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        if value is not None:
            table.add_row(key, _plain(key, value))
    make_console().print(table, highlight=False)


def _plain(key: str, value) -> str:
    """One cell per metadata entry: labels abridged (quoted: a label may hold commas),
    preprocessing as key=value pairs."""
    if key == "labels":
        shown = ", ".join(json.dumps(label, ensure_ascii=False) for label in value[:3])
        return f"{len(value)}: {shown}{', ...' if len(value) > 3 else ''}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return f"{value:g}" if isinstance(value, float) else str(value)
