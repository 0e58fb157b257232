"""ModelSource -> ONNX file (static batch 1, single file), shared by the ONNX Runtime and OpenVINO
backends."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConversionError, MissingDependencyError, first_line
from ..fileio import atomic_path

if TYPE_CHECKING:  # annotations only: importing it loads torch
    from ..source import ModelSource

OPSET = 17


def export_onnx(source: ModelSource, out: Path, native_hard_activations: bool = False) -> Path:
    """Write ``source`` as ONNX at ``out`` (a user's ONNX file is copied), checked by onnx.checker.

    ``native_hard_activations``: hard-swish and hard-sigmoid as ONNX's own HardSwish and
    HardSigmoid ops instead of the Add/Clip/Mul form TFLite needs: ONNX Runtime fp32 runs
    MobileNetV3-Small in 1.90/1.36 ms against 2.49/2.38 at 1/2 threads. Its int8 QDQ models keep
    them float (2.41/1.89 against 2.27/1.71 ms), so they take the decomposed form."""
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
                    if native_hard_activations:
                        _use_native_hard_activations(module)
                    torch.onnx.export(module, (source.example_input(),), str(tmp),
                                      input_names=["input"], output_names=["logits"],
                                      opset_version=OPSET, dynamo=False)
                except Exception as exc:
                    raise ConversionError("torch.onnx", source.name, "ONNX", exc) from exc
        try:
            onnx.checker.check_model(str(tmp))
        except Exception as exc:
            raise ConversionError("torch.onnx", source.name, "ONNX",
                                  f"the exported model is invalid: {first_line(exc)}") from exc
    return out


def _use_native_hard_activations(module) -> None:
    """Replace edgekit's HardSwish/HardSigmoid (same values) by torch's, which export as one op."""
    from torch import nn

    from ..models.blocks import HardSigmoid, HardSwish

    native = {HardSwish: nn.Hardswish, HardSigmoid: nn.Hardsigmoid}
    for name, child in list(module.named_modules()):
        if type(child) in native:
            parent, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, attr, native[type(child)]())
