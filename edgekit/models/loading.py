"""Resolve what the user asked for (--model, --weights, --width, --resolution) into a ready model."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ..preprocessing import Preprocessing
from . import builtin
from .registry import create, get_spec
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


WEIGHT_WORDS = ("imagenet", "random")  # besides a checkpoint path (and builtin:NAME)


def load_model(model: str | None = None, weights: str | None = None, *, width: float | None = None,
               resolution: int | None = None, num_classes: int | None = None) -> nn.Module:
    """A model in eval mode with ``.meta``.

    ``weights``: None (the built-in ImageNet weights for this architecture and width; an error
    naming the alternatives when there are none), "imagenet" (the built-in weights when there are,
    else torchvision's published checkpoint), "random" (seeded random weights: accuracy is
    meaningless), "builtin:NAME", an edgekit checkpoint (architecture from its metadata) or a bare
    state_dict (needs ``model``).
    """
    if weights and weights not in WEIGHT_WORDS and not weights.startswith(builtin.BUILTIN_PREFIX):
        state, meta = read_checkpoint(weights)
        if meta is not None:
            if model and model != meta.arch:
                raise InputError(f"{weights} holds {meta.arch}, not {model}")
            if width and width != meta.width:
                raise InputError(f"{weights} has width {meta.width}, not {width}")
            net = load_checkpoint(weights)
            net.meta = net.meta.with_(weights=str(Path(weights).resolve()))
            return _at_resolution(net, resolution)
        name = model or DEFAULT_MODEL
        net = create(name, width=width or 1.0, resolution=resolution or 224,
                     num_classes=num_classes or _classes_in(state), weights=str(Path(weights).resolve()))
        load_state(net, state, str(weights))
        return net.eval()
    name = model or DEFAULT_MODEL
    get_spec(name)  # an unknown name says so before anything about its weights
    if weights != "random":
        entry = (builtin.by_name(weights) if weights and weights.startswith(builtin.BUILTIN_PREFIX)
                 else builtin.find(name, width))
        if entry is not None:
            if model and model != entry.arch:
                raise InputError(f"{weights} holds {entry.arch}, not {model}")
            if width and width != entry.width:
                raise InputError(f"{weights} has width {entry.width:g}, not {width:g}")
            if num_classes and num_classes != 1001:
                raise InputError(f"the built-in {entry.label} weights have 1001 classes "
                                 f"(ImageNet + background), not {num_classes}")
            return _at_resolution(builtin.load_builtin(entry), resolution)
        if weights is None:
            raise InputError(builtin.missing_message(name, width))
    net = create(name, width=width or 1.0, resolution=resolution or 224,
                 num_classes=num_classes or 1000, weights=weights)
    if weights == "imagenet":
        if width not in (None, 1.0):
            raise InputError(f"no ImageNet weights for {name} at width {width:g}: torchvision "
                             "publishes width 1.0 only; pass --weights FILE|random")
        path = resolve_imagenet(name)
        state, _ = read_checkpoint(path)
        load_state(net, state, str(path))
    else:
        randomize_statistics(net)
    return net.eval()


def _at_resolution(net: nn.Module, resolution: int | None) -> nn.Module:
    """A checkpoint's network run at another input size (its preprocessing rescaled to match)."""
    if resolution and resolution != net.meta.resolution:
        net.meta = net.meta.with_(resolution=resolution,
                                  preprocessing=_rescaled(net.meta.preprocessing, resolution))
    return net


def _classes_in(state: dict[str, torch.Tensor]) -> int:
    linears = [k for k in state if k.startswith("classifier.") and k.endswith(".weight")]
    return int(state[linears[-1]].shape[0]) if linears else 1000


def _rescaled(pre: Preprocessing, resolution: int) -> Preprocessing:
    from dataclasses import replace

    resize = 0 if pre.resize == 0 else round(resolution * pre.resize / pre.size)
    return replace(pre, size=resolution, resize=resize)
