"""ImageNet-pretrained MobileNets shipped inside the package (edgekit/data/weights).

Google's published quantization-aware-trained TFLite MobileNets (Apache-2.0, see the README there),
imported with `edgekit weights import` and stored losslessly: every tensor on an integer grid as
its integers plus scale and zero point (decoded exactly as the importer dequantizes the .tflite:
float32((float64(q) - zero) * float64(scale))), tensors of one repeated value as that value,
anything else as float16 when that is exact, else float32. `tools/make_builtin_weights.py`
regenerates the files; `index.json` records each file's sha256, checked at every load.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import InputError
from ..manifest import sha256_of

WEIGHTS_DIR = "data/weights"
INDEX_NAME = "index.json"
ENCODING_KEY = "edgekit.encoding"
META_KEY = "edgekit"
BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class Builtin:
    name: str
    arch: str
    width: float
    resolution: int
    file: str
    sha256: str
    source: str

    @property
    def label(self) -> str:
        return f"{self.arch} {self.width:g}/{self.resolution}"


def weights_dir() -> Path:
    return Path(str(resources.files("edgekit"))) / WEIGHTS_DIR


@lru_cache(maxsize=1)
def index() -> tuple[Builtin, ...]:
    path = weights_dir() / INDEX_NAME
    if not path.is_file():
        return ()
    data = json.loads(path.read_text())
    return tuple(Builtin(name=m["name"], arch=m["arch"], width=float(m["width"]),
                         resolution=int(m["resolution"]), file=m["file"], sha256=m["sha256"],
                         source=m["source"]) for m in data["models"])


def available(arch: str) -> list[Builtin]:
    return [b for b in index() if b.arch == arch]


def find(arch: str, width: float | None = None) -> Builtin | None:
    """The built-in weights for ``arch`` at ``width`` (default 1.0); None when there are none."""
    width = 1.0 if width is None else float(width)
    return next((b for b in available(arch) if b.width == width), None)


def by_name(name: str) -> Builtin:
    name = name.removeprefix(BUILTIN_PREFIX)
    for b in index():
        if b.name == name:
            return b
    raise InputError(f"no built-in weights named {name} (built in: "
                     f"{', '.join(b.name for b in index()) or 'none'})")


def missing_message(arch: str, width: float | None) -> str:
    """Why there is nothing to load, and what to pass instead."""
    width = 1.0 if width is None else float(width)
    have = available(arch)
    what = arch if not have else f"{arch} at width {width:g}"
    hint = ""
    if have:
        hint = " (built in: " + ", ".join(f"--width {b.width:g}" for b in have) + ")"
    from .registry import TORCHVISION_WEIGHTS

    words = "FILE|imagenet|random" if arch in TORCHVISION_WEIGHTS and width == 1.0 else "FILE|random"
    return (f"no built-in weights for {what}{hint}; pass --weights {words} "
            "(random: seeded random weights, accuracy meaningless)")


def load_builtin(entry: Builtin):
    """The model (eval mode, ModelMeta with labels and TF preprocessing), its file verified."""
    from .registry import from_meta
    from .weights import load_state

    path = weights_dir() / entry.file
    if not path.is_file():
        raise InputError(f"built-in weights {entry.file} are missing from the installed edgekit "
                         f"({path}); reinstall edgekit or pass --weights FILE|random")
    actual = sha256_of([path])
    if actual != entry.sha256:
        raise InputError(f"built-in weights {path} fail their checksum (sha256 {actual[:12]}..., "
                         f"index.json records {entry.sha256[:12]}...): the file is damaged or was "
                         "replaced; reinstall edgekit")
    state, meta = decode_file(path)
    meta = meta.with_(weights=BUILTIN_PREFIX + entry.name)
    model = from_meta(meta)
    load_state(model, state, f"built-in {entry.name}")
    return model.eval()


def decode_file(path: Path):
    """(state_dict of float tensors, ModelMeta) from a built-in weights file."""
    from safetensors import safe_open

    from .meta import ModelMeta

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        stored = {k: f.get_tensor(k) for k in f.keys()}
    if ENCODING_KEY not in header or META_KEY not in header:
        raise InputError(f"{path} is not an edgekit built-in weights file")
    encoding = json.loads(header[ENCODING_KEY])
    state = {key: decode(key, spec, stored) for key, spec in encoding.items()}
    return state, ModelMeta.from_dict(json.loads(header[META_KEY]))


def decode(key: str, spec: dict, stored: dict):
    import torch

    kind = spec["kind"]
    if kind == "fill":
        dtype = getattr(torch, spec["dtype"])
        value = float.fromhex(spec["value"]) if dtype.is_floating_point else int(spec["value"])
        return torch.full(spec["shape"], value, dtype=dtype)
    if kind == "grid":
        q = stored[key + ".q"]
        shape = [-1] + [1] * (q.dim() - 1) if q.dim() else []
        scale = stored[key + ".scale"].double().reshape(shape)
        zero = stored[key + ".zero"].double().reshape(shape)
        return ((q.double() - zero) * scale).float()
    if kind == "raw":
        return stored[key].to(getattr(torch, spec["dtype"]))
    raise InputError(f"built-in weights: unknown encoding {kind!r} for {key}")
