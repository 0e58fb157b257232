"""`edgekit targets`: the device profiles in targets/*.yaml."""
from __future__ import annotations

import json

import click
from .console import console as make_console
from rich.table import Table

from ..api import targets as all_targets
from ..targets import load_target
from .options import json_option


@click.group("targets", invoke_without_command=True)
@json_option
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> None:
    """List the device targets (targets/*.yaml) and what each one builds."""
    if ctx.invoked_subcommand is not None:
        return
    targets = all_targets()
    if as_json:
        click.echo(json.dumps([t.to_dict() for t in targets], indent=2))
        return
    table = Table(title="edgekit targets", title_justify="left")
    for col in ("name", "device", "cpu", "threads", "builds"):
        table.add_column(col)
    for t in targets:
        builds = ", ".join(f"{b.backend} {'/'.join(b.precisions)}" for b in t.builds)
        table.add_row(t.name, t.description, f"{t.cpu.model or t.cpu.arch} x{t.cpu.cores}",
                      str(t.threads), builds)
    make_console().print(table)


@command.command("show")
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> None:
    """Explain one target: CPU, what it builds and why, parity tolerances, notes."""
    t = load_target(name)
    if as_json:
        click.echo(json.dumps(t.to_dict(), indent=2))
        return
    console = make_console()
    console.print(f"[bold]{t.name}[/bold]: {t.description}")
    features = ", ".join(t.cpu.features) or "-"
    console.print(f"cpu: {t.cpu.model or t.cpu.arch} ({t.cpu.arch}), {t.cpu.cores} cores, "
                  f"features {features}; threads {t.threads}")
    if t.accelerator:
        console.print(f"accelerator: {t.accelerator}")
    for b in t.builds:
        io = f", I/O {b.io_dtype}" if "int8" in b.precisions else ""
        quant = (f", activations {b.activation_type} / weights {b.weight_type}"
                 if b.backend == "onnxruntime" and "int8" in b.precisions else "")
        console.print(f"- [bold]{b.backend}[/bold] {', '.join(b.precisions)} (layout {b.layout}{io}{quant})")
        if b.why:
            console.print(f"  {b.why}", highlight=False)
    p = t.parity
    console.print(f"parity: fp32 max abs diff <= {p.fp32_max_abs_diff:g}, fp16 agreement >= "
                  f"{p.fp16_min_agreement:.0%}, int8 agreement >= {p.int8_min_agreement:.0%} and "
                  f"SQNR >= {p.int8_min_sqnr_db:g} dB")
    if t.notes:
        console.print(f"notes: {t.notes}", highlight=False)
    console.print(f"file: {t.source}", highlight=False)
