"""Labelled image sets for evaluation: a folder of class subfolders or a TSV of path<TAB>class."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .preprocessing import Preprocessing, is_image_file, load_image


@dataclass
class LabelledSet:
    files: list[Path]
    targets: np.ndarray  # model output indices
    source: str

    def __len__(self) -> int:
        return len(self.files)


def read_labels(path: str | Path) -> list[str]:
    """Class names, one per line, in output order."""
    path = Path(path)
    try:
        labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read labels file {path}: {exc.__class__.__name__}") from exc
    if not labels:
        raise InputError(f"labels file {path} is empty")
    return labels


def background_offset(labels: list[str] | None, num_classes: int) -> int:
    """1 for TensorFlow's 1001-class ImageNet models (output 0 is "background"), else 0."""
    if num_classes == 1001 and (not labels or labels[0].strip().lower() == "background"):
        return 1
    return 0


def _label_index(labels: list[str] | None) -> dict[str, int]:
    """Class name -> output index, matching the full label or any of its comma-separated synonyms."""
    index: dict[str, int] = {}
    for i, label in enumerate(labels or []):
        for name in [label, *label.split(",")]:
            index.setdefault(name.strip().lower().replace("_", " "), i)
    return index


def load_labelled(path: str | Path, labels: list[str] | None, num_classes: int,
                  limit: int | None = None, seed: int = 0) -> LabelledSet:
    path = Path(path)
    offset = background_offset(labels, num_classes)
    names = _label_index(labels)

    def resolve(cls: str, where: str) -> int:
        cls = cls.strip()
        if cls.lstrip("-").isdigit():
            if cls.startswith("-"):  # -1 would pass as TF's "background" output and score 0%
                raise InputError(f"{where}: class index {cls} is negative (classes are 0-based "
                                 "indices or label names)")
            k = int(cls) + offset
        elif cls.lower().replace("_", " ") in names:
            k = names[cls.lower().replace("_", " ")]
        else:
            hint = "" if labels else " (the model has no labels: use class indices)"
            raise InputError(f"{where}: class '{cls}' is not one of the model's labels{hint}")
        if not 0 <= k < num_classes:
            raise InputError(f"{where}: class index {cls} outside the model's {num_classes} classes")
        return k

    folders: dict[str, list[Path]] = {}
    entries = _entries(path, folders)
    for name in folders:  # an unknown class is named even when its folder is empty
        resolve(name, str(path / name))
    files, targets = [], []
    for f, cls, where in entries:
        files.append(f)
        targets.append(resolve(cls, where))
    if not files:
        raise InputError(f"no labelled images in {path}")
    order = list(range(len(files)))
    if limit is not None and limit < len(files):
        order = sorted(random.Random(seed).sample(order, limit))
    return LabelledSet([files[i] for i in order], np.asarray([targets[i] for i in order]), str(path))


def _entries(path: Path, folders: dict[str, list[Path]] | None = None) -> list[tuple[Path, str, str]]:
    """(image file, class as written, where it was written) for a folder of class subfolders or
    a TSV of path<TAB>class; for a folder, ``folders`` gets each class folder's images."""
    if path.is_file() and path.suffix.lower() in (".tsv", ".txt"):
        entries = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise InputError(f"{path}:{n}: expected path<TAB>class")
            f = Path(parts[0])
            entries.append((f if f.is_absolute() else path.parent / f, parts[1].strip(), f"{path}:{n}"))
        return entries
    if path.is_dir():
        classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise InputError(f"{path} has no class subfolders (or pass a TSV of path<TAB>class)")
        entries = []
        for d in classes:
            found = [(f, d.name, str(d)) for f in sorted(p for p in d.rglob("*") if is_image_file(p))]
            if folders is not None:
                folders[d.name] = [f for f, _, _ in found]
            entries.extend(found)
        return entries
    if not path.exists():
        raise InputError(f"labelled data not found: {path}")
    raise InputError(f"{path}: expected a folder of class subfolders or a .tsv file")


@dataclass
class ClassedSet:
    """Labelled images whose class names come from the data itself (training): ``labels`` sorted,
    ``targets`` indices into them."""

    files: list[Path]
    targets: np.ndarray
    labels: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.files)


def load_classed(path: str | Path) -> ClassedSet:
    """A folder of class subfolders (class = folder name) or a TSV of path<TAB>class, with its
    class names taken from the data. An empty class folder is an error: its class could never be
    learned."""
    path = Path(path)
    folders: dict[str, list[Path]] = {}
    entries = _entries(path, folders)
    empty = [name for name, images in folders.items() if not images]
    if empty:
        others = f" (and {len(empty) - 1} more class folders)" if len(empty) > 1 else ""
        raise InputError(f"class folder {path / empty[0]} has no images{others}: add images or remove it")
    if not entries:
        raise InputError(f"no labelled images in {path}")
    labels = sorted({cls for _, cls, _ in entries})
    index = {name: i for i, name in enumerate(labels)}
    return ClassedSet([f for f, _, _ in entries], np.asarray([index[c] for _, c, _ in entries]), labels,
                      str(path))


def load_images(dataset: LabelledSet, pre: Preprocessing) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Preprocessed images, their targets, and the files that could not be read (missing or
    undecodable), so that they can be named."""
    images, targets, unreadable = [], [], []
    for f, t in zip(dataset.files, dataset.targets):
        try:
            images.append(pre.apply(load_image(f)))
            targets.append(t)
        except InputError:
            unreadable.append(f)
    if not images:
        raise InputError(f"none of the images in {dataset.source} could be read")
    return np.stack(images), np.asarray(targets), unreadable
