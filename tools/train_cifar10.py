"""Train a small MobileNet on CIFAR-10 from scratch: a float-trained model for quantization tests.

The imported ImageNet weights are already on an int8 grid, which flatters post-training
quantization. This script trains a model in float32 (no quantization anywhere), then writes an
edgekit checkpoint (weights + ModelMeta: architecture, the 10 class names and the exact test-time
preprocessing), so that the model, its labels and its preprocessing reach every backend unchanged:

    python tools/train_cifar10.py --data-dir /tmp/cifar/data --out /tmp/cifar/v3s_cifar10.pth
    edgekit convert --target x86 --weights /tmp/cifar/v3s_cifar10.pth \\
        --calib /tmp/cifar/data/train --val /tmp/cifar/data/test --out /tmp/cifar/x86
    edgekit eval /tmp/cifar/x86 /tmp/cifar/v3s_cifar10.pth --data /tmp/cifar/data/test

Data: ../shared/data/cifar10/{train,test}.tar (JPEG, ``<split>/<class>/*.jpg``, 32x32 RGB) are
extracted once into --data-dir (skipped when already there). Images are upsampled 32 -> --resolution
(default 64, PIL bilinear stretch, i.e. ``Preprocessing(resize=0)``), so the stride-2 stem leaves
32x32 feature maps; training adds a random crop (4 px reflection padding at 32 px) and a
horizontal flip before the same upsampling. Normalisation: the CIFAR-10 channel mean/std.

Defaults: mobilenet_v3_small width 0.5 at 64 px, 6 epochs, batch 128, SGD-Nesterov (momentum 0.9,
weight decay 1e-4 on weights only) with a one-cycle LR peaking at 0.2, label smoothing 0.1, dropout
0.1. Measured: 71.8% test top-1 after about 12 minutes (~110 s per epoch with --threads 1 on a shared
2-core machine, where 2 threads were several times slower). torch only: no torchvision.
"""
from __future__ import annotations

import argparse
import math
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import NoReturn

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TARS = ROOT.parent / "shared" / "data" / "cifar10"
DEFAULT_DATA_DIR = Path(tempfile.gettempdir()) / "edgekit-cifar10"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
SPLITS = ("train", "test")


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def extract(tars: Path, data_dir: Path) -> None:
    """Extract ``<split>.tar`` into ``data_dir/<split>`` unless a finished extraction is there."""
    todo = [s for s in SPLITS if not ((data_dir / f".{s}.extracted").is_file() and (data_dir / s).is_dir())]
    for split in todo:
        if not (tars / f"{split}.tar").is_file():
            fail(f"CIFAR-10 archive not found: {tars / f'{split}.tar'} "
                 "(pass --tars DIR holding train.tar and test.tar)")
    if todo:
        data_dir.mkdir(parents=True, exist_ok=True)
    for split in todo:
        done = data_dir / f".{split}.extracted"
        tar_path = tars / f"{split}.tar"
        print(f"extracting {tar_path} -> {data_dir / split}", flush=True)
        try:
            with tarfile.open(tar_path) as tar:
                names = tar.getnames()
                if not any(n.startswith(f"{split}/") for n in names):
                    fail(f"{tar_path} does not hold a '{split}/' folder")
                tar.extractall(data_dir, filter="data")
        except tarfile.ReadError:
            fail(f"cannot extract {tar_path}: not a readable tar archive")
        except (tarfile.TarError, OSError) as exc:
            fail(f"cannot extract {tar_path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        done.touch()


def load_split(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images of ``folder/<class>/*`` as uint8 N x 32 x 32 x 3, their class indices and the class names."""
    from edgekit.errors import InputError
    from edgekit.preprocessing import is_image_file, load_image

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        fail(f"{folder} has no class subfolders")
    images, targets = [], []
    for k, name in enumerate(classes):
        for f in sorted(p for p in (folder / name).iterdir() if is_image_file(p)):
            try:
                images.append(load_image(f))
            except InputError as exc:
                fail(str(exc))
            targets.append(k)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        fail(f"{folder}: images differ in size ({sorted(shapes)[:3]}); expected 32x32 RGB")
    return np.stack(images), np.asarray(targets, np.int64), classes


def random_crop_flip(batch: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Random ``pad``-pixel shift (reflection padding) and horizontal flip, per image, at 32 px."""
    n, h, w, _ = batch.shape
    padded = np.pad(batch, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    flip = rng.random(n) < 0.5
    out = np.empty_like(batch)
    for i in range(n):
        crop = padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop[:, ::-1] if flip[i] else crop
    return out


def to_tensor(batch: np.ndarray, prep) -> "torch.Tensor":  # noqa: F821
    """uint8 N x 32 x 32 x 3 -> normalised float N x 3 x S x S, exactly as ``prep.apply`` per image."""
    import torch

    resized = np.stack([prep.geometry(im) for im in batch]) if batch.shape[1] != prep.size else batch
    x = torch.from_numpy(resized).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def evaluate(model, images: np.ndarray, targets: np.ndarray, prep, batch: int = 500) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            logits = model(to_tensor(images[i:i + batch], prep))
            correct += int((logits.argmax(1).numpy() == targets[i:i + batch]).sum())
    return 100.0 * correct / len(images)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tars", type=Path, default=DEFAULT_TARS,
                    help="folder holding train.tar and test.tar [default: %(default)s]")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                    help="where the archives are extracted (reused when already there) [default: %(default)s]")
    ap.add_argument("--out", type=Path, default=Path("cifar10.pth"),
                    help="checkpoint to write (.pth or .safetensors) [default: %(default)s]")
    ap.add_argument("--model", default="mobilenet_v3_small", help="edgekit model name [default: %(default)s]")
    ap.add_argument("--width", type=float, default=0.5, help="width multiplier [default: %(default)s]")
    ap.add_argument("--resolution", type=int, default=64,
                    help="input size; 32x32 images are stretched to it [default: %(default)s]")
    ap.add_argument("--epochs", type=int, default=6, help="[default: %(default)s]")
    ap.add_argument("--batch", type=int, default=128, help="[default: %(default)s]")
    ap.add_argument("--lr", type=float, default=0.2, help="peak learning rate (one-cycle) [default: %(default)s]")
    ap.add_argument("--weight-decay", type=float, default=1e-4, help="[default: %(default)s]")
    ap.add_argument("--label-smoothing", type=float, default=0.1, help="[default: %(default)s]")
    ap.add_argument("--dropout", type=float, default=0.1, help="classifier dropout [default: %(default)s]")
    ap.add_argument("--limit", type=int, default=None, help="use only this many training images (smoke tests)")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads; on a busy machine 1 can be much faster [default: %(default)s]")
    ap.add_argument("--seed", type=int, default=0, help="[default: %(default)s]")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.batch < 1 or args.lr <= 0:
        ap.error("--epochs and --batch must be >= 1 and --lr > 0")
    if args.out.suffix not in (".pth", ".pt", ".safetensors"):
        ap.error(f"--out must end in .pth, .pt or .safetensors, got {args.out.name}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from torch import nn

    from edgekit.errors import InputError
    from edgekit.models import create
    from edgekit.models.weights import save_checkpoint
    from edgekit.preprocessing import Preprocessing

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    start = time.perf_counter()
    extract(args.tars, args.data_dir)
    train_x, train_y, classes = load_split(args.data_dir / "train")
    test_x, test_y, test_classes = load_split(args.data_dir / "test")
    if classes != test_classes:
        fail(f"train and test class folders differ: {classes} vs {test_classes}")
    if args.limit:
        keep = rng.permutation(len(train_x))[:args.limit]
        train_x, train_y = train_x[keep], train_y[keep]
    print(f"data: {len(train_x)} train / {len(test_x)} test images, {len(classes)} classes "
          f"({time.perf_counter() - start:.1f} s)", flush=True)

    prep = Preprocessing(size=args.resolution, resize=0, mean=CIFAR_MEAN, std=CIFAR_STD)
    try:
        model = create(args.model, width=args.width, resolution=args.resolution, num_classes=len(classes),
                       dropout=args.dropout, labels=classes, preprocessing=prep,
                       weights="trained on CIFAR-10 (tools/train_cifar10.py)")
    except InputError as exc:
        fail(str(exc))
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.model} width {args.width} at {args.resolution} px, {params:,} parameters", flush=True)

    # No weight decay on BatchNorm and biases.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=args.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = math.ceil(len(train_x) / args.batch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                                    steps_per_epoch=steps_per_epoch, pct_start=0.25)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    train_start = time.perf_counter()
    acc = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = rng.permutation(len(train_x))
        total_loss, seen, correct = 0.0, 0, 0
        for i in range(0, len(order), args.batch):
            idx = order[i:i + args.batch]
            if len(idx) < 2:  # BatchNorm needs more than one sample
                continue
            x = to_tensor(random_crop_flip(train_x[idx], rng), prep)
            y = torch.from_numpy(train_y[idx])
            logits = model(x)
            loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        train_time = time.perf_counter() - t0
        acc = evaluate(model, test_x, test_y, prep)
        print(f"epoch {epoch}/{args.epochs}  loss {total_loss / seen:.4f}  train top-1 {100 * correct / seen:.2f}%  "
              f"test top-1 {acc:.2f}%  epoch {train_time:.0f} s  (+eval {time.perf_counter() - t0 - train_time:.0f} s)  "
              f"total {time.perf_counter() - train_start:.0f} s", flush=True)

    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, args.out)
    print(f"saved {args.out}: {args.model} width {args.width}, {args.resolution} px, fp32 test top-1 {acc:.2f}% "
          f"on {len(test_x)} images; training {time.perf_counter() - train_start:.0f} s "
          f"({args.threads} threads)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
