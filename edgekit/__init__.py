"""edgekit: MobileNets and your own models to TFLite, Edge TPU, OpenVINO and ONNX Runtime.

The Python API mirrors the CLI, one function per command (api.py)::

    import edgekit
    manifest = edgekit.convert("x86", "mobilenet_v2", backend="onnxruntime", out="build/x86")
    edgekit.bench(manifest.folder)                  # -> list[BenchResult]
    edgekit.evaluate(manifest.folder, "val.tsv")    # -> list[EvalResult]
    edgekit.check(manifest.folder)                  # -> list[Placement]
    model = edgekit.load("mobilenet_v2")            # -> nn.Module with .meta

``import edgekit`` is cheap: each name below loads its module (torch, the runtimes) on first use.

Most API names are also the names of edgekit's own submodules (``edgekit/convert.py``,
``edgekit/evaluate.py``, ``edgekit/bench/``, ``edgekit/train/``...). The API name wins:
``edgekit.convert`` is always the function, even after ``import edgekit.convert``; the modules
stay importable (``from edgekit.convert import run``, ``import edgekit.train``, importlib), only
not as attributes of the package.
"""
from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# name -> "module:attribute": the public API, loaded on first use
_API = {
    "convert": "edgekit.convert:convert",
    "bench": "edgekit.api:bench",
    "bench_paired": "edgekit.api:bench_paired",
    "check": "edgekit.check:check",
    "emulate": "edgekit.api:emulate",
    "evaluate": "edgekit.api:evaluate",
    "quant_report": "edgekit.api:quant_report",
    "load": "edgekit.api:load",
    "targets": "edgekit.api:targets",
    "models": "edgekit.api:models",
    # the training API's slot: edgekit/train/ (a subpackage) provides the function
    "train": "edgekit.train:train",
    # what they return and take
    "Manifest": "edgekit.manifest:Manifest",
    "BenchResult": "edgekit.bench.local:BenchResult",
    "BenchFailed": "edgekit.api:BenchFailed",
    "PairedComparison": "edgekit.bench.paired:PairedComparison",
    "Placement": "edgekit.backends.placement:Placement",
    "TrainResult": "edgekit.train:TrainResult",
    "EvalResult": "edgekit.evaluate:EvalResult",
    "QuantReport": "edgekit.quant.report:QuantReport",
    "ModelInfo": "edgekit.api:ModelInfo",
    "TargetProfile": "edgekit.targets:TargetProfile",
    "BuildPlan": "edgekit.convert_plan:BuildPlan",
    "QuantPlan": "edgekit.convert_plan:QuantPlan",
    "EdgekitError": "edgekit.errors:EdgekitError",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
    module_name, _, attribute = target.partition(":")
    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise AttributeError(f"edgekit.{name} is not in this version of edgekit") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # Importing the submodule edgekit.<name> binds it here as an attribute: the API name keeps
        # the function (see the module docstring)
        if name in _API and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
