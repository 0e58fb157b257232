"""What `convert` builds and how it quantizes: two frozen plans, made and checked before any work.

``QuantPlan`` says how the int8 builds are made (calibration, weight rounding, bias correction,
float layers, accuracy budget) and checks its own values when constructed. ``BuildPlan`` says what
is built: the target, the model (loaded), the (backend, precision) jobs, where the artifacts go and
what they are checked on. ``plan_build`` makes it and checks everything that can be checked before
the first expensive step (calibration, weight rounding, conversion): names against the registries,
the runtimes, each int8 backend's calibration methods, paths, the model's weights and layer names.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .backends.base import PRECISIONS, get_backend, list_backends
from .choices import DEFAULT_CALIB_SIZE, ROUNDINGS
from .errors import InputError, unknown
from .models.loading import load_model
from .models.meta import ModelMeta
from .source import ModelSource
from .targets import BuildSpec, TargetProfile, load_target
from .user_model import is_module_spec, load_module_spec, load_weights

BACKEND_DEFAULT = "default"  # calibration method: each backend's default_calibration_method


@dataclass(frozen=True)
class Job:
    build: BuildSpec
    precision: str

    @property
    def label(self) -> str:
        return f"{self.build.backend} {self.precision}"


@dataclass(frozen=True)
class QuantPlan:
    """How int8 builds are quantized. ``calib``: a folder of images (None: the bundled photos), of
    which ``calib_size`` are sampled; ``calib_method``: "default" (each backend's best measured)
    or a method every int8 backend built supports, with ``calib_options``; ``weight_rounding`` and
    ``bias_correction``: the int8 recipe (quant/__init__.py); ``float_layers``: module paths kept
    float (or "a,b"); ``max_accuracy_drop`` (points) with at most ``max_float_layers``: the accuracy budget
    (quant/mixed_precision.py)."""

    calib: Path | None = None
    calib_size: int = DEFAULT_CALIB_SIZE
    calib_method: str = BACKEND_DEFAULT
    calib_options: dict[str, Any] = field(default_factory=dict)
    weight_rounding: str = "optimal"
    bias_correction: bool = True
    float_layers: tuple[str, ...] = ()
    max_accuracy_drop: float | None = None
    max_float_layers: int | None = None

    def __post_init__(self) -> None:
        if self.calib is not None:
            _set(self, "calib", _existing(self.calib, "calibration images", folder=True))
        layers = self.float_layers.split(",") if isinstance(self.float_layers, str) else self.float_layers
        _set(self, "float_layers", tuple(n.strip() for n in layers if n.strip()))
        _set(self, "calib_options", dict(self.calib_options))
        _at_least(self.calib_size, 1, "calibration size")
        if self.weight_rounding not in ROUNDINGS:
            raise InputError(f"unknown weight rounding '{self.weight_rounding}' (choose from {', '.join(ROUNDINGS)})")
        if self.max_accuracy_drop is not None and not (
                isinstance(self.max_accuracy_drop, (int, float)) and math.isfinite(self.max_accuracy_drop)
                and 0 <= self.max_accuracy_drop <= 100):
            raise InputError(f"--max-accuracy-drop must be 0 to 100 points, got {self.max_accuracy_drop!r}")
        if self.max_float_layers is not None:
            _at_least(self.max_float_layers, 1, "--max-float-layers")
            if self.max_accuracy_drop is None:
                raise InputError("--max-float-layers applies with --max-accuracy-drop")


@dataclass(frozen=True)
class BuildPlan:
    """What one `convert` run builds: ``jobs`` of ``target`` from ``source`` into ``out``, each
    checked on ``val`` (None: the calibration images; at most ``val_size`` of them). ``check``:
    a parity failure raises (after the manifest is written); ``parallel``: the convert worker."""

    target: TargetProfile
    source: ModelSource
    jobs: tuple[Job, ...]
    out: Path
    val: Path | None = None
    val_size: int | None = None
    check: bool = True
    parallel: bool = True

    @property
    def int8_backends(self) -> list[str]:
        """The backends of the int8 jobs, in build order, once each."""
        return list(dict.fromkeys(j.build.backend for j in self.jobs if j.precision == "int8"))


def plan_build(target: str | TargetProfile = "rpi4", model: nn.Module | str | Path | None = None, *,
               quant: QuantPlan, weights: str | None = None, width: float | None = None,
               resolution: int | None = None, normalisation: str | None = None,
               labels: list[str] | None = None, precision: str | Iterable[str] | None = None,
               backend: str | Iterable[str] | None = None, out: str | Path | None = None,
               val: str | Path | None = None, val_size: int | None = None, check: bool = True,
               parallel: bool = True) -> BuildPlan:
    """The BuildPlan for these arguments, checked against ``quant``: the cheap checks first, the
    model loaded last and checked too (finite weights, float layers, a backend for an ONNX file)."""
    profile = target if isinstance(target, TargetProfile) else load_target(target)
    jobs = tuple(jobs_for(profile, precision, backend))
    for job in jobs:  # fail on a missing runtime before spending minutes on the others
        get_backend(job.build.backend).require()
    _check_calibration_method(jobs, quant.calib_method)
    if val_size is not None:
        _at_least(val_size, 1, "validation size")
    out_dir = Path(out) if out is not None else Path("build") / profile.name
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder {out_dir} is a file, not a folder")
    source = resolve_source(model, weights, width, resolution, normalisation, labels)
    plan = BuildPlan(profile, source, jobs, out_dir,
                     val=None if val is None else _existing(val, "validation images"),
                     val_size=val_size, check=check, parallel=parallel)
    _check_source(plan, quant)
    return plan


def jobs_for(target: TargetProfile, precision: str | Iterable[str] | None = None,
             backend: str | Iterable[str] | None = None) -> list[Job]:
    """The target's (build, precision) jobs, keeping only the given precisions and backends."""
    precisions, backends = _chosen(precision), _chosen(backend)
    bad = sorted((precisions or set()) - set(PRECISIONS))
    if bad:
        raise InputError(f"unknown precision '{bad[0]}' (choose from {', '.join(PRECISIONS)})")
    bad = sorted((backends or set()) - set(list_backends()))
    if bad:
        raise unknown("backend", bad[0], list_backends())
    jobs = [Job(b, p) for b in target.builds for p in b.precisions
            if (precisions is None or p in precisions) and (backends is None or b.backend in backends)]
    if not jobs:
        offered = ", ".join(f"{b.backend} {'/'.join(b.precisions)}" for b in target.builds)
        wanted = " ".join("/".join(sorted(x)) for x in (backends, precisions) if x)
        raise InputError(f"target {target.name} builds no {wanted} artifact (it builds {offered})")
    missing = sorted((backends or set()) - {job.build.backend for job in jobs})
    if missing:
        raise InputError(f"target {target.name} builds no {'/'.join(missing)} artifact")
    return jobs


def _chosen(value: str | Iterable[str] | None) -> set[str] | None:
    """None (all), or the names given as one string, a comma-separated string or several."""
    if value is None:
        return None
    names = {n.strip() for v in ([value] if isinstance(value, str) else value) for n in v.split(",")}
    return {n for n in names if n} or None


def resolve_source(model: nn.Module | str | Path | None, weights: str | None, width: float | None,
                   resolution: int | None, normalisation: str | None = None,
                   labels: list[str] | None = None) -> ModelSource:
    """The model to convert: an nn.Module (edgekit's, or your own classifier), an architecture
    name, a .onnx file or ``net.py:function`` (user_model.py); ``weights`` a checkpoint, or for
    your own module a state_dict. ``normalisation`` (preprocessing.NORMALISATIONS) overrides the
    input value range it records (an ONNX file or your own module records none: torchvision's is
    assumed); ``labels`` its class names."""
    if isinstance(model, nn.Module) or is_module_spec(model):
        module = model if isinstance(model, nn.Module) else load_module_spec(model)
        own = not isinstance(getattr(module, "meta", None), ModelMeta)
        if own and width:
            raise InputError("--width applies to edgekit's MobileNets, not to your own model")
        if weights and not own:
            raise InputError("--weights: the model passed is built already")
        if weights:
            load_weights(module, weights)
        source = ModelSource.from_module(module, resolution=resolution, labels=labels, weights=weights)
    elif model is not None and str(model).endswith(".onnx"):
        if weights or width or resolution:
            raise InputError("--weights/--width/--resolution do not apply to an ONNX model")
        source = ModelSource.from_onnx(model, labels=labels)
    else:
        net = load_model(model, weights, width=width, resolution=resolution)
        source = ModelSource.from_module(net, labels=labels)
    if normalisation is not None:
        pre = source.meta.preprocessing.normalised(normalisation)
        source = replace(source, meta=replace(source.meta, preprocessing=pre))
    return source


def _check_calibration_method(jobs: Iterable[Job], method: str) -> None:
    """A calibration method asked for must be one every int8 build's backend supports."""
    if method == BACKEND_DEFAULT:
        return
    for name in dict.fromkeys(j.build.backend for j in jobs if j.precision == "int8"):
        supported = get_backend(name).calibration_methods
        if supported and method not in supported:
            raise InputError(f"the {name} backend cannot calibrate with '{method}' (it supports "
                             f"{', '.join(supported)}); choose another method or leave {name} out (-b)")


def _check_source(plan: BuildPlan, quant: QuantPlan) -> None:
    """The loaded model against the plan: finite weights, the float layers it names, and for a
    user's ONNX file, backends that can take one."""
    source = plan.source
    _check_finite(source)
    _check_float_layers(source, quant.float_layers)
    if source.module is None:  # a user's ONNX file: only some backends can take it
        refused = sorted({job.build.backend for job in plan.jobs if not get_backend(job.build.backend).accepts_onnx})
        if refused:
            raise InputError(f"{', '.join(refused)} need(s) a PyTorch model; {source.name} is ONNX: "
                             "build it with -b onnxruntime or -b openvino")


def _check_finite(source: ModelSource) -> None:
    """Refuse weights holding NaN or inf: every artifact made from them would be garbage."""
    if source.module is not None:
        tensors = ((name, t.detach()) for name, t in source.module.state_dict().items()
                   if torch.is_tensor(t) and t.is_floating_point())
        counts = [(name, int((~torch.isfinite(t)).sum())) for name, t in tensors]
    else:
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(source.onnx_path), load_external_data=False).graph
        counts = []
        for init in graph.initializer:
            if init.data_location == onnx.TensorProto.EXTERNAL:
                continue
            array = numpy_helper.to_array(init)
            if np.issubdtype(array.dtype, np.floating):
                counts.append((init.name, int((~np.isfinite(array)).sum())))
    bad = [(name, n) for name, n in counts if n]
    if bad:
        where = source.meta.weights if source.meta.weights not in (None, "random") else source.name
        raise InputError(f"{where}: {sum(n for _, n in bad)} weight values are NaN or infinite "
                         f"(in {abridged([name for name, _ in bad], 3)}); nothing converted")


def _check_float_layers(source: ModelSource, layers: tuple[str, ...]) -> None:
    """Float layers name module paths of the model: checked as soon as it is loaded (each
    backend checks again against its own graph)."""
    if not layers:
        return
    if source.module is not None:
        paths = [name for name, _ in source.module.named_modules() if name]
    else:
        import onnx

        from .backends.layer_names import module_path

        paths = [module_path(n.name) for n in onnx.load(str(source.onnx_path), load_external_data=False).graph.node]
    for name in layers:
        if not any(f".{name}." in f".{path}." for path in paths):
            raise InputError(f"no layer named '{name}' in the model (see 'edgekit quant-report')")


def abridged(names: list[str], most: int = 5) -> str:
    """"a, b, c, d, e and 3 more"."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _existing(path: str | Path, what: str, folder: bool = False) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{'image folder' if folder else what} not found: {path}")
    if folder and not path.is_dir():
        raise InputError(f"not a folder: {path}")
    return path


def _at_least(value: Any, low: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{what} must be an integer >= {low}, got {value!r}")


def _set(plan: Any, name: str, value: Any) -> None:
    object.__setattr__(plan, name, value)  # a frozen dataclass normalising its own field
