"""LiteRT (TFLite): litert-torch conversion and the LiteRT / tflite-runtime interpreter.

- fp32: plain litert-torch conversion.
- fp16: float16 weights through litert-torch's ai-edge-quantizer recipe (``full_fp16_recipe``:
  weight-only "float casting"; each conv/FC weight is stored as float16 and DEQUANTIZEd to
  float32 at load time, so compute stays float32 and XNNPACK folds the DEQUANTIZE ops away).
- int8: full-integer PT2E. ``torch.export`` (non-strict, the residual ADDs marked for the
  quantizer as strict export would mark them), per-channel symmetric int8 weights, per-tensor int8
  activations calibrated on the CalibrationSet, then litert-torch lowers the Q/DQ graph to integer
  kernels with int8 input and output. ``io_dtype`` "uint8" adds a QUANTIZE (uint8 <-> int8, same
  scale, zero point shifted by 128) at each end, as TensorFlow's converter does; "float32" adds a
  QUANTIZE / DEQUANTIZE pair so callers feed floats (the body stays integer).
  ``ConvertOptions.float_layers`` (mixed precision) drops the quantization annotations of those
  modules' nodes: they run as float kernels between a DEQUANTIZE and a QUANTIZE, so the model is
  no longer full-integer. Such a model is lowered in the converter's strict QDQ mode
  (``_strict_qdq``), and checked to really hold float layers.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConversionError, EdgekitError, InputError, MissingDependencyError, first_line
from ..fileio import atomic_path
from ..quiet import native_output_silenced
from .base import Artifact, Backend, ConvertOptions, RuntimeInfo, Session, precision_of, register_backend
from .placement import Placement
from .tflite_placement import xnnpack_placement
from .tflite_flatbuffer import integer_io, set_io_dtype
from .pt2e import check_request
from .tflite_quantizer import (CALIBRATION_METHODS, export_for_calibration, make_quantizer,
                               observing_producers_only, quantization_config, threads_for_batch)
from .tflite_session import (TFLiteSession, float_ops, interpreter_api, make_interpreter, ops_details,
                             runtime_version, tensor_spec, undelegated_ops)

if TYPE_CHECKING:  # annotations only: importing them loads torch
    from ..calibration import CalibrationSet
    from ..source import ModelSource

IO_DTYPES = ("int8", "uint8", "float32")
WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}


@contextlib.contextmanager
def _quiet_converter():
    """litert-torch prints a progress tree and ai-edge-quantizer a size summary and tqdm bar;
    keep them out of edgekit's output (errors still propagate as exceptions)."""
    previous = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if previous is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = previous


@contextlib.contextmanager
def _strict_qdq():
    """Lower with the converter's strict QDQ mode: only what carries quantize/dequantize nodes is
    quantized. By default it also quantizes any op it finds between a DEQUANTIZE and a QUANTIZE,
    weights included, so a float layer of one op (a convolution with its ReLU6: most layers the
    per-layer report ranks) came out int8 while the build recorded it float."""
    try:
        from litert_torch._convert import litert_converter

        api = litert_converter.converter_api_ext
        run = api.run_convert_to_tfl_passes
    except (ImportError, AttributeError) as exc:
        raise InputError("this litert-torch cannot keep layers float (no strict QDQ conversion: "
                         f"{exc}); build without --float-layers") from None

    def strict(module, pass_manager, config):
        config.strict_qdq_mode = True
        return run(module, pass_manager, config)

    api.run_convert_to_tfl_passes = strict
    try:
        yield
    finally:
        api.run_convert_to_tfl_passes = run


# Keep this function's name and module: the wrapper's qualified name
# ("edgekit.backends.tflite_backend._nhwc_wrapper.<locals>.NHWCInput") is part of every tensor
# name litert-torch writes into an NHWC artifact, so renaming it changes the artifacts' bytes.
def _nhwc_wrapper(module):
    """The model with an NHWC input, like ``litert_torch.to_channel_last_io(module, args=[0])``,
    but the permuted input is made contiguous: the converted graph is the same (one layout
    change that folds into the first convolution), and calibration runs ~3x faster because every
    activation is then a contiguous NCHW tensor for the observers."""
    import torch

    class NHWCInput(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.permute(0, 3, 1, 2).contiguous())

    return NHWCInput(module).eval()


@register_backend
class TFLiteBackend(Backend):
    default_calibration_method = "percentile"
    calibration_methods = CALIBRATION_METHODS
    converts_in_python = True  # litert-torch traces and lowers on one core
    name = "tflite"
    suffix = ".tflite"
    precisions = ("fp32", "fp16", "int8")
    extra = "tflite"
    modules = ("ai_edge_litert",)  # or tflite_runtime: see require()
    color = (255, 127, 14)
    aarch64_wheels = ("ai-edge-litert",)
    description = "LiteRT (TFLite) + XNNPACK: litert-torch fp32, fp16 weights, full-integer int8 (PT2E)"

    def require(self) -> None:
        """The runtime: ai-edge-litert, or tflite-runtime on boards that have only that."""
        interpreter_api()

    def require_converter(self) -> None:
        for module, package in (("litert_torch", "litert-torch"), ("ai_edge_litert", "ai-edge-litert")):
            try:
                with native_output_silenced():  # absl/torchao print at import time
                    importlib.import_module(module)
            except ImportError:
                raise MissingDependencyError(package, self.extra) from None

    def placement(self, path: Path) -> Placement:
        self.require()
        name, _ = interpreter_api()
        return xnnpack_placement(Path(path), make_interpreter(Path(path)), f"{name} {runtime_version(name)}")

    def runtime_info(self) -> RuntimeInfo:
        name, _ = interpreter_api()
        return RuntimeInfo(name, runtime_version(name))

    # -- convert --------------------------------------------------------------------------------

    def convert(self, source: ModelSource, precision: str, calibration: CalibrationSet | None,
                out: Path, options: ConvertOptions) -> Artifact:
        data, details = self.convert_bytes(source, precision, calibration, options)
        out = Path(out)
        with atomic_path(out) as tmp:
            tmp.write_bytes(data)
        artifact = self.describe_built(out, precision, details)
        if options.float_layers and not set(artifact.details.get("float_ops", ())) & set(WEIGHTED_OPS):
            out.unlink()
            raise ConversionError(self.name, source.name, precision,
                                  f"litert-torch quantized the layers asked to stay float "
                                  f"({', '.join(options.float_layers)}): no float layer in the model")
        return artifact

    def convert_bytes(self, source: ModelSource, precision: str, calibration: CalibrationSet | None,
                      options: ConvertOptions) -> tuple[bytes, dict]:
        """The .tflite bytes and the conversion facts (shared with the Edge TPU backend)."""
        check_request(self, "TFLite", source, precision, calibration)
        if options.layout not in ("NHWC", "NCHW"):
            raise InputError(f"layout must be NHWC or NCHW, got {options.layout}")
        self.require_converter()
        config = None
        if precision == "int8":
            if options.io_dtype not in IO_DTYPES:
                raise InputError(f"io_dtype must be one of {', '.join(IO_DTYPES)}, got {options.io_dtype}")
            config = quantization_config(calibration)  # rejects unknown methods before any work
        import litert_torch
        import torch

        from ..models.fold import fold_batchnorm
        from .same_padding import channels_last_padded

        n, c, h, w = source.input_shape
        # BatchNorm folded first: the converter would fold it too, but traces half the nodes
        # without it (MobileNetV2 fp32: 11.0 -> 6.2 s)
        module, rewritten = channels_last_padded(fold_batchnorm(source.module))
        model = _nhwc_wrapper(module) if options.layout == "NHWC" else module
        shape = (n, h, w, c) if options.layout == "NHWC" else (n, c, h, w)
        example = (torch.zeros(shape),)
        details: dict[str, Any] = {"converter": f"litert-torch {litert_torch.__version__}",
                                   "layout": options.layout, "same_padding_rewrites": rewritten}
        try:
            with torch.no_grad(), _quiet_converter(), native_output_silenced():
                if precision == "fp32":
                    data = litert_torch.convert(model, example).model_content()
                    details["io_dtype"] = "float32"
                elif precision == "fp16":
                    from litert_torch.generative.quantize import quant_recipes

                    data = litert_torch.convert(model, example,
                                                quant_config=quant_recipes.full_fp16_recipe()).model_content()
                    details.update(io_dtype="float32",
                                   weights="float16 (ai-edge-quantizer float casting, weight-only)")
                else:
                    data = self._int8(model, example, calibration, config, options.layout,
                                      options.float_layers)
                    data = set_io_dtype(data, options.io_dtype)
                    details.update(io_dtype=options.io_dtype, calibration_method=calibration.method,
                                   calibration_images=len(calibration),
                                   weights="int8 per-channel symmetric", activations="int8 per-tensor")
                    if options.float_layers:
                        details["float_layers"] = list(options.float_layers)
        except EdgekitError:
            raise
        except Exception as exc:  # torch.export / PT2E / MLIR errors: one line for the user
            raise ConversionError(self.name, source.name, precision,
                                  f"litert-torch: {type(exc).__name__}: {first_line(exc)}") from exc
        return bytes(data), details

    @staticmethod
    def _int8(model, example, calibration: CalibrationSet, config, layout: str,
              float_layers: tuple[str, ...] = ()) -> bytes:
        import litert_torch
        import torch
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import quantize_pt2e

        images = np.asarray(calibration.images, dtype=np.float32)
        expected = tuple(example[0].shape[1:]) if layout == "NCHW" else \
            (example[0].shape[3], *example[0].shape[1:3])
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise InputError(f"calibration images are {tuple(images.shape[1:])}, the model takes "
                             f"{expected} (C, H, W)")
        exported, batch_size = export_for_calibration(model, example)
        quantizer = make_quantizer(config, float_layers)
        prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
        batch = torch.from_numpy(images)
        if layout == "NHWC":
            batch = batch.permute(0, 2, 3, 1).contiguous()
        with observing_producers_only(prepared), threads_for_batch(batch_size):
            for start in range(0, len(batch), batch_size):
                prepared(batch[start:start + batch_size])
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        if not float_layers:
            return litert_torch.convert(converted, example,
                                        quant_config=QuantConfig(pt2e_quantizer=quantizer)).model_content()
        with _strict_qdq():
            data = litert_torch.convert(converted, example,
                                        quant_config=QuantConfig(pt2e_quantizer=quantizer)).model_content()
        return integer_io(bytes(data))

    def describe_built(self, path: Path, precision: str, details: dict) -> Artifact:
        plain = make_interpreter(path, delegates=False)
        spec = tensor_spec(plain.get_input_details()[0])
        details = dict(details)
        details["ops"] = dict(Counter(d["op_name"] for d in ops_details(plain)))
        if precision == "int8":
            details["float_ops"] = float_ops(plain)
            details["fully_integer"] = not details["float_ops"]
        delegated = make_interpreter(path)
        details["xnnpack_partitions"] = sum(d["op_name"] == "DELEGATE" for d in ops_details(delegated))
        details["ops_outside_xnnpack"] = undelegated_ops(delegated)
        return Artifact(path, self.name, precision, spec, [path], details)

    # -- load -----------------------------------------------------------------------------------

    def stored_precision(self, path: Path) -> str:
        """int8 when the conv/FC weights are integer (uint8 when all are: TF1's quantized models),
        fp16 when float16 (dequantized at load)."""
        plain = make_interpreter(Path(path), delegates=False)
        tensors = {t["index"]: np.dtype(t["dtype"]) for t in plain.get_tensor_details()}
        weights = {tensors.get(d["inputs"][1]) for d in ops_details(plain)
                   if d["op_name"] in WEIGHTED_OPS and len(d["inputs"]) > 1}
        if weights == {np.dtype(np.uint8)}:
            return "uint8"
        return precision_of(bool(weights & {np.dtype(np.int8), np.dtype(np.uint8)}),
                            np.dtype(np.float16) in tensors.values())

    def load(self, artifact: Artifact | Path, threads: int | None = None) -> Session:
        self.require()
        path = artifact.path if isinstance(artifact, Artifact) else Path(artifact)
        return TFLiteSession(path, threads)
