"""Import published TensorFlow MobileNets (.tflite, Keras .h5) into edgekit's own models."""
from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from .keras import import_keras
from .tflite import import_tflite

IMPORTERS = {".tflite": import_tflite, ".h5": import_keras, ".keras": import_keras}


def import_model(path: str | Path, arch: str, width: float | None = None,
                 labels: list[str] | None = None):
    """Import by file type; the result carries ModelMeta (tf_same padding, TF preprocessing)."""
    path = Path(path)
    try:
        importer = IMPORTERS[path.suffix.lower()]
    except KeyError:
        raise InputError(f"cannot import {path.name}: expected one of "
                         f"{', '.join(sorted(IMPORTERS))}") from None
    return importer(path, arch, width=width, labels=labels)


__all__ = ["IMPORTERS", "import_keras", "import_model", "import_tflite"]
