import numpy as np
import pytest

from edgekit.backends.base import ConvertOptions, get_backend
from edgekit.errors import InputError, MissingDependencyError
from edgekit.models.loading import load_model
from edgekit.parity import compare
from edgekit.source import ModelSource

pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")


@pytest.fixture(scope="module")
def source():
    return ModelSource.from_module(load_model("mobilenet_v3_small", width=0.75, resolution=128, weights="random"))


def test_fp32_matches_source(tmp_path, source, calibration, reference):
    backend = get_backend("onnxruntime")
    art = backend.convert(source, "fp32", None, tmp_path / "m.onnx", ConvertOptions())
    assert art.path.is_file() and art.input.shape == (1, 3, 128, 128)
    p = compare(reference, backend.load(art, threads=1).run(calibration.images))
    assert p.max_abs_diff < 1e-4 * max(1.0, p.reference_max_abs)
    assert p.top1_agreement == 1.0
    assert backend.load(art).output_grid() is None  # float all through


@pytest.mark.parametrize("act", ["uint8", "int8"])
def test_int8_qdq_per_channel(tmp_path, source, calibration, reference, act):
    backend = get_backend("onnxruntime")
    art = backend.convert(source, "int8", calibration, tmp_path / "q.onnx",
                          ConvertOptions(activation_type=act))
    assert art.details["ops"]["QuantizeLinear"] > 10 and art.details["ops"]["DequantizeLinear"] > 10
    assert art.details["activation_type"] == act
    assert art.size_bytes < 0.4 * (sum(p.numel() for p in source.module.parameters()) * 4)
    session = backend.load(art)
    p = compare(reference, session.run(calibration.images))
    assert 12 < p.sqnr_db < 60  # quantized: close, but not bit-exact
    scale, zero_point = session.output_grid()  # the final DequantizeLinear's
    logits = session.run(calibration.images[:2])
    assert scale > 0 and zero_point == 0 and np.allclose(logits / scale, np.round(logits / scale), atol=1e-3)
    import onnx

    model = onnx.load(str(art.path))
    zero_point_types = {i.data_type for i in model.graph.initializer if i.name.endswith("_zero_point")}
    assert (onnx.TensorProto.UINT8 if act == "uint8" else onnx.TensorProto.INT8) in zero_point_types


def test_entropy_and_unknown_method(tmp_path, source, calibration):
    backend = get_backend("onnxruntime")
    calibration.method = "mse"
    try:
        with pytest.raises(InputError, match="cannot calibrate with 'mse'"):
            backend.convert(source, "int8", calibration, tmp_path / "q.onnx", ConvertOptions())
    finally:
        calibration.method = "minmax"
    assert not (tmp_path / "q.onnx").exists()


def test_int8_without_calibration_is_an_error(tmp_path, source):
    with pytest.raises(InputError, match="needs calibration"):
        get_backend("onnxruntime").convert(source, "int8", None, tmp_path / "q.onnx", ConvertOptions())


def test_user_onnx_file_as_source(tmp_path, source, calibration, reference):
    backend = get_backend("onnxruntime")
    fp32 = backend.convert(source, "fp32", None, tmp_path / "user.onnx", ConvertOptions())
    user = ModelSource.from_onnx(fp32.path)
    assert user.meta.resolution == 128 and user.meta.num_classes == 1000
    assert np.allclose(user.reference(calibration.images[:2]), reference[:2], atol=1e-4)
    art = backend.convert(user, "int8", calibration, tmp_path / "user_int8.onnx", ConvertOptions())
    assert compare(reference, backend.load(art).run(calibration.images)).sqnr_db > 12


def test_missing_runtime_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("onnxruntime"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr("importlib.import_module", lambda name: fake_import(name))
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgekit\[onnx\]'"):
        get_backend("onnxruntime").require()


def test_bad_onnx_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="cannot read ONNX model"):
        ModelSource.from_onnx(bad)
    with pytest.raises(InputError, match="not found"):
        ModelSource.from_onnx(tmp_path / "missing.onnx")


@pytest.mark.parametrize("narrower_method", ["entropy", "mean_minmax"])
def test_entropy_and_mean_minmax_are_not_minmax(tmp_path, source, calibration, narrower_method):
    """quantize_static's own Entropy gives MinMax's ranges (128 bins); edgekit's must clip. The
    mean of per-image ranges is inside the global range too."""
    import onnx
    from onnx import numpy_helper

    backend = get_backend("onnxruntime")
    scales = {}
    for method in ("minmax", narrower_method):
        cal = type(calibration)(calibration.images, calibration.files, calibration.source, method=method)
        art = backend.convert(source, "int8", cal, tmp_path / f"{method}.onnx", ConvertOptions())
        model = onnx.load(str(art.path))
        scales[method] = {i.name: float(numpy_helper.to_array(i)) for i in model.graph.initializer
                          if i.name.endswith("_scale") and numpy_helper.to_array(i).size == 1}
    shared = set(scales["minmax"]) & set(scales[narrower_method])
    narrower = [t for t in shared if scales[narrower_method][t] < 0.9 * scales["minmax"][t]]
    assert len(shared) > 20 and len(narrower) > len(shared) // 4
    assert all(scales[narrower_method][t] <= scales["minmax"][t] * 1.001 for t in shared)
