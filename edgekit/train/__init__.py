"""`edgekit train`: a folder of labelled photos -> an edgekit checkpoint (weights, labels,
preprocessing) that convert, eval, bench and demo take as it is.

Transfer learning on a 2-core CPU: the frozen part of the network (all of it but the head, or
all but the last ``fine_tune`` feature blocks) runs once per image and view in the fastest
verified runtime (forward.py), its outputs are cached on disk (cache.py), and only the rest is
trained, in PyTorch, on those outputs (loop.py).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError
from .interrupt import TrainingInterrupted
from .progress import RichReporter, Silent

__all__ = ["TrainResult", "TrainingInterrupted", "RichReporter", "train", "LIMITS"]


@dataclass(frozen=True)
class Limits:
    """Bounds on the numeric options, so a typo cannot start a week-long run or fill the disk."""

    max_epochs: int = 1000
    max_batch_size: int = 4096
    max_lr: float = 10.0
    max_views: int = 32


LIMITS = Limits()
DEFAULT_VIEWS = 4  # augmented views per image, besides the centre view
CROPS = ("auto", "center", "none")
SIZE_SAMPLE = 64  # images whose size decides --crop auto
CHECK_IMAGES = 4  # images the fast runtime is checked against PyTorch on


@dataclass
class TrainResult:
    checkpoint: str
    labels: list[str]
    arch: str
    width: float
    resolution: int
    weights: str
    fine_tune: int
    train_images: int
    val_images: int
    views: int
    epochs: int
    best_epoch: int
    best_val_top1: float | None  # None: trained without validation (--val-split 0)
    history: list[dict] = field(default_factory=list)
    runtime: str = ""  # what ran the frozen prefix: onnxruntime, pytorch, or cache
    runtime_note: str = ""  # why not onnxruntime, when not
    extract_images_per_second: float | None = None  # None: features came from the cache
    train_images_per_second: float | None = None
    cache_hit: bool = False
    unreadable: list[str] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int = 0
    crop: str = "center"  # what the checkpoint's preprocessing does: "center" crop or "none"

    def to_dict(self) -> dict:
        return asdict(self)


def _check_numbers(epochs: int, batch_size: int, lr: float, views: int, val_split: float) -> None:
    if not 1 <= epochs <= LIMITS.max_epochs:
        raise InputError(f"--epochs must be 1 to {LIMITS.max_epochs}, got {epochs}")
    if not 1 <= batch_size <= LIMITS.max_batch_size:
        raise InputError(f"--batch-size must be 1 to {LIMITS.max_batch_size}, got {batch_size}")
    if not 0 < lr <= LIMITS.max_lr:
        raise InputError(f"--lr must be > 0 and at most {LIMITS.max_lr:g}, got {lr:g}")
    if not 0 <= views <= LIMITS.max_views:
        raise InputError(f"--views must be 0 to {LIMITS.max_views}, got {views}")
    if not 0 <= val_split < 1:
        raise InputError(f"--val-split must be 0 (no validation) or a fraction below 1, got {val_split:g}")


def _check_out(out: Path, inputs: list[Path]) -> None:
    from ..fileio import check_outputs
    from ..models.weights import CHECKPOINT_SUFFIXES

    check_outputs([("--out", out)], inputs=inputs)
    if out.suffix not in CHECKPOINT_SUFFIXES:
        raise InputError(f"--out {out}: a checkpoint name ends in {', '.join(CHECKPOINT_SUFFIXES)}")
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a checkpoint file name (e.g. {out / 'model.pth'})")


def _check_images(files: list[Path], pre) -> "np.ndarray":
    """The centre views of the first few readable images: what the fast runtime is checked on."""
    import numpy as np

    from ..preprocessing import load_image

    out = []
    for f in files:
        try:
            out.append(pre.apply(load_image(f)))
        except InputError:
            continue
        if len(out) == CHECK_IMAGES:
            break
    if not out:
        raise InputError(f"none of the {len(files)} images could be read")
    return np.stack(out)


def _framing(pre, files: list[Path], crop: str) -> tuple["Preprocessing", str, str]:
    """(preprocessing, "center" | "none", why) for ``crop``: "auto" keeps the backbone's centre
    crop unless the images are smaller than the input (CIFAR's 32 px): cutting the border of an
    image that small takes part of the object away, so the whole image is stretched instead."""
    from dataclasses import replace

    from PIL import Image

    if crop not in CROPS:
        raise InputError(f"--crop must be one of {', '.join(CROPS)}, got '{crop}'")
    why = ""
    if crop == "auto":
        sides = []
        for f in files[:SIZE_SAMPLE]:
            try:
                with Image.open(f) as image:
                    sides.append(min(image.size))
            except Exception:  # noqa: BLE001 - unreadable files are named later, by the extraction
                continue
        small = bool(sides) and sorted(sides)[len(sides) // 2] < pre.size
        crop = "none" if small else "center"
        if small:
            why = (f" (images smaller than the {pre.size} px input, median short side "
                   f"{sorted(sides)[len(sides) // 2]} px)")
    if crop == "none":
        return replace(pre, resize=0), "none", why
    return pre, "center", why


def _base_model(model: str | None, weights: str, width: float | None, resolution: int | None):
    from ..models.loading import load_model

    return load_model(model, None if weights == "imagenet" else weights, width=width,
                      resolution=resolution).train(False)


def train(data: str | Path, out: str | Path, *, val: str | Path | None = None, val_split: float = 0.2,
          model: str | None = None, width: float | None = None, resolution: int | None = None,
          weights: str = "imagenet", epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
          fine_tune: int | None = None, views: int = DEFAULT_VIEWS, crop: str = "auto", seed: int = 0,
          resume: bool = False,
          cache_dir: str | Path | None = None, threads: int | None = None, reporter=None) -> TrainResult:
    """Train a classifier on ``data`` (a folder of class subfolders, or a TSV path<TAB>class) and
    write the best checkpoint (by validation top-1) to ``out``.

    ``weights``: "imagenet" (the built-in ImageNet weights: transfer learning), "random" (from
    scratch: every block trained) or a checkpoint. ``fine_tune``: how many of the last feature
    blocks train with the new head (0: the backbone frozen; default 0, all with "random").
    ``views``: augmented views (random resized crop + flip) cached per image besides the centre
    view. ``crop``: "center" (the backbone's centre crop), "none" (the whole image resized) or
    "auto" (none for images smaller than the input). ``resume``: continue from ``out``'s saved
    training state.
    """
    import torch

    from ..forward import fastest_runner
    from ..limits import check_threads
    from ..models.heads import replace_head
    from . import cache, loop, split
    from .data import load_split
    from .interrupt import stop_on_signals

    started = time.perf_counter()
    reporter = reporter or Silent()
    data, out = Path(data), Path(out)
    val = Path(val) if val is not None else None
    _check_numbers(epochs, batch_size, lr, views, val_split)
    check_threads(threads, what="--threads")
    weight_file = None if weights in ("imagenet", "random") or weights.startswith("builtin:") else Path(weights)
    _check_out(out, [p for p in (data, val, weight_file) if p is not None])
    if fine_tune is not None and fine_tune < 0:
        raise InputError(f"--fine-tune must be >= 1, got {fine_tune}")
    if weights == "random" and fine_tune == 0:
        raise InputError("--weights random with a frozen backbone would train a head on random "
                         "features: drop --freeze-backbone (from scratch every block trains)")
    if threads:
        torch.set_num_threads(threads)

    parts = load_split(data, val, val_split, seed)
    net = _base_model(model, weights, width, resolution)
    base_weights = net.meta.weights or weights
    n_blocks = split.trainable_blocks(net)
    fine_tune = (n_blocks if weights == "random" else 0) if fine_tune is None else fine_tune
    split.check_fine_tune(net, fine_tune)
    replace_head(net, parts.labels, seed)
    pre, crop, crop_why = _framing(net.meta.preprocessing, parts.train.files, crop)
    net.meta = net.meta.with_(weights=f"edgekit train from {base_weights}", preprocessing=pre)
    prefix, suffix = split.cut(net, fine_tune)
    where = {"arch": net.meta.arch, "width": net.meta.width, "padding": net.meta.padding,
             "activation": net.meta.activation, "frozen_blocks": n_blocks - fine_tune}
    cache_dir = Path(cache_dir) if cache_dir is not None else cache.default_cache_dir()
    n_val = len(parts.val) if parts.val is not None else 0
    reporter.say(f"{len(parts.train)} training and " + (f"{n_val} validation images, " if n_val else
                 "no validation images (the last epoch is kept), ")
                 + f"{len(parts.labels)} classes: {', '.join(parts.labels[:10])}"
                 + (", ..." if len(parts.labels) > 10 else ""))
    reporter.say(f"{net.meta.arch} {net.meta.width:g}/{net.meta.resolution} from {base_weights}: "
                 + ("the backbone frozen, the head trained" if fine_tune == 0 else
                    f"the last {fine_tune} of {n_blocks} feature blocks and the head trained"))
    reporter.say((f"images resized and centre-cropped to {pre.size} px" if crop == "center" else
                  f"whole images resized to {pre.size} px, no centre crop") + crop_why)

    runners: list = []  # built on the first cache miss: exporting takes seconds

    def features(ds, n_views: int, what: str):
        digests = cache.file_digests(ds.files)
        key = cache.cache_key(digests, prefix, where, pre, n_views)
        frozen = where["frozen_blocks"] > 0
        if frozen and not runners and not cache.cached(cache_dir, key):
            runners.append(fastest_runner(prefix, net.meta, _check_images(ds.files, pre), threads))
        reporter.extract_start(f"{what} features", len(ds.files))
        try:
            return cache.extract(ds.files, ds.targets, key, digests, runners[0].run if frozen and runners else None,
                                 pre, n_views, cache_dir, reporter.extract_step)
        finally:
            reporter.extract_end()

    with stop_on_signals():
        try:
            train_f = features(parts.train, views, "training")
            val_f = features(parts.val, 0, "validation") if parts.val is not None else None
        except TrainingInterrupted as exc:
            raise TrainingInterrupted(f"{exc}; during feature extraction: nothing was written"
                                      + (f" ({out} is as it was)" if out.exists() else ""), exc.signum) from None
        unreadable = [str(f) for f in train_f.unreadable + (val_f.unreadable if val_f else [])]
        if unreadable:
            reporter.say(f"skipped {len(unreadable)} unreadable image(s): {', '.join(unreadable[:5])}"
                         + (", ..." if len(unreadable) > 5 else ""))
        missing = sorted(set(range(len(parts.labels))) - set(train_f.targets.tolist()))
        if missing:
            raise InputError(f"class '{parts.labels[missing[0]]}' has no readable training image")
        runner = runners[0] if runners else None
        runtime = runner.runtime if runner else ("cache" if train_f.hit else "none (no frozen blocks)")
        rates = [f.images_per_second for f in (train_f, val_f) if f is not None and f.images_per_second]
        if runner is not None:
            reporter.say(f"frozen prefix in {runner.runtime}" + (f" ({runner.why})" if runner.why else "")
                         + (f": {rates[0]:,.0f} images/s (views included)" if rates else ""))
        elif train_f.hit:
            reporter.say(f"features from the cache ({cache_dir})")
        fingerprint = hashlib.sha256(json.dumps({
            "train": train_f.key, "val": val_f.key if val_f else None, "labels": parts.labels, "fine_tune": fine_tune,
            "batch_size": batch_size, "lr": lr, "seed": seed, "base": base_weights, "crop": crop,
            "resolution": net.meta.resolution}, sort_keys=True).encode()).hexdigest()
        config = loop.LoopConfig(epochs, batch_size, lr, seed)
        torch.manual_seed(seed)
        result = loop.run(net, suffix, train_f, val_f, config, out, fingerprint, resume, reporter)
    new = result.history[result.resumed_from:]
    train_rate = (sum(r.images_per_second * r.seconds for r in new) / sum(r.seconds for r in new)
                  if new else None)
    return TrainResult(
        checkpoint=str(out), labels=parts.labels, arch=net.meta.arch, width=net.meta.width,
        resolution=net.meta.resolution, weights=base_weights, fine_tune=fine_tune,
        train_images=len(train_f.targets), val_images=len(val_f.targets) if val_f else 0, views=views, epochs=epochs,
        best_epoch=result.best_epoch, best_val_top1=result.best_val_top1,
        history=[r.to_dict() for r in result.history], runtime=runtime,
        runtime_note=runner.why if runner else "", extract_images_per_second=rates[0] if rates else None,
        train_images_per_second=train_rate, cache_hit=train_f.hit, unreadable=unreadable,
        seconds=time.perf_counter() - started, resumed_from_epoch=result.resumed_from, crop=crop)
