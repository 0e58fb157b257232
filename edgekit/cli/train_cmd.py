"""`edgekit train`: a folder of labelled photos -> a checkpoint for convert, eval, bench and demo."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .console import console as make_console
from .options import check_resolution, check_width, model_names


def _limits():
    from ..train import LIMITS

    return LIMITS


@click.command("train")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Training images: a folder of class subfolders (the class names) or a TSV of "
                   "path<TAB>class.")
@click.option("--val", type=click.Path(path_type=Path), default=None,
              help="Validation images, same classes [default: --val-split of --data held out].")
@click.option("--val-split", type=float, default=None,
              help="Fraction of each class held out for validation when --val is not given; 0: "
                   "no validation, the last epoch is kept [default: 0.2].")
@click.option("--model", default="mobilenet_v3_small", show_default=True, help=f"One of {model_names()}.")
@click.option("--width", type=float, default=None, callback=check_width,
              help="Width multiplier [default: the built-in weights' (1.0)].")
@click.option("--resolution", type=int, default=None, callback=check_resolution,
              help="Input size in pixels [default: the weights' (224)].")
@click.option("--weights", default="imagenet", show_default=True,
              help="imagenet (the built-in ImageNet weights), random (from scratch) or a checkpoint.")
@click.option("--freeze-backbone", "freeze", is_flag=True,
              help="Train the new head only (the default with pretrained weights).")
@click.option("--fine-tune", type=click.IntRange(min=1), default=None, metavar="N",
              help="Also train the last N feature blocks (pretrained weights) [default: 0; all with "
                   "--weights random].")
@click.option("--epochs", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(0, 10, min_open=True), default=1e-3, show_default=True,
              help="Peak learning rate of the head (fine-tuned blocks: 0.3x), warm-up then cosine.")
@click.option("--views", type=click.IntRange(0, 32), default=4, show_default=True,
              help="Augmented views per image (random resized crop + flip), besides the centre view.")
@click.option("--crop", type=click.Choice(["auto", "center", "none"]), default="auto", show_default=True,
              help="center: the backbone's centre crop; none: the whole image resized; auto: none "
                   "for images smaller than the input (e.g. CIFAR's 32 px), else center. Recorded "
                   "in the checkpoint: eval, convert and the demo frame images the same way.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Checkpoint to write (.pth, .pt or .safetensors); the best epoch's is kept.")
@click.option("--resume", is_flag=True, help="Continue from --out's saved training state (OUT.state).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where cached features go [default: ~/.cache/edgekit/features].")
@click.option("--threads", type=int, default=None, help="CPU threads [default: all cores].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(data, val, val_split, model, width, resolution, weights, freeze, fine_tune, epochs,
            batch_size, lr, views, crop, seed, out, resume, cache_dir, threads, as_json) -> None:
    """Train a classifier on your photos: transfer learning from the built-in ImageNet weights
    (a new head; with --fine-tune, the last blocks too), or from scratch with --weights random.
    The frozen part runs once per image and view (ONNX Runtime when it matches PyTorch) and is
    cached; the class names and preprocessing go into the checkpoint."""
    from ..train import RichReporter, train

    if freeze and fine_tune is not None:
        raise click.UsageError("--freeze-backbone and --fine-tune exclude each other")
    if val is not None and val_split is not None:
        raise click.UsageError("--val and --val-split exclude each other")
    err = make_console(stderr=True)
    result = train(data, out, val=val, val_split=0.2 if val_split is None else val_split, model=model, width=width,
                   resolution=resolution, weights=weights, epochs=epochs, batch_size=batch_size, lr=lr,
                   fine_tune=0 if freeze else fine_tune, views=views, crop=crop, seed=seed, resume=resume,
                   cache_dir=cache_dir, threads=threads, reporter=RichReporter(err))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    extract = ("from the cache" if result.extract_images_per_second is None
               else f"{result.extract_images_per_second:,.0f} images/s ({result.runtime})")
    rate = f"{result.train_images_per_second:,.0f}" if result.train_images_per_second else "-"
    kept = (f"best val top-1 {result.best_val_top1:.1%} (epoch {result.best_epoch}/{result.epochs})"
            if result.best_val_top1 is not None else f"epoch {result.best_epoch} (no validation)")
    make_console().print(
        f"{result.checkpoint}: {kept}, {len(result.labels)} classes; features {extract}, training {rate} "
        f"images/s, {result.seconds:.0f} s", highlight=False)
