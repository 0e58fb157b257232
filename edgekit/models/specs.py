"""Typed rows for architecture tables. Each MobileNet is a table of these, read by one builder."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum



class Act(str, Enum):
    NONE = "none"
    RELU = "relu"
    RELU6 = "relu6"
    HSWISH = "hswish"


PADDINGS = ("symmetric", "tf_same")


class Scale(str, Enum):
    """How the width multiplier applies to a layer's channels."""

    ALWAYS = "always"
    UP_ONLY = "up_only"  # MobileNetV2's last conv: 1280 is kept when width < 1


@dataclass(frozen=True)
class ConvSpec:
    """A plain conv + BN + act (stems and last convs). ``out`` or ``times_input`` sets channels."""

    out: int = 0
    kernel: int = 3
    stride: int = 1
    act: Act = Act.RELU6
    scale: Scale = Scale.ALWAYS
    times_input: int = 0  # V3's last conv: 6x its input channels


@dataclass(frozen=True)
class SeparableSpec:
    """MobileNetV1 depthwise-separable block."""

    out: int
    stride: int = 1
    repeats: int = 1


@dataclass(frozen=True)
class InvertedResidualSpec:
    """V2 inverted residual (``expand_ratio``) or V3 bneck (absolute ``expanded`` channels)."""

    out: int
    stride: int = 1
    kernel: int = 3
    expand_ratio: float = 0.0
    expanded: int = 0
    se: bool = False
    act: Act = Act.RELU6
    repeats: int = 1


@dataclass(frozen=True)
class HeadSpec:
    """Pool -> [Linear hidden + act + dropout] -> Linear classes. ``hidden`` 0 means no hidden layer."""

    hidden: int = 0
    act: Act = Act.HSWISH


BlockSpec = SeparableSpec | InvertedResidualSpec


@dataclass(frozen=True)
class ArchSpec:
    name: str
    paper: str
    stem: ConvSpec
    blocks: tuple[BlockSpec, ...]
    last: ConvSpec | None
    head: HeadSpec
    style: str  # module naming: "v1", "v2" (torchvision MobileNetV2), "v3" (torchvision MobileNetV3)
    default_act: Act = Act.RELU6
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    default_dropout: float = 0.2
