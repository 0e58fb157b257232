"""`edgekit eval`: top-1/top-5 of models and artifacts on labelled images."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from ..datasets import read_labels
from ..preprocessing import NORMALISATIONS
from .console import console as make_console


def short_names(paths: list[str]) -> list[str]:
    """Each path's file name, with as many parent folders as it takes to tell it apart from the
    others (two convert folders both hold model_fp32.onnx)."""
    parts = [Path(p).parts for p in paths]
    names = []
    for p in parts:
        k = 1
        while k < len(p) and sum(q[-k:] == p[-k:] for q in parts) > 1:
            k += 1
        names.append(str(Path(*p[-k:])))
    return names


@click.command("eval")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Folder of class subfolders (label names) or a TSV of path<TAB>class.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Evaluate a seeded sample of this many images.")
@click.option("--normalisation", type=click.Choice(list(NORMALISATIONS)), default=None,
              help="For artifacts no manifest lists (e.g. Google's published .tflite): their input "
                   "value range, torchvision ((x/255 - ImageNet mean) / std), tensorflow "
                   "(x/127.5 - 1) or unit (x/255); size and classes are read from the file.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --normalisation: their class names, one per line [default: the other "
                   "models'].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--no-verify", is_flag=True,
              help="Use a build's files even when they no longer match its manifest's sha256.")
def command(paths, data, limit, normalisation, labels, as_json, no_verify) -> None:
    """Evaluate checkpoints (.pth/.safetensors), artifacts or whole convert folders on labelled
    images: top-1, top-5 and each artifact's agreement with its own float model (the checkpoint
    it was converted from when that is evaluated too or its sha256 in the manifest matches, else
    its folder's fp32 artifact; "-" when neither is at hand). Only the PATHs given get rows."""
    from ..api import evaluate

    err = make_console(stderr=True)
    results = evaluate(list(paths), data, limit=limit, normalisation=normalisation,
                       labels=read_labels(labels) if labels else None, verify=not no_verify,
                       progress=lambda m: err.print(m, highlight=False))
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    t = Table(title=f"edgekit eval on {data}", title_justify="left")
    for c in ("path", "backend", "precision", "top-1", "top-5", "n", "agreement with float"):
        t.add_column(c, justify="left" if c in ("path", "backend", "precision") else "right")
    for name, r in zip(short_names([r.path for r in results]), results):
        t.add_row(name, r.backend, r.precision, f"{r.top1:.1%}", f"{r.top5:.1%}",
                  str(r.n), "-" if r.agreement_with_float is None else f"{r.agreement_with_float:.1%}")
    make_console().print(t)
