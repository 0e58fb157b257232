"""TensorFlow 'SAME' convolutions (imported TF weights) in forms the converters keep whole.

A TF-SAME stride-2 convolution on an even input pads 0 before and 1 after: PyTorch has no such
convolution, so ``TFSameConv2d`` pads explicitly and then runs a VALID convolution.

TFLite (``channels_last_padded``): litert-torch turns an NCHW pad into PAD wrapped in TRANSPOSEs,
but folds a pad applied to the channels-last tensor into the convolution, which becomes a plain
SAME convolution — the graph Google's own files have. Measured (imported MobileNetV2, int8,
XNNPACK, 2 threads, p50 interleaved in one process): channels-last pad 2.91 ms, the 4x4 rewrite
below 3.43 ms, Google's tf2_mobilenet_v2_1.0_224_ptq.tflite 3.11 ms; MobileNetV3-Small (its
5x5 stride-2 layers kept PAD + TRANSPOSE before) 1.59 vs 2.07 ms.

ONNX (``same_padded``): the exporter writes the pad amounts as a computed subgraph that ONNX
Runtime does not fold (imported MobileNetV2 at 1 thread 13.2 ms), so each 3x3 stride-2
convolution becomes the exactly equal SAME 4x4 convolution whose extra row/column is zero, with
symmetric padding (7.9 ms). 5x5 kernels are left as pad + 5x5: a 6x6 depthwise was 3x slower.
TF-SAME convolutions whose pads are symmetric (stride 1) become plain convolutions.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..models.blocks import TFSameConv2d


class ChannelsLastPadConv2d(TFSameConv2d):
    """A TF-SAME convolution that pads its input channels-last (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right, top, bottom = self.pads(x)
        if left == right and top == bottom:  # a plain convolution: no pad for int8 observers to see
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x.permute(0, 2, 3, 1), (0, 0, left, right, top, bottom)).permute(0, 3, 1, 2)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def channels_last_padded(module: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``module`` whose TF-SAME convolutions pad channels-last; (copy, layers changed)."""
    result = copy.deepcopy(module)
    changed = 0
    for name, conv in list(result.named_modules()):
        if type(conv) is not TFSameConv2d:
            continue
        new = ChannelsLastPadConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                    dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)
        new.load_state_dict(conv.state_dict())
        _replace(result, name, new)
        changed += 1
    return result.eval(), changed


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _effective_pads(conv: nn.Conv2d, size: int) -> tuple[int, int]:
    """(before, after) padding the conv really uses on an input of ``size`` (one axis)."""
    k, s = conv.kernel_size[0], conv.stride[0]
    if isinstance(conv, TFSameConv2d):
        return _same_pads(size, k, s)
    before = conv.padding[0]
    out = (size + 2 * before - k) // s + 1
    used_after = max((out - 1) * s + k - size - before, 0)
    return before, used_after


def _rebuilt(conv: nn.Conv2d, size: int) -> nn.Conv2d | None:
    k, s = conv.kernel_size[0], conv.stride[0]
    square = conv.kernel_size[0] == conv.kernel_size[1] and conv.stride[0] == conv.stride[1]
    if not square or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        return None
    before, after = _effective_pads(conv, size)
    out = math.ceil(size / s)
    if (size + before + after - k) // s + 1 != out:
        return None  # not a SAME-sized output: leave it to the converter
    # Only 3x3 grows (to 4x4): XNNPACK's 6x6 depthwise path measured 3x slower than PAD + 5x5.
    for kernel in ((k, k + 1) if k == 3 else (k,)):
        pb, pa = _same_pads(size, kernel, s)
        offset = pb - before
        if pb == pa and 0 <= offset <= kernel - k:
            if kernel == k and not isinstance(conv, TFSameConv2d) and conv.padding[0] == pb:
                return None  # already a plain SAME convolution
            new = nn.Conv2d(conv.in_channels, conv.out_channels, kernel, s, pb,
                            groups=conv.groups, bias=conv.bias is not None)
            with torch.no_grad():
                new.weight.zero_()
                new.weight[:, :, offset:offset + k, offset:offset + k] = conv.weight
                if conv.bias is not None:
                    new.bias.copy_(conv.bias)
            return new
    return None


def same_padded(module: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """A copy of ``module`` whose convolutions export as SAME/VALID convs; (copy, layers changed)."""
    sizes: dict[str, int] = {}
    hooks = [m.register_forward_pre_hook(lambda m, args, name=name: sizes.__setitem__(name, args[0].shape[-1]))
             for name, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()
    if any(True for name, m in module.named_modules() if isinstance(m, nn.Conv2d) and name not in sizes):
        return module, 0
    result = copy.deepcopy(module)
    changed = 0
    for name, conv in list(result.named_modules()):
        # PyTorch's own symmetric padding exports as conv padding; only TF-SAME needs rewriting.
        if not isinstance(conv, TFSameConv2d) or name not in sizes:
            continue
        new = _rebuilt(conv, sizes[name])
        if new is None:
            continue
        _replace(result, name, new)
        changed += 1
    return result.eval(), changed
