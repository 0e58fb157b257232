"""ModelSource -> ONNX file (static batch 1, single file), shared by the ONNX Runtime and OpenVINO
backends."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from ..errors import EdgekitError, MissingDependencyError
from ..fileio import atomic_path
from ..source import ModelSource

OPSET = 17


def export_onnx(source: ModelSource, out: Path) -> Path:
    """Write ``source`` as ONNX at ``out`` (a user's ONNX file is copied), checked by onnx.checker."""
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError("onnx", "onnx") from None
    out = Path(out)
    with atomic_path(out) as tmp:
        if source.onnx_path is not None:
            shutil.copyfile(source.onnx_path, tmp)
        else:
            import torch

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    from .same_padding import onnx_padded

                    # TF-SAME pads as separate Pad nodes halve ONNX Runtime's speed (MobileNetV2
                    # 12.0 vs 6.7 ms at 1 thread): export them as convolution padding instead.
                    module, _ = onnx_padded(source.module.eval())
                    torch.onnx.export(module, (source.example_input(),), str(tmp),
                                      input_names=["input"], output_names=["logits"],
                                      opset_version=OPSET, dynamo=False)
                except Exception as exc:
                    raise EdgekitError(f"ONNX export of {source.name} failed: "
                                       f"{str(exc).splitlines()[0]}") from exc
        try:
            onnx.checker.check_model(str(tmp))
        except Exception as exc:
            raise EdgekitError(f"exported ONNX model is invalid: {str(exc).splitlines()[0]}") from exc
    return out
