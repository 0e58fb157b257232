"""Exact tail percentiles in one streamed pass (percentiles.py)."""
import math

import numpy as np
import pytest

from edgekit.quant.percentiles import TailPercentiles


@pytest.mark.parametrize("cut", [0.0, 5e-6, 1e-3, 0.05])
def test_matches_the_sorted_values(cut):
    rng = np.random.default_rng(0)
    chunks = [rng.standard_t(3, size=(4, 50, 50)).astype(np.float32) * (1 + i % 3) for i in range(30)]
    tails = TailPercentiles(cut, sum(c.size for c in chunks))
    for chunk in chunks:
        tails.update(chunk)
    ordered = np.sort(np.concatenate([c.ravel() for c in chunks]))
    k = max(1, math.ceil(cut * ordered.size))
    assert tails.range() == (ordered[k - 1], ordered[-k])


def test_growing_then_shrinking_values_and_ties():
    """Later chunks with larger values must displace kept ones; a saturated tail (ReLU6) ties."""
    chunks = [np.full(1000, 6.0, np.float32), np.linspace(-1, 5, 1000, dtype=np.float32),
              np.linspace(0, 100, 1000, dtype=np.float32), np.zeros(1000, np.float32)]
    tails = TailPercentiles(0.002, 4000)  # k = 8
    for chunk in chunks:
        tails.update(chunk)
    ordered = np.sort(np.concatenate(chunks))
    assert tails.range() == (ordered[7], ordered[-8])


def test_fewer_values_than_promised_gives_the_extremes():
    tails = TailPercentiles(0.01, 10_000)  # k = 100
    tails.update(np.arange(10, dtype=np.float32))
    assert tails.range() == (0.0, 9.0)
    with pytest.raises(ValueError, match="no values"):
        TailPercentiles(0.01, 10).range()
    with pytest.raises(ValueError, match="cut"):
        TailPercentiles(0.5, 10)


@pytest.fixture(scope="module")
def source():  # what conftest's calibration fixture builds on
    from edgekit.models.loading import load_model
    from edgekit.source import ModelSource

    return ModelSource.from_module(load_model("mobilenet_v3_small", width=0.75, resolution=128, weights="random"))


def test_onnxruntime_ranges_are_the_exact_tails_of_every_calibrated_tensor(tmp_path, source, calibration):
    """Wiring: one range per tensor ONNX Runtime's calibrator picks (its augmented model's
    outputs), each the [100 - p, p] percentiles of that tensor's values over all images."""
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    from edgekit.backends.onnxruntime_backend import export_onnx, prepare_for_quantization
    from edgekit.backends.ort_calibration import CalibrationReader
    from edgekit.backends.ort_calibration import percentile_ranges

    model = prepare_for_quantization(export_onnx(source, tmp_path / "m.onnx"), tmp_path / "p.onnx")
    name = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    ranges = percentile_ranges(model, CalibrationReader(calibration, name), {"percentile": 99.9}, tmp_path)
    calibrator = create_calibrator(str(model), None, augmented_model_path=str(tmp_path / "a.onnx"),
                                   calibrate_method=CalibrationMethod.Percentile)
    assert set(ranges) == set(calibrator.tensors_to_calibrate) and len(ranges) > 40
    session = calibrator.infer_session
    names = [o.name for o in session.get_outputs()]
    outputs = [session.run(None, {name: image[None]}) for image in calibration.images]
    for tensor, [r] in ranges.items():
        i = names.index(tensor)
        ordered = np.sort(np.concatenate([o[i].ravel() for o in outputs]))
        k = max(1, math.ceil(0.001 * ordered.size))
        assert (r["rmin"], r["rmax"]) == (ordered[k - 1], ordered[-k]), tensor


def test_large_first_batch_with_a_saturated_tail():
    """A big first update takes its bound from a sample (ties at the bound kept): a ReLU6-like
    tensor whose top 1% is exactly 6.0 still gives 6.0 and the true lower tail."""
    rng = np.random.default_rng(1)
    values = np.clip(rng.normal(2, 1.5, size=(8, 64, 64, 32)), 0, 6).astype(np.float32)
    values = values.transpose(0, 3, 1, 2)  # channels-last memory, NCHW view: no copy needed
    tails = TailPercentiles(1e-4, values.size * 2)
    tails.update(values)
    tails.update(values[::-1])
    ordered = np.sort(np.concatenate([values.ravel(), values.ravel()]))
    k = math.ceil(1e-4 * ordered.size)
    assert tails.range() == (ordered[k - 1], ordered[-k]) == (0.0, 6.0)
