"""What OpenVINO's CPU plugin actually executes: its runtime graph, with each node's kernel and
the precision it computes in (i8/u8 for int8, f32, or bf16/f16 where the CPU has them and the
default inference precision picks them)."""
from __future__ import annotations

from pathlib import Path

from .placement import OpPlacement, Placement

PLUMBING = {"Input", "Output", "Const", "Parameter", "Result"}
INTEGER = ("i8", "u8")
# Nodes that compute (their precision is the question); the rest move data (Reorder, Reshape, ...)
COMPUTE = {"Convolution", "FullyConnected", "MatMul", "Eltwise", "Pooling", "Reduce", "Subgraph",
           "Deconvolution", "Interpolate", "MVN", "Softmax", "GroupConvolution", "Math"}
REFERENCE = "ref"  # primitiveType prefix of the plugin's unoptimized reference kernels


def _rt(node, key: str) -> str:
    info = node.get_rt_info()
    return info[key].astype(str) if key in info else ""


def openvino_placement(path: Path, compiled, runtime: str, int8_model: bool) -> Placement:
    """``compiled``: ``path`` compiled for the CPU as a deployment would (default precision)."""
    ops = []
    for node in compiled.get_runtime_model().get_ordered_ops():
        kind = _rt(node, "layerType")
        if kind in PLUMBING:
            continue
        precision = _rt(node, "runtimePrecision")
        kernel = _rt(node, "primitiveType")
        where = f"{precision} {kernel}".strip()
        ok, reason = True, ""
        if kernel.startswith(REFERENCE):
            ok, reason = False, f"{kernel}: the plugin's reference kernel (unoptimized, slow)"
        elif kind in COMPUTE and int8_model and precision not in INTEGER \
                and _rt(node, "outputPrecisions") not in INTEGER:  # (quantizing the input is fine)
            ok, reason = False, f"computes in {precision}: not quantized here (a float fallback)"
        ops.append(OpPlacement(len(ops), kind, where, ok, reason, name=_rt(node, "originalLayersNames")))
    notes = []
    precisions = sorted({op.runs_on.split()[0] for op in ops if op.op in COMPUTE and op.runs_on})
    if not int8_model and any(p in ("bf16", "f16") for p in precisions):
        notes.append(f"float layers compute in {'/'.join(p for p in precisions if p != 'f32')} on this CPU "
                     "(OpenVINO's default inference precision); edgekit's parity check runs f32")
    accelerator = "int8 kernels" if int8_model else "the CPU plugin"
    return Placement(str(path), "openvino", accelerator, ops, 1, runtime, notes)
