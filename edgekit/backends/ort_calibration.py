"""Calibration methods for ONNX Runtime's quantize_static."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from ..calibration import CalibrationSet


METHODS = ("minmax", "mean_minmax", "percentile", "entropy")


class CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over a CalibrationSet."""

    def __init__(self, calibration: CalibrationSet, input_name: str):
        self._items = iter(calibration.images)
        self._name = input_name

    def get_next(self):
        image = next(self._items, None)
        return None if image is None else {self._name: image[None]}

    def rewind(self):  # some calibrators call it; a fresh reader is made per conversion
        pass


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


def percentile_ranges(model: Path, reader, options: dict, scratch: Path) -> dict[str, list[dict]]:
    """Percentile ranges of every tensor ONNX Runtime's own calibrator picks: the [100 - p, p]
    percentiles of its values over all images (as the TFLite backend and the bias correction
    define them), computed exactly in one streamed pass (quant/percentiles.py).

    Not ONNX Runtime's Percentile calibrator: it keeps every activation of every image in memory
    (63 s for MobileNetV2 on 200 images here) and its asymmetric mode cuts a histogram of |x|.
    Cutting (100 - p) / 2 percent per side instead measured worse on imported MobileNetV3-Small
    (500 photos: 88.2% agreement, 12.3 dB vs 90.0%, 13.5 dB; V2 99.0% vs 99.2%)."""
    import numpy as np
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    from ..quant.percentiles import TailPercentiles

    percentile = float(options.get("percentile", 99.999))
    if not 50.0 < percentile <= 100.0:
        raise InputError(f"percentile must be in (50, 100], got {percentile}")
    calibrator = create_calibrator(str(model), None, augmented_model_path=str(scratch / "percentile.onnx"),
                                   calibrate_method=CalibrationMethod.Percentile)
    # the calibrator's own session, but without spin-waiting threads: they take the core that a
    # TFLite conversion in `edgekit convert`'s worker process is using
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(calibrator.augmented_model_path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    wanted = [i for i, name in enumerate(names) if name in calibrator.tensors_to_calibrate]
    feeds = []
    while (batch := reader.get_next()) is not None:
        feeds.append(batch)
    cut = (100.0 - percentile) / 100.0
    tails: dict[int, TailPercentiles] = {}
    for feed in feeds:
        outputs = session.run(None, feed)
        for i in wanted:
            if i not in tails:
                tails[i] = TailPercentiles(cut, outputs[i].size * len(feeds))
            tails[i].update(outputs[i])
    return {names[i]: [dict(zip(("rmin", "rmax"), map(np.float32, tail.range())))]
            for i, tail in tails.items()}
