"""Which ops of an .onnx run on ONNX Runtime's int8 kernels, and which fall back to float.

A QDQ model (QuantizeLinear/DequantizeLinear around float ops) is fast only where the graph
optimizer fuses a DQ -> op -> Q pattern into an int8 kernel (QLinearConv, QGemm, QLinearAdd, ...).
A pattern it cannot fuse runs as the float op between a DequantizeLinear and a QuantizeLinear:
correct, but float arithmetic plus two conversions. This saves the optimized graph the session
would run (the QDQ fusions are graph transformations, not CPU-specific kernels) and reads it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import InputError, first_line
from .placement import OpPlacement, Placement

CONVERSIONS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# Ops that move or select values without arithmetic: an int8 input keeps them int8.
DATA_MOVEMENT = {"Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Slice",
                 "Split", "Gather", "Identity", "Pad", "Resize", "DepthToSpace", "SpaceToDepth",
                 "Concat", "Expand", "Tile"}


def _int8_kernel(op_type: str) -> bool:
    return op_type.startswith(("QLinear", "QGemm", "QAttention", "QOrdered", "MatMulInteger",
                               "ConvInteger", "DynamicQuantize"))


def ort_placement(path: Path, runtime: str) -> Placement:
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgekit-check-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        # Extended = the level with the QDQ fusions; "all" adds layout changes that cannot be saved
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimized)
        try:
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            graph = onnx.load(str(optimized), load_external_data=False).graph
        except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
            raise InputError(f"{path.name} is not a model ONNX Runtime can load: {first_line(exc)}") from exc
    quantized_model = any(n.op_type in CONVERSIONS or _int8_kernel(n.op_type) for n in graph.node)
    int8 = {i.name for i in graph.initializer if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    int8 |= {i.name for i in graph.input if i.type.tensor_type.elem_type in (onnx.TensorProto.INT8,
                                                                              onnx.TensorProto.UINT8)}
    produced_by = {}
    ops = []
    compute = 0
    for index, node in enumerate(graph.node):
        for out in node.output:
            produced_by[out] = node.op_type
        if node.op_type in CONVERSIONS:
            if node.op_type == "QuantizeLinear":
                int8.update(node.output)
            continue  # conversions are not placed: they are the boundaries between the kernels
        compute += 1
        if _int8_kernel(node.op_type) or (node.op_type in DATA_MOVEMENT and node.input and node.input[0] in int8):
            int8.update(node.output)
            ops.append(OpPlacement(index, node.op_type, "int8 kernel", True, name=node.name))
        elif not quantized_model:
            ops.append(OpPlacement(index, node.op_type, "fp32", True, name=node.name))
        else:
            dequantized = any(produced_by.get(i) == "DequantizeLinear" for i in node.input)
            reason = ("no fused int8 kernel for this QDQ pattern: runs in float between "
                      "DequantizeLinear and QuantizeLinear") if dequantized else \
                "its inputs are float (a layer kept float)"
            ops.append(OpPlacement(index, node.op_type, "float fallback" if dequantized else "fp32",
                                   False, reason, name=node.name))
    conversions = sum(n.op_type in CONVERSIONS for n in graph.node)
    notes = [f"{conversions} QuantizeLinear/DequantizeLinear conversions left after fusion"] if quantized_model else []
    regions = _int8_regions(ops)
    accelerator = "int8 kernels" if quantized_model else "fp32 kernels (a float model)"
    return Placement(str(path), "onnxruntime", accelerator, ops, regions, runtime, notes)


def _int8_regions(ops: list[OpPlacement]) -> int:
    """Runs of consecutive int8 ops in execution order (a rough count of float <-> int8 switches)."""
    regions, inside = 0, False
    for op in ops:
        if op.accelerated and not inside:
            regions += 1
        inside = op.accelerated
    return regions
