"""The training loop over cached prefix outputs: seeded, validated every epoch, the best
checkpoint kept, resumable."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..fileio import atomic_path
from ..models.weights import save_checkpoint
from .cache import Features
from .interrupt import TrainingInterrupted, check_stop

WARMUP = 0.1  # fraction of the steps the learning rate ramps up over, then a cosine decay
LABEL_SMOOTHING = 0.1
WEIGHT_DECAY = 1e-4
# Fine-tuned pretrained blocks learn slower than the new head: large steps would undo ImageNet
# features that 500 images per class cannot relearn.
BLOCK_LR_FACTOR = 0.3
EVAL_BATCH = 256
# The checkpoint holds an exponential moving average of the trained weights, with a half-life of
# EMA_HALF_LIFE epochs: on 500 images per class the last steps' weights wander around a flat
# minimum and their average generalises better. BatchNorm statistics are frozen (train_mode), so
# the averaged weights need no re-estimation of them.
EMA_HALF_LIFE = 1.0


class WeightAverage:
    """The moving average of a module's trainable parameters, swapped in to validate and save."""

    def __init__(self, module: nn.Module, steps_per_epoch: int):
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.params]
        self.decay = 0.5 ** (1.0 / max(1.0, EMA_HALF_LIFE * steps_per_epoch))
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))  # early steps: follow closely
        for avg, p in zip(self.average, self.params):
            avg.mul_(decay).add_(p.detach(), alpha=1 - decay)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the live and the averaged weights (call again to undo)."""
        for avg, p in zip(self.average, self.params):
            tmp = p.detach().clone()
            p.copy_(avg)
            avg.copy_(tmp)

    def state_dict(self) -> dict:
        return {"steps": self.steps, **{f"avg.{i}": a for i, a in enumerate(self.average)}}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        for i, a in enumerate(self.average):
            a.copy_(state[f"avg.{i}"])


@dataclass(frozen=True)
class LoopConfig:
    epochs: int
    batch_size: int
    lr: float
    seed: int


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    train_top1: float
    val_top1: float | None  # None: no validation set; of the averaged weights (the ones saved)
    seconds: float
    images_per_second: float
    val_top1_last: float | None = None  # of the last step's weights, for comparison

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoopResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val_top1: float | None = None
    resumed_from: int = 0  # epochs already done when --resume started


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state")


def lr_at(step: int, total: int, peak: float) -> float:
    warm = max(1, int(total * WARMUP))
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _optimizer(suffix: nn.Module, lr: float) -> torch.optim.Optimizer:
    head = list(suffix.classifier.parameters())
    blocks = [p for p in suffix.features.parameters()] if not suffix.pooled else []
    groups = [{"params": head, "peak": lr}]
    if blocks:
        groups.append({"params": blocks, "peak": lr * BLOCK_LR_FACTOR})
    return torch.optim.AdamW(groups, lr=lr, weight_decay=WEIGHT_DECAY)


def train_mode(suffix: nn.Module) -> None:
    """Training mode with BatchNorm statistics kept: the imported TF networks update them with
    momentum 0.01, so a few hundred batches leave them between ImageNet's and the new data's and
    validation lags training by 15-20 points (measured on CIFAR-10, MobileNetV3-Small, 4 blocks
    fine-tuned); the pretrained statistics with trained scales and weights do not."""
    suffix.train()
    for m in suffix.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def accuracy(suffix: nn.Module, values: np.ndarray, targets: np.ndarray) -> float:
    suffix.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(targets), EVAL_BATCH):
            x = torch.from_numpy(np.asarray(values[i:i + EVAL_BATCH], np.float32))
            correct += int((suffix(x).argmax(1).numpy() == targets[i:i + EVAL_BATCH]).sum())
    return correct / max(1, len(targets))


def run(model: nn.Module, suffix: nn.Module, train: Features, val: Features | None, config: LoopConfig,
        out: Path, fingerprint: str, resume: bool, reporter) -> LoopResult:
    """Train ``suffix`` (part of ``model``) for ``config.epochs``; after each epoch write the
    training state (for --resume) and, when validation improved, the checkpoint ``out`` (with
    no validation set, every epoch's: the last one is kept)."""
    opt = _optimizer(suffix, config.lr)
    result = LoopResult()
    n = len(train.targets)
    batches = math.ceil(n / config.batch_size)
    average = WeightAverage(suffix, batches)
    total = config.epochs * batches
    start_epoch = 0
    if resume:
        start_epoch = _restore(out, suffix, opt, average, fingerprint, result)
        if start_epoch >= config.epochs:
            raise InputError(f"--resume: {state_path(out)} has done {start_epoch} epochs already "
                             f"(--epochs {config.epochs}); pass a larger --epochs to train on")
    for epoch in range(start_epoch, config.epochs):
        torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout; exact on --resume
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=gen).numpy()
        view = torch.randint(0, train.values.shape[0], (n,), generator=gen).numpy()
        train_mode(suffix)
        reporter.epoch_start(epoch + 1, config.epochs, n)
        t0, seen, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
        for b in range(batches):
            try:
                check_stop()
            except TrainingInterrupted as exc:
                raise _interrupted(exc, out, result) from None
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            x = torch.from_numpy(np.asarray(train.values[view[idx], idx], np.float32))
            y = torch.from_numpy(train.targets[idx].astype(np.int64))
            step = epoch * batches + b
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, group["peak"])
            logits = suffix(x)
            loss = nn.functional.cross_entropy(logits, y, label_smoothing=LABEL_SMOOTHING)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            average.update()
            seen += len(idx)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += loss.item() * len(idx)
            reporter.batch(seen, loss_sum / seen, correct / seen, seen / (time.perf_counter() - t0))
        seconds = time.perf_counter() - t0
        last_top1 = accuracy(suffix, val.values[0], val.targets) if val is not None else None
        average.swap()  # the averaged weights in the model: validated and saved
        try:
            val_top1 = accuracy(suffix, val.values[0], val.targets) if val is not None else None
            record = EpochRecord(epoch + 1, loss_sum / seen, correct / seen, val_top1, seconds,
                                 seen / seconds, last_top1)
            result.history.append(record)
            improved = val_top1 is None or result.best_val_top1 is None or val_top1 > result.best_val_top1
            if improved:
                result.best_epoch, result.best_val_top1 = epoch + 1, val_top1
                save_checkpoint(model, out)
        finally:
            average.swap()
        _save_state(out, suffix, opt, average, fingerprint, result)
        reporter.epoch_end(record, improved)
    return result


def _interrupted(exc: TrainingInterrupted, out: Path, result: LoopResult) -> TrainingInterrupted:
    if result.best_epoch:
        score = f", val top-1 {result.best_val_top1:.1%}" if result.best_val_top1 is not None else ""
        where = (f"; the best checkpoint so far (epoch {result.best_epoch}{score}) is {out}; "
                 "--resume continues")
    else:
        where = "; no epoch finished, nothing was written" + (
            f" ({out} is as it was)" if out.exists() else "")
    return TrainingInterrupted(str(exc) + where, exc.signum)


def _save_state(out: Path, suffix: nn.Module, opt: torch.optim.Optimizer, average: WeightAverage,
                fingerprint: str, result: LoopResult) -> None:
    state = {"fingerprint": fingerprint, "epochs_done": len(result.history),
             "suffix": suffix.state_dict(), "optimizer": opt.state_dict(), "average": average.state_dict(),
             "result": json.dumps({"history": [r.to_dict() for r in result.history],
                                   "best_epoch": result.best_epoch,
                                   "best_val_top1": result.best_val_top1})}
    with atomic_path(state_path(out)) as tmp:
        torch.save(state, tmp)


def _restore(out: Path, suffix: nn.Module, opt: torch.optim.Optimizer, average: WeightAverage,
             fingerprint: str, result: LoopResult) -> int:
    path = state_path(out)
    if not path.is_file():
        raise InputError(f"--resume: no training state {path} (it is written after every epoch "
                         "of a run with this --out)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file: one line
        raise InputError(f"--resume: cannot read {path}: {str(exc).splitlines()[0][:200]}") from exc
    if state.get("fingerprint") != fingerprint:
        raise InputError(f"--resume: {path} is from a run with other data, model or options; "
                         "resume with the same options, or start afresh without --resume")
    suffix.load_state_dict(state["suffix"])
    opt.load_state_dict(state["optimizer"])
    if "average" not in state:
        raise InputError(f"--resume: {path} is from an older edgekit (no weight average); start afresh")
    average.load_state_dict(state["average"])
    saved = json.loads(state["result"])
    result.history = [EpochRecord(**r) for r in saved["history"]]
    result.best_epoch, result.best_val_top1 = saved["best_epoch"], saved["best_val_top1"]
    result.resumed_from = len(result.history)
    return int(state["epochs_done"])
