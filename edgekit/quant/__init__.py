"""int8 preparation: one home for everything edgekit does to a model before a backend quantizes it.

    weights.py          int8-ready weights: optimal rounding, bias correction (Int8Weights)
    percentiles.py      activation ranges: exact tail percentiles in one streamed pass
    mixed_precision.py  accuracy-budgeted search for the layers to keep float
    report.py           the per-layer int8 error report (run by a backend that can read every
                        layer's tensors: Backend.layer_report_runtime)

The recipe is stated once, here: ``prepare_int8`` rounds the weights (optimal by default) on the
first ROUNDING_IMAGES calibration images, and ``PreparedInt8.for_backend`` gives each int8 build
the weights bias-corrected for its calibration method (unless the backend corrects its own bias).
``edgekit convert`` and ``edgekit quant-report`` both go through it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..choices import ROUNDINGS
from ..errors import InputError

if TYPE_CHECKING:  # torch is imported when the recipe runs, not with the package
    from ..calibration import CalibrationSet
    from ..source import ModelSource
    from .weights import Int8Weights

# Images the optimal weight rounding estimates layer inputs from: on imported MobileNetV2 (ONNX
# Runtime, 500 photos) 32, 64, 128 and 200 images gave 98.4, 98.4, 97.8, 98.0% agreement; 64
# takes 6 s of the 21 s that 200 take.
ROUNDING_IMAGES = 64


@dataclass(frozen=True)
class PreparedInt8:
    """A model with the int8 recipe applied: ``weights`` None when there is nothing to prepare
    (nearest rounding without bias correction, or an ONNX model: each backend rounds to nearest)."""

    source: ModelSource
    weights: Int8Weights | None = None

    def for_backend(self, backend, calibration: CalibrationSet,
                    float_layers: tuple[str, ...] = ()) -> ModelSource:
        """What an int8 build with ``backend`` converts: the prepared weights (original ones in
        ``float_layers``), bias-corrected for ``calibration``'s method unless the backend
        corrects its own (``Backend.corrects_bias``)."""
        from ..source import ModelSource

        w = self.weights
        if w is None:
            return self.source
        if w.bias_correction and not backend.corrects_bias:
            module = w.bias_corrected(calibration.method, calibration.options, float_layers)
        else:
            module = w.keeping_float(float_layers)
        return ModelSource(meta=self.source.meta, module=module)

    @property
    def reference(self) -> ModelSource:
        """The float model to compare a prepared build with: BatchNorm folded, so with the same
        modules (and exported names) as the prepared one. Not the bias-corrected weights: they
        move each layer's float output by the shift int8 will cause."""
        from ..source import ModelSource

        if self.weights is None:
            return self.source
        return ModelSource(meta=self.source.meta, module=self.weights.folded)

    def to_dict(self) -> dict:
        """The weight preparation as the manifest records it."""
        return self.weights.to_dict() if self.weights is not None else {"method": "nearest"}


def prepare_int8(source: ModelSource, calibration: CalibrationSet, rounding: str = "optimal",
                 bias_correction: bool = True,
                 progress: Callable[[str], None] | None = None) -> PreparedInt8:
    """The int8 recipe for ``source``: weights rounded (``rounding``: "optimal" for least layer
    output error on the first ROUNDING_IMAGES calibration images, "nearest" as the backends
    would) and, with ``bias_correction``, bias-corrected per build (PreparedInt8.for_backend)."""
    from .weights import round_weights

    if rounding not in ROUNDINGS:
        raise InputError(f"unknown weight rounding '{rounding}' (choose from {', '.join(ROUNDINGS)})")
    if (rounding == "nearest" and not bias_correction) or source.module is None:
        return PreparedInt8(source)
    say = progress or (lambda _msg: None)
    images = calibration.images[:ROUNDING_IMAGES]
    say(f"int8 weights: {rounding} rounding on {len(images)} calibration images...")
    result = round_weights(source.module, images, rounding)
    say(f"int8 weights: {result.layers} layers, output error {result.nearest_error:.2e} (nearest) -> "
        f"{result.optimised_error:.2e} in {result.seconds:.1f} s")
    return PreparedInt8(source, replace(result, bias_correction=bias_correction))


__all__ = ["ROUNDING_IMAGES", "PreparedInt8", "prepare_int8"]
