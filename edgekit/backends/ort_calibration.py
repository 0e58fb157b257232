"""Calibration methods for ONNX Runtime's quantize_static."""
from __future__ import annotations

from ..errors import InputError


def calibrate_method(method: str, options: dict):
    """(CalibrationMethod, extra_options) for an edgekit method name."""
    from onnxruntime.quantization import CalibrationMethod

    if method == "minmax":
        return CalibrationMethod.MinMax, {}
    if method == "percentile":
        return CalibrationMethod.Percentile, {
            "CalibPercentile": float(options.get("percentile", 99.999)),
            "CalibNumBins": int(options.get("num_bins", 2048))}
    if method == "entropy":
        # quantize_static's default 128 bins makes Entropy collapse to MinMax; ask for real bins.
        return CalibrationMethod.Entropy, {"CalibNumBins": int(options.get("num_bins", 2048)),
                                           "CalibNumQuantizedBins": int(options.get("num_quantized_bins", 128))}
    raise InputError(f"ONNX Runtime backend cannot calibrate with '{method}' "
                     "(it supports minmax, percentile, entropy)")
