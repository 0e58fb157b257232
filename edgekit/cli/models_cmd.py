"""`edgekit models`: the model zoo and its accounting."""
from __future__ import annotations

import json

import click
from .console import console as make_console
from rich.table import Table

from ..models import STANDARD_VARIANTS, create
from ..models.registry import MAX_NUM_CLASSES
from .options import check_resolution, check_width, json_option, model_names


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List the standard MobileNet variants with parameters and multiply-accumulates (MACs), and
    which have ImageNet weights built in (what convert, train and demo use without --weights).

    MACs count Conv2d (incl. depthwise and squeeze-excite) and Linear layers for one image.
    """
    from ..models import builtin
    from ..models.accounting import count

    if ctx.invoked_subcommand is not None:
        return
    rows = []
    for v in STANDARD_VARIANTS:
        acc = count(create(v.name, width=v.width, resolution=v.resolution), v.resolution)
        weights = builtin.find(v.name, v.width)
        rows.append({"name": v.name, "width": v.width, "resolution": v.resolution,
                     "params": acc.params, "macs": acc.macs,
                     "builtin_weights": weights.name if weights else None})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="edgekit models", title_justify="left")
    for col in ("name", "width", "resolution", "params", "MACs", "built-in ImageNet weights"):
        table.add_column(col, justify="left" if col in ("name", "built-in ImageNet weights") else "right")
    for r in rows:
        table.add_row(r["name"], f"{r['width']:g}", str(r["resolution"]), _millions(r["params"]),
                      _millions(r["macs"]), r["builtin_weights"] or "-")
    console = make_console()
    console.print(table)
    console.print("Without built-in weights: --weights FILE (a checkpoint, or `edgekit weights "
                  "import`) or --weights random.", highlight=False)


@models.command("show", help=f"Per-layer parameters and MACs of one model ({model_names()}).")
@click.argument("name")
@click.option("--width", type=float, default=1.0, show_default=True, callback=check_width,
              help="Width multiplier (alpha).")
@click.option("--resolution", type=int, default=224, show_default=True, callback=check_resolution,
              help="Input resolution in pixels.")
@click.option("--num-classes", type=click.IntRange(min=1, max=MAX_NUM_CLASSES), default=1000,
              show_default=True)
@json_option
def show(name: str, width: float, resolution: int, num_classes: int, as_json: bool) -> None:
    from ..models.accounting import count

    model = create(name, width=width, resolution=resolution, num_classes=num_classes)
    acc = count(model, resolution)
    if as_json:
        click.echo(json.dumps({"name": name, "width": model.meta.width, **acc.to_dict()}, indent=2))
        return
    console = make_console()
    table = Table(title=f"{name} width {model.meta.width:g} at {resolution}x{resolution}",
                  title_justify="left")
    for col in ("layer", "type", "kernel", "output", "params", "MACs", "MAC share"):
        table.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for layer in acc.layers:
        table.add_row(layer.name, layer.type, layer.kernel, "x".join(map(str, layer.output_shape)),
                      f"{layer.params:,}", f"{layer.macs:,}", f"{layer.macs / acc.macs:.1%}")
    console.print(table)
    summary = Table(title="by layer type", title_justify="left")
    for col in ("type", "params", "params share", "MACs", "MAC share"):
        summary.add_column(col, justify="left" if col == "type" else "right")
    for t in acc.by_type:
        summary.add_row(t.type, f"{t.params:,}", f"{t.params_share:.1%}", f"{t.macs:,}",
                        f"{t.macs_share:.1%}")
    summary.add_row("total", f"{acc.params:,}", "100%", f"{acc.macs:,}", "100%", style="bold")
    console.print(summary)
