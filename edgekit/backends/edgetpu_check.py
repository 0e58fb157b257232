"""Will a .tflite run on the Edge TPU? A pre-compile check from Coral's documented model requirements
and the compiler's observed behaviour.

Coral's "TensorFlow models on the Edge TPU" page (coral.ai/docs/edgetpu/models-intro) requires:
tensors quantized to 8 bits (int8/uint8; int32 only for constant biases and shape/axis arguments),
static tensor sizes, constant parameters, tensors of at most 3 dimensions (more only when the
outer ones are 1), one subgraph, and ops from its supported list with their known limitations.

Placement follows the data flow, as the compiler does: an op the Edge TPU cannot run stays on the
CPU, and so does every op that depends on a CPU op fed by the Edge TPU's output (the graph cannot
return to the Edge TPU once it has left it). Unsupported ops on the input side (a CAST, a float ->
int8 QUANTIZE) leave the ops after them mapped. Some limits are undocumented (large resizes,
transposes and reshapes): such verdicts are marked as rules of thumb, not certainties. The
compiler has the final word.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError, MissingDependencyError
from .placement import OpPlacement, Placement

MAPPED = "Mapped to Edge TPU"
AFTER_CUT = "Supported, but fed by an op that runs on the CPU after the Edge TPU: runs on the CPU"
COMPILED_OP = "edgetpu-custom-op"

# Op type -> the documented limitation (checked below where a rule exists; "" = none documented).
SUPPORTED_OPS: dict[str, str] = {
    "ADD": "",
    "AVERAGE_POOL_2D": "No fused activation function.",
    "CONCATENATION": "No fused activation function. A compile-time constant input is allowed only "
                     "with exactly 2 inputs and all zeros (a zero-padding op).",
    "CONV_2D": "Same dilation in x and y.",
    "DEPTHWISE_CONV_2D": "Same dilation in x and y.",
    "EXPAND_DIMS": "",
    "FULLY_CONNECTED": "Only the default weights format. Output tensor is one-dimensional.",
    "HARD_SWISH": "",
    "L2_NORMALIZATION": "",
    "LOGISTIC": "",
    "LSTM": "Unidirectional LSTM only.",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "",
    "MAXIMUM": "",
    "MAX_POOL_2D": "No fused activation function.",
    "MEAN": "No reduction in the batch dimension; a z (channel) reduction needs channels % 4 == 0.",
    "MINIMUM": "",
    "MUL": "",
    "PACK": "No packing in the batch dimension.",
    "PAD": "No padding in the batch dimension.",
    "PRELU": "Alpha must be 1-dimensional (only the innermost dimension larger than 1).",
    "QUANTIZE": "",
    "REDUCE_MAX": "Cannot operate on the batch dimension.",
    "REDUCE_MIN": "Cannot operate on the batch dimension.",
    "RELU": "",
    "RELU6": "",
    "RELU_N1_TO_1": "",
    "RESHAPE": "Certain reshapes of large tensors may not be mapped.",
    "RESIZE_BILINEAR": "3-dimensional input/output; may stay on the CPU to avoid precision loss.",
    "RESIZE_NEAREST_NEIGHBOR": "3-dimensional input/output; may stay on the CPU to avoid precision loss.",
    "RSQRT": "",
    "SLICE": "",
    "SOFTMAX": "Only a 1-D input tensor with at most 16,000 elements.",
    "SPACE_TO_DEPTH": "",
    "SPLIT": "No splitting in the batch dimension.",
    "SPLIT_V": "No splitting in the batch dimension.",
    "SQUARED_DIFFERENCE": "",
    "SQUEEZE": "",
    "STRIDED_SLICE": "",
    "SUB": "",
    "SUM": "Cannot operate on the batch dimension.",
    "TANH": "",
    "TILE": "",
    "TRANSPOSE": "",
    "TRANSPOSE_CONV": "",
}
QUANTIZED_TYPES = ("int8", "uint8")
SOFTMAX_MAX_ELEMENTS = 16000
# Integer LSTMs keep their cell state and gate intermediates in int16; the compiler maps them anyway.
INT16_STATE_OPS = ("LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM")
# Resizes: 2x upscales and same-size resizes were mapped, larger ones (1 -> 33, 33 -> 513) stayed on
# the CPU "to avoid loss in precision". The exact limit is undocumented.
RESIZE_MAX_SCALE = 2.0
# RESHAPE and TRANSPOSE of large tensors were seen left on the CPU ("unspecified limitation").
LARGE_TENSOR_ELEMENTS = 1 << 16


@dataclass(frozen=True)
class Problem:
    category: str  # short, shared by every op with the same problem (the table's status)
    detail: str

    def __str__(self) -> str:
        return f"{self.category}: {self.detail}"


@dataclass(frozen=True)
class OpCheck:
    index: int  # position in execution order
    op: str  # TFLite op type, e.g. "CONV_2D"
    supported: bool  # the op itself meets the Edge TPU's requirements
    mapped: bool  # would run on the Edge TPU: supported, and not downstream of a CPU op fed by it
    reason: str = ""  # why it is not supported ("" when supported)
    category: str = ""  # the reason's short form
    certain: bool = True  # False: an undocumented limit may decide otherwise (see caveat)
    caveat: str = ""

    @property
    def status(self) -> str:
        if self.mapped:
            return MAPPED
        return f"Not supported: {self.category}" if not self.supported else AFTER_CUT


@dataclass
class EdgeTpuReport:
    path: str
    ops: list[OpCheck]
    subgraphs: int = 1
    issues: list[str] = field(default_factory=list)  # model-level findings
    compiled: bool = False  # the file already holds an edgetpu-custom-op

    @property
    def ops_total(self) -> int:
        return len(self.ops)

    @property
    def ops_mapped(self) -> int:
        return sum(op.mapped for op in self.ops)

    @property
    def first_unsupported(self) -> int | None:
        if self.compiled:
            return None
        return next((op.index for op in self.ops if not op.supported), None)

    @property
    def ops_cut(self) -> int:
        """Supported ops on the CPU because they follow the Edge TPU's part through a CPU op."""
        return 0 if self.compiled else sum(op.supported and not op.mapped for op in self.ops)

    @property
    def segments(self) -> int:
        """Edge TPU custom ops the compiler makes: one when anything maps (placement by data flow
        keeps the mapped ops in one region)."""
        if self.compiled:
            return sum(op.op == COMPILED_OP for op in self.ops)
        return int(self.ops_mapped > 0)

    @property
    def certain(self) -> bool:
        return all(op.certain for op in self.ops)

    @property
    def all_mapped(self) -> bool:
        return self.ops_total > 0 and self.ops_mapped == self.ops_total and not self.issues

    def summary(self) -> str:
        if self.compiled:
            cpu = self.ops_total - self.ops_mapped
            return (f"already compiled for the Edge TPU: {self.ops_mapped} Edge TPU custom "
                    f"op{'s' if self.ops_mapped != 1 else ''}, {cpu} other op{'s' if cpu != 1 else ''} "
                    "on the CPU")
        unsupported = [op for op in self.ops if not op.supported]
        if not unsupported:
            text = f"all {self.ops_total} ops would be mapped to the Edge TPU"
        else:
            kinds = ", ".join(f"{op.op} (op {op.index}: {op.category})" for op in unsupported[:3])
            more = f" and {len(unsupported) - 3} more" if len(unsupported) > 3 else ""
            text = (f"{self.ops_mapped} of {self.ops_total} ops would be mapped to the Edge TPU; "
                    f"{len(unsupported)} unsupported op{'s' if len(unsupported) != 1 else ''} stay on "
                    f"the CPU: {kinds}{more}")
            after = self.ops_cut
            if after:
                text += (f"; {after} supported op{'s' if after != 1 else ''} also run on the CPU, "
                         "fed by a CPU op after the Edge TPU")
        uncertain = [op for op in self.ops if not op.certain]
        if uncertain:
            text += (f"; {len(uncertain)} verdict{'s' if len(uncertain) != 1 else ''} rest on a rule of "
                     f"thumb ({', '.join(sorted({op.op for op in uncertain}))}): the compiler decides")
        if self.issues:
            text += "; " + "; ".join(self.issues)
        return text

    def table(self) -> list[tuple[str, int, str]]:
        """(op type, count, status) rows like the compiler's "Operator Count Status" table."""
        counts = Counter((op.op, op.status) for op in self.ops)
        return [(kind, n, status) for (kind, status), n in counts.items()]

    def to_dict(self) -> dict:
        return {"path": self.path, "ops_total": self.ops_total, "ops_mapped": self.ops_mapped,
                "first_unsupported": self.first_unsupported, "all_mapped": self.all_mapped,
                "subgraphs": self.subgraphs, "issues": list(self.issues), "compiled": self.compiled,
                "ops_cut": self.ops_cut, "segments": self.segments, "certain": self.certain,
                "summary": self.summary(),
                "operators": [{"op": k, "count": n, "status": s} for k, n, s in self.table()],
                "ops": [asdict(op) for op in self.ops]}

    def placement(self) -> Placement:
        ops = [OpPlacement(op.index, op.op, "Edge TPU" if op.mapped else "CPU", op.mapped,
                           "" if op.mapped else (op.reason or op.status), op.certain) for op in self.ops]
        notes = list(self.issues) + sorted({f"{op.op}: {op.caveat}" for op in self.ops if op.caveat})
        decided = "edgetpu_compiler (already compiled)" if self.compiled else \
            "Coral's documented requirements and the compiler's observed behaviour (no compiler run)"
        return Placement(self.path, "edgetpu", "the Edge TPU", ops, self.segments, decided, notes)

    def to_text(self) -> str:
        lines = [f"Edge TPU check: {Path(self.path).name}", f"  {self.summary()}", "",
                 f"  {'Operator':<28} {'Count':>5}  Status"]
        lines += [f"  {kind:<28} {n:>5}  {status}" for kind, n, status in self.table()]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def _schema() -> tuple[Any, Any]:
    try:
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils
    except ImportError:
        raise MissingDependencyError("ai-edge-litert", "tflite") from None
    return schema, flatbuffer_utils


def _enum_names(enum_class: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


class _Graph:
    """The flatbuffer's first subgraph with the few lookups the rules need."""

    def __init__(self, path: Path):
        schema, fbu = _schema()
        try:
            self.model = fbu.read_model_from_bytearray(bytearray(path.read_bytes()))
        except Exception as exc:  # a truncated or non-TFLite file
            raise InputError(f"{path.name} is not a valid TFLite model (the flatbuffer does not "
                             f"parse: {type(exc).__name__})") from exc
        if not self.model.subgraphs:
            raise InputError(f"{path.name} has no subgraph")
        self.graph = self.model.subgraphs[0]
        self.op_names = _enum_names(schema.BuiltinOperator)
        self.type_names = {k: v.lower() for k, v in _enum_names(schema.TensorType).items()}

    def op_name(self, op: Any) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if self.op_names.get(builtin) == "CUSTOM":
            custom = code.customCode
            return custom.decode() if isinstance(custom, bytes) else str(custom)
        return self.op_names.get(builtin, f"BUILTIN_{builtin}")

    def tensor(self, index: int) -> Any:
        return self.graph.tensors[index]

    def name(self, index: int) -> str:
        n = self.tensor(index).name
        return n.decode(errors="replace") if isinstance(n, bytes) else str(n)

    def dtype(self, index: int) -> str:
        return self.type_names.get(self.tensor(index).type, str(self.tensor(index).type))

    def shape(self, index: int) -> list[int]:
        s = self.tensor(index).shape
        return [int(d) for d in s] if s is not None else []

    def is_constant(self, index: int) -> bool:
        buffer = self.tensor(index).buffer
        if not buffer or buffer >= len(self.model.buffers):
            return False
        data = self.model.buffers[buffer].data
        return data is not None and len(data) > 0

    def value(self, index: int) -> np.ndarray | None:
        if not self.is_constant(index):
            return None
        dtype = {"int32": np.int32, "int64": np.int64, "int8": np.int8, "uint8": np.uint8,
                 "float32": np.float32}.get(self.dtype(index))
        if dtype is None:
            return None
        raw = np.asarray(self.model.buffers[self.tensor(index).buffer].data, dtype=np.uint8)
        return raw.view(dtype).reshape(self.shape(index) or [-1])


def _role(op: Any, index: int) -> str:
    if index in op.outputs:
        return f"output {list(op.outputs).index(index)}"
    return f"input {list(op.inputs).index(index)}"


def _tensor_problem(g: _Graph, op: Any, index: int, kind: str = "") -> Problem | None:
    dtype, shape, role = g.dtype(index), g.shape(index), _role(op, index)
    if dtype == "int16" and kind in INT16_STATE_OPS and role not in ("input 0", "output 0"):
        return None  # the cell state / gate intermediates of an integer LSTM
    signature = g.tensor(index).shapeSignature
    if signature is not None:
        dynamic = [i for i, d in enumerate(signature) if int(d) < 0]
        # A -1 batch with a stored size of 1 is how TF2 marks a Keras batch axis; the compiler
        # uses the stored size. Any other unknown dimension is a dynamic tensor.
        if dynamic and not (dynamic == [0] and shape and shape[0] == 1):
            return Problem("dynamic shape", f"{role} has shape {list(signature)} (sizes must be static)")
    if g.is_constant(index):
        if dtype not in (*QUANTIZED_TYPES, "int32"):
            return Problem("float parameters", f"{role} is a {dtype} constant (parameters must be "
                                               "8-bit quantized)")
        return None
    if dtype not in QUANTIZED_TYPES:
        return Problem(f"{dtype} tensor", f"{role} is {dtype} (the Edge TPU runs only 8-bit "
                                          "quantized tensors)")
    quant = g.tensor(index).quantization
    if quant is None or quant.scale is None or len(quant.scale) == 0:
        return Problem("not quantized", f"{role} is {dtype} without quantization parameters")
    if len(shape) > 3 and any(d > 1 for d in shape[:-3]):
        return Problem("more than 3 dimensions", f"{role} has shape {shape}: beyond 3 dimensions "
                                                 "only the 3 innermost may be larger than 1")
    return None


def _fused(op: Any) -> int:
    return int(getattr(op.builtinOptions, "fusedActivationFunction", 0) or 0)


def _axes(g: _Graph, op: Any, position: int) -> list[int] | None:
    if len(op.inputs) <= position or op.inputs[position] < 0:
        return None
    value = g.value(op.inputs[position])
    if value is None:
        return None
    rank = len(g.shape(op.inputs[0]))
    return [int(a) % rank if rank else int(a) for a in np.atleast_1d(value)]


def _no_fused(g: _Graph, op: Any) -> str | None:
    return "fused activation function" if _fused(op) else None


def _same_dilation(g: _Graph, op: Any) -> str | None:
    o = op.builtinOptions
    w, h = getattr(o, "dilationWFactor", 1) or 1, getattr(o, "dilationHFactor", 1) or 1
    return f"different x/y dilation ({w}, {h})" if w != h else None


def _fully_connected(g: _Graph, op: Any) -> str | None:
    if getattr(op.builtinOptions, "weightsFormat", 0):
        return "non-default weights format"
    out = g.shape(op.outputs[0])
    if sum(d > 1 for d in out) > 1:
        return f"output shape {out} is not one-dimensional"
    return None


def _reduction(position: int, channel_rule: bool) -> Callable[[_Graph, Any], str | None]:
    def rule(g: _Graph, op: Any) -> str | None:
        axes = _axes(g, op, position)
        if axes is None:
            return "reduction axes are not a compile-time constant"
        if 0 in axes:
            return "reduces over the batch dimension"
        shape = g.shape(op.inputs[0])
        if channel_rule and shape and (len(shape) - 1) in axes and len(shape) > 1 and shape[-1] % 4:
            return f"z (channel) reduction over {shape[-1]} channels (must be a multiple of 4)"
        return None
    return rule


def _pad(g: _Graph, op: Any) -> str | None:
    paddings = g.value(op.inputs[1]) if len(op.inputs) > 1 else None
    if paddings is None:
        return "paddings are not a compile-time constant"
    if paddings.size and np.any(np.asarray(paddings).reshape(-1, 2)[0] != 0):
        return "pads the batch dimension"
    return None


def _pack(g: _Graph, op: Any) -> str | None:
    return "packs along the batch dimension" if getattr(op.builtinOptions, "axis", 0) == 0 else None


def _split(axis_input: int) -> Callable[[_Graph, Any], str | None]:
    def rule(g: _Graph, op: Any) -> str | None:
        value = g.value(op.inputs[axis_input]) if len(op.inputs) > axis_input else None
        if value is None:
            return "split axis is not a compile-time constant"
        data = op.inputs[1] if axis_input == 0 else op.inputs[0]
        rank = len(g.shape(data)) or 1
        return "splits the batch dimension" if int(np.atleast_1d(value)[0]) % rank == 0 else None
    return rule


def _softmax(g: _Graph, op: Any) -> str | None:
    shape = g.shape(op.inputs[0])
    if sum(d > 1 for d in shape) > 1:
        return f"input shape {shape} is not 1-D"
    if int(np.prod(shape or [1])) > SOFTMAX_MAX_ELEMENTS:
        return f"{int(np.prod(shape))} elements (at most {SOFTMAX_MAX_ELEMENTS})"
    return None


def _concatenation(g: _Graph, op: Any) -> str | None:
    if _fused(op):
        return "fused activation function"
    constants = [i for i in op.inputs if i >= 0 and g.is_constant(i)]
    if constants:
        value = g.value(constants[0])
        if len(op.inputs) != 2 or value is None or np.any(value != 0):
            return "compile-time constant input that is not a 2-input all-zeros padding"
    return None


def _prelu(g: _Graph, op: Any) -> str | None:
    alpha = g.shape(op.inputs[1]) if len(op.inputs) > 1 else []
    return f"alpha shape {alpha} is not 1-dimensional" if sum(d > 1 for d in alpha) > 1 else None


def _resize(g: _Graph, op: Any) -> str | None:
    scale = _resize_scale(g, op)
    if scale is not None and scale > RESIZE_MAX_SCALE:
        return (f"upscales {scale:g}x (resizes beyond {RESIZE_MAX_SCALE:g}x stay on the CPU to avoid "
                "precision loss)")
    return None


def _resize_scale(g: _Graph, op: Any) -> float | None:
    """The largest per-axis upscale factor of a resize (NHWC: H and W)."""
    src, dst = g.shape(op.inputs[0]), g.shape(op.outputs[0])
    if len(src) != 4 or len(dst) != 4 or min(src[1:3]) <= 0:
        return None
    return max(dst[1] / src[1], dst[2] / src[2])


def _resize_caveat(g: _Graph, op: Any) -> str:
    scale = _resize_scale(g, op)
    if scale is not None and scale == 1:
        return ""
    return ("the compiler's resize limit is undocumented (2x was mapped, 15x was not; large outputs "
            "have stayed on the CPU)")


def _large_tensor_caveat(g: _Graph, op: Any) -> str:
    elements = int(np.prod(g.shape(op.inputs[0]) or [1]))
    if elements <= LARGE_TENSOR_ELEMENTS:
        return ""
    return (f"{elements} elements: large {g.op_name(op)}s have been left on the CPU for an "
            "unspecified limitation")


# Ops whose verdict an undocumented limit can overturn: op type -> the caveat ("" = none here).
CAVEATS: dict[str, Callable[[_Graph, Any], str]] = {
    "RESIZE_BILINEAR": _resize_caveat, "RESIZE_NEAREST_NEIGHBOR": _resize_caveat,
    "RESHAPE": _large_tensor_caveat, "TRANSPOSE": _large_tensor_caveat,
}


RULES: dict[str, Callable[[_Graph, Any], str | None]] = {
    "AVERAGE_POOL_2D": _no_fused, "MAX_POOL_2D": _no_fused, "CONCATENATION": _concatenation,
    "CONV_2D": _same_dilation, "DEPTHWISE_CONV_2D": _same_dilation,
    "FULLY_CONNECTED": _fully_connected, "MEAN": _reduction(1, channel_rule=True),
    "SUM": _reduction(1, False), "REDUCE_MAX": _reduction(1, False), "REDUCE_MIN": _reduction(1, False),
    "PAD": _pad, "PACK": _pack, "SPLIT": _split(0), "SPLIT_V": _split(2), "SOFTMAX": _softmax,
    "PRELU": _prelu, "RESIZE_BILINEAR": _resize, "RESIZE_NEAREST_NEIGHBOR": _resize,
}


def _check_op(g: _Graph, op: Any, kind: str) -> Problem | None:
    """None when the op meets the requirements, else the first reason it does not."""
    if kind not in SUPPORTED_OPS:
        return Problem("not an Edge TPU operation", f"{kind} is not in the Edge TPU's supported list")
    # Tensor rules apply to the data tensors; a constant int32 bias or shape argument is fine.
    for index in [*op.inputs, *op.outputs]:
        if index >= 0:
            problem = _tensor_problem(g, op, index, kind)
            if problem:
                return problem
    rule = RULES.get(kind)
    text = rule(g, op) if rule else None
    return Problem(text, f"{kind} {text}") if text else None


def check(path: str | Path) -> EdgeTpuReport:
    """Check each op of ``path`` against the Edge TPU's documented requirements."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"TFLite model not found: {path}")
    try:
        return _check(path, _Graph(path))
    except (IndexError, KeyError, AttributeError, TypeError, ValueError) as exc:
        # a flatbuffer that parses but does not hold a consistent TFLite graph
        raise InputError(f"{path.name} is not a valid TFLite model ({type(exc).__name__} reading "
                         "its graph)") from exc


def _check(path: Path, g: _Graph) -> EdgeTpuReport:
    issues = []
    subgraphs = len(g.model.subgraphs)
    if subgraphs > 1:
        issues.append(f"{subgraphs} subgraphs: the Edge TPU compiler supports one (ops in the "
                      "others stay on the CPU)")
    operators = list(g.graph.operators or [])
    kinds = [g.op_name(op) for op in operators]
    compiled = COMPILED_OP in kinds
    if compiled:  # the compiler already decided: its custom op runs on the TPU, the rest on the CPU
        cpu = Problem("left on the CPU by the compiler", "not part of the Edge TPU custom op")
        ops = [OpCheck(i, kind, True, True) if kind == COMPILED_OP else
               OpCheck(i, kind, False, False, str(cpu), cpu.category) for i, kind in enumerate(kinds)]
        return EdgeTpuReport(str(path), ops, subgraphs, issues, compiled)
    problems = [_check_op(g, op, kind) for op, kind in zip(operators, kinds)]
    mapped = _placed_by_data_flow(operators, [p is None for p in problems])
    ops = []
    for i, (op, kind, problem) in enumerate(zip(operators, kinds, problems)):
        caveat = CAVEATS[kind](g, op) if kind in CAVEATS else ""
        ops.append(OpCheck(i, kind, problem is None, mapped[i], str(problem) if problem else "",
                           problem.category if problem else "", certain=not caveat, caveat=caveat))
    return EdgeTpuReport(str(path), ops, subgraphs, issues, compiled)


def _placed_by_data_flow(operators: list[Any], supported: list[bool]) -> list[bool]:
    """Which ops the compiler maps: supported ones that do not depend on a CPU op that itself
    depends on the Edge TPU (ops are in execution order, so producers come first)."""
    producer: dict[int, int] = {}
    mapped, after_tpu, cut = [False] * len(operators), [False] * len(operators), [False] * len(operators)
    for i, op in enumerate(operators):
        sources = [producer[t] for t in op.inputs if t >= 0 and t in producer]
        after_tpu[i] = any(mapped[p] or after_tpu[p] for p in sources)
        cut[i] = any(cut[p] or (not mapped[p] and after_tpu[p]) for p in sources)
        mapped[i] = supported[i] and not cut[i]
        for t in op.outputs:
            producer[int(t)] = i
    return mapped
