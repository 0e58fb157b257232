"""OpenVINO: IR (.xml + .bin) in fp32, fp16 (compressed weights) or int8 (NNCF post-training
quantization of the converted ov.Model), run on the CPU plugin.

Conversion goes through ONNX (``export_onnx``): ``ov.convert_model`` takes 0.8 s from ONNX against
9 s from an nn.Module, and NNCF quantizes the ov.Model in seconds (never the torch module: NNCF
compiles a C++ extension for minutes the first time).

int8 choices (NNCF presets, ``ConvertOptions.activation_type``):
  * "int8"  -> ``QuantizationPreset.PERFORMANCE``: symmetric activations, no zero point. NNCF
    makes a quantizer unsigned (0..255) when its input is non-negative (after ReLU6) and signed
    otherwise, so "int8" here means "symmetric" rather than "signed everywhere".
  * "uint8" -> ``QuantizationPreset.MIXED``: asymmetric activations (u8 with a zero point), the
    analogue of ONNX Runtime's U8 activations.
  Both presets quantize weights symmetrically to int8 (per-channel unless ``per_channel=False``),
  so ``weight_type="uint8"`` is refused, as are quantized I/O (``io_dtype``) and NHWC layout: the
  IR keeps float32 NCHW input and output and quantizes inside (FakeQuantize ops).

Calibration methods (the range estimator for activations; weights always use their min/max).
NNCF quantizes most activations per tensor but the inputs of depthwise convolutions per channel
(seen with target_device ANY, the default kept here); a range estimator given by the user applies
to both kinds:
  * "minmax"      global min / max over all images (RangeEstimatorParametersSet.MINMAX; the same
                  statistic as ONNX Runtime's MinMax), every activation quantizer.
  * "mean_minmax" NNCF's own default, left unset: per-tensor quantizers average the per-image
                  min / max (MEAN_MINMAX), per-channel ones take the global min / max. (Passing
                  MEAN_MINMAX explicitly would average the per-channel ranges too: measured on
                  MobileNetV2 with real weights, 100 photos, 67% top-1 agreement against 93.5%.)
  * "percentile"  each image's (percentile, 100 - percentile) quantiles, then their max / min over
                  the images (QUANTILE statistics, MAX / MIN aggregators), option ``percentile``
                  (default 99.999): trims per-image outliers without averaging ranges down.
                  ONNX Runtime's Percentile takes the quantile of one histogram of all images
                  instead, so the same number gives different ranges in the two backends.
  Anything else raises InputError; nothing is substituted silently. ("entropy" has no NNCF
  equivalent; NNCF's HISTOGRAM estimator is left out because it falls back to MINMAX, with only a
  warning, on the per-channel quantizers.)

Mixed precision (``ConvertOptions.float_layers``): the ops of those PyTorch modules go to NNCF as
an ``IgnoredScope`` by name, so they get no FakeQuantize on their inputs and compute in float.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConversionError, EdgekitError, InputError, MissingDependencyError, first_line
from ..quiet import openvino_telemetry_off
from .base import (Artifact, Backend, ConvertOptions, RuntimeInfo, Session, TensorSpec, precision_of,
                   register_backend)
from .layer_names import onnx_layers, select
from .onnx_export import export_onnx
from .openvino_placement import openvino_placement
from .placement import Placement

if TYPE_CHECKING:  # annotations only: importing them loads torch
    from ..calibration import CalibrationSet
    from ..source import ModelSource

CALIBRATION_METHODS = ("minmax", "mean_minmax", "percentile")
DEFAULT_PERCENTILE = 99.999
DEVICE = "CPU"
_PLUMBING_OPS = {"Constant", "Parameter", "Result"}  # left out of the op counts

openvino_telemetry_off()  # before nncf or the converter is imported


@functools.lru_cache(maxsize=1)
def _core():
    import openvino as ov

    return ov.Core()


def _short_version() -> str:
    import openvino as ov

    return ov.__version__.split("-")[0]  # "2026.4.1-22982-e213a147257-releases/2026/4" -> "2026.4.1"


def _type_name(value: Any) -> Any:
    """ov.Type -> "f32" / "bf16"; enums -> their name; plain values unchanged."""
    if hasattr(value, "get_type_name"):
        return value.get_type_name()
    if hasattr(value, "name") and not isinstance(value, (str, int, float)):
        return value.name
    return value


def _input_spec(port) -> TensorSpec:
    shape = port.get_partial_shape()
    dims = tuple(d.get_length() if d.is_static else 1 for d in shape)
    dtype = str(port.get_element_type().to_dtype())
    layout = "NHWC" if len(dims) == 4 and dims[-1] == 3 and dims[1] != 3 else "NCHW"
    return TensorSpec(dims, dtype, layout)


def op_counts(model) -> dict[str, int]:
    """{op type: count} of an ov.Model, without Constant/Parameter/Result."""
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in _PLUMBING_OPS:
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def op_layers(model, onnx_path: Path) -> dict[str, str | None]:
    """{friendly name: layer (layer_names)} of the ops of an ov.Model converted from ``onnx_path``.

    OpenVINO names an op after its ONNX node, with a suffix on the pieces it splits a node into
    (a Conv with bias becomes ".../Conv/WithoutBiases" + the Add ".../Conv"). Ops its own passes
    fuse get generated names ("HSwish_6590") and the op making a model output takes the output's
    name ("logits"); those are traced back through their output tensor names, which mostly
    survive, to the ONNX node producing the tensor. A fused op left with neither (an HSwish
    inside a block) belongs with its producer, the convolution it follows.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    owner = onnx_layers(graph)
    producers = {out: node.name for node in graph.node if node.name for out in node.output}
    layers: dict[str, str | None] = {}
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        parts = name.split("/")
        prefixes = ("/".join(parts[:end]) for end in range(len(parts), 0, -1))
        node = next((p for p in prefixes if p in owner), None)
        if node is None:
            tensors = sorted(t for out in op.outputs() for t in out.get_names() if t in producers)
            node = producers[tensors[0]] if tensors else None
        if node is not None:
            layers[name] = owner[node]
            continue
        inputs = [port.get_source_output().get_node() for port in op.inputs()]
        data = [i.get_friendly_name() for i in inputs if i.get_type_name() not in _PLUMBING_OPS]
        layers[name] = layers.get(data[0]) if data else None
    return layers


def _float_op_names(model, onnx_path: Path, layers: tuple[str, ...]) -> list[str]:
    """The ops to keep float (NNCF ignored-scope names); InputError for a layer with no op."""
    computing = {op.get_friendly_name() for op in model.get_ordered_ops()
                 if op.get_type_name() not in _PLUMBING_OPS}
    owner = {name: layer for name, layer in op_layers(model, onnx_path).items() if name in computing}
    return sorted(select(owner, layers))


class OpenVINOSession(Session):
    """A compiled model with one reused infer request."""

    def __init__(self, path: Path, threads: int | None, inference_precision: str | None = "f32",
                 performance_hint: str = "LATENCY"):
        self.path = Path(path)
        try:
            self._model = _core().read_model(str(self.path))
        except Exception as exc:
            raise InputError(f"OpenVINO cannot read {self.path}: {first_line(exc)}") from exc
        self.config: dict[str, Any] = {"PERFORMANCE_HINT": performance_hint}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        if inference_precision:
            self.config["INFERENCE_PRECISION_HINT"] = inference_precision
        self.compiled = self._compile(self.config)
        self._request = self.compiled.create_infer_request()
        self.input = _input_spec(self.compiled.input(0))
        self.runtime = RuntimeInfo("openvino", _short_version(), {
            "device": DEVICE,
            "inference_precision": _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT")),
            "threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
            "performance_hint": _type_name(self.compiled.get_property("PERFORMANCE_HINT")),
            "streams": int(self.compiled.get_property("NUM_STREAMS")),
        })

    def _compile(self, config: dict):
        try:
            return _core().compile_model(self._model, DEVICE, config)
        except Exception as exc:
            raise InputError(f"OpenVINO cannot compile {self.path.name} for {DEVICE} with {config}: "
                             f"{first_line(exc)}") from exc

    def infer(self, native: np.ndarray) -> np.ndarray:
        return self._request.infer({0: native}, share_inputs=True)[0]  # outputs are copied


@register_backend
class OpenVINOBackend(Backend):
    corrects_bias = True  # nncf.quantize(fast_bias_correction=True)
    default_calibration_method = "mean_minmax"
    calibration_methods = CALIBRATION_METHODS
    name = "openvino"
    suffix = ".xml"
    sidecars = (".bin",)  # the weights
    precisions = ("fp32", "fp16", "int8")
    extra = "openvino"
    modules = ("openvino",)
    color = (44, 160, 44)
    description = "OpenVINO (CPU): IR fp32, fp16 weights, NNCF int8"
    accepts_onnx = True

    def runtime_info(self) -> RuntimeInfo:
        self.require()
        return RuntimeInfo("openvino", _short_version(), {"device": DEVICE})

    def convert(self, source: ModelSource, precision: str, calibration: CalibrationSet | None,
                out: Path, options: ConvertOptions) -> Artifact:
        self.require()
        import openvino as ov

        out = Path(out)
        if precision not in self.precisions:
            raise InputError(f"{self.name} does not build {precision} "
                             f"(choose from {', '.join(self.precisions)})")
        if out.suffix != self.suffix:
            raise InputError(f"an OpenVINO model is written as NAME.xml (+ NAME.bin), got {out.name}")
        if options.layout != "NCHW":
            raise InputError(f"{self.name} builds NCHW-input models only, not {options.layout}")
        quantize = None
        if precision == "int8":
            quantize = _quantizer(source, calibration, options)  # validates before any work
        with tempfile.TemporaryDirectory(prefix="edgekit-ov-") as tmp:
            onnx_path = export_onnx(source, Path(tmp) / "model.onnx", native_hard_activations=True)
            try:
                model = ov.convert_model(str(onnx_path))
            except Exception as exc:
                raise ConversionError(self.name, source.name, precision, exc) from exc
            float_ops = _float_op_names(model, onnx_path, options.float_layers) \
                if quantize is not None and options.float_layers else []
        details: dict[str, Any] = {}
        if quantize is not None:
            model, details["nncf"] = quantize(model, float_ops)
        compress = precision == "fp16"  # int8 weights are already int8; keep ranges exact
        details["compress_to_fp16"] = compress
        bin_path = _save_atomic(model, out, compress)
        saved = _core().read_model(str(out))
        details["ops"] = op_counts(saved)
        return Artifact(out, self.name, precision, _input_spec(saved.input(0)), [out, bin_path], details)

    def load(self, artifact: Artifact | Path, threads: int | None = None, *,
             inference_precision: str | None = "f32", performance_hint: str = "LATENCY") -> Session:
        """``inference_precision`` "f32" (default) for parity; None leaves the device default
        (bf16 on CPUs with avx512_bf16/AMX), which the session's runtime details then report."""
        self.require()
        path = artifact.path if isinstance(artifact, Artifact) else Path(artifact)
        if not path.is_file():
            raise InputError(f"model file not found: {path}")
        return OpenVINOSession(path, threads, inference_precision, performance_hint)

    def placement(self, path: Path) -> Placement:
        """As a deployment compiles it: the device's default inference precision."""
        session = self.load(path, inference_precision=None)
        return openvino_placement(Path(path), session.compiled, f"openvino {_short_version()} ({DEVICE})",
                                  _precision(session._model) == "int8")

    def describe(self, path: Path) -> Artifact:
        session = self.load(path)
        path = Path(path)
        files = [path] + ([path.with_suffix(".bin")] if path.with_suffix(".bin").is_file() else [])
        return Artifact(path, self.name, _precision(session._model), session.input, files,
                        {"ops": op_counts(session._model)})

    def stored_precision(self, path: Path) -> str:
        return _precision(self.load(path)._model)


def _precision(model) -> str:
    """int8 when the model holds FakeQuantize, fp16 when its weights are f16."""
    return precision_of(bool(op_counts(model).get("FakeQuantize")),
                        any(op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() == "f16"
                            for op in model.get_ordered_ops()))


def _save_atomic(model, out: Path, compress_to_fp16: bool) -> Path:
    """Save into a temp dir beside ``out``, then move the .bin and then the .xml into place."""
    import openvino as ov

    bin_path = out.with_suffix(".bin")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise InputError(f"cannot write to {out.parent}: {exc.strerror or exc}") from exc
    try:
        tmp_xml = tmp / out.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_to_fp16)
        os.replace(tmp_xml.with_suffix(".bin"), bin_path)
        os.replace(tmp_xml, out)
    except Exception as exc:
        raise EdgekitError(f"cannot save the OpenVINO model to {out}: {first_line(exc)}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return bin_path


def _range_estimator(method: str, options: dict):
    """(activations RangeEstimatorParameters or None for NNCF's default, details) for a method."""
    from nncf.quantization.range_estimator import (AggregatorType, RangeEstimatorParameters,
                                                   RangeEstimatorParametersSet,
                                                   StatisticsCollectorParameters, StatisticsType)

    if method == "minmax":
        return RangeEstimatorParametersSet.MINMAX, {"range_estimator": "MINMAX"}
    if method == "mean_minmax":
        return None, {"range_estimator": "NNCF default (MEAN_MINMAX per-tensor, MINMAX per-channel)"}
    if method == "percentile":
        percentile = float(options.get("percentile", DEFAULT_PERCENTILE))
        if not 50.0 < percentile < 100.0:
            raise InputError(f"percentile must be between 50 and 100 (exclusive), got {percentile:g}")
        prob = 1.0 - percentile / 100.0
        params = RangeEstimatorParameters(
            min=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MIN,
                                              quantile_outlier_prob=prob),
            max=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MAX,
                                              quantile_outlier_prob=prob))
        return params, {"range_estimator": "per-image QUANTILE, MIN/MAX over images",
                        "percentile": percentile}
    raise InputError(f"OpenVINO backend (NNCF) cannot calibrate with '{method}' "
                     f"(it supports {', '.join(CALIBRATION_METHODS)})")


def _quantizer(source: ModelSource, calibration: CalibrationSet | None, options: ConvertOptions):
    """Check everything int8 needs, then return
    ``(ov.Model, float op names) -> (quantized ov.Model, details)``."""
    try:
        import nncf
    except ImportError:
        raise MissingDependencyError("nncf", "openvino") from None
    from nncf.common.logging.logger import nncf_logger
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    if calibration is None or len(calibration) == 0:
        raise InputError("int8 conversion needs calibration images")
    expected = tuple(source.input_shape[1:])
    if tuple(calibration.images.shape[1:]) != expected:
        raise InputError(f"calibration images are {tuple(calibration.images.shape[1:])}, "
                         f"the model takes {expected}")
    presets = {"int8": nncf.QuantizationPreset.PERFORMANCE, "uint8": nncf.QuantizationPreset.MIXED}
    if options.activation_type not in presets:
        raise InputError(f"activation_type must be int8 or uint8, got {options.activation_type}")
    if options.weight_type != "int8":
        raise InputError("OpenVINO int8 weights are symmetric int8; weight_type "
                         f"'{options.weight_type}' is not supported")
    if options.io_dtype != "float32":
        raise InputError("OpenVINO int8 models keep float32 input and output (quantization is "
                         f"inside the model); io_dtype '{options.io_dtype}' is not supported")
    estimator, method_options = _range_estimator(calibration.method, calibration.options)
    preset = presets[options.activation_type]
    advanced = AdvancedQuantizationParameters()
    if estimator is not None:
        advanced.activations_range_estimator_params = estimator
    if not options.per_channel:
        advanced.weights_quantization_params = QuantizationParameters(per_channel=False)
    details = {
        "version": nncf.__version__, "preset": preset.value,
        "activation_type": options.activation_type, "weight_type": "int8",
        "per_channel": options.per_channel, "calibration_method": calibration.method,
        **method_options, "subset_size": len(calibration), "fast_bias_correction": True,
        "model_type": None, "target_device": nncf.TargetDevice.ANY.value,
    }
    if options.float_layers:
        details["float_layers"] = list(options.float_layers)

    def quantize(model, float_ops: list[str]):
        """``float_ops``: names of ops NNCF leaves unquantized (the float layers' ops)."""
        dataset = nncf.Dataset(calibration.images, lambda image: image[None])
        ignored = nncf.IgnoredScope(names=float_ops) if float_ops else None
        if float_ops:
            details["ignored_ops"] = len(float_ops)
        level = nncf_logger.level
        try:
            # NNCF draws progress bars on stdout; keep stdout clean for edgekit's own output. Its
            # logger writes to the original stdout, and lists every ignored op at INFO.
            nncf.set_log_level(logging.WARNING)
            with contextlib.redirect_stdout(sys.stderr):
                quantized = nncf.quantize(model, dataset, preset=preset, subset_size=len(calibration),
                                          fast_bias_correction=True, model_type=None,
                                          ignored_scope=ignored, advanced_parameters=advanced)
        except EdgekitError:
            raise
        except Exception as exc:
            raise ConversionError(OpenVINOBackend.name, source.name, "int8", f"NNCF: {first_line(exc)}") from exc
        finally:
            nncf.set_log_level(level)
        return quantized, details

    return quantize
