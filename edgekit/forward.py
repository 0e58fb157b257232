"""Run a float nn.Module on many images the fastest verified way: ONNX Runtime fp32 (the
project's own ONNX export), checked against PyTorch on a few images, else PyTorch itself.

Measured here (2 shared cores, per image): MobileNetV2 1.0/224 features 3.6 ms in ONNX Runtime
against 18-58 ms in PyTorch eager; MobileNetV3-Small 2.5 vs 4.5 ms. Training's frozen prefix and
`edgekit eval` of a checkpoint both go through here.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import first_line
from .models.meta import ModelMeta

# Inputs the ONNX Runtime session is checked on against PyTorch before it is used
CHECK_IMAGES = 4
# |onnxruntime - torch| allowed, relative to the largest |torch| output: float32 reordering
# differences are ~1e-6 of it; a wrong export is off by far more
RELATIVE_TOLERANCE = 1e-3


@dataclass
class Runner:
    """``run(batch) -> outputs`` for (N, ...) float32 inputs; ``runtime`` says which one runs it
    and ``why`` (when PyTorch) why ONNX Runtime does not."""

    runtime: str
    why: str
    _run: object

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._run(np.ascontiguousarray(batch, dtype=np.float32))


def torch_runner(module: nn.Module, why: str = "") -> Runner:
    from .models.fold import fold_batchnorm
    from .source import FORWARD_BATCH, channels_last

    folded = fold_batchnorm(module.eval())

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([folded(channels_last(batch[i:i + FORWARD_BATCH])).numpy()
                                   for i in range(0, len(batch), FORWARD_BATCH)])
    return Runner("pytorch", why, run)


def fastest_runner(module: nn.Module, meta: ModelMeta, check: np.ndarray, threads: int | None = None,
                   workdir: Path | None = None) -> Runner:
    """ONNX Runtime for ``module`` (image input at ``meta.resolution``) when it exports, loads and
    matches PyTorch on ``check`` (a few real inputs); PyTorch otherwise, with the reason."""
    module = module.eval()
    try:
        import onnxruntime as ort
    except ImportError:
        return torch_runner(module, "onnxruntime is not installed")
    from .backends.onnx_export import export_onnx
    from .source import ModelSource

    with tempfile.TemporaryDirectory(prefix="edgekit-forward-", dir=workdir) as tmp:
        path = Path(tmp) / "forward.onnx"
        try:
            export_onnx(ModelSource(meta=meta, module=module), path, native_hard_activations=True)
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - any failure: PyTorch still runs it
            return torch_runner(module, f"ONNX export failed ({first_line(exc)[:120]})")
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return np.concatenate([session.run(None, {name: x[None]})[0] for x in batch])

    runner = Runner("onnxruntime", "", run)
    check = np.ascontiguousarray(check[:CHECK_IMAGES], np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(check)).numpy()
    got = runner.run(check)
    scale = max(float(np.abs(expected).max()), 1e-6)
    diff = float(np.abs(got - expected).max()) / scale
    if got.shape != expected.shape or not diff <= RELATIVE_TOLERANCE:
        return torch_runner(module, f"ONNX Runtime differs from PyTorch by {diff:.1e} (relative)")
    return runner
