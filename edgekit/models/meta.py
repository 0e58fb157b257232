"""ModelMeta: what travels with a model (checkpoints, manifests) so nothing downstream re-derives it."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..preprocessing import Preprocessing


@dataclass(frozen=True)
class ModelMeta:
    arch: str
    width: float = 1.0
    resolution: int = 224
    num_classes: int = 1000
    padding: str = "symmetric"
    activation: str | None = None  # V1 only: override of the activation (TF's V1 uses relu6)
    dropout: float | None = None
    labels: tuple[str, ...] | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    weights: str | None = None  # where the weights came from ("imagenet", a path, "random")

    def build_options(self) -> dict:
        """Options for ``models.create`` that rebuild exactly this network."""
        opts = dict(width=self.width, resolution=self.resolution, num_classes=self.num_classes,
                    padding=self.padding)
        if self.activation:
            opts["activation"] = self.activation
        if self.dropout is not None:
            opts["dropout"] = self.dropout
        return opts

    def to_dict(self) -> dict:
        return {
            "arch": self.arch, "width": self.width, "resolution": self.resolution,
            "num_classes": self.num_classes, "padding": self.padding,
            "activation": self.activation, "dropout": self.dropout,
            "labels": list(self.labels) if self.labels else None,
            "preprocessing": self.preprocessing.to_dict(), "weights": self.weights,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelMeta":
        return cls(
            arch=d["arch"], width=float(d.get("width", 1.0)),
            resolution=int(d.get("resolution", 224)), num_classes=int(d.get("num_classes", 1000)),
            padding=d.get("padding", "symmetric"), activation=d.get("activation"),
            dropout=d.get("dropout"),
            labels=tuple(d["labels"]) if d.get("labels") else None,
            preprocessing=Preprocessing.from_dict(d.get("preprocessing") or {}),
            weights=d.get("weights"),
        )

    def with_(self, **changes) -> "ModelMeta":
        return replace(self, **changes)
