"""A classifier's new head: the last Linear layer replaced for other classes (transfer learning)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .registry import MAX_NUM_CLASSES


def replace_head(model: nn.Module, labels: list[str], seed: int = 0) -> nn.Module:
    """``model`` with its last Linear layer re-initialised (seeded) for ``labels``, and its
    ModelMeta saying so; every other weight is kept."""
    if not 1 <= len(labels) <= MAX_NUM_CLASSES:
        raise InputError(f"{len(labels)} classes: at least 1 and at most {MAX_NUM_CLASSES:,}")
    last = model.classifier[-1]
    if not isinstance(last, nn.Linear):
        raise InputError(f"{model.meta.arch}: its classifier does not end in a Linear layer")
    head = nn.Linear(last.in_features, len(labels))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    model.classifier[-1] = head
    model.meta = model.meta.with_(num_classes=len(labels), labels=tuple(labels))
    return model
