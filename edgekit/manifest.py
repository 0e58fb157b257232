"""manifest.json: what a convert run built, from what, and how close each artifact is to its source.
Everything downstream (bench, eval, demo) reads preprocessing and labels from here."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InputError
from .fileio import write_text_atomic

MANIFEST_NAME = "manifest.json"


@dataclass
class ArtifactRecord:
    path: str  # relative to the manifest's folder
    backend: str
    precision: str
    size_bytes: int
    sha256: str
    input: dict
    runtime: dict
    parity: dict | None = None
    parity_ok: bool | None = None
    parity_failures: list[str] = field(default_factory=list)
    tolerance: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    convert_seconds: float | None = None
    details: dict = field(default_factory=dict)


@dataclass
class Manifest:
    target: str
    model: dict
    calibration: dict | None
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    parity_images: dict | None = None
    notices: list[str] = field(default_factory=list)
    edgekit_version: str = __version__
    folder: Path | None = None  # where it was read from / written to (not serialised)

    def to_dict(self) -> dict:
        d = {"edgekit_version": self.edgekit_version, "target": self.target, "model": self.model,
             "calibration": self.calibration, "parity_images": self.parity_images,
             "notices": self.notices, "artifacts": [asdict(a) for a in self.artifacts]}
        return _json_safe(d)

    def write(self, folder: str | Path) -> Path:
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        self.folder = folder
        return path

    def model_meta(self):
        """The model's ModelMeta (preprocessing, labels, ...) as recorded at conversion."""
        from .models.meta import ModelMeta

        return ModelMeta.from_dict({**self.model, "arch": self.model["name"]})

    def artifact_path(self, record: ArtifactRecord) -> Path:
        return (self.folder or Path(".")) / record.path

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        if not path.exists():
            raise InputError(f"not found: {path}")
        if path.is_dir():
            path = path / MANIFEST_NAME
        if not path.is_file():
            raise InputError(f"no {MANIFEST_NAME} at {path.parent} (run 'edgekit convert' first)")
        try:
            data = json.loads(path.read_text())
            records = [ArtifactRecord(**a) for a in data.get("artifacts", [])]
            return cls(target=data["target"], model=data["model"], calibration=data.get("calibration"),
                       artifacts=records, parity_images=data.get("parity_images"),
                       notices=data.get("notices", []),
                       edgekit_version=data.get("edgekit_version", "?"), folder=path.parent)
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path} is not a valid edgekit manifest: {exc}") from None


def listed(path: str | Path) -> tuple[Manifest, ArtifactRecord] | None:
    """The manifest beside an artifact file and its entry, if that manifest lists it."""
    path = Path(path)
    sibling = path.parent / MANIFEST_NAME
    if sibling.is_file():
        manifest = Manifest.read(sibling)
        for record in manifest.artifacts:
            if record.path == path.name:
                return manifest, record
    return None


def record_for(path: str | Path, purpose: str = "edgekit") -> tuple[Manifest, ArtifactRecord]:
    """The manifest beside an artifact file and its entry; an InputError when there is none."""
    path = Path(path)
    found = listed(path)
    if found is not None:
        return found
    raise InputError(f"{path.name} has no {MANIFEST_NAME} beside it that lists it: {purpose} needs "
                     "its preprocessing and labels (convert it with edgekit, or pass the folder)")


def sha256_of(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _json_safe(value: Any) -> Any:
    """inf/nan are not JSON: store them as strings ("inf" SQNR means bit-identical outputs)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
