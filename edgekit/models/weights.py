"""Checkpoints: edgekit's own (weights + ModelMeta), torchvision state_dicts, safetensors.

Everything is loaded with ``weights_only=True``: a checkpoint is data, never code.
"""
from __future__ import annotations

import json
import os
import pickle
import urllib.error
import urllib.request
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, first_line
from ..fileio import atomic_path
from .meta import ModelMeta
from .registry import TORCHVISION_WEIGHTS, from_meta

FORMAT_KEY = "edgekit"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")

# torchvision's published ImageNet checkpoints (IMAGENET1K_V1, names in registry.TORCHVISION_WEIGHTS),
# resolved through the torch hub cache.
TORCHVISION_URL = "https://download.pytorch.org/models/"


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Write weights and metadata; ``.safetensors`` keeps the metadata as a JSON header string."""
    path = Path(path)
    meta: ModelMeta = model.meta
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={FORMAT_KEY: json.dumps(meta.to_dict())})
        else:
            torch.save({FORMAT_KEY: meta.to_dict(), "state_dict": state}, tmp)
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelMeta | None]:
    """(state_dict, meta or None for a bare state_dict such as torchvision's)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a weights file")
    if not path.is_file():
        raise InputError(f"weights file not found: {path}")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise InputError(f"unsupported weights file {path.name}: expected one of "
                         f"{', '.join(CHECKPOINT_SUFFIXES)}")
    if path.suffix != ".safetensors" and not _looks_like_torch_save(path):
        raise InputError(f"cannot read weights file {path}: not a PyTorch checkpoint "
                         "(neither torch.save's zip archive nor a pickle)")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                header = (f.metadata() or {}).get(FORMAT_KEY)
                state = {k: f.get_tensor(k) for k in f.keys()}
            return state, ModelMeta.from_dict(json.loads(header)) if header else None
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's advice to retry with weights_only=False is unsafe
        raise InputError(f"cannot read weights file {path}: not a checkpoint of plain tensors "
                         f"({_unpickler_detail(exc)}); edgekit never unpickles other objects: "
                         "re-save the weights with torch.save(model.state_dict(), PATH)") from exc
    except Exception as exc:  # corrupt or foreign file: one line, no traceback
        raise InputError(f"cannot read weights file {path}: {_first_sentence(exc)}") from exc
    if isinstance(obj, dict) and FORMAT_KEY in obj:
        return obj["state_dict"], ModelMeta.from_dict(obj[FORMAT_KEY])
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path} does not hold a state_dict of tensors")
    return obj, None


def _looks_like_torch_save(path: Path) -> bool:
    """torch.save writes a zip archive (or, before PyTorch 1.6, a binary pickle)."""
    with path.open("rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def _unpickler_detail(exc: Exception) -> str:
    """What torch's weights-only unpickler refused, without its advice to load unsafely."""
    lines = str(exc).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
    if not lines or "weights_only" in lines[0]:
        return "refused by the safe loader"
    return lines[0].split(". ")[0].strip().rstrip(".")  # drop the advice to allowlist the global


def _first_sentence(exc: Exception) -> str:
    return first_line(exc).split(". ")[0].rstrip(".")


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load; a mismatch names the first missing/unexpected keys and shape conflicts."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:3])}" + (f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""))
    if shapes:
        problems.append(f"shape mismatch {shapes[0]}" + (f" (+{len(shapes) - 1} more)" if len(shapes) > 1 else ""))
    if problems:
        meta = getattr(model, "meta", None)
        what = f"{meta.arch} (width {meta.width})" if isinstance(meta, ModelMeta) else type(model).__name__
        raise InputError(f"weights {source} do not fit {what}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path) -> nn.Module:
    """Rebuild a model from an edgekit checkpoint (architecture and preprocessing from its metadata)."""
    state, meta = read_checkpoint(path)
    if meta is None:
        raise InputError(f"{path} is a bare state_dict with no edgekit metadata; "
                         "pass --model NAME (and --width) with --weights")
    model = from_meta(meta)
    load_state(model, state, str(path))
    return model.eval()


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_imagenet(arch: str) -> Path:
    """torchvision's checkpoint for ``arch`` from the hub cache, downloading it when online."""
    if arch not in TORCHVISION_WEIGHTS:
        raise InputError(f"no published ImageNet weights for {arch} in torchvision format "
                         f"(available: {', '.join(TORCHVISION_WEIGHTS)}); import TensorFlow weights "
                         "with 'edgekit weights import'")
    filename = TORCHVISION_WEIGHTS[arch]
    target = hub_checkpoint_dir() / filename
    if target.is_file():
        return target
    url = TORCHVISION_URL + filename
    offline_msg = (f"ImageNet weights for {arch} are not cached and cannot be downloaded; "
                   f"place {filename} (from {url}) in {target.parent}/")
    if os.environ.get("EDGEKIT_OFFLINE"):
        raise InputError(offline_msg)
    try:
        with urllib.request.urlopen(url, timeout=10):
            pass
    except (urllib.error.URLError, OSError):
        raise InputError(offline_msg) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    # torchvision names each file after the first hex digits of its sha256
    hash_prefix = Path(filename).stem.rsplit("-", 1)[-1]
    try:
        with atomic_path(target) as tmp:
            torch.hub.download_url_to_file(url, str(tmp), hash_prefix=hash_prefix, progress=True)
    except RuntimeError as exc:  # torch's "invalid hash value": nothing is kept
        raise InputError(f"downloaded {filename} fails its checksum ({_first_sentence(exc)}); "
                         f"try again, or place the file in {target.parent}/") from None
    return target
