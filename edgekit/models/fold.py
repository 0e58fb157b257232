"""BatchNorm folded into the convolution before it: the same function with fewer ops, which is
what the int8 weights are rounded from and what converters trace fastest."""
from __future__ import annotations

import copy

import torch
from torch import nn


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every Conv2d -> BatchNorm2d pair merged: inside a Sequential
    (edgekit's models) directly, elsewhere (your own model's ``self.bn(self.conv(x))``) on its
    torch.fx graph."""
    model = copy.deepcopy(model).eval()
    for parent in model.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (_, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                _fold(conv, bn)
                setattr(parent, bn_name, nn.Identity())
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return _fold_traced(model)
    return model


def _fold_traced(model: nn.Module) -> nn.Module:
    """The model as a GraphModule with its conv -> BN pairs fused (module paths kept); a model
    torch.fx cannot trace stays as it is: still correct, but its int8 weights are then rounded
    before the backend folds the BatchNorm in, which moves them off the grid."""
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - data-dependent control flow and the like
        return model
    modules = dict(traced.named_modules())
    for node in list(traced.graph.nodes):
        conv = node.args[0] if node.op == "call_module" and node.args else None
        if (isinstance(modules.get(node.target), nn.BatchNorm2d) and isinstance(conv, torch.fx.Node)
                and conv.op == "call_module" and isinstance(modules.get(conv.target), nn.Conv2d)
                and len(conv.users) == 1):
            _fold(modules[conv.target], modules[node.target])
            node.replace_all_uses_with(conv)
            traced.graph.erase_node(node)
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(gain.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter((bias - bn.running_mean) * gain + bn.bias)
