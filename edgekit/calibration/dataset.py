"""Image folders -> a CalibrationSet (preprocessed float32 NCHW arrays plus where they came from)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..preprocessing import Preprocessing, is_image_file, load_image

DEFAULT_CALIBRATION_DIR = Path(__file__).resolve().parents[1] / "data" / "calibration"
DEFAULT_SEED = 0


@dataclass
class CalibrationSet:
    images: np.ndarray  # (N, 3, H, W) float32, the model's preprocessing, NCHW
    files: list[str]
    source: str
    skipped: int = 0
    method: str = "minmax"
    options: dict = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # the skipped files, relative to source

    def __len__(self) -> int:
        return len(self.images)

    def to_dict(self) -> dict:
        return {"source": self.source, "n_images": len(self), "method": self.method,
                "options": self.options, "skipped_unreadable": self.skipped,
                "unreadable_files": list(self.unreadable)}


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (flat or class subfolders), sorted for determinism."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    return sorted(p for p in folder.rglob("*") if is_image_file(p))


def load_calibration(folder: str | Path | None, preprocessing: Preprocessing, size: int | None = None,
                     seed: int = DEFAULT_SEED, method: str = "minmax",
                     options: dict | None = None) -> CalibrationSet:
    """Load up to ``size`` images (a seeded sample when the folder has more), skipping unreadable
    files. ``folder`` None means the photos bundled in ``calibration/``."""
    if folder is None:
        folder = DEFAULT_CALIBRATION_DIR
        if not folder.is_dir():
            raise InputError("the bundled calibration photos are not installed with this copy of "
                             "edgekit; pass --calib DIR")
    files = list_images(folder)
    if not files:
        raise InputError(f"no images (jpg/png/bmp/webp/...) in {folder}")
    if size is not None and size < 1:
        raise InputError(f"calibration size must be >= 1, got {size}")
    if size is not None and size < len(files):
        files = sorted(random.Random(seed).sample(files, size))
    arrays, used, unreadable = [], [], []
    for path in files:
        try:
            arrays.append(preprocessing.apply(load_image(path)))
            used.append(str(path))
        except InputError:
            unreadable.append(str(path.relative_to(folder)))
    if not arrays:
        raise InputError(f"none of the {len(files)} image files in {folder} could be read "
                         f"({', '.join(unreadable[:3])}{', ...' if len(unreadable) > 3 else ''})")
    return CalibrationSet(np.stack(arrays), used, str(folder), len(unreadable), method, options or {},
                          unreadable)
