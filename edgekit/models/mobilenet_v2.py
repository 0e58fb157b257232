"""MobileNetV2 (Sandler et al. 2018, Table 2): t, c, n, s rows of inverted residuals."""
from .specs import Act, ArchSpec, ConvSpec, HeadSpec, InvertedResidualSpec as IR, Scale

MOBILENET_V2 = ArchSpec(
    name="mobilenet_v2",
    paper="arXiv:1801.04381",
    stem=ConvSpec(out=32, kernel=3, stride=2, act=Act.RELU6),
    blocks=(
        IR(expand_ratio=1, out=16, repeats=1, stride=1),
        IR(expand_ratio=6, out=24, repeats=2, stride=2),
        IR(expand_ratio=6, out=32, repeats=3, stride=2),
        IR(expand_ratio=6, out=64, repeats=4, stride=2),
        IR(expand_ratio=6, out=96, repeats=3, stride=1),
        IR(expand_ratio=6, out=160, repeats=3, stride=2),
        IR(expand_ratio=6, out=320, repeats=1, stride=1),
    ),
    last=ConvSpec(out=1280, kernel=1, act=Act.RELU6, scale=Scale.UP_ONLY),
    head=HeadSpec(hidden=0),
    style="v2",
)
