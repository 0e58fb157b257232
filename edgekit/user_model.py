"""Your own PyTorch classifier: an nn.Module from a Python file (``net.py:build``), optionally with
a state_dict, described by probing it (input size given, class count from one forward pass)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from .errors import InputError
from .models.meta import ModelMeta
from .models.weights import load_state, read_checkpoint
from .preprocessing import Preprocessing

# prefix of the sys.modules name a model file is imported under: such classes exist only in this
# process (a worker process could not unpickle them)
MODULE_PREFIX = "edgekit_user_model_"
DEFAULT_RESOLUTION = 224


def is_module_spec(model: str | Path | None) -> bool:
    """``model`` names a Python file (``net.py`` or ``net.py:build``) rather than an architecture."""
    return model is not None and str(model).split(":")[0].endswith(".py")


def load_module_spec(spec: str | Path) -> nn.Module:
    """``path.py:function``: import the file and call ``function()`` (no arguments) for the model."""
    path_text, _, function = str(spec).rpartition(":") if ":" in str(spec) else (str(spec), "", "")
    path = Path(path_text)
    if not function:
        raise InputError(f"{spec}: name the function that returns the model, e.g. {path}:build")
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    name = MODULE_PREFIX + "".join(c if c.isalnum() else "_" for c in path.stem)
    try:
        loader_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's code: its first line is the message
        raise InputError(f"importing {path} failed: {_one_line(exc)}") from exc
    factory = getattr(module, function, None)
    if not callable(factory):
        raise InputError(f"{path} has no function '{function}'")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}:{function}() failed: {_one_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise InputError(f"{path}:{function}() returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def load_weights(model: nn.Module, weights: str | Path) -> None:
    """Load a state_dict file (models/weights.py: tensors only, never code) into ``model``,
    every key matching."""
    state, _ = read_checkpoint(weights)
    load_state(model, state, str(weights))


def describe(model: nn.Module, *, resolution: int | None = None, weights: str | None = None) -> ModelMeta:
    """The ModelMeta of a model edgekit did not build: it takes (1, 3, S, S) float images
    (torchvision normalisation unless overridden later) and returns (1, classes) logits."""
    size = resolution or DEFAULT_RESOLUTION
    arch = type(model).__name__
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, 3, size, size))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{arch}: a forward pass on a 1x3x{size}x{size} image failed: {_one_line(exc)}") from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"{arch} returns {shape} for one image; edgekit expects (1, classes) logits")
    return ModelMeta(arch=arch, resolution=size, num_classes=int(out.shape[1]),
                     preprocessing=Preprocessing.torchvision(size), weights=str(weights) if weights else "user")


def sendable(model: nn.Module) -> bool:
    """Whether a fresh process can rebuild ``model`` from a pickle: its classes are importable."""
    return all(type(m).__module__ != "__main__" and not type(m).__module__.startswith(MODULE_PREFIX)
               for m in model.modules())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
