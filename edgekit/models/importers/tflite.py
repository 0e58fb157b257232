"""Import a published TensorFlow MobileNet (.tflite, float or quantized) into edgekit's model.

The uint8 files fuse no activations: ReLU/ReLU6 exist only as output quantization ranges
(lower bound 0, upper bound 6 for ReLU6), so activations are read from fused options, from the
op that consumes each layer's output (HARD_SWISH, ADD/MUL hard-sigmoid) or from those ranges.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ...errors import InputError
from ...preprocessing import Preprocessing
from ..blocks import TFSameConv2d
from ..network import MobileNet
from ..registry import create, get_spec
from .common import Target, check_activation, check_count, choose_width, load_layer, targets, v1_activation
from .tflite_graph import SAME, Graph, Op

WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
RELU6_TOLERANCE = 0.06  # |max - 6| of a ReLU6 range (QAT ranges are exactly [0, 6])


@dataclass
class Layer:
    op: Op
    weight: np.ndarray  # torch layout: OIHW for convs, (out, in) for FULLY_CONNECTED
    bias: np.ndarray | None
    activation: frozenset[str] | None  # compatible activations; None when nothing tells

    def describe(self, graph: Graph) -> str:
        name = graph.name(self.op.outputs[0]).split(";")[0]  # the converter joins fused names
        return f"TFLite op {self.op.index} ({self.op.kind} '{name}')"


def import_tflite(path: str | Path, arch: str, width: float | None = None,
                  labels: list[str] | None = None,
                  preprocessing: Preprocessing | None = None) -> MobileNet:
    """Build ``arch`` with the weights of a .tflite MobileNet, checking it is that network.

    Resolution comes from the input tensor, the width from the layer shapes, the class count from
    the last layer. ``preprocessing`` defaults to what the input quantization implies (TF's
    ``x / 127.5 - 1`` for the published uint8 files, and for float files).
    """
    spec = get_spec(arch)
    graph = Graph(path)
    resolution = _resolution(graph)
    layers = [_layer(graph, op) for op in graph.ops if op.kind in WEIGHT_OPS]
    if not layers:
        raise InputError(f"{graph.path.name} has no convolution or dense layers")
    num_classes = int(layers[-1].weight.shape[0])
    shapes = [tuple(layer.weight.shape) for layer in layers]
    width = choose_width(arch, shapes, num_classes, width)
    activation = None
    if spec.style == "v1":
        activation = v1_activation([layer.activation for layer in layers[:-1]])
    model = create(arch, width=width, resolution=resolution, num_classes=num_classes,
                   padding="tf_same", activation=activation, labels=labels,
                   preprocessing=preprocessing or _preprocessing(graph, resolution),
                   weights=str(path))
    pairs = list(zip(targets(model), layers))
    for target, layer in pairs:  # shapes first: they tell a wrong architecture best
        load_layer(target, layer.weight, layer.bias, layer.describe(graph))
    check_count(model, len(layers), graph.path.name)
    for target, layer in pairs:
        check_activation(target, layer.activation, layer.describe(graph))
        _check_geometry(graph, layer.op, target, layer.describe(graph))
    _check_residuals(graph, model)
    return model.eval()


def _resolution(graph: Graph) -> int:
    shape = tuple(int(d) for d in graph.input["shape"])
    if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
        raise InputError(f"{graph.path.name}: input shape {shape} is not a square NHWC RGB image")
    return shape[1]


def _preprocessing(graph: Graph, size: int) -> Preprocessing:
    """Read from the input quantization: q -> (q - zero_point) * scale, with q the pixel
    (uint8) or pixel - 128 (int8). Float inputs say nothing: TF's x / 127.5 - 1."""
    detail = graph.input
    scale, zero = detail["quantization"]
    if detail["dtype"] not in (np.uint8, np.int8) or not scale:
        return Preprocessing.tensorflow(size)
    offset = zero + (128 if detail["dtype"] == np.int8 else 0)
    mean, std = round(offset / 255, 4), round(1 / (255 * scale), 4)
    if abs(mean - 0.5) < 0.01 and abs(std - 0.5) < 0.01:  # (p - 128) / 128 is TF's x / 127.5 - 1
        return Preprocessing.tensorflow(size)
    # Not TF-slim's x / 127.5 - 1 (e.g. VWW's pixel / 255): a whole-image resize, as MLPerf Tiny does.
    return Preprocessing(size=size, resize=0, mean=(mean,) * 3, std=(std,) * 3)


def _layer(graph: Graph, op: Op) -> Layer:
    weight = graph.value(op.inputs[1])
    bias = graph.value(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    if op.kind == "CONV_2D":  # OHWI -> OIHW
        weight = weight.transpose(0, 3, 1, 2)
    elif op.kind == "DEPTHWISE_CONV_2D":  # 1, H, W, C*multiplier -> C*multiplier, 1, H, W
        weight = weight.transpose(3, 0, 1, 2)
    activation = _observed_activation(graph, op)
    if activation == {"relu6"} and _scaled_by_sixth(graph, op):
        # relu6(Wx + b) / 6 is the hard sigmoid of Wx + b - 3: converters fold the + 3 into b
        activation = frozenset({"hsigmoid"})
        bias = (np.zeros(weight.shape[0], np.float32) if bias is None else bias) - 3.0
    return Layer(op, weight, bias, activation)


def _observed_activation(graph: Graph, op: Op) -> frozenset[str] | None:
    if op.fused not in (None, "none"):
        return frozenset({op.fused})
    out = op.outputs[0]
    nxt = graph.only_consumer(out)
    if nxt is not None:
        explicit = {"RELU": "relu", "RELU6": "relu6", "HARD_SWISH": "hswish", "LOGISTIC": "sigmoid"}
        if nxt.kind in explicit:
            return frozenset({explicit[nxt.kind]})
        gate = _hard_sigmoid(graph, nxt)
        if gate is not None:
            return frozenset({gate})
    bounds = graph.range(out)
    if bounds is None:
        return frozenset({"none"}) if op.fused == "none" else None
    lo, hi = bounds
    if lo < 0:
        return frozenset({"none"})
    if abs(hi - 6.0) <= RELU6_TOLERANCE:
        return frozenset({"relu6"})
    return frozenset({"relu", "none"})  # lower bound 0: a ReLU, or a linear output never negative


def _clips_to_relu6(graph: Graph, op: Op) -> bool:
    bounds = graph.range(op.outputs[0])
    return op.fused == "relu6" or (
        bounds is not None and bounds[0] == 0 and abs(bounds[1] - 6.0) <= RELU6_TOLERANCE)


def _constant_operand(graph: Graph, op: Op) -> float | None:
    consts = [t for t in op.inputs if graph.is_constant(t)]
    if len(consts) != 1:
        return None
    values = graph.value(consts[0]).ravel()
    return float(values[0]) if values.size and np.all(values == values[0]) else None


def _scaled_by_sixth(graph: Graph, op: Op) -> bool:
    nxt = graph.only_consumer(op.outputs[0])
    if nxt is not None and nxt.kind == "RELU6":
        nxt = graph.only_consumer(nxt.outputs[0])
    if nxt is None or nxt.kind != "MUL":
        return False
    factor = _constant_operand(graph, nxt)
    return factor is not None and abs(factor - 1 / 6) < 1e-4


def _hard_sigmoid(graph: Graph, add: Op) -> str | None:
    """'hsigmoid' for ADD(c) -> relu6 -> MUL(k) with c = 3, k = 1/6 (TF's squeeze-excite gate);
    a description of the gate when the constants differ; None if this is not such a gate."""
    if add.kind != "ADD" or (offset := _constant_operand(graph, add)) is None:
        return None
    clipped, op = _clips_to_relu6(graph, add), graph.only_consumer(add.outputs[0])
    if op is not None and op.kind == "RELU6":
        clipped, op = True, graph.only_consumer(op.outputs[0])
    if op is None or op.kind != "MUL" or not clipped:
        return None
    factor = _constant_operand(graph, op)
    if factor is None:
        return None
    if abs(offset - 3.0) < 1e-3 and abs(factor - 1 / 6) < 1e-4:
        return "hsigmoid"
    return f"hard-sigmoid relu6(x + {offset:.5g}) * {factor:.5g} (edgekit: relu6(x + 3) / 6)"


def _check_geometry(graph: Graph, op: Op, target: Target, source: str) -> None:
    """Strides and padding must be what edgekit's tf_same convolution computes."""
    opts = op.options
    if not isinstance(target.layer, TFSameConv2d) or opts is None or op.kind == "FULLY_CONNECTED":
        return
    stride = (opts.strideH, opts.strideW)
    if stride != tuple(target.layer.stride):
        raise InputError(f"{source} has stride {stride} but edgekit layer {target.name} has "
                         f"{tuple(target.layer.stride)}")
    src, explicit = op.inputs[0], [(0, 0), (0, 0)]
    pad_op = graph.producer.get(src)
    if pad_op is not None and pad_op.kind in ("PAD", "PADV2"):
        pads = graph.interpreter.get_tensor(pad_op.inputs[1]).astype(int)  # NHWC x (before, after)
        explicit, src = [tuple(map(int, pads[1])), tuple(map(int, pads[2]))], pad_op.inputs[0]
    size = graph.shape(src)[1:3]
    kernel, dilation = target.layer.kernel_size, target.layer.dilation
    for axis in range(2):
        have = explicit[axis]
        if opts.padding == SAME:
            extra = TFSameConv2d.same_pad(size[axis] + sum(have), kernel[axis], stride[axis], dilation[axis])
            have = (have[0] + extra[0], have[1] + extra[1])
        want = TFSameConv2d.same_pad(size[axis], kernel[axis], stride[axis], dilation[axis])
        if tuple(have) != want:
            raise InputError(f"{source} pads {tuple(have)} where edgekit layer {target.name} "
                             f"(TF SAME) pads {want}")


def _check_residuals(graph: Graph, model: nn.Module) -> None:
    adds = sum(1 for op in graph.ops if op.kind == "ADD"
               and sum(1 for t in op.inputs if graph.producer.get(t) is not None) == 2)
    own = sum(1 for m in model.modules() if getattr(m, "use_residual", False))
    if adds != own:
        raise InputError(f"{graph.path.name} has {adds} residual additions but "
                         f"{model.meta.arch} has {own}: not this architecture")
