"""The ExecuTorch backend: real .pte programs, run by ExecuTorch's runtime, compared with the source."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.backends.base import ConvertOptions, backend_for_path, backend_named_by, get_backend
from edgekit.errors import ConversionError, InputError, MissingDependencyError
from edgekit.models.loading import load_model
from edgekit.parity import compare
from edgekit.source import ModelSource

from conftest import shared_path

pytest.importorskip("executorch", reason="needs the 'executorch' extra")

RUNNER = Path(__file__).resolve().parents[1] / "edgekit" / "bench" / "runner.py"


@pytest.fixture(scope="module")
def source():
    return ModelSource.from_module(load_model("mobilenet_v2", width=0.35, resolution=96, weights="random"))


@pytest.fixture(scope="module")
def backend():
    return get_backend("executorch")


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, backend, source):
    return backend.convert(source, "fp32", None, tmp_path_factory.mktemp("et") / "m_fp32.pte", ConvertOptions())


@pytest.fixture(scope="module")
def int8(tmp_path_factory, backend, source, calibration):
    return backend.convert(source, "int8", calibration, tmp_path_factory.mktemp("et") / "m_int8.pte",
                           ConvertOptions())


def test_registry_facts(backend):
    assert backend.suffix == ".pte" and backend.precisions == ("fp32", "int8")
    assert backend_for_path(Path("m.pte")) is backend and backend_named_by(Path("model_int8.pte")) is backend


def test_fp32_matches_source_and_is_one_xnnpack_partition(fp32, backend, calibration, reference):
    assert fp32.path.is_file() and fp32.input.shape == (1, 3, 96, 96) and fp32.input.dtype == "float32"
    p = compare(reference, backend.load(fp32, threads=1).run(calibration.images))
    assert p.max_abs_diff < 1e-4 * max(1.0, p.reference_max_abs / 10) and p.top1_agreement == 1.0
    d = fp32.details
    assert d["xnnpack_partitions"] == 1 and d["ops_outside_xnnpack"] == {} and d["quantize_ops"] == 0
    assert d["ops"]["aten.convolution.default"] == 52  # MobileNetV2: every convolution delegated
    assert backend.stored_precision(fp32.path) == "fp32"


def test_int8_is_quantized_and_close(int8, backend, calibration, reference):
    d = int8.details
    assert d["xnnpack_partitions"] == 1 and d["ops_outside_xnnpack"] == {}
    assert d["quantize_ops"] > 100 and d["float_weighted_ops"] == 0
    assert d["calibration_method"] == "minmax" and d["calibration_images"] == len(calibration)
    p = compare(reference, backend.load(int8).run(calibration.images))
    assert 8 < p.sqnr_db < 60  # quantized: close, not bit-exact (random weights: low SQNR)
    assert backend.stored_precision(int8.path) == "int8"


def test_int8_smaller_than_fp32(int8, fp32):
    assert int8.size_bytes < 0.45 * fp32.size_bytes


def test_placement_all_on_xnnpack(fp32, int8, backend):
    for artifact in (fp32, int8):
        placement = backend.placement(artifact.path)
        assert placement.partitions == 1 and placement.accelerated == placement.total > 50
        assert placement.verdict().startswith(f"all {placement.total} ops on XNNPACK")
    ops = {op.op for op in backend.placement(int8.path).ops}
    assert any("Conv2d" in op for op in ops), ops  # XNNPACK's own node names


def test_unknown_float_layer_is_an_input_error(tmp_path, backend, source, calibration):
    with pytest.raises(InputError):
        backend.convert(source, "int8", calibration, tmp_path / "x.pte",
                        ConvertOptions(float_layers=("features.99",)))
    assert not (tmp_path / "x.pte").exists()


def test_bad_requests_are_input_errors(tmp_path, backend, source, calibration):
    with pytest.raises(InputError, match="needs calibration"):
        backend.convert(source, "int8", None, tmp_path / "q.pte", ConvertOptions())
    with pytest.raises(InputError, match="does not build fp16"):
        backend.convert(source, "fp16", None, tmp_path / "h.pte", ConvertOptions())
    with pytest.raises(InputError, match="NCHW"):
        backend.convert(source, "fp32", None, tmp_path / "n.pte", ConvertOptions(layout="NHWC"))
    calibration.method = "entropy"
    try:
        with pytest.raises(InputError, match="cannot calibrate with 'entropy'"):
            backend.convert(source, "int8", calibration, tmp_path / "q.pte", ConvertOptions())
    finally:
        calibration.method = "minmax"
    assert not list(tmp_path.iterdir())


def test_a_failed_build_keeps_the_previous_file(tmp_path, backend, source, calibration, fp32):
    out = tmp_path / "m.pte"
    out.write_bytes(fp32.path.read_bytes())
    with pytest.raises(InputError):
        backend.convert(source, "int8", calibration, out, ConvertOptions(float_layers=("nope",)))
    assert out.read_bytes() == fp32.path.read_bytes()


def test_onnx_source_is_refused(tmp_path, backend, source):
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    onnx = get_backend("onnxruntime").convert(source, "fp32", None, tmp_path / "m.onnx", ConvertOptions())
    with pytest.raises(InputError, match="ONNX-only"):
        backend.convert(ModelSource.from_onnx(onnx.path), "fp32", None, tmp_path / "m.pte", ConvertOptions())


def test_not_a_program(tmp_path, backend):
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"not a program")
    with pytest.raises(InputError, match="ExecuTorch cannot load bad.pte"):
        backend.load(bad)
    with pytest.raises(InputError, match="cannot read ExecuTorch program bad.pte"):
        backend.placement(bad)


def test_sessions_with_different_threads_alternate(fp32, backend, calibration):
    """ExecuTorch has one thread pool per process; a program loaded before a resize would abort
    the process when run: each session reloads on the pool size it asked for."""
    one, two = backend.load(fp32, threads=1), backend.load(fp32, threads=2)
    images = calibration.images[:3]
    a, b, c = one.run(images), two.run(images), one.run(images)
    assert one.runtime.details["threads"] == 1 and two.runtime.details["threads"] == 2
    assert np.allclose(a, b, atol=1e-5) and np.array_equal(a, c)


def test_missing_runtime_names_the_extra(monkeypatch, backend):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("executorch"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    from edgekit.backends import executorch_session

    monkeypatch.setattr(executorch_session, "_LIB", None)  # imported once per process
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgekit\[executorch\]'"):
        backend.require()


def _runner(config: dict) -> tuple[int, dict]:
    out = subprocess.run([sys.executable, str(RUNNER), json.dumps(config)], capture_output=True, text=True,
                         timeout=300)
    return out.returncode, json.loads(out.stdout.strip().splitlines()[-1])


def test_standalone_runner_runs_pte(fp32, tmp_path, backend, calibration):
    session = backend.load(fp32)
    inputs = np.stack([session.prepare(x) for x in calibration.images[:4]])
    np.save(tmp_path / "in.npy", inputs)
    code, result = _runner({"artifact": str(fp32.path), "threads": 1, "inputs": str(tmp_path / "in.npy"),
                            "outputs": str(tmp_path / "out.npy")})
    assert code == 0, result
    assert result["runtime"]["name"] == "executorch" and result["runtime"]["details"]["threads"] == 1
    raw = np.load(tmp_path / "out.npy")
    assert np.allclose(raw.reshape(4, -1), session.run(calibration.images[:4]), atol=1e-5)
    code, result = _runner({"artifact": str(fp32.path), "threads": 2, "iterations": 5, "per_op": True})
    assert code == 0 and result["n"] == 5 and result["latency_ms"]["p50"] > 0
    assert result["per_op"] is None and "event tracer" in result["per_op_note"]


def test_standalone_runner_bad_pte(tmp_path):
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"junk")
    code, result = _runner({"artifact": str(bad)})
    assert code == 2 and result["kind"] == "invalid_model"
    assert result["error"].startswith("bad.pte is not a valid ExecuTorch program")


def test_real_weights_fp32_parity_and_int8_agreement(tmp_path, backend):
    """Imported MobileNetV2 (Google's weights): fp32 within 1e-4, int8 top-1 agreement on real photos.
    Plain rounding and 64 calibration images here (convert's weight preparation: 99.2% and 24 dB
    on all 500 photos); the stock quantizer's ReLU6 (sharing the convolution's observer) gave 12 dB."""
    from edgekit.calibration import load_calibration

    photos = shared_path("imagenet-sample")
    source = ModelSource.from_module(load_model("mobilenet_v2"))
    calibration = load_calibration(photos, source.meta.preprocessing, size=64, method="percentile")
    images = load_calibration(photos, source.meta.preprocessing, size=100, seed=1).images
    reference = source.reference(images)
    fp32 = backend.convert(source, "fp32", None, tmp_path / "v2_fp32.pte", ConvertOptions())
    p = compare(reference, backend.load(fp32).run(images))
    assert p.max_abs_diff <= 1e-4 * max(1.0, p.reference_max_abs / 10) and p.top1_agreement == 1.0
    int8 = backend.convert(source, "int8", calibration, tmp_path / "v2_int8.pte", ConvertOptions())
    q = compare(reference, backend.load(int8).run(images))
    assert q.top1_agreement >= 0.9 and q.sqnr_db > 15, q


def test_float_layer_behind_a_same_pad(tmp_path, backend):
    """Imported MobileNetV3-Small (TF-'SAME' pads) with a stride-2 depthwise layer float: its pad
    stays on the int8 grid, the float convolution reads it through a dequantize (an unannotated
    pad was made int8 by XNNPACK and the float convolution failed to serialize)."""
    from edgekit.calibration import load_calibration

    source = ModelSource.from_module(load_model("mobilenet_v3_small", resolution=96))
    calibration = load_calibration(None, source.meta.preprocessing, method="percentile")
    art = backend.convert(source, "int8", calibration, tmp_path / "mixed.pte",
                          ConvertOptions(float_layers=("features.4.block.1",)))
    d = art.details
    assert d["float_weighted_ops"] == 1 and d["ops"]["aten.constant_pad_nd.default"] == 12
    assert d["xnnpack_partitions"] == 1 and d["ops_outside_xnnpack"] == {}
    p = compare(source.reference(calibration.images), backend.load(art).run(calibration.images))
    assert p.sqnr_db > 5, p  # all-int8 V3-Small at 96 px on these 13 photos: 7.0 dB; this build 7.4
