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
# `edgekit bench DIR` draws its results there: it shows the artifacts of the build it measured
BENCH_CHART = "bench.png"


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
        return json_safe(d)

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


# (resolved path, size, mtime) of each file hashed -> its sha256: a command hashes a file once
_HASHED: dict[tuple, str] = {}


def file_sha256(paths: list[Path]) -> str:
    """sha256_of(paths), computed once per command for unchanged files."""
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    if key not in _HASHED:
        _HASHED[key] = sha256_of(paths)
    return _HASHED[key]


def verify_artifact(manifest: Manifest, record: ArtifactRecord, verify: bool = True) -> Path:
    """The artifact's path, once its files (the .xml's .bin too) exist and, with ``verify``, match
    the sha256 the manifest records; an InputError naming the file otherwise."""
    folder = manifest.folder or Path(".")
    files = [folder / name for name in (record.files or [record.path])]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise InputError(f"{missing[0]} is missing (listed in {folder / MANIFEST_NAME})")
    if verify and record.sha256 and file_sha256(files) != record.sha256:
        raise InputError(f"{files[0]} does not match the sha256 in {folder / MANIFEST_NAME} (modified "
                         "or replaced since convert?): pass --no-verify to use it anyway")
    return manifest.artifact_path(record)


# The manifest field that records the checkpoint's sha256 (model.weights_sha256), when convert has it
CHECKPOINT_SHA256 = "weights_sha256"


def recorded_checkpoint(manifest: Manifest, verify: bool = True) -> tuple[Path | None, bool]:
    """(the checkpoint the build was converted from, if it is still there; whether it was checked
    against the sha256 the manifest records). A recorded sha256 that does not match, with
    ``verify``, is an InputError naming the file."""
    weights = manifest.model.get("weights")
    if not weights or Path(weights).suffix not in (".pth", ".pt", ".safetensors") \
            or not Path(weights).is_file():
        return None, False
    path, expected = Path(weights), manifest.model.get(CHECKPOINT_SHA256)
    if not expected or not verify:
        return path, False
    if file_sha256([path]) != expected:
        raise InputError(f"{path} does not match the sha256 in {(manifest.folder or Path('.')) / MANIFEST_NAME}"
                         " (the checkpoint it was converted from, modified or replaced since?): pass "
                         "--no-verify to use it anyway")
    return path, True


def json_safe(value: Any) -> Any:
    """inf/nan are not JSON: store them as strings ("inf" SQNR means bit-identical outputs)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
