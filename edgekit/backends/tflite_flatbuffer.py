"""Rewrites of a converted .tflite flatbuffer: the I/O dtype the target asks for, and the integer
I/O that the converter's strict QDQ mode leaves float."""
from __future__ import annotations

from typing import Any


def set_io_dtype(data: bytes, io_dtype: str) -> bytes:
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


def integer_io(data: bytes) -> bytes:
    """Strict QDQ mode keeps float32 I/O: a graph input that only feeds a QUANTIZE to int8 is
    replaced by that int8 tensor, and a graph output made by a DEQUANTIZE from int8 by its
    int8 source, as the default mode gives (``set_io_dtype`` then applies the target's I/O)."""
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
