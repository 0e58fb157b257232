"""ONNX Runtime: ONNX export (fp32) and static QDQ int8 with per-channel weights."""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConversionError, EdgekitError, InputError, first_line
from ..fileio import atomic_path
from .layer_names import onnx_layers, select
from .base import (Artifact, Backend, ConvertOptions, RuntimeInfo, Session, TensorSpec, precision_of,
                   register_backend)
from .onnx_export import export_onnx
from .ort_calibration import METHODS as CALIBRATION_METHODS
from .ort_calibration import CalibrationReader, calibrate_method, entropy_ranges, percentile_ranges
from .onnxruntime_placement import ort_placement
from .placement import Placement

if TYPE_CHECKING:  # annotations only: importing them loads torch
    from ..calibration import CalibrationSet
    from ..source import ModelSource

QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear"}

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}


class OrtSession(Session):
    def __init__(self, path: Path, threads: int | None, profile_dir: Path | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = threads
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        if profile_dir is not None:
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(profile_dir) / "ort_profile")
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise InputError(f"ONNX Runtime cannot load {path}: {first_line(exc)}") from exc
        inp = self.session.get_inputs()[0]
        shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)
        layout = "NHWC" if len(shape) == 4 and shape[-1] == 3 and shape[1] != 3 else "NCHW"
        self.input = TensorSpec(shape, _ORT_DTYPES.get(inp.type, inp.type), layout)
        self._name = inp.name
        self.runtime = RuntimeInfo("onnxruntime", ort.__version__, {
            "providers": self.session.get_providers(),
            "intra_op_threads": threads or "default"})

    def infer(self, native: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._name: native})[0]

    def output_grid(self) -> tuple[float, int] | None:
        """A QDQ model's float output comes from a DequantizeLinear: its scale is the step."""
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(self.path), load_external_data=False).graph
        name = graph.output[0].name
        producer = next((n for n in graph.node if name in n.output), None)
        if producer is None or producer.op_type != "DequantizeLinear":
            return None
        scale = next((i for i in graph.initializer if i.name == producer.input[1]), None)
        return (float(numpy_helper.to_array(scale).reshape(-1)[0]), 0) if scale is not None else None


@register_backend
class OnnxRuntimeBackend(Backend):
    # With optimal rounding and bias correction, on the 500 photos: MobileNetV3-Small 89.4%
    # agreement (minmax 84.4%), MobileNetV2 98.4% (minmax 98.0%).
    default_calibration_method = "percentile"
    calibration_methods = CALIBRATION_METHODS
    name = "onnxruntime"
    suffix = ".onnx"
    precisions = ("fp32", "int8")
    extra = "onnx"
    modules = ("onnx", "onnxruntime")
    color = (31, 119, 180)
    aarch64_wheels = ("onnxruntime",)
    description = "ONNX Runtime (CPU EP): ONNX fp32 and static QDQ int8, per-channel weights"
    accepts_onnx = True
    layer_report_runtime = "ONNX Runtime"

    def runtime_info(self) -> RuntimeInfo:
        import onnxruntime as ort

        return RuntimeInfo("onnxruntime", ort.__version__)

    def convert(self, source: ModelSource, precision: str, calibration: CalibrationSet | None,
                out: Path, options: ConvertOptions) -> Artifact:
        self.require()
        if precision == "fp32":
            export_onnx(source, out, native_hard_activations=True)
            details = {}
        elif precision == "int8":
            if calibration is None:
                raise InputError("int8 conversion needs calibration images")
            try:
                details = self._quantize(source, calibration, out, options)
            except EdgekitError:
                raise
            except Exception as exc:  # quantize_static / calibrator errors: one line for the user
                raise ConversionError(self.name, source.name, precision, exc) from exc
        else:
            raise InputError(f"{self.name} does not build {precision} (choose from {', '.join(self.precisions)})")
        session = self.load(out)
        details["ops"] = _op_counts(out)
        return Artifact(out, self.name, precision, session.input, [out], details)

    def _quantize(self, source: ModelSource, calibration: CalibrationSet, out: Path,
                  options: ConvertOptions) -> dict:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        qtypes = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        with tempfile.TemporaryDirectory(prefix="edgekit-ort-") as tmp:
            fp32 = export_onnx(source, Path(tmp) / "model_fp32.onnx")
            prepared = prepare_for_quantization(fp32, Path(tmp) / "model_prep.onnx")
            method, extra = calibrate_method(calibration.method, calibration.options)
            import onnxruntime as ort

            input_name = ort.InferenceSession(str(prepared), providers=["CPUExecutionProvider"]) \
                .get_inputs()[0].name
            excluded = _nodes_in(prepared, options.float_layers)
            overrides: dict[str, list[dict]] = {}
            if calibration.method in ("entropy", "percentile"):
                ranges = entropy_ranges if calibration.method == "entropy" else percentile_ranges
                overrides = ranges(prepared, CalibrationReader(calibration, input_name), calibration.options,
                                   Path(tmp))
            if excluded:
                # An excluded node still reads its input through the 8-bit Q/DQ its producer's
                # output gets; 16-bit there makes the layer's input float in all but name.
                for tensor in _inputs_of(prepared, excluded):
                    overrides[tensor] = [{**overrides.get(tensor, [{}])[0], "quant_type": QuantType.QUInt16}]
                extra = {**extra, "UseQDQContribOps": True}
            reader = CalibrationReader(calibration, input_name)
            if overrides:
                extra = {**extra, "TensorQuantOverrides": overrides}
            if calibration.method in ("entropy", "percentile"):
                # Every tensor's range is an override: quantize_static's own MinMax pass is moot.
                reader = CalibrationReader(replace(calibration, images=calibration.images[:1]), input_name)
            with atomic_path(out) as tmp_out:
                quantize_static(
                    str(prepared), str(tmp_out), reader,
                    quant_format=QuantFormat.QDQ, per_channel=options.per_channel,
                    activation_type=qtypes[options.activation_type],
                    weight_type=qtypes[options.weight_type], calibrate_method=method,
                    nodes_to_exclude=excluded, extra_options=extra)
        details = {"activation_type": options.activation_type, "weight_type": options.weight_type,
                   "per_channel": options.per_channel, "calibration_method": calibration.method}
        if options.float_layers:
            details["float_layers"] = list(options.float_layers)
        return details

    def stored_precision(self, path: Path) -> str:
        """int8 when the model quantizes (QDQ or integer ops), fp16 when its weights are float16."""
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and others
            raise InputError(f"cannot read ONNX model {Path(path).name}: {exc}") from exc
        return precision_of(bool({node.op_type for node in model.graph.node} & QUANTIZED_OPS),
                            any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer))

    def placement(self, path: Path) -> Placement:
        self.require()
        import onnxruntime as ort

        return ort_placement(Path(path), f"onnxruntime {ort.__version__}")

    def load(self, artifact: Artifact | Path, threads: int | None = None) -> Session:
        self.require()
        path = artifact.path if isinstance(artifact, Artifact) else Path(artifact)
        return OrtSession(path, threads)


    def layer_report(self, float_path: Path, int8_path: Path, images: np.ndarray):
        from .onnxruntime_report import onnx_report

        return onnx_report(float_path, int8_path, images, backend=self.name)

    def simulated_layer_report(self, source: ModelSource, calibration: CalibrationSet, options: ConvertOptions,
                               images: np.ndarray, reference: ModelSource | None = None):
        from .onnxruntime_report import onnx_report

        notes = []
        if calibration.method not in CALIBRATION_METHODS:
            notes.append(f"ONNX Runtime has no '{calibration.method}' calibration; the layers were ranked "
                         "with minmax")
            calibration = replace(calibration, method="minmax")
        ort_options = replace(options, io_dtype="float32", layout="NCHW",
                              activation_type="uint8" if options.activation_type == "uint8" else "int8",
                              weight_type="int8")
        with tempfile.TemporaryDirectory(prefix="edgekit-report-") as tmp:
            exported = export_onnx(reference if reference is not None else source, Path(tmp) / "float.onnx")
            float_onnx = prepare_for_quantization(exported, Path(tmp) / "float_prep.onnx")
            int8_onnx = self.convert(source, "int8", calibration, Path(tmp) / "int8.onnx", ort_options).path
            report = onnx_report(float_onnx, int8_onnx, images, backend=f"{self.name} (QDQ simulation)")
        report.notes.extend(notes)
        return report


def prepare_for_quantization(src: Path, dst: Path) -> Path:
    """Shape inference and graph optimisation before quantization, as ORT recommends."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception:  # pre-processing is an optimisation; the plain model quantizes too
        dst.write_bytes(src.read_bytes())
    return dst


def _nodes_in(path: Path, layers: tuple[str, ...]) -> list[str]:
    """Names of the nodes that belong to ``layers`` (layer_names); each name must match."""
    if not layers:
        return []
    import onnx

    return select(onnx_layers(onnx.load(str(path), load_external_data=False).graph), layers)


def _inputs_of(path: Path, nodes: list[str]) -> list[str]:
    """Activation tensors the ``nodes`` read from outside their own set."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    chosen = set(nodes)
    constants = {t.name for t in graph.initializer}
    inside = {t for n in graph.node if n.name in chosen for t in n.output}
    return sorted({t for n in graph.node if n.name in chosen for t in n.input
                   if t and t not in constants and t not in inside})


def _op_counts(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
