"""edgekit's customisations of litert-torch's PT2E int8 quantization: the activation observers
each calibration method asks for, the quantizer's extra annotations (ReLU6 at its own output,
scalars as broadcast constants, same-scale pads and permutes, float layers), and the export and
calibration loop that make calibration fast."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from .layer_names import GraphNode, assign_layers, select
from .pt2e import CALIBRATION_METHODS, innermost_module, scalars_to_broadcast_constants, with_activation_observer

if TYPE_CHECKING:  # annotations only: importing it loads torch
    from ..calibration import CalibrationSet

__all__ = ["CALIBRATION_METHODS"]  # the tflite and edgetpu backends' list


def quantization_config(calibration: CalibrationSet):
    """litert-torch's per-channel symmetric config with the activation observer the method asks
    for (litert-torch's own default is HistogramObserver)."""
    from litert_torch.quantize import pt2e_quantizer as pq

    return with_activation_observer(pq.get_symmetric_quantization_config(is_per_channel=True),
                                    calibration, "tflite")


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
    graph = [GraphNode(n.name, innermost_module(n), n.target in weighted,
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


def make_quantizer(config, float_layers: tuple[str, ...] = ()):
    """litert-torch's PT2EQuantizer, plus: a constant pad and the permutes around it (TF-'SAME'
    convolutions pad channels-last, same_padding.py) share their input's quantization, so the
    convolution reads the very grid its producer wrote and the converter folds the pad into a SAME
    convolution; the ``float_layers`` stay float (``_keep_float``)."""
    import torch
    from litert_torch.quantize import pt2e_quantizer as pq
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    same_scale = same_scale_ops()

    class Quantizer(pq.PT2EQuantizer):
        def transform_for_annotation(self, model):
            scalars_to_broadcast_constants(model)
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
def observing_producers_only(prepared):
    """During calibration, skip the observer calls after same-scale ops (the permutes and pads of
    ``make_quantizer``): they share their producer's observer, which has seen the same values
    already (without the pad's zeros). Each one was a histogram of a whole activation — on
    MobileNetV2 with TF-SAME padding, 12 extra calls per image doubled the calibration time. Put
    back for ``convert_pt2e``, which turns each observer call into quantize/dequantize."""
    import torch
    from torchao.quantization.pt2e import ObserverBase

    same_scale = same_scale_ops()

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


def export_for_calibration(model, example):
    """torch.export the model with a dynamic batch dimension, so calibration runs several images
    per call (batch-1 calls were ~3x slower: ~150 observers and Python per op per image); the
    converter re-exports the quantized module at ``example``'s static batch 1. A model whose
    batch size cannot vary (a hard-coded reshape) is exported at batch 1 and calibrated image by
    image. Non-strict (MobileNetV2 ~1.5 s instead of ~4 s strict), with the residual ADDs
    marked as strict export would mark them (``_mark_adds``), or they would stay float."""
    import torch

    # MobileNetV2, 200 images: 3.1-3.8 s at 8 images per call, 5.6-6.0 s at 32
    from ..source import FORWARD_BATCH

    batched = (torch.zeros((2, *example[0].shape[1:]), dtype=example[0].dtype),)
    dim = torch.export.Dim("batch", min=1, max=4096)
    try:
        module, batch = torch.export.export(model, batched, dynamic_shapes=({0: dim},),
                                            strict=False).module(), FORWARD_BATCH
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
def threads_for_batch(batch_size: int):
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


def same_scale_ops() -> tuple:
    import torch

    return (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default,
            torch.ops.aten.permute.default)
