"""TFLite backend: litert-torch conversion (fp32 / fp16 / full-integer int8) and LiteRT sessions."""
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.backends.base import ConvertOptions, backend_for_path, get_backend, list_backends
from edgekit.calibration import CalibrationSet, load_calibration
from edgekit.errors import InputError, MissingDependencyError
from edgekit.models.loading import load_model
from edgekit.parity import compare
from edgekit.source import ModelSource

pytest.importorskip("ai_edge_litert", reason="needs the 'tflite' extra")
pytest.importorskip("litert_torch", reason="needs the 'tflite' extra")

from edgekit.backends.tflite_flatbuffer import set_io_dtype  # noqa: E402
from edgekit.backends.tflite_quantizer import CALIBRATION_METHODS  # noqa: E402
from edgekit.backends.tflite_session import op_counts, ops_details, xnnpack_partitions  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NHWC_INT8 = ConvertOptions(layout="NHWC", io_dtype="int8")
# What a full-integer MobileNetV2 (torchvision layout, symmetric padding) is made of: the 5 PADs
# are the stride-2 3x3 convolutions (PyTorch pads 1 pixel on every side, TFLite's SAME pads 0
# before / 1 after); they are int8, inside the one XNNPACK partition, which folds them into the
# convolutions. Imported TensorFlow weights (TF-SAME padding) give no PAD at all: see
# same_padding.py. The classifier is one FULLY_CONNECTED on MEAN's 2-D output, so no RESHAPE.
V2_INT8_OPS = {"PAD": 5, "CONV_2D": 35, "DEPTHWISE_CONV_2D": 17, "ADD": 10, "MEAN": 1,
               "FULLY_CONNECTED": 1}
V2_TF_INT8_OPS = {"CONV_2D": 35, "DEPTHWISE_CONV_2D": 17, "ADD": 10, "MEAN": 1, "FULLY_CONNECTED": 1}
NOT_WANTED = ("TRANSPOSE", "QUANTIZE", "DEQUANTIZE", "HARD_SWISH")


def _nhwc_input(module):
    """``module`` taking NHWC input, as the backend converts an NHWC build (a permute first)."""
    import torch

    class NHWC(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, x):
            return self.inner(x.permute(0, 3, 1, 2).contiguous())

    return NHWC().eval()


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (../shared/data is only on development machines and CI)")
    return path


@pytest.fixture(scope="module")
def backend():
    return get_backend("tflite")


@pytest.fixture(scope="module")
def small():
    """MobileNetV2 0.35 at 96x96: the same op structure as the full model, ~10x cheaper."""
    return ModelSource.from_module(load_model("mobilenet_v2", width=0.35, resolution=96, weights="random"))


@pytest.fixture(scope="module")
def source(small):  # what conftest's calibration/reference fixtures build on
    return small


@pytest.fixture(scope="module")
def fp32(backend, small, tmp_path_factory):
    return backend.convert(small, "fp32", None, tmp_path_factory.mktemp("tfl") / "m_fp32.tflite",
                           ConvertOptions(layout="NHWC"))


@pytest.fixture(scope="module")
def int8(backend, small, calibration, tmp_path_factory):
    return backend.convert(small, "int8", calibration,
                           tmp_path_factory.mktemp("tfl") / "m_int8.tflite", NHWC_INT8)


def test_registered_as_a_tflite_file_runner(backend):
    assert "tflite" in list_backends()
    assert backend.suffix == ".tflite" and backend.precisions == ("fp32", "fp16", "int8")
    assert backend.extra == "tflite"
    assert backend_for_path(Path("anything.tflite")) is backend


def test_fp32_matches_source(backend, fp32, calibration, reference):
    assert fp32.input.shape == (1, 96, 96, 3) and fp32.input.layout == "NHWC"
    assert fp32.input.dtype == "float32" and fp32.input.scale is None
    assert fp32.details["xnnpack_partitions"] == 1 and fp32.details["ops_outside_xnnpack"] == []
    session = backend.load(fp32, threads=1)
    assert session.runtime.name == "ai-edge-litert" and session.runtime.details["xnnpack"] is True
    p = compare(reference, session.run(calibration.images))
    # measured: max abs diff ~1.1e-4 on logits up to ~9 (XNNPACK's fp32 summation order)
    assert p.max_abs_diff <= 1e-4 * max(1.0, p.reference_max_abs)
    assert p.top1_agreement == 1.0


def test_int8_is_fully_integer(backend, int8, calibration, reference):
    d = int8.details
    assert d["fully_integer"] and d["float_ops"] == []
    assert d["ops"] == V2_INT8_OPS  # same structure as the full-size model
    assert d["xnnpack_partitions"] == 1 and d["ops_outside_xnnpack"] == []
    assert d["io_dtype"] == "int8" and d["calibration_method"] == "minmax"
    assert d["calibration_images"] == len(calibration)
    assert int8.input.dtype == "int8" and int8.input.layout == "NHWC"
    assert int8.input.scale > 0 and -128 <= int8.input.zero_point <= 127
    assert int8.size_bytes < 0.5 * (sum(p.numel() for p in load_model(
        "mobilenet_v2", width=0.35, resolution=96, weights="random").parameters()) * 4)
    session = backend.load(int8)
    assert session.output.dtype == "int8" and session.output.scale > 0
    p = compare(reference, session.run(calibration.images))
    assert p.n_images == len(calibration) and np.isfinite(p.sqnr_db)
    # Random-ish weights: top-1 agreement means little; 13 minmax images, width 0.35 at 96 px:
    # measured ~12 dB (the full V2 at 224 gets ~19 dB).
    assert 9 < p.sqnr_db < 60


@pytest.mark.parametrize("io_dtype", ["uint8", "float32"])
def test_io_dtype_wraps_the_integer_body(backend, int8, calibration, tmp_path, io_dtype):
    path = tmp_path / f"m_{io_dtype}.tflite"
    path.write_bytes(set_io_dtype(int8.path.read_bytes(), io_dtype))
    ops = op_counts(path)
    base = backend.load(int8)
    session = backend.load(path)
    assert session.input.dtype == io_dtype and session.output.dtype == io_dtype
    if io_dtype == "uint8":
        assert ops["QUANTIZE"] == 2 and "DEQUANTIZE" not in ops
        assert session.input.scale == pytest.approx(base.input.scale)
        assert session.input.zero_point == base.input.zero_point + 128
        # uint8 <-> int8 with the same scale is an exact shift: identical results
        assert np.array_equal(session.run(calibration.images), base.run(calibration.images))
    else:
        assert ops["QUANTIZE"] == 1 and ops["DEQUANTIZE"] == 1
        step = base.output.scale
        assert np.abs(session.run(calibration.images) - base.run(calibration.images)).max() <= 2 * step
    assert xnnpack_partitions(path) == 1


def test_session_quantizes_and_dequantizes(backend, int8, calibration):
    session = backend.load(int8)
    native = session.prepare(calibration.images[0])
    assert native.dtype == np.int8 and native.shape == (1, 96, 96, 3)
    raw = session.infer(native)
    assert raw.dtype == np.int8
    logits = session.finish(raw)
    assert logits.dtype == np.float32 and logits.shape == (1000,)
    expected = (raw.astype(np.float32).reshape(-1) - session.output.zero_point) * session.output.scale
    assert np.allclose(logits, expected)


def test_details_are_json(int8, fp32):
    json.dumps(int8.details)
    json.dumps(fp32.details)


def test_onnx_only_source_is_rejected(backend, small, tmp_path):
    user = ModelSource(meta=small.meta, onnx_path=tmp_path / "user.onnx")
    with pytest.raises(InputError, match="needs a PyTorch model"):
        backend.convert(user, "fp32", None, tmp_path / "m.tflite", ConvertOptions())
    assert not (tmp_path / "m.tflite").exists()


def test_unsupported_calibration_method_names_the_supported_ones(backend, small, calibration, tmp_path):
    entropy = CalibrationSet(calibration.images, calibration.files, calibration.source, method="entropy")
    with pytest.raises(InputError, match="cannot calibrate with 'entropy'") as exc:
        backend.convert(small, "int8", entropy, tmp_path / "q.tflite", NHWC_INT8)
    assert all(m in str(exc.value) for m in CALIBRATION_METHODS)
    assert not (tmp_path / "q.tflite").exists()


def test_bad_requests(backend, small, tmp_path):
    with pytest.raises(InputError, match="needs calibration"):
        backend.convert(small, "int8", None, tmp_path / "q.tflite", NHWC_INT8)
    with pytest.raises(InputError, match="does not build int4"):
        backend.convert(small, "int4", None, tmp_path / "q.tflite", NHWC_INT8)
    with pytest.raises(InputError, match="io_dtype"):
        backend.convert(small, "int8", load_calibration(None, small.meta.preprocessing, size=1),
                        tmp_path / "q.tflite", ConvertOptions(io_dtype="int16"))


def test_missing_runtime_names_the_extra(backend, int8, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    assert not backend.available()
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgekit\[tflite\]'"):
        backend.load(int8)


def test_unreadable_file(backend, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(InputError, match="cannot load TFLite model"):
        backend.load(bad)


def test_op_helpers_on_googles_files():
    quant = shared_file("models", "mobilenet_v2_1.0_224_quant.tflite")
    assert op_counts(quant) == {"CONV_2D": 36, "DEPTHWISE_CONV_2D": 17, "ADD": 10,
                                "AVERAGE_POOL_2D": 1, "RESHAPE": 1, "SOFTMAX": 1}
    ptq = shared_file("models", "tf2_mobilenet_v2_1.0_224_ptq.tflite")
    assert xnnpack_partitions(ptq) == 1
    assert get_backend("tflite").describe(ptq).precision == "int8"


def test_describe_reads_precision_from_the_weights(backend, small, fp32, int8, tmp_path):
    """A file edgekit did not name (a user's own, Google's): its precision is read from it."""
    fp16 = backend.convert(small, "fp16", None, tmp_path / "m.tflite", ConvertOptions(layout="NHWC"))
    assert [backend.describe(a.path).precision for a in (fp32, fp16, int8)] == ["fp32", "fp16", "int8"]


def test_fp16_weights(backend, small, fp32, calibration, reference, tmp_path):
    art = backend.convert(small, "fp16", None, tmp_path / "m_fp16.tflite", ConvertOptions(layout="NHWC"))
    assert art.details["ops"]["DEQUANTIZE"] == 53  # one float16 -> float32 per conv/FC weight
    assert art.input.dtype == "float32" and art.details["xnnpack_partitions"] == 1
    assert 0.45 < art.size_bytes / fp32.size_bytes < 0.6
    p = compare(reference, backend.load(art).run(calibration.images))
    assert p.top1_agreement >= 0.99 and p.sqnr_db > 30  # measured ~37 dB
    # per-op timing keeps each conv's DEQUANTIZE with it: static weights, in XNNPACK as in the model
    from edgekit.bench import runner

    result = runner.run({"artifact": str(art.path), "threads": 1, "iterations": 2, "per_op": True,
                         "per_op_runs": 2})
    assert len(result["per_op"]) == sum(art.details["ops"].values()) - 53
    assert {op["exec_type"] for op in result["per_op"]} == {"XNNPACK"}
    assert "53 op(s) that only prepare weights (DEQUANTIZE)" in result["per_op_note"]


@pytest.mark.slow
def test_nchw_layout(backend, small, calibration, reference, tmp_path):
    art = backend.convert(small, "fp32", None, tmp_path / "m.tflite", ConvertOptions(layout="NCHW"))
    assert art.input.shape == (1, 3, 96, 96) and art.input.layout == "NCHW"
    p = compare(reference, backend.load(art).run(calibration.images))
    assert p.max_abs_diff <= 1e-4 * max(1.0, p.reference_max_abs)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["percentile", "histogram", "mean_minmax"])
def test_other_calibration_methods(backend, small, calibration, reference, tmp_path, method):
    few = CalibrationSet(calibration.images[:4], calibration.files[:4], calibration.source,
                         method=method, options={"percentile": 99.99} if method == "percentile" else {})
    art = backend.convert(small, "int8", few, tmp_path / "q.tflite", NHWC_INT8)
    assert art.details["calibration_method"] == method and art.details["fully_integer"]
    assert compare(reference, backend.load(art).run(calibration.images)).sqnr_db > 8


@pytest.mark.slow
def test_mobilenet_v2_int8_op_set_regression(backend, tmp_path):
    """MobileNetV2 1.0 at 224: the fast int8 graph (see ../shared/ENVIRONMENT.md)."""
    source = ModelSource.from_module(load_model("mobilenet_v2", weights="random"))
    calibration = load_calibration(None, source.meta.preprocessing)
    art = backend.convert(source, "int8", calibration, tmp_path / "v2.tflite", NHWC_INT8)
    assert art.details["ops"] == V2_INT8_OPS
    assert not set(NOT_WANTED) & set(art.details["ops"])
    assert art.details["fully_integer"]
    assert art.details["xnnpack_partitions"] == 1 and art.details["ops_outside_xnnpack"] == []
    session = backend.load(art, threads=2)
    assert session.runtime.details["delegate_partitions"] == 1
    assert session.input.dtype == session.output.dtype == "int8"
    p = compare(source.reference(calibration.images), session.run(calibration.images))
    assert p.sqnr_db > 15  # measured ~19 dB with 13 minmax images


@pytest.mark.slow
def test_mobilenet_v3_small_int8_has_no_hard_swish(backend, tmp_path):
    source = ModelSource.from_module(load_model("mobilenet_v3_small", resolution=128, weights="random"))
    calibration = load_calibration(None, source.meta.preprocessing)
    art = backend.convert(source, "int8", calibration, tmp_path / "v3s.tflite", NHWC_INT8)
    ops = art.details["ops"]
    assert "HARD_SWISH" not in ops and "DEQUANTIZE" not in ops and "QUANTIZE" not in ops
    assert art.details["fully_integer"] and art.details["float_ops"] == []
    assert art.details["xnnpack_partitions"] == 1
    p = compare(source.reference(calibration.images), backend.load(art).run(calibration.images))
    assert p.sqnr_db > 8


@pytest.mark.slow
def test_tf_same_padding_folds_into_same_convolutions(backend, tmp_path):
    """TF-SAME weights (imported from TensorFlow) give the graph Google's files have: every pad,
    the 5x5 stride-2 ones too, becomes a SAME convolution — no PAD, no TRANSPOSE."""
    from edgekit.models import create
    from edgekit.models.loading import randomize_statistics

    model = create("mobilenet_v3_small", resolution=128, padding="tf_same")
    randomize_statistics(model)
    source = ModelSource.from_module(model.eval())
    calibration = load_calibration(None, source.meta.preprocessing)
    art = backend.convert(source, "int8", calibration, tmp_path / "v3s.tflite", NHWC_INT8)
    ops = art.details["ops"]
    assert "PAD" not in ops and not set(NOT_WANTED) & set(ops), ops
    assert art.details["xnnpack_partitions"] == 1 and art.details["fully_integer"]
    p = compare(source.reference(calibration.images), backend.load(art).run(calibration.images))
    assert p.sqnr_db > 8


@pytest.mark.slow
def test_imported_tf_weights_int8_keeps_accuracy(backend, tmp_path):
    """Real (TF-SAME padded) weights: the int8 artifact agrees with its float model. This caught
    ReLU6 outputs quantized with the conv's pre-activation range (logits at -7 dB SQNR)."""
    from edgekit.calibration import load_calibration
    from edgekit.models.importers import import_tflite
    from edgekit.parity import compare

    model = import_tflite(shared_file("models", "mobilenet_v2_1.0_224_quant.tflite"), "mobilenet_v2")
    source = ModelSource.from_module(model)
    photos = load_calibration(shared_file("imagenet-sample"), model.meta.preprocessing, 60)
    calib = photos.images[:30]
    art = backend.convert(source, "int8", dataclasses.replace(photos, images=calib),
                          tmp_path / "v2.tflite", NHWC_INT8)
    assert art.details["ops"] == V2_TF_INT8_OPS and art.details["xnnpack_partitions"] == 1
    p = compare(source.reference(photos.images[30:]), backend.load(art).run(photos.images[30:]))
    assert p.top1_agreement >= 0.9 and p.sqnr_db > 12, p


def test_calibration_observes_each_shared_group_once():
    """The permute -> pad -> permute of a TF-SAME convolution shares its producer's observer:
    calibration skips those repeat calls (each a histogram of a whole activation) and puts them
    back for convert_pt2e. The input's own observer (after the NHWC permute) is kept."""
    import torch
    from torchao.quantization.pt2e import quantize_pt2e

    from edgekit.backends.same_padding import channels_last_padded
    from edgekit.backends.tflite_quantizer import (make_quantizer, observing_producers_only,
                                                   quantization_config, same_scale_ops)
    from edgekit.models import create

    model, _ = channels_last_padded(create("mobilenet_v2", resolution=64, width=0.35, padding="tf_same").eval())
    example = (torch.zeros(1, 64, 64, 3),)
    exported = torch.export.export(_nhwc_input(model), example, strict=True).module()
    calibration = CalibrationSet(np.zeros((1, 3, 64, 64), np.float32), [], "zeros", method="percentile")
    prepared = quantize_pt2e.prepare_pt2e(exported, make_quantizer(quantization_config(calibration)))
    before = [(n.name, n.target) for n in prepared.graph.nodes]
    with observing_producers_only(prepared):
        skipped = [n for n in prepared.graph.nodes if n.target == "_edgekit_skip_observer"]
        assert len(skipped) >= 3 * 4  # three calls around each of the stride-2 pads
        assert all(n.args[0].target in same_scale_ops() for n in skipped)
        first = next(n for n in prepared.graph.nodes if n.op == "call_module")
        assert first.target != "_edgekit_skip_observer"  # the first conv's input observer runs
        prepared(example[0])
    assert [(n.name, n.target) for n in prepared.graph.nodes] == before


def _observed_ranges(model, example, images, batch_size, method):
    """Every activation observer's (scale, zero point) after calibrating ``images``
    ``batch_size`` at a time."""
    import torch
    from torchao.quantization.pt2e import ObserverBase, quantize_pt2e

    from edgekit.backends.tflite_quantizer import make_quantizer, quantization_config

    config = quantization_config(CalibrationSet(images, [], "test", method=method))
    if batch_size == 1:
        exported = torch.export.export(model, example, strict=True).module()
    else:
        from edgekit.backends.tflite_quantizer import export_for_calibration

        exported, batch_size = export_for_calibration(model, example)
    prepared = quantize_pt2e.prepare_pt2e(exported, make_quantizer(config))
    x = torch.from_numpy(images)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            prepared(x[start:start + batch_size])
    return {name: tuple(float(v) for v in m.calculate_qparams()) for name, m in prepared.named_modules()
            if isinstance(m, ObserverBase) and m.min_val.numel() == 1}


@pytest.mark.parametrize("method", ["minmax", "mean_minmax", "percentile"])
def test_batched_calibration_observes_what_image_by_image_does(small, calibration, method):
    """The int8 build calibrates 32 images per call (dynamic-batch export); each observer ends
    with the quantization the image-by-image loop gives (mean_minmax: still a mean over images;
    percentile: exact tails of all values either way)."""
    import torch

    model = small.module.eval()
    example = (torch.zeros(1, *small.input_shape[1:]),)
    images = np.asarray(calibration.images[:40], np.float32)  # 32 + 8: a partial last batch
    one = _observed_ranges(model, example, images, 1, method)
    batched = _observed_ranges(model, example, images, 32, method)
    assert one.keys() == batched.keys() and len(one) > 50
    for name, (lo, hi) in one.items():
        assert batched[name] == pytest.approx((lo, hi), rel=1e-4, abs=1e-6), name


def test_batch_specialised_model_calibrates_image_by_image(backend, calibration, tmp_path):
    """A model that hard-codes batch 1 (view(1, -1)) cannot be exported with a dynamic batch:
    it is calibrated one image at a time and still converts to a working int8 model."""
    import torch

    from edgekit.backends.tflite_quantizer import export_for_calibration

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(self.conv(x).relu().mean((2, 3)).view(1, -1))

    model = Fixed().eval()
    _, batch = export_for_calibration(model, (torch.zeros(1, 3, 32, 32),))
    assert batch == 1
    images = np.ascontiguousarray(np.asarray(calibration.images[:8], np.float32)[:, :, :32, :32])
    art = backend.convert(ModelSource.from_module(model, resolution=32), "int8",
                          CalibrationSet(images, [], "test", method="minmax"), tmp_path / "fixed.tflite",
                          ConvertOptions(io_dtype="float32"))
    with torch.no_grad():
        expected = np.concatenate([model(torch.from_numpy(i[None])).numpy() for i in images])
    got = backend.load(art).run(images)
    assert got.shape == (8, 4) and compare(expected, got).sqnr_db > 15


def _observed_ops(exported) -> list[tuple[str, tuple[bool, ...], bool]]:
    """Each op of a PT2E-prepared graph, in order: whether each tensor input comes through an
    observer, and whether its output goes to one."""
    import torch
    from torchao.quantization.pt2e import ObserverBase, quantize_pt2e

    from edgekit.backends.tflite_quantizer import make_quantizer, quantization_config

    images = np.zeros((1, 3, 8, 8), np.float32)
    config = quantization_config(CalibrationSet(images, [], "zeros", method="minmax"))
    prepared = quantize_pt2e.prepare_pt2e(exported, make_quantizer(config))

    def observer(node):
        return getattr(node, "op", None) == "call_module" and \
            isinstance(prepared.get_submodule(node.target), ObserverBase)

    return [(str(n.target), tuple(observer(a) for a in n.args if isinstance(a, torch.fx.Node)),
             any(observer(u) for u in n.users)) for n in prepared.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_small"])
def test_calibration_export_is_quantized_as_a_strict_export(arch):
    """The int8 build exports non-strict (~2.5x faster) and marks the tensor adds itself: every
    op's inputs and output are observed exactly as after a strict (dynamo) export — residual
    ADDs included, which without the marks read one input unquantized (and stay float)."""
    import torch

    from edgekit.backends.same_padding import channels_last_padded
    from edgekit.backends.tflite_quantizer import export_for_calibration
    from edgekit.models import create

    model, _ = channels_last_padded(create(arch, resolution=64, width=0.35, padding="tf_same").eval())
    model = _nhwc_input(model)
    example = (torch.zeros(1, 64, 64, 3),)
    ours = _observed_ops(export_for_calibration(model, example)[0])
    assert ours == _observed_ops(torch.export.export(model, example, strict=True).module())
    adds = [inputs for target, inputs, _ in ours if target == "aten.add.Tensor"]
    assert adds and all(all(inputs) for inputs in adds)
    if arch == "mobilenet_v2":  # (V3's unmarked hard-swish adds do not even prepare)
        unmarked = _observed_ops(torch.export.export(model, example, strict=False).module())
        assert not all(all(inputs) for target, inputs, _ in unmarked if target == "aten.add.Tensor")


def test_per_op_times_every_op_alone(int8):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgekit.bench import runner

    plain = Interpreter(model_path=str(int8.path),
                        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    graph_ops = [op["op_name"] for op in ops_details(plain)]
    result = runner.run({"artifact": str(int8.path), "threads": 1, "iterations": 3, "warmup": 1,
                         "per_op": True, "per_op_runs": 5})
    assert [op["type"] for op in result["per_op"]] == graph_ops  # every op, in graph order
    assert {op["exec_type"] for op in result["per_op"]} == {"XNNPACK"}  # as in the whole model
    assert all(op["time_us"] > 0 for op in result["per_op"])
    assert result["per_op"][0]["name"] == "#0 1x96x96x3 -> 1x98x98x3"  # PyTorch's padding
    assert "timed alone" in result["per_op_note"]


def test_per_op_that_cannot_split_keeps_the_benchmark(int8, monkeypatch):
    from edgekit.bench import runner

    def broken(path):
        raise ValueError("unexpected flatbuffer")

    monkeypatch.setattr(runner, "split_ops", broken)
    result = runner.run({"artifact": str(int8.path), "threads": 1, "iterations": 3, "per_op": True})
    assert result["n"] == 3 and result["latency_ms"]["p50"] > 0  # the timing survives
    assert result["per_op"] is None
    assert result["per_op_note"] == "could not split the model into ops: ValueError: unexpected flatbuffer"


def test_one_op_model_reproduces_the_op_in_the_graph(int8):
    """Each one-op model, fed what the op gets inside the whole model, gives what the op gives
    there: same weights, quantization and options (checked without delegates, bit for bit)."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    from edgekit.bench.runner import one_op_model

    plain = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    whole = Interpreter(model_path=str(int8.path), experimental_op_resolver_type=plain,
                        experimental_preserve_all_tensors=True)
    whole.allocate_tensors()
    x = whole.get_input_details()[0]
    whole.set_tensor(x["index"], np.random.default_rng(1).integers(-128, 127, x["shape"], dtype=np.int8))
    whole.invoke()
    model = fbu.read_model_from_bytearray(bytearray(int8.path.read_bytes()))
    ops = model.subgraphs[0].operators
    kinds = [op["op_name"] for op in ops_details(whole)]
    picked = [kinds.index(k) for k in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED")]
    for k in picked:
        alone = Interpreter(model_content=bytes(fbu.convert_object_to_bytearray(
            one_op_model(fb, model, ops[k]))), experimental_op_resolver_type=plain)
        alone.allocate_tensors()
        buffers = [model.buffers[model.subgraphs[0].tensors[i].buffer].data for i in ops[k].inputs]
        feeds = [i for i, b in zip(ops[k].inputs, buffers) if i >= 0 and (b is None or not len(b))]
        for detail, index in zip(alone.get_input_details(), feeds):
            alone.set_tensor(detail["index"], whole.get_tensor(index))
        alone.invoke()
        got = alone.get_tensor(alone.get_output_details()[0]["index"])
        np.testing.assert_array_equal(got, whole.get_tensor(ops[k].outputs[0]), err_msg=kinds[k])
