"""MobileNet V1/V2/V3 as typed architecture tables plus one builder."""
from .meta import ModelMeta
from .registry import STANDARD_VARIANTS, Variant, create, from_meta, get_spec, list_models

__all__ = ["Accounting", "MobileNet", "ModelMeta", "STANDARD_VARIANTS", "Variant", "count",
           "create", "from_meta", "get_spec", "list_models"]


def __getattr__(name: str):
    # The torch-backed parts load on first use: the registry's names stay cheap to import.
    if name in ("Accounting", "count"):
        from . import accounting

        return getattr(accounting, name)
    if name == "MobileNet":
        from .network import MobileNet

        return MobileNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
