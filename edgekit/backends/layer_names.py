"""Layers named the same way in every backend: by PyTorch module path ("features.3.conv.1").

The ONNX export names each node by its module scope, "/features/features.3/conv/conv.1/Conv",
where every level repeats its parent's name; OpenVINO keeps these names when it reads the ONNX
file. ``module_path`` recovers "features.3.conv.1" from such a name, so a layer chosen in a report
(or by the user) can be kept in float by any backend.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..errors import InputError


def module_path(node_name: str) -> str:
    """"/features/features.3/conv/conv.1/Conv" -> "features.3.conv.1" (the node's module)."""
    scopes = [s for s in node_name.split("/") if s][:-1]  # the last part names the op
    parts: list[str] = []
    previous = ""
    for scope in scopes:
        parts.append(scope[len(previous) + 1:] if previous and scope.startswith(previous + ".") else scope)
        previous = scope
    return ".".join(parts)


def layer_names(weighted_nodes: list[str]) -> dict[str, str]:
    """Each weighted node (conv, linear) -> its layer: the largest module around it that holds
    no other weighted node. A conv + norm + activation block is one layer, a block with several
    convs is not; a node without a scope is a layer of its own."""
    paths = {n: module_path(n) for n in weighted_nodes}
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


def in_layers(path: str, layers: tuple[str, ...] | list[str]) -> bool:
    """Whether module ``path`` is one of ``layers`` or inside one. Wrapper prefixes (a module
    wrapped for NHWC input, say "inner.") are ignored by matching on whole trailing parts."""
    return any(f".{layer}." in f".{path}." for layer in layers)


def check_layers(layers: tuple[str, ...] | list[str], paths: Iterable[str]) -> None:
    """InputError for the first of ``layers`` that none of the model's module ``paths`` is in."""
    paths = set(paths)
    for layer in layers:
        if not any(in_layers(path, (layer,)) for path in paths):
            raise InputError(f"no layer named {layer} in the model")
