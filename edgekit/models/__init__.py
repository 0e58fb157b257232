"""MobileNet V1/V2/V3 as typed architecture tables plus one builder."""
from .accounting import Accounting, count
from .meta import ModelMeta
from .network import MobileNet
from .registry import STANDARD_VARIANTS, Variant, create, from_meta, get_spec, list_models

__all__ = ["Accounting", "MobileNet", "ModelMeta", "STANDARD_VARIANTS", "Variant", "count",
           "create", "from_meta", "get_spec", "list_models"]
