"""ModelSource: what a conversion starts from — an nn.Module with ModelMeta, or a user's ONNX file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import InputError, MissingDependencyError, first_line
from .models.meta import ModelMeta
from .preprocessing import Preprocessing


@dataclass
class ModelSource:
    meta: ModelMeta
    module: nn.Module | None = None
    onnx_path: Path | None = None

    @property
    def name(self) -> str:
        return self.meta.arch

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.meta.resolution, self.meta.resolution)

    def example_input(self) -> torch.Tensor:
        return torch.zeros(self.input_shape)

    @classmethod
    def from_module(cls, module: nn.Module, *, resolution: int | None = None,
                    labels: list[str] | None = None, weights: str | None = None) -> "ModelSource":
        """An edgekit model (its ``.meta`` says everything) or your own classifier: an nn.Module
        taking (1, 3, S, S) images (S = ``resolution``, default 224), returning (1, classes) logits."""
        meta = getattr(module, "meta", None)
        if not isinstance(meta, ModelMeta):  # your own model (a GraphModule's .meta is a dict)
            from .user_model import describe

            meta = describe(module, resolution=resolution, weights=weights)
        if labels is not None:
            meta = meta.with_(labels=tuple(_fitting(labels, meta.num_classes)))
        return cls(meta=meta, module=module.eval())

    @classmethod
    def from_onnx(cls, path: str | Path, preprocessing: Preprocessing | None = None,
                  labels: list[str] | None = None) -> "ModelSource":
        """A user's ONNX classifier: one float32 NCHW 3-channel image input, one logits output."""
        try:
            import onnx
        except ImportError:
            raise MissingDependencyError("onnx", "onnx") from None
        path = Path(path)
        if not path.is_file():
            raise InputError(f"model file not found: {path}")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise InputError(f"cannot read ONNX model {path}: {first_line(exc)}") from exc
        inits = {i.name for i in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in inits]
        if len(inputs) != 1:
            raise InputError(f"{path.name} has {len(inputs)} inputs; edgekit expects one image input")
        dims = [d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim]
        if len(dims) != 4 or dims[1] != 3 or dims[2] is None or dims[2] != dims[3]:
            raise InputError(f"{path.name} input shape {dims}: expected [1, 3, S, S] (NCHW, static size)")
        out_dims = [d.dim_value or None for d in model.graph.output[0].type.tensor_type.shape.dim]
        classes = out_dims[-1] if out_dims and out_dims[-1] else 1000
        if labels is not None:
            _fitting(labels, int(classes))
        size = int(dims[2])
        meta = ModelMeta(arch=path.stem, resolution=size, num_classes=int(classes),
                         labels=tuple(labels) if labels else None,
                         preprocessing=preprocessing or Preprocessing.torchvision(size),
                         weights=str(path))
        return cls(meta=meta, onnx_path=path)

    def reference(self, images: np.ndarray) -> np.ndarray:
        """The source model's own float32 logits for (N, 3, H, W) preprocessed images (run with
        its BatchNorm folded: the same function, MobileNetV2 ~1.3x faster)."""
        images = np.asarray(images, dtype=np.float32)
        if self.module is not None:
            from .models.fold import fold_batchnorm

            model = fold_batchnorm(self.module)
            with torch.no_grad():
                return np.concatenate([model(channels_last(images[i:i + FORWARD_BATCH])).numpy()
                                       for i in range(0, len(images), FORWARD_BATCH)])
        import onnxruntime as ort

        session = ort.InferenceSession(str(self.onnx_path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.concatenate([session.run(None, {name: x[None]})[0] for x in images])


def _fitting(labels: list[str], classes: int) -> list[str]:
    if len(labels) != classes:
        raise InputError(f"{len(labels)} labels for a model with {classes} outputs")
    return labels


# Images per PyTorch forward call on the CPU: MobileNetV2's float forward over 200 images took
# 2.4-2.7 s at 4-8 per call, 4.0 s at 16, 4.3 s at 32 (activations stop fitting in cache)
FORWARD_BATCH = 8


def channels_last(images: np.ndarray) -> torch.Tensor:
    """An (N, 3, H, W) batch as a channels-last tensor: PyTorch's CPU convolutions (depthwise
    above all) run MobileNetV2 at batch 32 in half the time of the NCHW layout, same values to
    ~1e-6 relative."""
    return torch.from_numpy(np.ascontiguousarray(images, np.float32)).contiguous(memory_format=torch.channels_last)
