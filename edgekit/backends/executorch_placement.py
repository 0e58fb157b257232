"""What a .pte program runs where: its instructions (delegate calls and ExecuTorch kernel calls)
and, inside each XNNPACK delegate, the XNNPACK nodes and their tensor types.

The program is read with ExecuTorch's own deserializer; an XNNPACK payload is a header plus a
flatbuffer (executorch/backends/xnnpack/serialization/schema.fbs), turned into JSON by the
``flatc`` that ships in the executorch wheel.
"""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, first_line
from .placement import OpPlacement, Placement

XNNPACK = "XnnpackBackend"
XNN_HEADER_MAGIC = b"XH00"
# XNNPACK value types that hold integers on a quantization grid (schema.fbs, XNNDatatype)
QUANTIZED_TYPES = {"xnn_datatype_qint8", "xnn_datatype_quint8", "xnn_datatype_qint32", "xnn_datatype_qcint8",
                   "xnn_datatype_qcint32", "xnn_datatype_qcint4", "xnn_datatype_qdint8",
                   "xnn_datatype_qbint4", "xnn_datatype_qpint8"}


@dataclass
class Instruction:
    kind: str  # "delegate" or "kernel" (others: "move", "jump", "free": bookkeeping)
    name: str  # the backend id or the operator name
    nodes: list[str] = field(default_factory=list)  # XNNPACK node types of a delegate call


@dataclass
class ProgramFacts:
    instructions: list[Instruction]
    delegates: list[str]  # backend ids, one per delegate blob
    quantized: bool  # some XNNPACK graph holds quantized values


def read_program(path: Path) -> ProgramFacts:
    from executorch.exir._serialize._program import deserialize_pte_binary

    try:
        pte = deserialize_pte_binary(Path(path).read_bytes())
    except Exception as exc:  # not a program: flatbuffer / header errors
        raise InputError(f"cannot read ExecuTorch program {Path(path).name}: {first_line(exc)}") from exc
    program = pte.program
    plan = next((p for p in program.execution_plan if p.name == "forward"), program.execution_plan[0])
    graphs, quantized = [], False
    for delegate in plan.delegates:
        payload = _payload(program, pte, delegate)
        graph = _xnnpack_graph(payload) if delegate.id == XNNPACK and payload else None
        graphs.append(graph)
        if graph:
            quantized |= any(_value_type(v) in QUANTIZED_TYPES for v in graph.get("xvalues", []))
    instructions = []
    for chain in plan.chains:
        for ins in chain.instructions:
            args = ins.instr_args
            kind = type(args).__name__
            if kind == "DelegateCall":
                delegate = plan.delegates[args.delegate_index]
                graph = graphs[args.delegate_index] or {}
                nodes = [n.get("xnode_union_type", "?").removeprefix("_") for n in graph.get("xnodes", [])]
                instructions.append(Instruction("delegate", delegate.id, nodes))
            elif kind == "KernelCall":
                op = plan.operators[args.op_index]
                instructions.append(Instruction("kernel", op.name + (f".{op.overload}" if op.overload else "")))
    return ProgramFacts(instructions, [d.id for d in plan.delegates], quantized)


def _payload(program, pte, delegate) -> bytes | None:
    """The delegate's blob: inline in the program or in a segment of the file."""
    where = delegate.processed
    location = getattr(where.location, "name", str(where.location))
    try:
        if location.endswith("INLINE"):
            return bytes(program.backend_delegate_data[where.index].data)
        segments = getattr(pte, "segment_data", None) or []
        return bytes(segments[where.index]) if where.index < len(segments) else None
    except (AttributeError, IndexError):
        return None


def _xnnpack_graph(payload: bytes) -> dict | None:
    """An XNNPACK payload's graph as a dict (None when it cannot be read)."""
    from importlib import resources

    if payload[4:8] == XNN_HEADER_MAGIC:
        offset = int.from_bytes(payload[10:14], "little")
        size = int.from_bytes(payload[14:18], "little")
        flatbuffer = payload[offset:offset + size]
    else:
        flatbuffer = payload
    schema = resources.files("executorch.backends.xnnpack.serialization").joinpath("schema.fbs")
    flatc = resources.files("executorch.data.bin").joinpath("flatc")
    with tempfile.TemporaryDirectory(prefix="edgekit-pte-") as tmp, resources.as_file(schema) as fbs, \
            resources.as_file(flatc) as exe:
        binary = Path(tmp) / "graph.bin"
        binary.write_bytes(flatbuffer)
        try:
            subprocess.run([str(exe), "--json", "--strict-json", "--raw-binary", "-o", tmp, str(fbs),
                            "--", str(binary)], check=True, capture_output=True, timeout=120)
            # flatc writes unbounded clamps (ReLU's output_max) as bare inf, which JSON lacks
            text = re.sub(r"(?<=[:\s])(-?)inf\b", r'"\1inf"', (Path(tmp) / "graph.json").read_text())
            return json.loads(re.sub(r"(?<=[:\s])nan\b", '"nan"', text))
        except (OSError, subprocess.SubprocessError, ValueError):
            return None


def _value_type(value: dict) -> str:
    inner = value.get("xvalue_union") or {}
    tensor = inner.get("tensor_value") or inner
    return str(tensor.get("datatype", ""))


def delegate_placement(path: Path, runtime: str) -> Placement:
    """Every node of every XNNPACK graph as accelerated; every kernel call outside a delegate
    (ExecuTorch's portable CPU kernels) as not."""
    facts = read_program(path)
    ops, index, partitions = [], 0, 0
    for ins in facts.instructions:
        if ins.kind == "delegate":
            partitions += ins.name == XNNPACK
            for node in ins.nodes or [ins.name]:
                accelerated = ins.name == XNNPACK
                ops.append(OpPlacement(index, node, "XNNPACK" if accelerated else ins.name, accelerated,
                                       "" if accelerated else f"delegated to {ins.name}, not XNNPACK"))
                index += 1
        else:
            ops.append(OpPlacement(index, ins.name, "ExecuTorch kernel", False,
                                   "not delegated: the XNNPACK partitioner did not take it"))
            index += 1
    notes = []
    if partitions > 1:
        notes.append(f"{partitions} XNNPACK partitions: between them ExecuTorch's own kernels run")
    if any(ins.kind == "delegate" and not ins.nodes for ins in facts.instructions):
        notes.append("a delegate's graph could not be read: it is listed as one op")
    return Placement(str(path), "executorch", "XNNPACK", ops, partitions, runtime, notes)
