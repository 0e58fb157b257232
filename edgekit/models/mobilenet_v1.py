"""MobileNetV1 (Howard et al. 2017, Table 1): 3x3 conv stem, 13 depthwise-separable blocks."""
from .specs import Act, ArchSpec, ConvSpec, HeadSpec, SeparableSpec as S

MOBILENET_V1 = ArchSpec(
    name="mobilenet_v1",
    paper="arXiv:1704.04861",
    stem=ConvSpec(out=32, kernel=3, stride=2, act=Act.RELU),
    blocks=(
        S(64), S(128, stride=2), S(128), S(256, stride=2), S(256), S(512, stride=2),
        S(512, repeats=5), S(1024, stride=2), S(1024),
    ),
    last=None,
    head=HeadSpec(hidden=0),
    style="v1",
    default_act=Act.RELU,
    default_dropout=0.001,
)
