"""Parameter and multiply-accumulate (MAC) accounting.

Counted: every nn.Conv2d (standard, depthwise, 1x1, squeeze-excite) as
k_h * k_w * C_in/groups * C_out * H_out * W_out, and every nn.Linear as in * out (one image).
Not counted: BatchNorm, activations, pooling, residual adds, SE multiplies (elementwise work the
papers leave out too). Parameters: every model parameter; BatchNorm ones are reported as their
own type so conv/linear shares match the papers' tables.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class LayerCount:
    name: str
    type: str  # "conv", "depthwise", "conv1x1", "linear"
    kernel: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass(frozen=True)
class TypeCount:
    type: str
    params: int
    macs: int
    params_share: float
    macs_share: float


@dataclass(frozen=True)
class Accounting:
    resolution: int
    params: int
    macs: int
    layers: tuple[LayerCount, ...]
    by_type: tuple[TypeCount, ...] = field(default=())

    def to_dict(self) -> dict:
        return asdict(self)


def layer_type(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if module.groups > 1 and module.groups == module.in_channels:
        return "depthwise"
    if module.kernel_size == (1, 1):
        return "conv1x1"
    return "conv"


def count(model: nn.Module, resolution: int = 224) -> Accounting:
    """Count params and MACs of ``model`` for one ``resolution`` x ``resolution`` RGB image."""
    rows: list[LayerCount] = []
    hooks = []

    def hook(name: str):
        def fn(module: nn.Module, _inputs, output: torch.Tensor) -> None:
            params = sum(p.numel() for p in module.parameters(recurse=False))
            if isinstance(module, nn.Linear):
                macs = module.in_features * module.out_features
                kernel = "-"
            else:
                kh, kw = module.kernel_size
                macs = kh * kw * (module.in_channels // module.groups) * output[0].numel()
                kernel = f"{kh}x{kw}/{module.stride[0]}"
            rows.append(LayerCount(name, layer_type(module), kernel, tuple(output.shape[1:]),
                                   params, macs))
        return fn

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, resolution, resolution))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    total_params = sum(p.numel() for p in model.parameters())
    total_macs = sum(r.macs for r in rows)
    norm_params = sum(p.numel() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                      for p in m.parameters(recurse=False))
    types: dict[str, list[int]] = {}
    for r in rows:
        acc = types.setdefault(r.type, [0, 0])
        acc[0] += r.params
        acc[1] += r.macs
    if norm_params:
        types["batchnorm"] = [norm_params, 0]
    by_type = tuple(
        TypeCount(t, p, m, p / total_params if total_params else 0.0, m / total_macs if total_macs else 0.0)
        for t, (p, m) in sorted(types.items(), key=lambda kv: -kv[1][1]))
    return Accounting(resolution, total_params, total_macs, tuple(rows), by_type)
