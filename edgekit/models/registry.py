"""Model registry: ``create(name, **options)`` and ``list_models()``.

Imports no torch (the network is built in ``create``): the CLI reads names and limits from here
for its option choices, and `edgekit --help` should not wait for torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError, unknown
from ..preprocessing import Preprocessing
from .meta import ModelMeta
from .mobilenet_v1 import MOBILENET_V1
from .mobilenet_v2 import MOBILENET_V2
from .mobilenet_v3 import MOBILENET_V3_LARGE, MOBILENET_V3_SMALL
from .specs import PADDINGS, Act, ArchSpec

if TYPE_CHECKING:
    from .network import MobileNet

ARCHS: dict[str, ArchSpec] = {
    spec.name: spec for spec in (MOBILENET_V1, MOBILENET_V2, MOBILENET_V3_LARGE, MOBILENET_V3_SMALL)
}
MIN_RESOLUTION = 32
# Upper bounds keep a typo (--width 100) from building a model that takes the machine's memory:
# published MobileNets use widths up to 1.4 and resolutions up to 224.
MAX_WIDTH = 4.0
MAX_RESOLUTION = 1024
MAX_NUM_CLASSES = 100_000
# torchvision's published ImageNet checkpoints (file names in the torch hub cache and on its server)
TORCHVISION_WEIGHTS = {
    "mobilenet_v2": "mobilenet_v2-b0353104.pth",
    "mobilenet_v3_large": "mobilenet_v3_large-8738ca79.pth",
    "mobilenet_v3_small": "mobilenet_v3_small-047dcff4.pth",
}


@dataclass(frozen=True)
class Variant:
    name: str
    width: float
    resolution: int


# The variants the papers tabulate (and torchvision / TF publish).
STANDARD_VARIANTS: tuple[Variant, ...] = (
    *(Variant("mobilenet_v1", w, 224) for w in (1.0, 0.75, 0.5, 0.25)),
    *(Variant("mobilenet_v1", 1.0, r) for r in (192, 160, 128)),
    *(Variant("mobilenet_v2", w, 224) for w in (1.0, 1.4, 0.75, 0.5)),
    *(Variant("mobilenet_v3_large", w, 224) for w in (1.0, 0.75)),
    *(Variant("mobilenet_v3_small", w, 224) for w in (1.0, 0.75)),
)


def list_models() -> list[str]:
    return sorted(ARCHS)


def get_spec(name: str) -> ArchSpec:
    try:
        return ARCHS[name]
    except KeyError:
        raise unknown("model", name, ARCHS) from None


def validate_options(width: float, resolution: int, num_classes: int, padding: str,
                     activation: str | None) -> None:
    if not 0 < width <= MAX_WIDTH:
        raise InputError(f"width must be > 0 and at most {MAX_WIDTH:g}, got {width:g}")
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise InputError(f"resolution must be at least {MIN_RESOLUTION} and at most {MAX_RESOLUTION}, "
                         f"got {resolution}")
    if not 1 <= num_classes <= MAX_NUM_CLASSES:
        raise InputError(f"num_classes must be >= 1 and at most {MAX_NUM_CLASSES:,}, got {num_classes}")
    if padding not in PADDINGS:
        raise unknown("padding mode", padding, PADDINGS)
    if activation is not None and activation not in {a.value for a in Act}:
        raise unknown("activation", activation, [a.value for a in Act])


def create(name: str, *, width: float = 1.0, resolution: int = 224, num_classes: int = 1000,
           dropout: float | None = None, padding: str = "symmetric", activation: str | None = None,
           labels: tuple[str, ...] | list[str] | None = None,
           preprocessing: Preprocessing | None = None, weights: str | None = None) -> MobileNet:
    """Build a MobileNet by name. The result carries ``.meta`` (a ModelMeta)."""
    from .network import MobileNet

    spec = get_spec(name)
    validate_options(width, resolution, num_classes, padding, activation)
    if labels is not None and len(labels) != num_classes:
        raise InputError(f"{len(labels)} labels given for {num_classes} classes")
    meta = ModelMeta(
        arch=name, width=float(width), resolution=int(resolution), num_classes=int(num_classes),
        padding=padding, activation=activation, dropout=dropout,
        labels=tuple(labels) if labels else None,
        preprocessing=preprocessing or Preprocessing.torchvision(resolution), weights=weights)
    return MobileNet(spec, meta)


def from_meta(meta: ModelMeta) -> MobileNet:
    model = create(meta.arch, **meta.build_options())
    model.meta = meta
    return model
