"""The training and validation images: class names from the data, a seeded stratified split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..datasets import ClassedSet, load_classed
from ..errors import InputError


@dataclass
class Split:
    train: ClassedSet
    val: ClassedSet | None  # None: --val-split 0, no validation
    labels: list[str]


def load_split(data: Path, val: Path | None, val_split: float, seed: int) -> Split:
    """``data`` for training and ``val`` (same class names) for validation, or a seeded
    ``val_split`` fraction of every class of ``data`` held out (0: none, no validation)."""
    train = load_classed(data)
    if len(train.labels) < 2:
        raise InputError(f"{data} has one class only ({train.labels[0]}): a classifier needs at least "
                         "two class folders (e.g. the objects and 'other')")
    if val is not None:
        held = load_classed(val)
        if held.labels != train.labels:
            only_train = sorted(set(train.labels) - set(held.labels))
            only_val = sorted(set(held.labels) - set(train.labels))
            parts = ([f"only in --data: {', '.join(only_train[:5])}"] if only_train else []) + \
                    ([f"only in --val: {', '.join(only_val[:5])}"] if only_val else [])
            raise InputError(f"the classes of --val {val} differ from those of --data {data} ("
                             + "; ".join(parts) + ")")
        return Split(train, held, train.labels)
    if val_split == 0:
        return Split(train, None, train.labels)
    return _held_out(train, val_split, seed)


def _held_out(data: ClassedSet, fraction: float, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    val_idx = []
    for k, name in enumerate(data.labels):
        members = np.flatnonzero(data.targets == k)
        n = int(round(len(members) * fraction))
        if n < 1 or n >= len(members):
            raise InputError(f"--val-split {fraction:g} of class '{name}' ({len(members)} images) leaves "
                             f"{'no image to validate on' if n < 1 else 'no image to train on'}: add "
                             "images, change --val-split or give --val DIR")
        val_idx.extend(rng.choice(members, n, replace=False).tolist())
    held = np.zeros(len(data), bool)
    held[val_idx] = True

    def subset(mask: np.ndarray) -> ClassedSet:
        idx = np.flatnonzero(mask)
        return ClassedSet([data.files[i] for i in idx], data.targets[idx], data.labels, data.source)
    return Split(subset(~held), subset(held), data.labels)
