"""`edgekit check`: where each op of a model runs on a target's backends."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from .console import console as make_console
from .options import json_option


@click.command("check")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-t", "--target", default=None,
              help="Only the backends this target builds (name or .yaml) [default: every backend "
                   "that runs the file].")
@click.option("--ops", "show_ops", is_flag=True, help="List every op, not one row per op type.")
@json_option
@click.option("--no-verify", is_flag=True,
              help="Check a build's files even when they no longer match its manifest's sha256.")
def command(model: Path, target: str | None, show_ops: bool, as_json: bool, no_verify: bool) -> None:
    """Say where each op of MODEL will run: on the Edge TPU or the CPU, inside XNNPACK or not, in
    ONNX Runtime's int8 kernels or a float fallback, in OpenVINO's int8 or float kernels; why not
    when not; and a one-line verdict. MODEL is a .tflite, .onnx or .xml file (built by edgekit or
    not) or a convert folder (every artifact its manifest lists)."""
    from ..check import check

    reports = check(model, target, verify=not no_verify)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2))
        return
    out = make_console()
    for r in reports:
        out.print(f"[bold]{Path(r.path).name}[/bold] on {r.backend}: {r.verdict()}", highlight=False)
        t = Table(title_justify="left", show_edge=False, pad_edge=False)
        columns = ("#", "op", "runs on", "why not", "layer") if show_ops else ("op", "count", "runs on", "why not")
        for c in columns:
            t.add_column(c, justify="right" if c in ("#", "count") else "left")
        if show_ops:
            for op in r.ops:
                t.add_row(str(op.index), op.op, op.runs_on, op.reason + ("" if op.certain else " (rule of thumb)"),
                          op.name)
        else:
            for kind, n, where, reason in r.table():
                t.add_row(kind, str(n), where, reason)
        out.print(t)
        for note in [f"decided by {r.runtime}", *r.notes]:
            out.print(f"  note: {note}", highlight=False)
        out.print()
