"""Building blocks shared by every MobileNet.

Module and attribute names follow torchvision (``Conv2dNormActivation`` as a Sequential of
conv/bn/act, ``fc1``/``fc2`` in squeeze-excite, ``conv`` or ``block`` inside inverted residuals)
so torchvision checkpoints load with ``strict=True``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .specs import Act


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without going more than 10% below ``value``."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class HardSigmoid(nn.Module):
    """relu6(x + 3) / 6, written out so int8 TFLite keeps it as ADD/RELU6/MUL (XNNPACK-friendly)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) * (1.0 / 6.0)


class HardSwish(nn.Module):
    """x * relu6(x + 3) / 6. Same values as nn.Hardswish; an int8 HARD_SWISH op splits
    XNNPACK's graph into ~20 partitions, the decomposed form keeps it whole."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3.0) * (1.0 / 6.0)


def act_module(act: Act) -> nn.Module | None:
    if act is Act.NONE:
        return None
    factories = {Act.RELU: nn.ReLU, Act.RELU6: nn.ReLU6, Act.HSWISH: HardSwish}
    return factories[act]()


Padding = str  # "symmetric" (PyTorch) or "tf_same" (TensorFlow SAME)


class TFSameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding: asymmetric (extra pixel after) when the total is odd."""

    def __init__(self, *args, **kwargs):
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    @staticmethod
    def same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        return total // 2, total - total // 2

    def pads(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) for input ``x`` (NCHW)."""
        top, bottom = self.same_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = self.same_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        return left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = self.pads(x)
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv2d(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
           bias: bool = False, padding: Padding = "symmetric") -> nn.Conv2d:
    if padding == "tf_same":
        return TFSameConv2d(cin, cout, kernel, stride, groups=groups, bias=bias)
    return nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=bias)


class ConvNormAct(nn.Sequential):
    """conv -> BatchNorm -> activation, named 0/1/2 like torchvision's Conv2dNormActivation."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: Act = Act.RELU6, padding: Padding = "symmetric", bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1):
        layers: list[nn.Module] = [
            conv2d(cin, cout, kernel, stride, groups=groups, padding=padding),
            nn.BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum),
        ]
        activation = act_module(act)
        if activation is not None:
            layers.append(activation)
        super().__init__(*layers)
        self.out_channels = cout


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation with a hard-sigmoid gate (MobileNetV3)."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.activation = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.scale_activation = HardSigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * scale


class DepthwiseSeparable(nn.Sequential):
    """MobileNetV1 block: 3x3 depthwise conv + BN + act, then 1x1 pointwise conv + BN + act."""

    def __init__(self, cin: int, cout: int, stride: int, act: Act, padding: Padding,
                 bn_eps: float = 1e-5):
        super().__init__(
            ConvNormAct(cin, cin, 3, stride, groups=cin, act=act, padding=padding, bn_eps=bn_eps),
            ConvNormAct(cin, cout, 1, act=act, padding=padding, bn_eps=bn_eps),
        )
        self.out_channels = cout


class InvertedResidual(nn.Module):
    """Inverted residual with linear bottleneck (V2), optionally with squeeze-excite (V3 bneck).

    ``style`` only changes module names, to match torchvision: V2 keeps its layers in ``conv`` with a
    bare conv + BN projection; V3 keeps them in ``block`` with the projection as a ConvNormAct.
    """

    def __init__(self, cin: int, hidden: int, cout: int, kernel: int, stride: int, act: Act,
                 se_squeeze: int | None, padding: Padding, style: str = "v3",
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        self.use_residual = stride == 1 and cin == cout
        self.out_channels = cout
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, padding=padding)
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvNormAct(cin, hidden, 1, act=act, **bn))
        layers.append(ConvNormAct(hidden, hidden, kernel, stride, groups=hidden, act=act, **bn))
        if se_squeeze:
            layers.append(SqueezeExcite(hidden, se_squeeze))
        if style == "v2":
            layers += [conv2d(hidden, cout, 1, padding=padding),
                       nn.BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum)]
            self._body = "conv"
        else:
            layers.append(ConvNormAct(hidden, cout, 1, act=Act.NONE, **bn))
            self._body = "block"
        setattr(self, self._body, nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = getattr(self, self._body)(x)
        return x + out if self.use_residual else out
