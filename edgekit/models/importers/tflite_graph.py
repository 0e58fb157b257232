"""A .tflite file as ops in execution order, with dequantized constants and activation ranges."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, MissingDependencyError

FUSED = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh", 5: "sign_bit"}
SAME = 0  # tflite Padding enum (VALID is 1)


def _interpreter(path: Path) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, OpResolverType
        except ImportError:
            raise MissingDependencyError("ai-edge-litert", "tflite") from None
    try:
        # Without this XNNPACK may replace the graph by one DELEGATE node and hide the real ops.
        interpreter = Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"cannot read TFLite model {path}: {first}") from exc
    return interpreter


def _options(path: Path, count: int) -> list[Any]:
    """Each operator's builtin options (fused activation, padding, strides), or Nones when the
    flatbuffer schema is not available (tflite_runtime ships none)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return [None] * count
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    if graph.OperatorsLength() != count:
        return [None] * count
    return [schema.BuiltinOptionsCreator(op.BuiltinOptionsType(), op.BuiltinOptions())
            for op in (graph.Operators(i) for i in range(count))]


@dataclass
class Op:
    index: int
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: Any  # the schema's *OptionsT object, or None

    @property
    def fused(self) -> str | None:
        code = getattr(self.options, "fusedActivationFunction", None)
        return None if code is None else FUSED.get(code, f"fused#{code}")


class Graph:
    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise InputError(f"TFLite model not found: {path}")
        self.path = path
        self.interpreter = _interpreter(path)
        self.tensors = {t["index"]: t for t in self.interpreter.get_tensor_details()}
        details = self.interpreter._get_ops_details()
        options = _options(path, len(details))
        self.ops = [Op(d["index"], d["op_name"], [int(i) for i in d["inputs"]],
                       [int(i) for i in d["outputs"]], opt) for d, opt in zip(details, options)]
        self.producer = {t: op for op in self.ops for t in op.outputs}
        self.consumers: dict[int, list[Op]] = {}
        for op in self.ops:
            for t in op.inputs:
                self.consumers.setdefault(t, []).append(op)
        self.input = self.interpreter.get_input_details()[0]

    def name(self, tensor: int) -> str:
        return self.tensors[tensor]["name"]

    def shape(self, tensor: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.tensors[tensor]["shape"])

    def is_constant(self, tensor: int) -> bool:
        return tensor >= 0 and tensor not in self.producer and tensor != self.input["index"]

    def value(self, tensor: int) -> np.ndarray:
        """A constant tensor as float32, dequantized per tensor or per channel."""
        producer = self.producer.get(tensor)
        if producer is not None and producer.kind == "DEQUANTIZE":  # float16 / hybrid weights
            return self.value(producer.inputs[0])
        data = self.interpreter.get_tensor(tensor)
        if data.dtype.kind == "f":
            return data.astype(np.float32)
        q = self.tensors[tensor]["quantization_parameters"]
        scales, zeros = q["scales"], q["zero_points"]
        if scales.size == 0:
            raise InputError(f"{self.path.name}: tensor '{self.name(tensor)}' is {data.dtype} "
                             "without quantization parameters")
        shape = [1] * data.ndim
        if scales.size > 1:
            shape[q["quantized_dimension"]] = -1
        real = (data.astype(np.float64) - zeros.reshape(shape)) * scales.reshape(shape)
        return real.astype(np.float32)

    def range(self, tensor: int) -> tuple[float, float] | None:
        """(min, max) an activation tensor can hold, from its quantization; None for float."""
        t = self.tensors[tensor]
        scales, zeros = t["quantization_parameters"]["scales"], t["quantization_parameters"]["zero_points"]
        if t["dtype"] not in (np.uint8, np.int8, np.int16) or scales.size != 1:
            return None
        info = np.iinfo(t["dtype"])
        return float((info.min - zeros[0]) * scales[0]), float((info.max - zeros[0]) * scales[0])

    def only_consumer(self, tensor: int) -> Op | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 else None
