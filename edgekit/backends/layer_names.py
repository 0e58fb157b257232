"""Layers named the same way in every backend, by PyTorch module path ("features.3.conv.1").

The ONNX export names each node by its module scope, "/features/features.3/conv/conv.1/Conv",
where every level repeats its parent's name; OpenVINO keeps these names when it reads the ONNX
file, and torch.export records the same paths in ``nn_module_stack``. A layer is one weighted op
(convolution, linear) with everything that belongs to it (assign_layers), so a layer chosen in a
report, or by the user, can be kept in float by any backend.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

ONNX_WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class GraphNode:
    key: str  # unique name of the node in its graph
    path: str  # its module path, "" when unknown
    weighted: bool
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def module_path(node_name: str) -> str:
    """"/features/features.3/conv/conv.1/Conv" -> "features.3.conv.1" (the node's module)."""
    scopes = [s for s in node_name.split("/") if s][:-1]  # the last part names the op
    parts: list[str] = []
    previous = ""
    for scope in scopes:
        parts.append(scope[len(previous) + 1:] if previous and scope.startswith(previous + ".") else scope)
        previous = scope
    return ".".join(parts)


def layer_names(paths: dict[str, str]) -> dict[str, str]:
    """Weighted node -> its layer: the largest module around it that holds no other weighted
    node. A conv + norm + activation block is one layer, a block with several convs is not; a
    node without a module path is a layer of its own."""
    result = {}
    for node, path in paths.items():
        layer = path or node
        parts = path.split(".") if path else []
        for i in range(len(parts) - 1, 0, -1):
            ancestor = ".".join(parts[:i])
            if any(other != node and (q == ancestor or q.startswith(ancestor + "."))
                   for other, q in paths.items()):
                break
            layer = ancestor
        result[node] = layer
    return result


def assign_layers(nodes: list[GraphNode]) -> dict[str, str | None]:
    """Every node of a graph (in topological order) -> its layer, or None before the first.

    Weighted nodes and whatever sits inside their layer's module (norm, activation) belong to it.
    Any other op (a squeeze-excite's gate and multiply, a residual add, pooling) belongs to the
    layer that produced its newest input: that layer's output is what the op changes, so keeping
    the layer float keeps the op float too.
    """
    layers = layer_names({n.key: n.path for n in nodes if n.weighted})
    known = sorted(set(layers.values()), key=len, reverse=True)  # innermost first
    producer: dict[str, tuple[int, str | None]] = {}
    result: dict[str, str | None] = {}
    for index, node in enumerate(nodes):
        layer = layers.get(node.key)
        if layer is None and node.path:
            layer = next((k for k in known if in_layers(node.path, [k])), None)
        if layer is None:
            sources = [producer[t] for t in node.inputs if t in producer]
            layer = max(sources, key=lambda s: s[0])[1] if sources else None
        result[node.key] = layer
        for t in node.outputs:
            producer[t] = (index, layer)
    return result


def onnx_layers(graph) -> dict[str, str | None]:
    """assign_layers for an ONNX graph: node name -> layer."""
    return assign_layers([GraphNode(n.name, module_path(n.name), n.op_type in ONNX_WEIGHTED_OPS,
                                    tuple(n.input), tuple(n.output)) for n in graph.node])


def in_layers(path: str, layers: tuple[str, ...] | list[str]) -> bool:
    """Whether module ``path`` is one of ``layers`` or inside one. Wrapper prefixes (a module
    wrapped for NHWC input, say "inner.") are ignored by matching on whole trailing parts."""
    return any(f".{layer}." in f".{path}." for layer in layers)


def select(owner: dict[str, str | None], layers: tuple[str, ...] | list[str]) -> list[str]:
    """The nodes of ``owner`` (node -> layer) in ``layers`` (a layer, or a module holding
    several: "features.3" is the whole block); InputError for a name that matches nothing."""
    chosen = [node for node, layer in owner.items() if layer is not None and in_layers(layer, layers)]
    for name in layers:
        if not any(layer is not None and in_layers(layer, [name]) for layer in owner.values()):
            raise InputError(f"no layer named '{name}' in the model (see 'edgekit quant-report')")
    return chosen
