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
    if method in ("percentile", "entropy"):
        # Entropy: quantize_static passes no bin count to its Entropy calibrator (128 bins: the
        # ranges come out as MinMax's). Percentile: ONNX Runtime's calibrator keeps every
        # activation of every image in memory (63 s for MobileNetV2 on 200 images here). Both
        # are computed by edgekit (entropy_ranges, percentile_ranges) and given to
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


BIG_TENSOR = 1 << 16  # values per image above which the histogram reads every SUBSAMPLE-th value
SUBSAMPLE = 4


def percentile_ranges(model: Path, reader, options: dict, scratch: Path) -> dict[str, list[dict]]:
    """ONNX Runtime's asymmetric percentile ranges, streamed: (100 - p) / 2 percent cut from each
    end of a ``num_bins`` histogram over each tensor's [min, max] (the tensors ONNX Runtime's
    own calibrator picks), in two passes over the images instead of holding all their
    activations in memory. Tensors above 64k values per image are histogrammed on every 4th
    value (>= 16 sampled values beyond each 99.999% cut over 200 images)."""
    import numpy as np
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    percentile = float(options.get("percentile", 99.999))
    bins = int(options.get("num_bins", 2048))
    if not 50.0 < percentile <= 100.0:
        raise InputError(f"percentile must be in (50, 100], got {percentile}")
    calibrator = create_calibrator(str(model), None, augmented_model_path=str(scratch / "percentile.onnx"),
                                   calibrate_method=CalibrationMethod.Percentile)
    session = calibrator.infer_session
    names = [o.name for o in session.get_outputs()]
    wanted = [i for i, name in enumerate(names) if name in calibrator.tensors_to_calibrate]
    feeds = []
    while (batch := reader.get_next()) is not None:
        feeds.append(batch)
    low = {i: np.inf for i in wanted}
    high = {i: -np.inf for i in wanted}
    for feed in feeds:
        outputs = session.run(None, feed)
        for i in wanted:
            low[i] = min(low[i], float(outputs[i].min()))
            high[i] = max(high[i], float(outputs[i].max()))
    counts = {i: np.zeros(bins, np.int64) for i in wanted}
    for feed in feeds:
        outputs = session.run(None, feed)
        for i in wanted:
            if high[i] > low[i]:
                values = outputs[i].ravel()
                if values.size > BIG_TENSOR:
                    values = values[::SUBSAMPLE]
                idx = ((values - low[i]) * (bins / (high[i] - low[i]))).astype(np.int32)
                np.clip(idx, 0, bins - 1, out=idx)
                counts[i] += np.bincount(idx, minlength=bins)
    cut = (100.0 - percentile) / 200.0
    ranges = {}
    for i in wanted:
        lo, hi = low[i], high[i]
        if hi > lo:
            cdf = np.cumsum(counts[i]) / counts[i].sum()
            edges = np.linspace(lo, hi, bins + 1)
            lo = max(lo, float(edges[np.searchsorted(cdf, cut)]))
            hi = min(hi, float(edges[np.searchsorted(cdf, 1.0 - cut)]))
        ranges[names[i]] = [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
    return ranges
