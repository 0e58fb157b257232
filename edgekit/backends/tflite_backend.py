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
import dataclasses
import importlib
import io
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration import CalibrationSet
from ..errors import ConversionError, EdgekitError, InputError, MissingDependencyError, first_line
from ..fileio import atomic_path
from ..quiet import native_output_silenced
from ..source import FORWARD_BATCH, ModelSource
from .placement import Placement
from .tflite_placement import DELEGATE, outside_delegates, xnnpack_placement
from .base import (Artifact, Backend, ConvertOptions, RuntimeInfo, Session, TensorSpec, precision_of,
                   register_backend)
from .layer_names import GraphNode, assign_layers, select

CALIBRATION_METHODS = ("minmax", "mean_minmax", "histogram", "mse", "percentile")
IO_DTYPES = ("int8", "uint8", "float32")
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
EDGETPU_LIBRARY = "libedgetpu.so.1"
WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}


# ---------------------------------------------------------------------------------------------
# Interpreter


def interpreter_api() -> tuple[str, Any]:
    """(runtime name, interpreter module): ai-edge-litert first, tflite-runtime as a fallback."""
    for name, module in (("ai-edge-litert", "ai_edge_litert.interpreter"),
                         ("tflite-runtime", "tflite_runtime.interpreter")):
        try:
            return name, importlib.import_module(module)
        except ImportError:
            continue
    raise MissingDependencyError("ai-edge-litert", "tflite")


def _runtime_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _make_interpreter(path: Path, threads: int | None = None, delegates: bool = True) -> Any:
    """An allocated interpreter. ``delegates=False`` keeps XNNPACK out so the real ops show."""
    _, api = interpreter_api()
    kwargs: dict[str, Any] = {"model_path": str(path)}
    if threads:
        kwargs["num_threads"] = int(threads)
    if not delegates:
        kwargs["experimental_op_resolver_type"] = api.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with native_output_silenced():
            interpreter = api.Interpreter(**kwargs)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        if EDGETPU_CUSTOM_OP in str(exc):
            return _edgetpu_interpreter(api, kwargs, path)
        raise InputError(f"cannot load TFLite model {path}: {first_line(exc)}") from exc
    return interpreter


def _edgetpu_interpreter(api: Any, kwargs: dict[str, Any], path: Path) -> Any:
    """A compiled Edge TPU model: its custom op runs only through the libedgetpu delegate."""
    import ctypes

    try:
        ctypes.CDLL(EDGETPU_LIBRARY)  # probe first: a failed load_delegate() leaves noisy cleanup
        delegate = api.load_delegate(EDGETPU_LIBRARY)
    except (ValueError, OSError, RuntimeError, AttributeError) as exc:
        raise InputError(
            f"{path.name} is compiled for the Edge TPU ({EDGETPU_CUSTOM_OP}) and needs the Edge TPU "
            f"runtime ({EDGETPU_LIBRARY}, Debian package libedgetpu1-std) and an attached Edge TPU; "
            f"none is available here ({first_line(exc)}). Run the uncompiled int8 .tflite on the "
            "CPU instead.") from exc
    kwargs = {k: v for k, v in kwargs.items() if k != "experimental_op_resolver_type"}
    try:
        interpreter = api.Interpreter(experimental_delegates=[delegate], **kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"cannot load Edge TPU model {path}: {first_line(exc)}") from exc
    return interpreter


def _ops_details(interpreter: Any) -> list[dict]:
    get = getattr(interpreter, "_get_ops_details", None)
    return list(get()) if get is not None else []


def op_counts(path: str | Path) -> dict[str, int]:
    """{op type: count} of a .tflite as the interpreter sees it, without XNNPACK's DELEGATE
    node hiding the real ops."""
    interpreter = _make_interpreter(Path(path), delegates=False)
    return dict(Counter(d["op_name"] for d in _ops_details(interpreter)))


def xnnpack_partitions(path: str | Path, threads: int | None = None) -> int:
    """How many DELEGATE nodes XNNPACK makes of the graph (1 = one partition, the fast case;
    0 = XNNPACK not applied)."""
    interpreter = _make_interpreter(Path(path), threads)
    return sum(d["op_name"] == "DELEGATE" for d in _ops_details(interpreter))


def undelegated_ops(interpreter: Any) -> list[str]:
    """Op types that run outside the delegate partitions (LiteRT's own kernels); none when no
    delegate applies at all."""
    details = _ops_details(interpreter)
    if not any(d["op_name"] == DELEGATE for d in details):
        return []
    outside = outside_delegates(details, {int(o["index"]) for o in interpreter.get_output_details()})
    return [d["op_name"] for d in details if d["op_name"] != DELEGATE and d["index"] in outside]


def _dtype_name(dtype: Any) -> str:
    return np.dtype(dtype).name


def _spec(detail: dict) -> TensorSpec:
    shape = tuple(int(d) for d in detail["shape"])
    dtype = _dtype_name(detail["dtype"])
    layout = "NHWC" if len(shape) == 4 and shape[-1] == 3 and shape[1] != 3 else "NCHW"
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if dtype in ("int8", "uint8") and scale:
        return TensorSpec(shape, dtype, layout, float(scale), int(zero_point))
    return TensorSpec(shape, dtype, layout)


class TFLiteSession(Session):
    """A .tflite in LiteRT (or tflite-runtime) with the default delegates (XNNPACK on CPU)."""

    def __init__(self, path: Path, threads: int | None = None):
        name, _ = interpreter_api()
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"TFLite model not found: {self.path}")
        self.interpreter = _make_interpreter(self.path, threads)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1:
            raise InputError(f"{self.path.name} has {len(inputs)} inputs; edgekit expects one image")
        self.input = _spec(inputs[0])
        self.output = _spec(outputs[0])
        self._in = inputs[0]["index"]
        self._out = outputs[0]["index"]
        details = _ops_details(self.interpreter)
        partitions = sum(d["op_name"] == "DELEGATE" for d in details)
        edgetpu = any(d["op_name"] == EDGETPU_CUSTOM_OP for d in details)
        self.runtime = RuntimeInfo(name, _runtime_version(name), {
            "xnnpack": partitions > 0 and not edgetpu,
            "delegate_partitions": partitions,
            "ops_outside_delegate": undelegated_ops(self.interpreter),
            "edgetpu": edgetpu,
            "threads": threads or "default"})

    def infer(self, native: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._in, native)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out)

    def finish(self, raw: np.ndarray) -> np.ndarray:
        out = np.asarray(raw)
        if self.output.scale is not None:
            return ((out.astype(np.float32) - self.output.zero_point) * self.output.scale).reshape(-1)
        return out.astype(np.float32, copy=False).reshape(-1)


# ---------------------------------------------------------------------------------------------
# Conversion helpers


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


def _percentile_observer():
    import torch
    from torchao.quantization.pt2e.observer import MinMaxObserver

    from ..quant.percentiles import TailPercentiles

    class PercentileObserver(MinMaxObserver):
        """Range = the exact [100 - p, p] percentiles of every value observed over the
        ``images`` calibration images (dim 0 of each call), kept in one pass (quant/percentiles.py).
        torchao's HistogramObserver, which this replaced, spent ~10 s of MobileNetV2's 200-image
        calibration re-binning histograms."""

        def __init__(self, percentile: float = 99.999, images: int = 1, **kwargs):
            super().__init__(**kwargs)
            self.percentile = float(percentile)
            self.images = int(images)
            self._tails = None

        def forward(self, x_orig):
            if x_orig.numel() == 0:
                return x_orig
            x = x_orig.detach().float()
            if self._tails is None:
                per_image = x.numel() // (x.shape[0] if x.dim() > 1 else 1)
                self._tails = TailPercentiles(1 - self.percentile / 100, per_image * self.images)
            self._tails.update(x.numpy())
            # not MinMaxObserver.forward: torch's aminmax on a channels-last activation viewed as
            # NCHW measured 160 ms per 32-image call, numpy's pass over the same memory 14 ms
            return x_orig

        def calculate_qparams(self):
            if self._tails is None:
                return super().calculate_qparams()  # unobserved: torchao's default + warning
            lo, hi = self._tails.range()
            return self._calculate_qparams(torch.tensor(lo), torch.tensor(hi))

    return PercentileObserver


def _mean_minmax_observer():
    import torch
    from torchao.quantization.pt2e.observer import MinMaxObserver

    class MeanMinMaxObserver(MinMaxObserver):
        """Range = the mean over calibration images (dim 0 of each call) of each image's min and max:
        NNCF's MEAN_MINMAX, ONNX Runtime's MinMax with a moving average."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._sums = [0.0, 0.0, 0]

        def forward(self, x_orig):
            if x_orig.numel() == 0:
                return x_orig
            # one call sees a batch of images (dim 0): each image's extremes count once
            x = x_orig.detach().float()
            x = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
            lo, hi = x.aminmax(dim=1)
            self._sums[0] += float(lo.sum())
            self._sums[1] += float(hi.sum())
            self._sums[2] += x.shape[0]
            n = self._sums[2]
            self.min_val.copy_(torch.tensor(self._sums[0] / n))
            self.max_val.copy_(torch.tensor(self._sums[1] / n))
            return x_orig

    return MeanMinMaxObserver


def _quantization_config(calibration: CalibrationSet):
    """litert-torch's per-channel symmetric config with the activation observer the method asks
    for (litert-torch's own default is HistogramObserver)."""
    from litert_torch.quantize import pt2e_quantizer as pq
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver

    method, options = calibration.method, calibration.options or {}
    if method not in CALIBRATION_METHODS:
        raise InputError(f"the tflite backend cannot calibrate with '{method}' (it supports "
                         f"{', '.join(CALIBRATION_METHODS)})")
    bins = int(options.get("num_bins", 2048))
    if method == "minmax":
        observer = MinMaxObserver.with_args(eps=2**-12)
    elif method == "mean_minmax":
        observer = _mean_minmax_observer().with_args(eps=2**-12)
    elif method in ("histogram", "mse"):
        # HistogramObserver picks the range that minimises the L2 (MSE) quantization error.
        observer = HistogramObserver.with_args(eps=2**-12, bins=bins)
    else:
        percentile = float(options.get("percentile", 99.999))
        if not 50.0 < percentile <= 100.0:
            raise InputError(f"percentile must be in (50, 100], got {percentile}")
        observer = _percentile_observer().with_args(eps=2**-12, percentile=percentile,
                                                    images=len(calibration))
    base = pq.get_symmetric_quantization_config(is_per_channel=True)
    act = dataclasses.replace(base.input_activation, observer_or_fake_quant_ctr=observer)
    return dataclasses.replace(base, input_activation=act, output_activation=act)


def _scalars_to_broadcast_constants(model) -> None:
    """``x + 3.0`` / ``x * (1/6)`` (hard-swish, hard-sigmoid): give the scalar the rank of ``x``.

    The quantizer has to turn such scalars into constant tensors to quantize them; litert-torch
    makes them 0-d, and its NHWC layout pass then keeps the whole ADD/MUL chain NCHW with a
    TRANSPOSE on each side (MobileNetV3: ~35 TRANSPOSEs). A (1, 1, 1, 1) constant broadcasts
    the same and lets the chain stay NHWC.
    """
    import torch

    for node in list(model.graph.nodes):
        if node.op != "call_function" or node.target not in (torch.ops.aten.add.Tensor,
                                                              torch.ops.aten.mul.Tensor):
            continue
        tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
        val = tensors[0].meta.get("val") if len(tensors) == 1 else None
        if val is None or not hasattr(val, "ndim") or val.ndim == 0:
            continue
        args = []
        for arg in node.args:
            if isinstance(arg, (int, float)) and not isinstance(arg, bool):
                name = f"_edgekit_scalar_{len(list(model.buffers()))}"
                while hasattr(model, name):
                    name += "_"
                model.register_buffer(name, torch.full((1,) * val.ndim, float(arg), dtype=val.dtype))
                with model.graph.inserting_before(node):
                    arg = model.graph.create_node("get_attr", name, (), {})
            args.append(arg)
        node.args = tuple(args)
    model.recompile()


def _annotate_conv_relu6(model, config) -> None:
    """Quantize ReLU6 at its own output, as litert-torch already does for conv -> ReLU.

    litert-torch treats ReLU6 (aten.hardtanh) as an op that shares its input's observer, so the
    fused conv+ReLU6 output got the range of the conv's pre-activation values (e.g. [-16, 20]
    for a [0, 6] tensor): 40 of 256 int8 levels used, and MobileNetV2 logits at -7 dB SQNR.
    Observing after the ReLU6 gives it the whole int8 range.
    """
    import torch
    from litert_torch.quantize import pt2e_quantizer_utils as qu
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    if config is None:
        return
    convs = (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)
    relu6_ops = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default,
                 torch.ops.aten.relu6.default)
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in relu6_ops:
            continue
        low = 0.0 if node.target is torch.ops.aten.relu6.default else \
            (node.args[1] if len(node.args) > 1 else -1.0)
        conv = node.args[0]
        if low != 0.0 or not isinstance(conv, torch.fx.Node):
            continue
        if conv.op != "call_function" or conv.target not in convs or len(conv.users) != 1:
            # ReLU6 after anything else (hard-swish's / hard-sigmoid's x + 3): its own observer
            # too, fed by the producer's quantized output.
            if "quantization_annotation" not in node.meta:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={conv: SharedQuantizationSpec(conv)},
                    output_qspec=qu.get_output_act_qspec(config), _annotated=True)
            continue
        partition = [node, conv, conv.args[1]]
        qspecs = {conv.args[0]: qu.get_input_act_qspec(config),
                  conv.args[1]: qu.get_weight_qspec(config)}
        bias = conv.args[2] if len(conv.args) > 2 else None
        if isinstance(bias, torch.fx.Node):
            qspecs[bias] = qu.get_bias_qspec(config)
            partition.append(bias)
        if qu._is_annotated(partition):
            continue
        conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=qspecs,
                                                                      _annotated=True)
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            output_qspec=qu.get_output_act_qspec(config), _annotated=True)
        qu._mark_nodes_as_annotated(partition)


def _keep_float(model, layers: tuple[str, ...]) -> None:
    """Drop the quantization annotations of the nodes inside ``layers`` (by the modules in their
    ``nn_module_stack``), so they stay float; InputError for a layer no node belongs to.

    A node whose annotation shares a spec (SharedQuantizationSpec: pads, ReLU6 after a non-conv)
    with an edge or node left without one loses its annotation too: prepare_pt2e cannot resolve
    such a spec, and the node's input is float anyway.
    """
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    import torch

    key = "quantization_annotation"
    weighted = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default,
                torch.ops.aten.convolution.default)
    calls = [n for n in model.graph.nodes if n.op == "call_function"]
    graph = [GraphNode(n.name, _innermost_module(n), n.target in weighted,
                       tuple(i.name for i in n.all_input_nodes), (n.name,)) for n in calls]
    chosen = set(select(assign_layers(graph), layers))
    for node in calls:
        if node.name in chosen:
            node.meta.pop(key, None)
    dropped = True
    while dropped:
        dropped = False
        specced = set()
        for node in model.graph.nodes:
            annotation = node.meta.get(key)
            if annotation is not None:
                specced |= {(arg, node) for arg in annotation.input_qspec_map}
                specced |= {node} if annotation.output_qspec is not None else set()
        for node in model.graph.nodes:
            annotation = node.meta.get(key)
            if annotation is None:
                continue
            specs = [*annotation.input_qspec_map.values(), annotation.output_qspec]
            if any(isinstance(spec, SharedQuantizationSpec) and spec.edge_or_node not in specced
                   for spec in specs):
                del node.meta[key]
                dropped = True


def _innermost_module(node) -> str:
    """The module path torch.export recorded for a node ("" for none): the innermost entry of
    its ``nn_module_stack``."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _quantizer(config, float_layers: tuple[str, ...] = ()):
    """litert-torch's PT2EQuantizer, plus: a constant pad and the permutes around it (TF-'SAME'
    convolutions pad channels-last, same_padding.py) share their input's quantization, so the
    convolution reads the very grid its producer wrote and the converter folds the pad into a SAME
    convolution; the ``float_layers`` stay float (``_keep_float``)."""
    import torch
    from litert_torch.quantize import pt2e_quantizer as pq
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    same_scale = _same_scale_ops()

    class Quantizer(pq.PT2EQuantizer):
        def transform_for_annotation(self, model):
            _scalars_to_broadcast_constants(model)
            return super().transform_for_annotation(model)

        def annotate(self, model):
            _annotate_conv_relu6(model, self.global_config)
            model = super().annotate(model)
            for node in model.graph.nodes:  # in data-flow order: a permute -> pad -> permute chain shares
                if node.op != "call_function" or node.target not in same_scale:
                    continue
                if node.target is torch.ops.aten.pad.default and len(node.args) > 2 \
                        and node.args[2] != "constant":
                    continue
                prev = node.args[0]
                annotation = prev.meta.get("quantization_annotation")
                if annotation is None or annotation.output_qspec is None \
                        or "quantization_annotation" in node.meta:
                    continue
                shared = SharedQuantizationSpec(prev)
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={prev: shared}, output_qspec=shared, _annotated=True)
            if float_layers:
                _keep_float(model, float_layers)
            return model

    return Quantizer().set_global(config)


@contextlib.contextmanager
def _observing_producers_only(prepared):
    """During calibration, skip the observer calls after same-scale ops (the permutes and pads of
    ``_quantizer``): they share their producer's observer, which has seen the same values already
    (without the pad's zeros). Each one was a histogram of a whole activation — on MobileNetV2 with
    TF-SAME padding, 12 extra calls per image doubled the calibration time. Put back for
    ``convert_pt2e``, which turns each observer call into quantize/dequantize."""
    import torch
    from torchao.quantization.pt2e import ObserverBase

    same_scale = _same_scale_ops()

    def observer(node):
        if getattr(node, "op", None) != "call_module":
            return None
        module = prepared.get_submodule(node.target)  # named_modules() lists a shared one once
        return module if isinstance(module, ObserverBase) else None

    # an observer call after a same-scale op whose input went through the very same observer
    skipped = [n for n in prepared.graph.nodes
               if observer(n) is not None and n.args and getattr(n.args[0], "op", None) == "call_function"
               and n.args[0].target in same_scale and n.args[0].args
               and observer(n.args[0].args[0]) is observer(n)]
    targets = {n: n.target for n in skipped}
    if skipped:
        prepared.add_submodule("_edgekit_skip_observer", torch.nn.Identity())
        for n in skipped:
            n.target = "_edgekit_skip_observer"
        prepared.recompile()
    try:
        yield
    finally:
        if skipped:
            for n, target in targets.items():
                n.target = target
            prepared.delete_submodule("_edgekit_skip_observer")
            prepared.recompile()


CALIBRATION_BATCH = FORWARD_BATCH  # MobileNetV2, 200 images: 3.1-3.8 s at 8 per call, 5.6-6.0 s at 32


def _export_for_calibration(model, example):
    """torch.export the model with a dynamic batch dimension, so calibration runs several images
    per call (batch-1 calls were ~3x slower: ~150 observers and Python per op per image); the
    converter re-exports the quantized module at ``example``'s static batch 1. A model whose
    batch size cannot vary (a hard-coded reshape) is exported at batch 1 and calibrated image by
    image. Non-strict (MobileNetV2 ~1.5 s instead of ~4 s strict), with the residual ADDs
    marked as strict export would mark them (``_mark_adds``), or they would stay float."""
    import torch

    batched = (torch.zeros((2, *example[0].shape[1:]), dtype=example[0].dtype),)
    dim = torch.export.Dim("batch", min=1, max=4096)
    try:
        module, batch = torch.export.export(model, batched, dynamic_shapes=({0: dim},),
                                            strict=False).module(), CALIBRATION_BATCH
    except Exception:  # a batch-specialised model: calibrate at its static batch
        module, batch = torch.export.export(model, example, strict=False).module(), 1
    _mark_adds(module)
    return module, batch


def _mark_adds(module) -> None:
    """Record ``x + y`` on each tensor add as strict (dynamo) export does in ``source_fn_stack``.

    litert-torch's quantizer finds adds and concatenations by that record alone; without it the
    residual ADDs of a non-strict export stay float. (Its other patterns — convolutions, muls,
    pooling — it finds by op or by the module stack, which non-strict export keeps.)"""
    import operator

    import torch

    sources = {torch.ops.aten.add.Tensor: operator.add, torch.ops.aten.add_.Tensor: operator.iadd,
               torch.ops.aten.cat.default: torch.cat}
    for node in module.graph.nodes:
        if node.op == "call_function" and node.target in sources and "source_fn_stack" not in node.meta:
            node.meta["source_fn_stack"] = [(node.name, sources[node.target])]


@contextlib.contextmanager
def _threads_for_batch(batch_size: int):
    """One intra-op thread for batch-1 calibration: its ops and ~150 observers are tiny, and with
    2 threads on a busy 2-vCPU machine that loop measured ~1 s per 96 px image instead of ~15 ms."""
    import torch

    threads = torch.get_num_threads()
    if batch_size == 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _same_scale_ops() -> tuple:
    import torch

    return (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default,
            torch.ops.aten.permute.default)


def _set_io_dtype(data: bytes, io_dtype: str) -> bytes:
    """Give an int8-I/O model uint8 or float32 I/O with a QUANTIZE / DEQUANTIZE at each end."""
    if io_dtype == "int8":
        return data
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(data))
    graph = model.subgraphs[0]

    def opcode(builtin: int, version: int) -> int:
        for i, code in enumerate(model.operatorCodes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin and code.customCode is None:
                return i
        code = fb.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        code.version = version
        model.operatorCodes.append(code)
        return len(model.operatorCodes) - 1

    def outer_tensor(inner: Any) -> int:
        t = fb.TensorT()
        t.shape = list(inner.shape)
        t.shapeSignature = list(inner.shapeSignature) if inner.shapeSignature is not None else None
        t.name = inner.name
        inner.name = inner.name + (b"_int8" if isinstance(inner.name, bytes) else "_int8")
        t.buffer = 0
        if io_dtype == "uint8":
            t.type = fb.TensorType.UINT8
            q = fb.QuantizationParametersT()
            q.scale = list(inner.quantization.scale)
            q.zeroPoint = [int(z) + 128 for z in inner.quantization.zeroPoint]
            q.quantizedDimension = 0
            t.quantization = q
        else:
            t.type = fb.TensorType.FLOAT32
        graph.tensors.append(t)
        return len(graph.tensors) - 1

    def op(code: int, inputs: list[int], outputs: list[int]) -> Any:
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, inputs, outputs
        return o

    quantize = opcode(fb.BuiltinOperator.QUANTIZE, 1)
    out_code = quantize if io_dtype == "uint8" else opcode(fb.BuiltinOperator.DEQUANTIZE, 2)
    remap: dict[int, int] = {}
    for pos, index in enumerate(graph.inputs):
        if graph.tensors[index].type != fb.TensorType.INT8:
            continue
        new = outer_tensor(graph.tensors[index])
        graph.operators.insert(0, op(quantize, [new], [index]))
        graph.inputs[pos] = remap[index] = new
    for pos, index in enumerate(graph.outputs):
        if graph.tensors[index].type != fb.TensorType.INT8:
            continue
        new = outer_tensor(graph.tensors[index])
        graph.operators.append(op(out_code, [index], [new]))
        graph.outputs[pos] = remap[index] = new
    for signature in model.signatureDefs or []:
        for t in list(signature.inputs or []) + list(signature.outputs or []):
            t.tensorIndex = remap.get(t.tensorIndex, t.tensorIndex)
    return bytes(fbu.convert_object_to_bytearray(model))


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


def _integer_io(data: bytes) -> bytes:
    """Strict QDQ mode keeps float32 I/O: a graph input that only feeds a QUANTIZE to int8 is
    replaced by that int8 tensor, and a graph output made by a DEQUANTIZE from int8 by its
    int8 source, as the default mode gives (``_set_io_dtype`` then applies the target's I/O)."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(data))
    graph = model.subgraphs[0]

    def builtin(op: Any) -> int:
        code = model.operatorCodes[op.opcodeIndex]
        return max(code.builtinCode, code.deprecatedBuiltinCode)

    def swap(outer: int, inner: int, op: Any) -> None:
        graph.operators.remove(op)
        names = graph.tensors[outer].name, graph.tensors[inner].name
        graph.tensors[inner].name, graph.tensors[outer].name = names  # the I/O keeps its name
        remap[outer] = inner

    remap: dict[int, int] = {}
    for pos, index in enumerate(graph.inputs):
        users = [op for op in graph.operators if index in op.inputs]
        if len(users) == 1 and builtin(users[0]) == fb.BuiltinOperator.QUANTIZE \
                and graph.tensors[users[0].outputs[0]].type == fb.TensorType.INT8:
            swap(index, users[0].outputs[0], users[0])
            graph.inputs[pos] = remap[index]
    for pos, index in enumerate(graph.outputs):
        makers = [op for op in graph.operators if index in op.outputs]
        if len(makers) == 1 and builtin(makers[0]) == fb.BuiltinOperator.DEQUANTIZE \
                and graph.tensors[makers[0].inputs[0]].type == fb.TensorType.INT8 \
                and not any(index in op.inputs for op in graph.operators):
            swap(index, makers[0].inputs[0], makers[0])
            graph.outputs[pos] = remap[index]
    for signature in model.signatureDefs or []:
        for t in list(signature.inputs or []) + list(signature.outputs or []):
            t.tensorIndex = remap.get(t.tensorIndex, t.tensorIndex)
    return bytes(fbu.convert_object_to_bytearray(model))


def _float_ops(interpreter: Any) -> list[str]:
    """Op types that compute in float (any float32 result): none in a fully integer model."""
    return sorted({d["op_name"] for d in _ops_details(interpreter)
                   if any(np.dtype(t) == np.float32 for t in d.get("result_types", []))})


# ---------------------------------------------------------------------------------------------
# Backend


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
        return xnnpack_placement(Path(path), _make_interpreter(Path(path)), f"{name} {_runtime_version(name)}")

    def runtime_info(self) -> RuntimeInfo:
        name, _ = interpreter_api()
        return RuntimeInfo(name, _runtime_version(name))

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
            raise EdgekitError(f"litert-torch quantized the layers asked to stay float "
                               f"({', '.join(options.float_layers)}): no float layer in the model")
        return artifact

    def convert_bytes(self, source: ModelSource, precision: str, calibration: CalibrationSet | None,
                      options: ConvertOptions) -> tuple[bytes, dict]:
        """The .tflite bytes and the conversion facts (shared with the Edge TPU backend)."""
        if source.module is None:
            what = source.onnx_path.name if source.onnx_path else "this model"
            raise InputError(f"TFLite conversion needs a PyTorch model (an edgekit model or "
                             f"checkpoint); {what} is ONNX-only: build it with the onnxruntime or "
                             "openvino backend instead")
        if precision not in self.precisions:
            raise InputError(f"{self.name} does not build {precision} "
                             f"(choose from {', '.join(self.precisions)})")
        if options.layout not in ("NHWC", "NCHW"):
            raise InputError(f"layout must be NHWC or NCHW, got {options.layout}")
        self.require_converter()
        config = None
        if precision == "int8":
            if calibration is None or len(calibration) == 0:
                raise InputError("int8 conversion needs calibration images")
            if options.io_dtype not in IO_DTYPES:
                raise InputError(f"io_dtype must be one of {', '.join(IO_DTYPES)}, got {options.io_dtype}")
            config = _quantization_config(calibration)  # rejects unknown methods before any work
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
                    data = _set_io_dtype(data, options.io_dtype)
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
        exported, batch_size = _export_for_calibration(model, example)
        quantizer = _quantizer(config, float_layers)
        prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
        batch = torch.from_numpy(images)
        if layout == "NHWC":
            batch = batch.permute(0, 2, 3, 1).contiguous()
        with _observing_producers_only(prepared), _threads_for_batch(batch_size):
            for start in range(0, len(batch), batch_size):
                prepared(batch[start:start + batch_size])
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        if not float_layers:
            return litert_torch.convert(converted, example,
                                        quant_config=QuantConfig(pt2e_quantizer=quantizer)).model_content()
        with _strict_qdq():
            data = litert_torch.convert(converted, example,
                                        quant_config=QuantConfig(pt2e_quantizer=quantizer)).model_content()
        return _integer_io(bytes(data))

    def describe_built(self, path: Path, precision: str, details: dict) -> Artifact:
        plain = _make_interpreter(path, delegates=False)
        spec = _spec(plain.get_input_details()[0])
        details = dict(details)
        details["ops"] = dict(Counter(d["op_name"] for d in _ops_details(plain)))
        if precision == "int8":
            details["float_ops"] = _float_ops(plain)
            details["fully_integer"] = not details["float_ops"]
        delegated = _make_interpreter(path)
        details["xnnpack_partitions"] = sum(d["op_name"] == "DELEGATE" for d in _ops_details(delegated))
        details["ops_outside_xnnpack"] = undelegated_ops(delegated)
        return Artifact(path, self.name, precision, spec, [path], details)

    # -- load -----------------------------------------------------------------------------------

    def stored_precision(self, path: Path) -> str:
        """int8 when the conv/FC weights are integer (uint8 when all are: TF1's quantized models),
        fp16 when float16 (dequantized at load)."""
        plain = _make_interpreter(Path(path), delegates=False)
        tensors = {t["index"]: np.dtype(t["dtype"]) for t in plain.get_tensor_details()}
        weights = {tensors.get(d["inputs"][1]) for d in _ops_details(plain)
                   if d["op_name"] in WEIGHTED_OPS and len(d["inputs"]) > 1}
        if weights == {np.dtype(np.uint8)}:
            return "uint8"
        return precision_of(bool(weights & {np.dtype(np.int8), np.dtype(np.uint8)}),
                            np.dtype(np.float16) in tensors.values())

    def load(self, artifact: Artifact | Path, threads: int | None = None) -> Session:
        self.require()
        path = artifact.path if isinstance(artifact, Artifact) else Path(artifact)
        return TFLiteSession(path, threads)
