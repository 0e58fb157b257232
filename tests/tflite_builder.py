"""Small TFLite flatbuffers built op by op, for placement rules that need a precise graph.

The files are never run, only read by checks: shapes, types, quantization and data flow are what
matter, so each op carries no options beyond what a rule reads.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

fb = pytest.importorskip("ai_edge_litert.schema_py_generated", reason="needs the 'tflite' extra")
fbu = pytest.importorskip("ai_edge_litert.tools.flatbuffer_utils", reason="needs the 'tflite' extra")

TYPES = {"float32": fb.TensorType.FLOAT32, "int8": fb.TensorType.INT8, "uint8": fb.TensorType.UINT8,
         "int16": fb.TensorType.INT16, "int32": fb.TensorType.INT32}
NUMPY = {"float32": np.float32, "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32}


class Graph:
    def __init__(self):
        self.model = fb.ModelT()
        self.model.version = 3
        self.model.buffers = [fb.BufferT()]  # buffer 0: the empty sentinel
        self.model.operatorCodes = []
        self.graph = fb.SubGraphT()
        self.graph.tensors, self.graph.operators = [], []
        self.graph.inputs, self.graph.outputs = [], []
        self.model.subgraphs = [self.graph]

    def tensor(self, shape, dtype="int8", data=None, quantized=None, name=None) -> int:
        t = fb.TensorT()
        t.shape = list(shape)
        t.type = TYPES[dtype]
        t.name = name or f"t{len(self.graph.tensors)}"
        if data is not None:
            buf = fb.BufferT()
            buf.data = list(np.asarray(data, dtype=NUMPY[dtype]).tobytes())
            self.model.buffers.append(buf)
            t.buffer = len(self.model.buffers) - 1
        else:
            t.buffer = 0
        if quantized if quantized is not None else dtype in ("int8", "uint8", "int16"):
            q = fb.QuantizationParametersT()
            q.scale, q.zeroPoint = [0.05], [0]
            t.quantization = q
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def input(self, shape, dtype="int8") -> int:
        index = self.tensor(shape, dtype)
        self.graph.inputs.append(index)
        return index

    def op(self, kind: str, inputs, outputs) -> None:
        code = getattr(fb.BuiltinOperator, kind)
        codes = [c.builtinCode for c in self.model.operatorCodes]
        if code not in codes:
            c = fb.OperatorCodeT()
            c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
            self.model.operatorCodes.append(c)
            codes.append(code)
        o = fb.OperatorT()
        o.opcodeIndex = codes.index(code)
        o.inputs, o.outputs = list(inputs), list(outputs)
        self.graph.operators.append(o)

    def unary(self, kind: str, x: int, shape=None, dtype="int8") -> int:
        """An op with one data input and a new output of ``shape`` (default: the input's)."""
        out = self.tensor(shape or self.graph.tensors[x].shape, dtype)
        self.op(kind, [x], [out])
        return out

    def save(self, path: Path, outputs: list[int]) -> Path:
        self.graph.outputs = list(outputs)
        path.write_bytes(bytes(fbu.convert_object_to_bytearray(self.model)))
        return path
