"""What every importer shares: the edgekit layers that take weights, in order, and how a
source layer's weight, bias and (folded or separate) BatchNorm are written into them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from ..blocks import HardSigmoid, HardSwish
from ..network import MobileNet, scaled_channels
from ..registry import create, get_spec

ACTIVATION_NAMES: dict[type, str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", HardSwish: "hswish", nn.Hardswish: "hswish",
    HardSigmoid: "hsigmoid", nn.Hardsigmoid: "hsigmoid",
}
# Widths published for MobileNets; tried when the stem alone leaves the width ambiguous.
COMMON_WIDTHS = (0.25, 0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


@dataclass
class Target:
    """An edgekit Conv2d/Linear, the BatchNorm right after it, and the activation applied next."""

    name: str
    layer: nn.Conv2d | nn.Linear
    norm: nn.BatchNorm2d | None
    activation: str  # "none", "relu", "relu6", "hswish", "hsigmoid"


@dataclass
class Norm:
    """BatchNorm statistics as a source file stores them (``eps`` is the source's)."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float


def targets(model: nn.Module) -> list[Target]:
    """Every Conv2d/Linear in ``named_modules`` order (= TensorFlow's execution order)."""
    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    found = []
    for i, (name, module) in enumerate(leaves):
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        rest = [m for _, m in leaves[i + 1:]]
        norm = rest[0] if rest and isinstance(rest[0], nn.BatchNorm2d) else None
        activation = "none"
        for nxt in rest[1 if norm is not None else 0:]:
            if isinstance(nxt, nn.Dropout):
                continue
            activation = ACTIVATION_NAMES.get(type(nxt), "none")
            break
        found.append(Target(name, module, norm, activation))
    return found


def as_4d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Linear (out, in) and 1x1 conv (out, in, 1, 1) weights compare as the same shape."""
    return tuple(shape) + (1,) * (4 - len(shape))


def fits(model: nn.Module, shapes: list[tuple[int, ...]]) -> bool:
    own = [as_4d(tuple(t.layer.weight.shape)) for t in targets(model)]
    return own == [as_4d(s) for s in shapes]


def choose_width(arch: str, shapes: list[tuple[int, ...]], num_classes: int,
                 width: float | None) -> float:
    """The width whose layer shapes match the file's, starting from the stem's channels."""
    if width is not None:
        return float(width)
    stem_out = int(shapes[0][0])
    base = get_spec(arch).stem.out
    candidates = [round(stem_out / base, 4)] + [w for w in COMMON_WIDTHS if w != stem_out / base]
    candidates = [w for w in candidates if scaled_channels(base, w) == stem_out] or candidates[:1]
    for w in candidates:
        if fits(create(arch, width=w, num_classes=num_classes, padding="tf_same"), shapes):
            return w
    return candidates[0]  # nothing fits: loading will name the first layer that differs


def check_count(model: MobileNet, count: int, source: str) -> None:
    own = len(targets(model))
    if own != count:
        raise InputError(f"{source} has {count} conv/dense layers but {model.meta.arch} "
                         f"(width {model.meta.width:g}) has {own}: not this architecture")


def _shaped(weight: np.ndarray, target: Target, source: str) -> torch.Tensor:
    expected = tuple(target.layer.weight.shape)
    if as_4d(weight.shape) != as_4d(expected):
        raise InputError(f"{source} has weight shape {tuple(weight.shape)} but edgekit layer "
                         f"{target.name} expects {expected}: wrong architecture or width")
    return torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)).reshape(expected)


@torch.no_grad()
def load_layer(target: Target, weight: np.ndarray, bias: np.ndarray | None, source: str,
               norm: Norm | None = None) -> None:
    """Write one source layer into ``target``. ``weight`` is in torch layout (OIHW / out x in).

    ``norm`` is a separate BatchNorm in the source; without it the source's BN is already folded
    into ``weight``/``bias`` and the edgekit BN becomes identity carrying the bias as beta.
    """
    layer = target.layer
    layer.weight.copy_(_shaped(weight, target, source))
    out = layer.weight.shape[0]
    bias = np.zeros(out, np.float32) if bias is None else np.asarray(bias, np.float32)
    if target.norm is None:
        if norm is not None:  # fold the source BN into this layer's weight and bias
            scale = norm.gamma / np.sqrt(norm.var + norm.eps)
            per_out = torch.from_numpy(scale.astype(np.float32))
            layer.weight.mul_(per_out.reshape(-1, *[1] * (layer.weight.dim() - 1)))
            bias = (bias - norm.mean) * scale + norm.beta
        if layer.bias is None:
            if np.any(bias != 0):
                raise InputError(f"{source} has a bias but edgekit layer {target.name} has none")
            return
        layer.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
        return
    if layer.bias is not None:
        layer.bias.zero_()
    bn = target.norm
    if norm is None:
        norm = Norm(np.ones(out), np.zeros(out), np.zeros(out), np.full(out, 1.0 - bn.eps), bn.eps)
    # Same (conv + bias - mean) / sqrt(var + eps) with edgekit's own eps; the bias moves into beta.
    var = np.maximum(norm.var + norm.eps - bn.eps, 0.0)
    beta = norm.beta + norm.gamma * bias / np.sqrt(var + bn.eps)
    for param, value in ((bn.weight, norm.gamma), (bn.bias, beta), (bn.running_mean, norm.mean),
                         (bn.running_var, var)):
        param.copy_(torch.from_numpy(np.asarray(value, np.float32)))


def check_activation(target: Target, observed: frozenset[str] | None, source: str) -> None:
    if observed is not None and target.activation not in observed:
        raise InputError(f"activation mismatch at edgekit layer {target.name}: edgekit applies "
                         f"{target.activation}, {source} has {' or '.join(sorted(observed))}")


def v1_activation(observed: list[frozenset[str] | None]) -> str | None:
    """MobileNetV1's activation from its hidden layers: TF's V1 uses relu6, the paper relu."""
    known = [o for o in observed if o is not None]
    if known and all(o == {"relu6"} for o in known):
        return "relu6"
    if known and all("relu" in o for o in known):
        return "relu"
    return "relu6" if not known else None  # None: let per-layer checks name the odd layer
