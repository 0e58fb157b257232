"""The frozen prefix's outputs for every image and view, computed once and cached on disk.

The cache key is a sha256 over everything the numbers depend on: each image file's bytes (in
order), the prefix's weights, the model's preprocessing, where the model is cut, the number of
views and the augmentation's constants. Anything changed -> another key, never a stale cache.
Augmented views are seeded by each file's own sha256, so they do not depend on --seed and a rerun
with another seed reuses the cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..fileio import atomic_path, write_text_atomic
from ..preprocessing import Preprocessing, load_image
from . import augment
from .interrupt import check_stop

FORMAT = 1  # bump when what a cached file holds changes
STORED_DTYPE = np.float16  # halves the disk and memory; features are ReLU6-bounded activations


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgekit" / "features"


@dataclass
class Features:
    values: np.ndarray  # (1 + views, N, ...) the prefix's outputs; view 0 is the centre view
    targets: np.ndarray  # (N,)
    unreadable: list[Path] = field(default_factory=list)
    images_per_second: float | None = None  # None: read from the cache
    key: str = ""

    @property
    def hit(self) -> bool:
        return self.images_per_second is None


def file_digests(files: list[Path]) -> list[str]:
    out = []
    for f in files:
        h = hashlib.sha256()
        try:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            h.update(b"unreadable:" + str(f).encode())
        out.append(h.hexdigest())
    return out


def state_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_key(digests: list[str], prefix: torch.nn.Module, where: dict, pre: Preprocessing,
              n_views: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "where": where, "preprocessing": pre.to_dict(),
                         "views": n_views, "augment": [augment.CROP_AREA, augment.CROP_RATIO,
                                                       augment.MIN_CROP_PIXELS],
                         "weights": state_digest(prefix)}, sort_keys=True).encode())
    for d in digests:
        h.update(d.encode())
    return h.hexdigest()


def cached(cache_dir: Path, key: str) -> bool:
    return (cache_dir / f"{key}.npy").is_file() and (cache_dir / f"{key}.json").is_file()


def extract(files: list[Path], targets: np.ndarray, key: str, digests: list[str],
            run: Callable[[np.ndarray], np.ndarray] | None, pre: Preprocessing,
            n_views: int, cache_dir: Path, progress=None) -> Features:
    """The prefix outputs of ``files`` from ``cache_dir/<key>`` or computed with ``run`` (None: the
    prefix is empty, the views themselves are the inputs) and cached."""
    data, index = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if cached(cache_dir, key):
        meta = json.loads(index.read_text())
        readable = np.asarray(meta["readable"], bool)
        values = np.load(data, mmap_mode="r")
        return Features(values[:, readable], targets[readable],
                        [files[i] for i in np.flatnonzero(~readable)], None, key)
    readable = np.ones(len(files), bool)
    start = time.perf_counter()
    with atomic_path(data) as tmp:
        out = None
        for i, (f, digest) in enumerate(zip(files, digests)):
            check_stop()
            try:
                image = load_image(f)
            except InputError:
                readable[i] = False
                continue
            rng = np.random.default_rng([int(digest[:16], 16), FORMAT])
            batch = augment.views(image, pre, n_views, rng)
            result = batch if run is None else run(batch)
            if out is None:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=STORED_DTYPE,
                                                shape=(1 + n_views, len(files), *result.shape[1:]))
            out[:, i] = result
            if progress is not None:
                progress(i + 1, len(files))
        if out is None:
            raise InputError(f"none of the {len(files)} images could be read")
        out.flush()
        del out
    seconds = time.perf_counter() - start
    write_text_atomic(index, json.dumps({"format": FORMAT, "files": len(files),
                                         "readable": readable.tolist(),
                                         "seconds": round(seconds, 3)}))
    values = np.load(data, mmap_mode="r")
    n_read = int(readable.sum())
    return Features(values[:, readable], targets[readable], [files[i] for i in np.flatnonzero(~readable)],
                    n_read * (1 + n_views) / max(seconds, 1e-9), key)
