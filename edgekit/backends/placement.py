"""Where each op of a model runs on a backend: the answer `edgekit check` gives for any backend.

A backend's ``placement(path)`` returns a Placement: per op (as the runtime executes them, after
its own fusions), where it runs, whether that is the accelerated path the target wants (the Edge
TPU, XNNPACK, an int8 kernel), why not when not, and whether the verdict is certain or a rule of
thumb about an undocumented limit.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class OpPlacement:
    index: int  # position in execution order
    op: str  # the op type as the runtime names it (CONV_2D, QLinearConv, Convolution, ...)
    runs_on: str  # e.g. "Edge TPU", "CPU", "XNNPACK", "LiteRT kernel", "int8 kernel", "f32"
    accelerated: bool  # on the path the backend is judged by (see Placement.accelerator)
    reason: str = ""  # why not, when not accelerated
    certain: bool = True  # False: an undocumented limit may decide otherwise
    name: str = ""  # node / layer name, when the format has one


@dataclass
class Placement:
    path: str
    backend: str  # registry name
    accelerator: str  # what "accelerated" means here, e.g. "the Edge TPU", "XNNPACK", "int8 kernels"
    ops: list[OpPlacement]
    partitions: int  # accelerated segments (delegate partitions, Edge TPU custom ops)
    runtime: str = ""  # what decided it: "onnxruntime 1.32.0", "rules (no compiler)", ...
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.ops)

    @property
    def accelerated(self) -> int:
        return sum(op.accelerated for op in self.ops)

    @property
    def certain(self) -> bool:
        return all(op.certain for op in self.ops)

    def verdict(self) -> str:
        """One line: how much of the graph takes the accelerated path, in how many pieces."""
        if not self.ops:
            return f"no ops to place ({self.backend})"
        pieces = f" in {self.partitions} partition{'s' if self.partitions != 1 else ''}" \
            if self.partitions > 1 else ""
        if self.accelerated == self.total:
            text = f"all {self.total} ops on {self.accelerator}{pieces}"
        else:
            off = Counter(op.op for op in self.ops if not op.accelerated)
            listed = ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in off.most_common(4))
            more = ", ..." if len(off) > 4 else ""
            text = (f"{self.accelerated} of {self.total} ops on {self.accelerator}{pieces}; "
                    f"not: {listed}{more}")
        if not self.certain:
            text += " (some verdicts are rules of thumb)"
        return text

    def table(self) -> list[tuple[str, int, str, str]]:
        """(op, count, runs on, reason) rows, in order of first appearance."""
        counts = Counter((op.op, op.runs_on, op.reason) for op in self.ops)
        return [(kind, n, where, reason) for (kind, where, reason), n in counts.items()]

    def to_dict(self) -> dict:
        return {"path": self.path, "backend": self.backend, "accelerator": self.accelerator,
                "verdict": self.verdict(), "ops_total": self.total, "ops_accelerated": self.accelerated,
                "partitions": self.partitions, "certain": self.certain, "runtime": self.runtime,
                "notes": list(self.notes),
                "operators": [{"op": k, "count": n, "runs_on": w, "reason": r} for k, n, w, r in self.table()],
                "ops": [asdict(op) for op in self.ops]}

    def summary(self) -> dict:
        """What a manifest keeps: the verdict and the counts, not every op."""
        return {k: v for k, v in self.to_dict().items() if k != "ops"}
