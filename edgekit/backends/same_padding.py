"""TensorFlow 'SAME' convolutions (imported TF weights) in forms the converters keep whole.

A TF-SAME stride-2 convolution on an even input pads 0 before and 1 after: PyTorch has no such
convolution, so ``TFSameConv2d`` pads explicitly and then runs a VALID convolution.

TFLite (``channels_last_padded``): litert-torch turns an NCHW pad into PAD wrapped in TRANSPOSEs,
but folds a pad applied to the channels-last tensor into the convolution, which becomes a plain
SAME convolution — the graph Google's own files have. Measured (imported MobileNetV2, int8,
XNNPACK, 2 threads, p50 interleaved in one process): channels-last pad 2.91 ms, an equal 4x4 SAME conv
3.43 ms, Google's tf2_mobilenet_v2_1.0_224_ptq.tflite 3.11 ms; MobileNetV3-Small (its
5x5 stride-2 layers kept PAD + TRANSPOSE before) 1.59 vs 2.07 ms.

ONNX (``onnx_padded``): ONNX convolutions take separate begin and end pads, so each TF-SAME
convolution exports as one Conv with its asymmetric pads. PyTorch cannot express that: the
exporter wrote the pad as a Pad node fed by a computed subgraph, which ONNX Runtime neither folds
nor fuses (imported MobileNetV2 at 1 thread: 13.2 ms). The exactly equal SAME 4x4 convolution used
next (7.9 ms) computes a row and a column of zeros; the asymmetric pads measured, imported
weights, 1/2 threads, 5 interleaved rounds: ONNX Runtime int8 V2 3.43/2.16 vs 3.59/2.30 ms,
V3-Small (which also kept pad + 5x5) int8 2.29/1.70 vs 2.48/1.87, fp32 2.49/2.42 vs 2.70/2.50,
V2 fp32 the same; OpenVINO within noise (it reads the same file).
"""
from __future__ import annotations

import copy

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
    return _with_same_convs_as(module, ChannelsLastPadConv2d)


def _with_same_convs_as(module: nn.Module, kind: type[TFSameConv2d]) -> tuple[nn.Module, int]:
    """A copy of ``module`` with each TFSameConv2d made a ``kind`` (same weights and module path)."""
    result = copy.deepcopy(module)
    changed = 0
    for name, conv in list(result.named_modules()):
        if type(conv) is not TFSameConv2d:
            continue
        new = kind(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                   dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)
        new.load_state_dict(conv.state_dict())
        _replace(result, name, new)
        changed += 1
    return result.eval(), changed


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


class _AsymmetricPadConv(torch.autograd.Function):
    """conv2d after a zero pad of (left, right, top, bottom); exports as one ONNX Conv."""

    @staticmethod
    def forward(ctx, x, weight, bias, pads, stride, dilation, groups):
        return F.conv2d(F.pad(x, pads), weight, bias, stride, 0, dilation, groups)

    @staticmethod
    def symbolic(g, x, weight, bias, pads, stride, dilation, groups):
        left, right, top, bottom = pads
        inputs = [x, weight] if bias is None or bias.node().mustBeNone() else [x, weight, bias]
        return g.op("Conv", *inputs, pads_i=[top, left, bottom, right], strides_i=list(stride),
                    dilations_i=list(dilation), group_i=groups,
                    kernel_shape_i=list(weight.type().sizes()[2:]))


class OnnxPadConv2d(TFSameConv2d):
    """A TF-SAME convolution that exports as one ONNX Conv with asymmetric pads."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export():
            return super().forward(x)
        pads = tuple(int(p) for p in self.pads(x))
        return _AsymmetricPadConv.apply(x, self.weight, self.bias, pads, self.stride, self.dilation, self.groups)


def onnx_padded(module: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``module`` whose TF-SAME convolutions export as single ONNX Convs; (copy, layers changed)."""
    return _with_same_convs_as(module, OnnxPadConv2d)
