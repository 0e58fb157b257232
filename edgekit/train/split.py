"""Where a MobileNet is cut for training: a frozen prefix (run once per image and view, its
outputs cached) and the trainable rest, trained in PyTorch on those outputs."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError


def trainable_blocks(model: nn.Module) -> int:
    """How many entries of ``model.features`` there are (stem, blocks, last conv)."""
    return len(model.features)


def check_fine_tune(model: nn.Module, n: int) -> None:
    total = trainable_blocks(model)
    if not 0 <= n <= total:
        raise InputError(f"--fine-tune {n}: {model.meta.arch} has {total} feature blocks (stem, "
                         f"inverted residuals, last conv); give 1 to {total}")


class Prefix(nn.Module):
    """``features[:k]``; with every block frozen, also the pooling: the cache then holds one
    vector per image and view."""

    def __init__(self, model: nn.Module, k: int):
        super().__init__()
        self.features = model.features[:k]
        self.pool = model.avgpool if k == len(model.features) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return torch.flatten(self.pool(x), 1) if self.pool is not None else x


class Suffix(nn.Module):
    """What is trained: ``features[k:]``, pooling and the classifier — the model's own modules,
    so training them trains the model that is saved."""

    def __init__(self, model: nn.Module, k: int):
        super().__init__()
        self.features = model.features[k:]
        self.pooled = k == len(model.features)
        self.avgpool = model.avgpool
        self.classifier = model.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pooled:
            x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


def cut(model: nn.Module, fine_tune: int) -> tuple[Prefix, Suffix]:
    """(frozen prefix, trainable suffix) with the last ``fine_tune`` feature blocks trainable."""
    check_fine_tune(model, fine_tune)
    k = trainable_blocks(model) - fine_tune
    prefix, suffix = Prefix(model, k), Suffix(model, k)
    for p in prefix.parameters():
        p.requires_grad_(False)
    return prefix.eval(), suffix
