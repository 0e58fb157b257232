"""The per-layer int8 report's ONNX Runtime side (quant/report.py has the report itself): read
every layer's output from ONNX Runtime sessions of a float ONNX model and its QDQ int8 version,
adding each as a graph output, and compare them layer by layer and with one layer quantized alone.

Layers are named by PyTorch module path (layer_names.py); how the figures are defined:
quant/report.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..quant.report import MAX_DB, Accumulator, LayerError, QuantReport
from .layer_names import onnx_layers

@dataclass(frozen=True)
class Layer:
    """One layer of the float ONNX graph: its module path, the tensors entering and leaving it."""

    name: str
    ops: tuple[str, ...]
    input: str
    output: str


def layers_of(graph) -> list[Layer]:
    """The layers of a float ONNX graph (layer_names.onnx_layers), in graph order."""
    initializers = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    owner = onnx_layers(graph)
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node.name)
    result = []
    for name in dict.fromkeys(layer for layer in owner.values() if layer is not None):
        members = [n for n in graph.node if owner[n.name] == name]
        produced = {t for n in members for t in n.output}
        inputs = [t for n in members for t in n.input if t and t not in produced and t not in initializers]
        leaving = [t for n in members for t in n.output
                   if t in outputs or any(owner[c] != name for c in consumers.get(t, []))]
        if inputs and leaving:
            result.append(Layer(name, tuple(n.op_type for n in members), inputs[0], leaving[0]))
    return result


# op -> its Add/Clip/Mul form as PyTorch exports edgekit's HardSwish / HardSigmoid modules:
# (node suffix, op, inputs) with "x" the op's input and "c<k>" the scope's k-th constant
_DECOMPOSED = {
    "HardSwish": [("Add", "Add", ("x", "c0")), ("Clip", "Clip", ("Add", "c1", "c2")),
                  ("Mul", "Mul", ("x", "Clip")), ("Mul_1", "Mul", ("Mul", "c3"))],
    "HardSigmoid": [("Add", "Add", ("x", "c0")), ("Clip", "Clip", ("Add", "c1", "c2")),
                    ("Mul", "Mul", ("Clip", "c3"))],
}
_CONSTANTS = (3.0, 0.0, 6.0, 1.0 / 6.0)


def decomposed_hard_activations(model):
    """``model`` with ONNX HardSwish/HardSigmoid nodes (ONNX Runtime's fp32 artifact) written as
    the Add/Clip/Mul nodes of the same names the int8 artifact was quantized from, so that the
    two graphs can be compared node by node."""
    import onnx
    from onnx import helper

    graph = model.graph
    if not any(n.op_type in _DECOMPOSED for n in graph.node):
        return model
    nodes = []
    for node in graph.node:
        if node.op_type not in _DECOMPOSED:
            nodes.append(node)
            continue
        scope = node.name.rsplit("/", 1)[0]
        names = {"x": node.input[0]}
        for k, value in enumerate(_CONSTANTS):
            suffix = f"Constant_{k}" if k else "Constant"
            names[f"c{k}"] = f"{scope}/{suffix}_output_0"
            nodes.append(helper.make_node("Constant", [], [names[f"c{k}"]], name=f"{scope}/{suffix}",
                                          value=helper.make_tensor("value", onnx.TensorProto.FLOAT, [], [value])))
        for suffix, op, inputs in _DECOMPOSED[node.op_type]:
            names[suffix] = f"{scope}/{suffix}_output_0"
            nodes.append(helper.make_node(op, [names[i] for i in inputs], [names[suffix]], name=f"{scope}/{suffix}"))
        final = names[_DECOMPOSED[node.op_type][-1][0]]
        for other in graph.node:
            for i, t in enumerate(other.input):
                if t == node.output[0]:
                    other.input[i] = final
        for out in graph.output:
            if out.name == node.output[0]:
                out.name = final
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _dequantized(graph) -> dict[str, str]:
    """tensor -> the DequantizeLinear output its consumers read in a QDQ graph."""
    quantized = {n.input[0]: n.output[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    dequant = {n.input[0]: n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return {t: dequant[q] for t, q in quantized.items() if q in dequant}


def _with_outputs(model, names: list[str]) -> bytes:
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            present.add(name)
    return model.SerializeToString()


def _session(data: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Optimizations may fuse away the tensors being read; the values are the same either way.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3  # no warnings about initializers the variants leave unused
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def onnx_report(float_onnx: str | Path, int8_onnx: str | Path, images: np.ndarray,
                backend: str = "onnxruntime") -> QuantReport:
    """Compare a float ONNX model and its QDQ int8 version layer by layer on ``images`` (NCHW)."""
    import onnx

    float_model = decomposed_hard_activations(onnx.load(str(float_onnx)))
    int8_model = onnx.load(str(int8_onnx))
    layers = layers_of(float_model.graph)
    if not layers:
        raise InputError(f"{Path(float_onnx).name}: no convolution or linear layers to report on")
    dq = _dequantized(int8_model.graph)
    int8_tensors = {t for n in int8_model.graph.node for t in n.output} | {i.name for i in int8_model.graph.input}
    tensors = list(dict.fromkeys(t for layer in layers for t in (layer.input, layer.output)))
    tensors = [t for t in tensors if t in dq or t in int8_tensors]
    float_out = float_model.graph.output[0].name
    graph_input = float_model.graph.input[0].name
    float_session = _session(_with_outputs(float_model, [t for t in tensors if t != graph_input]))
    int8_session = _session(_with_outputs(int8_model, [dq.get(t, t) for t in tensors]))
    float_input = float_session.get_inputs()[0].name
    int8_input = int8_session.get_inputs()[0].name
    stats = {t: Accumulator() for t in tensors}
    logits = Accumulator()
    float_names = [o.name for o in float_session.get_outputs()]
    int8_names = [o.name for o in int8_session.get_outputs()]
    for image in np.asarray(images, np.float32):
        x = image[None]
        ref = dict(zip(float_names, float_session.run(None, {float_input: x})))
        got = dict(zip(int8_names, int8_session.run(None, {int8_input: x})))
        for t in tensors:
            stats[t].add(ref.get(t, x), got.get(dq.get(t, t), x))
        logits.add(ref[float_out], got[int8_names[0]])
    errors = []
    for layer in layers:
        if layer.output not in stats:
            continue
        out = stats[layer.output]
        before = stats[layer.input].sqnr_db if layer.input in stats else MAX_DB
        added = 10 ** (-out.sqnr_db / 10) - 10 ** (-before / 10)
        errors.append(LayerError(layer.name, "+".join(dict.fromkeys(layer.ops)), round(out.sqnr_db, 2),
                                 round(out.cosine, 5), round(before - out.sqnr_db, 2), round(added, 5)))
    alone = _alone_sqnr(float_model, int8_model, [e.layer for e in errors], images)
    order = sorted(range(len(errors)), key=lambda i: alone[errors[i].layer])
    ranks = {i: r + 1 for r, i in enumerate(order)}
    errors = [LayerError(**{**e.to_dict(), "alone_sqnr_db": round(alone[e.layer], 2), "rank": ranks[i]})
              for i, e in enumerate(errors)]
    return QuantReport(backend, len(images), errors, round(logits.sqnr_db, 2))


def _alone_sqnr(float_model, int8_model, layers: list[str], images: np.ndarray) -> dict[str, float]:
    """Logits SQNR with only one layer quantized, for each layer: the float model with the
    layer's nodes reading their inputs through the int8 model's Q/DQ chains (its weights and
    the activations it reads, and its bias: bias-corrected, quant/weights.py). Built from the
    float model because the int8 one lost the ReLUs its quantization ranges stand for."""
    import onnx

    owner = onnx_layers(float_model.graph)
    q_nodes = {n.name: n for n in int8_model.graph.node}
    producer = {o: n for n in int8_model.graph.node for o in n.output}
    q_inits = {t.name: t for t in int8_model.graph.initializer}
    graph_input = float_model.graph.input[0].name
    float_session = _session(float_model.SerializeToString())
    xs = np.asarray(images, np.float32)
    reference = [float_session.run(None, {graph_input: x[None]})[0] for x in xs]
    result = {}
    for layer in layers:
        variant = onnx.ModelProto.FromString(float_model.SerializeToString())
        present = {t.name for t in variant.graph.initializer}
        added: list = []
        shadowed: set[str] = set()
        for node in variant.graph.node:
            twin = q_nodes.get(node.name)
            if owner.get(node.name) != layer or twin is None or len(twin.input) != len(node.input):
                continue
            for i, (mine, theirs) in enumerate(zip(node.input, twin.input)):
                dq = producer.get(theirs)
                if not mine or dq is None or dq.op_type != "DequantizeLinear":
                    continue
                if mine == theirs:  # a quantized bias, dequantized under its float name
                    shadowed.add(mine)
                chain = [dq]
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    q = onnx.NodeProto.FromString(q.SerializeToString())
                    q.input[0] = mine  # what this node read in the float model (ReLU included)
                    chain.insert(0, q)
                for link in chain:
                    if link.name not in {n.name for n in added}:
                        added.append(link)
                    for t in link.input:
                        if t in q_inits and t not in present:
                            variant.graph.initializer.append(q_inits[t])
                            present.add(t)
                node.input[i] = theirs
        # the float tensor a dequantized bias replaces: an initializer, or an Identity of another
        # layer's equal one (the exporter shares identical constants, e.g. zero biases)
        nodes = [n for n in variant.graph.node if not (n.output and set(n.output) <= shadowed)]
        del variant.graph.node[:]
        variant.graph.node.extend(nodes + added)
        kept = [t for t in variant.graph.initializer if t.name not in shadowed]
        del variant.graph.initializer[:]
        variant.graph.initializer.extend(kept)
        session = _session(variant.SerializeToString())
        acc = Accumulator()
        for x, ref in zip(xs, reference):
            acc.add(ref, session.run(None, {graph_input: x[None]})[0])
        result[layer] = acc.sqnr_db
    return result
