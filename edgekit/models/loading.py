"""Resolve what the user asked for (--model, --weights, --width, --resolution) into a ready model."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ..preprocessing import Preprocessing
from .registry import create
from .weights import load_checkpoint, load_state, read_checkpoint, resolve_imagenet

DEFAULT_MODEL = "mobilenet_v2"
RANDOM_SEED = 0


def randomize_statistics(model: nn.Module, seed: int = RANDOM_SEED) -> None:
    """Seeded weights with non-trivial BatchNorm statistics.

    A freshly initialised MobileNet outputs ~1e-11 logits, which makes any parity check pass;
    randomised BN statistics give activations of realistic scale instead.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)


def load_model(model: str | None = None, weights: str | None = None, *, width: float | None = None,
               resolution: int | None = None, num_classes: int | None = None) -> nn.Module:
    """A model in eval mode with ``.meta``.

    ``weights``: None (seeded random weights; accuracy is then meaningless), "imagenet"
    (torchvision's published checkpoint), an edgekit checkpoint (architecture from its metadata)
    or a bare state_dict (needs ``model``).
    """
    if weights and weights != "imagenet":
        state, meta = read_checkpoint(weights)
        if meta is not None:
            if model and model != meta.arch:
                raise InputError(f"{weights} holds {meta.arch}, not {model}")
            if width and width != meta.width:
                raise InputError(f"{weights} has width {meta.width}, not {width}")
            net = load_checkpoint(weights)
            net.meta = net.meta.with_(weights=str(Path(weights).resolve()))
            if resolution and resolution != meta.resolution:
                net.meta = net.meta.with_(resolution=resolution,
                                          preprocessing=_rescaled(net.meta.preprocessing, resolution))
            return net
        name = model or DEFAULT_MODEL
        net = create(name, width=width or 1.0, resolution=resolution or 224,
                     num_classes=num_classes or _classes_in(state), weights=str(Path(weights).resolve()))
        load_state(net, state, str(weights))
        return net.eval()
    name = model or DEFAULT_MODEL
    net = create(name, width=width or 1.0, resolution=resolution or 224,
                 num_classes=num_classes or 1000, weights=weights or "random")
    if weights == "imagenet":
        if width not in (None, 1.0):
            raise InputError("torchvision publishes ImageNet weights at width 1.0 only")
        path = resolve_imagenet(name)
        state, _ = read_checkpoint(path)
        load_state(net, state, str(path))
    else:
        randomize_statistics(net)
    return net.eval()


def _classes_in(state: dict[str, torch.Tensor]) -> int:
    linears = [k for k in state if k.startswith("classifier.") and k.endswith(".weight")]
    return int(state[linears[-1]].shape[0]) if linears else 1000


def _rescaled(pre: Preprocessing, resolution: int) -> Preprocessing:
    from dataclasses import replace

    resize = 0 if pre.resize == 0 else round(resolution * pre.resize / pre.size)
    return replace(pre, size=resolution, resize=resize)
