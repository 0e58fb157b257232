"""MobileNetV3 Large and Small (Howard et al. 2019, Tables 1 and 2).

Width rule: torchvision's (every layer scaled, including the last conv and the 1280/1024 hidden
layer), the layout its published weights use. The paper's TensorFlow models keep the last layers
unscaled below width 1.0, so their 0.75 figures (155M/44M MACs) differ from ours (140.0M/39.1M).
"""
from .specs import Act, ArchSpec, ConvSpec, HeadSpec, InvertedResidualSpec as B

RE, HS = Act.RELU, Act.HSWISH

MOBILENET_V3_LARGE = ArchSpec(
    name="mobilenet_v3_large",
    paper="arXiv:1905.02244",
    stem=ConvSpec(out=16, kernel=3, stride=2, act=HS),
    blocks=(
        B(kernel=3, expanded=16, out=16, se=False, act=RE, stride=1),
        B(kernel=3, expanded=64, out=24, se=False, act=RE, stride=2),
        B(kernel=3, expanded=72, out=24, se=False, act=RE, stride=1),
        B(kernel=5, expanded=72, out=40, se=True, act=RE, stride=2),
        B(kernel=5, expanded=120, out=40, se=True, act=RE, stride=1),
        B(kernel=5, expanded=120, out=40, se=True, act=RE, stride=1),
        B(kernel=3, expanded=240, out=80, se=False, act=HS, stride=2),
        B(kernel=3, expanded=200, out=80, se=False, act=HS, stride=1),
        B(kernel=3, expanded=184, out=80, se=False, act=HS, stride=1),
        B(kernel=3, expanded=184, out=80, se=False, act=HS, stride=1),
        B(kernel=3, expanded=480, out=112, se=True, act=HS, stride=1),
        B(kernel=3, expanded=672, out=112, se=True, act=HS, stride=1),
        B(kernel=5, expanded=672, out=160, se=True, act=HS, stride=2),
        B(kernel=5, expanded=960, out=160, se=True, act=HS, stride=1),
        B(kernel=5, expanded=960, out=160, se=True, act=HS, stride=1),
    ),
    last=ConvSpec(times_input=6, kernel=1, act=HS),
    head=HeadSpec(hidden=1280, act=HS),
    style="v3",
    default_act=HS,
    bn_eps=0.001,
    bn_momentum=0.01,
)

MOBILENET_V3_SMALL = ArchSpec(
    name="mobilenet_v3_small",
    paper="arXiv:1905.02244",
    stem=ConvSpec(out=16, kernel=3, stride=2, act=HS),
    blocks=(
        B(kernel=3, expanded=16, out=16, se=True, act=RE, stride=2),
        B(kernel=3, expanded=72, out=24, se=False, act=RE, stride=2),
        B(kernel=3, expanded=88, out=24, se=False, act=RE, stride=1),
        B(kernel=5, expanded=96, out=40, se=True, act=HS, stride=2),
        B(kernel=5, expanded=240, out=40, se=True, act=HS, stride=1),
        B(kernel=5, expanded=240, out=40, se=True, act=HS, stride=1),
        B(kernel=5, expanded=120, out=48, se=True, act=HS, stride=1),
        B(kernel=5, expanded=144, out=48, se=True, act=HS, stride=1),
        B(kernel=5, expanded=288, out=96, se=True, act=HS, stride=2),
        B(kernel=5, expanded=576, out=96, se=True, act=HS, stride=1),
        B(kernel=5, expanded=576, out=96, se=True, act=HS, stride=1),
    ),
    last=ConvSpec(times_input=6, kernel=1, act=HS),
    head=HeadSpec(hidden=1024, act=HS),
    style="v3",
    default_act=HS,
    bn_eps=0.001,
    bn_momentum=0.01,
)
