"""Which ops of a .tflite XNNPACK takes: LiteRT's default delegate, the fast CPU path on ARM and x86.

LiteRT applies XNNPACK when it loads a model: the ops XNNPACK supports are replaced by DELEGATE
nodes (one per connected partition), the rest run on LiteRT's own kernels, usually much slower,
and every partition boundary costs a copy. What the interpreter does here is what it does on a
device with the same LiteRT version: the delegate's op coverage does not depend on the CPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .placement import OpPlacement, Placement

DELEGATE = "DELEGATE"


def outside_delegates(details: list[dict], outputs: set[int]) -> set[int]:
    """Indices of the ops that run outside every delegate partition (LiteRT's own kernels).

    The interpreter keeps the original nodes after delegation and appends the DELEGATE nodes. An op
    outside every partition produces a tensor needed outside: a delegate's input, a model output,
    or the input of another op outside. Ops inside never do (their results leave the partition
    only as the DELEGATE node's outputs)."""
    delegates = [d for d in details if d["op_name"] == DELEGATE]
    ops = [d for d in details if d["op_name"] != DELEGATE]
    if not delegates:
        return {op["index"] for op in ops}
    delegate_out = {int(t) for d in delegates for t in d["outputs"]}
    needed = {int(t) for d in delegates for t in d["inputs"]} | set(outputs)
    outside: set[int] = set()
    changed = True
    while changed:
        changed = False
        for op in ops:
            outs = {int(t) for t in op["outputs"]}
            if op["index"] in outside or outs & delegate_out or not outs & needed:
                continue
            outside.add(op["index"])
            needed |= {int(t) for t in op["inputs"]}
            changed = True
    return outside


def xnnpack_placement(path: Path, interpreter: Any, runtime: str) -> Placement:
    """``interpreter``: ``path`` loaded with the default delegates."""
    details = list(interpreter._get_ops_details())  # the only API that lists the nodes
    outputs = {int(o["index"]) for o in interpreter.get_output_details()}
    outside = outside_delegates(details, outputs)
    tensors = {int(t["index"]): t for t in interpreter.get_tensor_details()}
    ops = []
    for d in details:
        if d["op_name"] == DELEGATE:
            continue
        on_cpu = d["index"] in outside
        reason = ""
        if on_cpu:
            types = sorted({_dtype(tensors[int(t)]) for t in d["inputs"] if int(t) >= 0 and int(t) in tensors})
            reason = f"XNNPACK does not take this {d['op_name']} ({'/'.join(types) or 'no'} inputs)"
        ops.append(OpPlacement(int(d["index"]), d["op_name"], "LiteRT kernel" if on_cpu else "XNNPACK",
                               not on_cpu, reason))
    partitions = sum(d["op_name"] == DELEGATE for d in details)
    notes = []
    if partitions > 1:
        notes.append(f"{partitions} XNNPACK partitions: each boundary copies tensors between the "
                     "delegate and LiteRT's kernels")
    return Placement(str(path), "tflite", "XNNPACK", ops, partitions, runtime, notes)


def _dtype(detail: dict) -> str:
    import numpy as np

    return np.dtype(detail["dtype"]).name
