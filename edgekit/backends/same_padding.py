"""Rewrite convolutions so every one is a TFLite 'SAME' or 'VALID' convolution — no PAD ops.

TFLite convolutions know only SAME (extra pixel after) and VALID padding. A PyTorch stride-2
conv with symmetric padding on an even input (effective pads 1 before, 0 after) or an explicit
TF-SAME pad is exported as PAD + VALID conv; in int8 that PAD stays a separate op (and can split
the graph into TRANSPOSE-wrapped pieces). The same 3x3 convolution is exactly a SAME 4x4 convolution
whose extra row/column is zero, placed so the window lines up: +78% MACs in those few layers
(MobileNetV2: +3%), and the int8 graph stays free of PAD/TRANSPOSE. Measured (int8, XNNPACK, p50 at
1/2 threads, imported TF MobileNetV2): PAD+TRANSPOSE 5.8/5.3 ms, 4x4 rewrite 4.7/2.8 ms, Google's
own file 3.9/2.5 ms. 5x5 kernels are left as PAD + 5x5: a 6x6 depthwise was 3x slower.
TF-SAME convolutions whose pads are symmetric (stride 1) become plain convolutions.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..models.blocks import TFSameConv2d


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
        # PyTorch's own symmetric padding exports as a PAD that XNNPACK fuses into the
        # convolution (as fast as Google's files); only TF-SAME convolutions need rewriting.
        if not isinstance(conv, TFSameConv2d) or name not in sizes:
            continue
        new = _rebuilt(conv, sizes[name])
        if new is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = result.get_submodule(parent_name) if parent_name else result
        setattr(parent, child, new)
        changed += 1
    return result.eval(), changed
