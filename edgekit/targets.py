"""Target profiles: targets/*.yaml parsed into frozen dataclasses (the dataclasses are the schema)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError, suggest, unknown

TARGETS_DIR = Path(__file__).resolve().parents[1] / "targets"
DEFAULT_TARGET = "rpi4"


@dataclass(frozen=True)
class CpuSpec:
    arch: str  # "aarch64", "x86_64", "armv7l"
    cores: int
    model: str = ""
    features: tuple[str, ...] = ()  # e.g. ("neon", "dotprod") or ("avx2", "avx512_vnni")


@dataclass(frozen=True)
class BuildSpec:
    """One backend's artifacts for a target, and how to build them."""

    backend: str
    precisions: tuple[str, ...]
    layout: str = "NCHW"
    io_dtype: str = "float32"  # int8 artifacts: "int8" or "uint8" quantized I/O, or "float32"
    activation_type: str = "int8"
    weight_type: str = "int8"
    per_channel: bool = True
    why: str = ""  # the reasoning, shown by `edgekit targets show`


@dataclass(frozen=True)
class ParitySpec:
    fp32_max_abs_diff: float = 1e-4
    fp16_min_agreement: float = 0.99
    int8_min_agreement: float = 0.85
    int8_min_sqnr_db: float = 10.0


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    cpu: CpuSpec
    builds: tuple[BuildSpec, ...]
    threads: int = 1
    accelerator: str = ""
    notes: str = ""
    parity: ParitySpec = field(default_factory=ParitySpec)
    source: str = ""

    def build_for(self, backend: str) -> BuildSpec | None:
        return next((b for b in self.builds if b.backend == backend), None)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, data: Any, where: str):
    """Instantiate a frozen dataclass from a mapping, rejecting unknown keys with a suggestion."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields or key == "source":
            raise InputError(f"{where}: unknown key '{key}'{suggest(str(key), [f for f in fields if f != 'source'])}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from None


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def parse_target(data: dict, source: str = "<memory>") -> TargetProfile:
    if not isinstance(data, dict):
        raise InputError(f"{source}: a target file must be a mapping")
    data = dict(data)
    cpu = _build(CpuSpec, data.pop("cpu", None), f"{source}: cpu")
    cpu = dataclasses.replace(cpu, features=_as_tuple(cpu.features))
    raw_builds = data.pop("builds", None)
    if not raw_builds or not isinstance(raw_builds, list):
        raise InputError(f"{source}: 'builds' must list at least one backend")
    builds = []
    for i, raw in enumerate(raw_builds):
        b = _build(BuildSpec, raw, f"{source}: builds[{i}]")
        builds.append(dataclasses.replace(b, precisions=_as_tuple(b.precisions)))
    parity = _build(ParitySpec, data.pop("parity", {}) or {}, f"{source}: parity")
    target = _build(TargetProfile, {**data, "cpu": cpu, "builds": tuple(builds), "parity": parity},
                    source)
    target = dataclasses.replace(target, source=source)
    _validate(target)
    return target


def _validate(target: TargetProfile) -> None:
    from .backends.base import PRECISIONS, list_backends

    where = target.source
    if target.threads < 1:
        raise InputError(f"{where}: threads must be >= 1")
    for b in target.builds:
        if b.backend not in list_backends():
            raise InputError(f"{where}: unknown backend '{b.backend}'{suggest(b.backend, list_backends())}")
        for p in b.precisions:
            if p not in PRECISIONS:
                raise InputError(f"{where}: unknown precision '{p}' for {b.backend}{suggest(p, PRECISIONS)}")
        if b.layout not in ("NCHW", "NHWC"):
            raise InputError(f"{where}: layout must be NCHW or NHWC, got {b.layout}")
        for key in ("io_dtype", "activation_type", "weight_type"):
            allowed = ("float32", "int8", "uint8") if key == "io_dtype" else ("int8", "uint8")
            if getattr(b, key) not in allowed:
                raise InputError(f"{where}: {key} must be one of {', '.join(allowed)}")


def target_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(TARGETS_DIR.glob("*.yaml"))}


def list_targets() -> list[str]:
    return sorted(target_files())


def load_target(name_or_path: str) -> TargetProfile:
    """A target by name (targets/NAME.yaml) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        source = path
    else:
        files = target_files()
        if name_or_path not in files:
            raise unknown("target", name_or_path, files)
        source = files[name_or_path]
    try:
        data = yaml.safe_load(source.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}") from None
    target = parse_target(data, str(source))
    if target.name != source.stem and source.parent == TARGETS_DIR:
        raise InputError(f"{source}: name '{target.name}' does not match the file name")
    return target
