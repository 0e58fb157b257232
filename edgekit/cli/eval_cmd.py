"""`edgekit eval`: top-1/top-5 of models and artifacts on labelled images."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from ..evaluate import evaluate
from .console import console as make_console


@click.command("eval")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Folder of class subfolders (label names) or a TSV of path<TAB>class.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Evaluate a seeded sample of this many images.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(paths, data, limit, as_json) -> None:
    """Evaluate checkpoints (.pth/.safetensors), artifacts or whole convert folders on labelled
    images: top-1, top-5 and each artifact's agreement with the float model."""
    err = make_console(stderr=True)
    results = evaluate(list(paths), data, limit, progress=lambda m: err.print(m, highlight=False))
    if as_json:
        click.echo(json.dumps([{k: v for k, v in r.to_dict().items() if k != "skipped_unreadable"}
                               for r in results], indent=2))
        return
    t = Table(title=f"edgekit eval on {data}", title_justify="left")
    for c in ("path", "backend", "precision", "top-1", "top-5", "n", "agreement with float"):
        t.add_column(c, justify="left" if c in ("path", "backend", "precision") else "right")
    for r in results:
        t.add_row(Path(r.path).name, r.backend, r.precision, f"{r.top1:.1%}", f"{r.top5:.1%}",
                  str(r.n), "-" if r.agreement_with_float is None else f"{r.agreement_with_float:.1%}")
    make_console().print(t)
