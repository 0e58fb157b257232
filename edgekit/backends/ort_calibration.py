"""Calibration methods for ONNX Runtime's quantize_static."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError


METHODS = ("minmax", "mean_minmax", "percentile", "entropy")


def calibrate_method(method: str, options: dict):
    """(CalibrationMethod, extra_options) for an edgekit method name."""
    from onnxruntime.quantization import CalibrationMethod

    if method == "minmax":
        return CalibrationMethod.MinMax, {}
    if method == "mean_minmax":
        # With a moving average, ORT's MinMax takes the mean over batches (one image each here)
        # of each batch's min and max: NNCF's MEAN_MINMAX.
        return CalibrationMethod.MinMax, {"CalibMovingAverage": True}
    if method == "percentile":
        return CalibrationMethod.Percentile, {
            "CalibPercentile": float(options.get("percentile", 99.999)),
            "CalibNumBins": int(options.get("num_bins", 2048))}
    if method == "entropy":
        # quantize_static passes no bin count to its Entropy calibrator (128 bins: the ranges come
        # out as MinMax's). The real ranges are computed by entropy_ranges() and given to
        # quantize_static as per-tensor overrides on top of a MinMax pass.
        return CalibrationMethod.MinMax, {}
    raise InputError(f"ONNX Runtime backend cannot calibrate with '{method}' "
                     f"(it supports {', '.join(METHODS)})")


def entropy_ranges(model: Path, reader, options: dict, scratch: Path) -> dict[str, list[dict]]:
    """KL-divergence (entropy) ranges of every activation, with real histogram resolution
    (``num_bins``, default 2048), as quantize_static ``TensorQuantOverrides``."""
    import numpy as np
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    calibrator = create_calibrator(
        str(model), None, augmented_model_path=str(scratch / "entropy_augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={"num_bins": int(options.get("num_bins", 2048)),
                       "num_quantized_bins": int(options.get("num_quantized_bins", 128)),
                       "symmetric": False})
    calibrator.collect_data(reader)
    ranges = calibrator.compute_data()
    return {name: [{"rmin": np.float32(data.range_value[0]), "rmax": np.float32(data.range_value[1])}]
            for name, data in ranges.data.items()}
