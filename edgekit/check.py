"""`edgekit check`: where each op of a model will run, on every backend (of a target) that takes
the file, for any model file, built by edgekit or not, or every artifact of a convert folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .backends.base import Backend, get_backend, list_backends
from .backends.placement import Placement
from .errors import InputError
from .manifest import MANIFEST_NAME, Manifest, verify_artifact
from .targets import TargetProfile, load_target


@dataclass(frozen=True)
class CheckJob:
    path: Path
    backend: Backend


def check(model: str | Path, target: str | TargetProfile | None = None, *, verify: bool = True) -> list[Placement]:
    """Placement reports for ``model`` (a model file or a folder with a manifest): one per backend
    that runs it, limited to ``target``'s backends when one is given."""
    profile = target if isinstance(target, TargetProfile) or target is None else load_target(target)
    return [job.backend.placement(job.path) for job in plan(Path(model), profile, verify)]


def plan(model: Path, profile: TargetProfile | None, verify: bool = True) -> list[CheckJob]:
    if model.is_dir():
        return _build_jobs(model, profile, verify)
    if not model.is_file():
        raise InputError(f"model not found: {model}")
    wanted = {b.backend for b in profile.builds} if profile else None
    backends = [b for b in (get_backend(n) for n in list_backends()) if _takes(b, model)]
    if not backends:
        suffixes = sorted({b.suffix for b in (get_backend(n) for n in list_backends())})
        raise InputError(f"edgekit check reads {', '.join(suffixes)} files, not {model.name}")
    if wanted is not None:
        chosen = [b for b in backends if b.name in wanted]
        if not chosen:
            raise InputError(f"target {profile.name} builds {', '.join(sorted(wanted))}: none of them "
                             f"runs {model.suffix} files (try without --target)")
        backends = chosen
    for b in backends:
        b.require()
    return [CheckJob(model, b) for b in backends]


def _takes(backend: Backend, path: Path) -> bool:
    return path.suffix == backend.suffix


def _build_jobs(folder: Path, profile: TargetProfile | None, verify: bool) -> list[CheckJob]:
    if not (folder / MANIFEST_NAME).is_file():
        raise InputError(f"{folder} holds no {MANIFEST_NAME}: pass a model file or a convert folder")
    manifest = Manifest.read(folder / MANIFEST_NAME)
    if profile is not None and profile.name != manifest.target:
        raise InputError(f"{folder} was built for {manifest.target}, not {profile.name}")
    jobs = []
    for record in manifest.artifacts:
        backend = get_backend(record.backend)
        backend.require()
        jobs.append(CheckJob(verify_artifact(manifest, record, verify), backend))
    if not jobs:
        raise InputError(f"{folder / MANIFEST_NAME} lists no artifacts")
    return jobs
