"""Target profiles: targets/*.yaml parsed into frozen dataclasses (the dataclasses are the schema)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError, first_line, suggest, unknown
from .limits import check_threads
from .parity import Tolerance

TARGETS_DIR = Path(__file__).resolve().parent / "data" / "targets"
DEFAULT_TARGET = "rpi4"


def _bounded(low: float | None = None, high: float | None = None, **kwargs):
    """A numeric field with its allowed range [low, high] (None: open), checked when parsed."""
    return field(metadata={"range": (low, high)}, **kwargs)


def _fraction(default: float):
    return _bounded(0.0, 1.0, default=default)


@dataclass(frozen=True)
class CpuSpec:
    arch: str  # "aarch64", "x86_64", "armv7l"
    cores: int = _bounded(1, 4096)
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
    """How close each precision's artifacts must be to the source model (parity.Tolerance)."""

    fp32_max_abs_diff: float = _bounded(0.0, default=1e-4)
    fp16_min_agreement: float = _fraction(0.99)  # top-1 agreement as a fraction: 0.99 = 99%
    fp16_min_sqnr_db: float = _bounded(0.0, default=30.0)
    int8_min_agreement: float = _fraction(0.85)
    int8_min_sqnr_db: float = _bounded(0.0, default=10.0)

    def tolerance(self, precision: str) -> Tolerance:
        """The one place a precision's tolerance is made: convert, emulate and bench read it."""
        return {
            "fp32": Tolerance(max_abs_diff=self.fp32_max_abs_diff),
            "fp16": Tolerance(min_top1_agreement=self.fp16_min_agreement, min_sqnr_db=self.fp16_min_sqnr_db),
            "int8": Tolerance(min_top1_agreement=self.int8_min_agreement, min_sqnr_db=self.int8_min_sqnr_db),
        }[precision]


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    cpu: CpuSpec
    builds: tuple[BuildSpec, ...]
    threads: int = _bounded(1, default=1)
    accelerator: str = ""
    notes: str = ""
    parity: ParitySpec = field(default_factory=ParitySpec)
    source: str = ""

    def build_for(self, backend: str) -> BuildSpec | None:
        return next((b for b in self.builds if b.backend == backend), None)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build_dataclass(cls, data: Any, source: str, section: str = ""):
    """Instantiate a frozen dataclass from a mapping, rejecting unknown keys with a suggestion
    and values of the wrong type or out of their field's range."""
    where = f"{source}: {section}" if section else source
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields or key == "source":
            raise InputError(f"{where}: unknown key '{key}'{suggest(str(key), [f for f in fields if f != 'source'])}")
        _check_value(fields[key], value, f"{source}: {section}.{key}" if section else f"{source}: {key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from None


def _check_value(f: dataclasses.Field, value: Any, where: str) -> None:
    """Booleans must be booleans, strings strings, string tuples a string or a list of strings;
    numeric fields numbers (integers for int) within their range."""
    if f.type == "bool" and not isinstance(value, bool):
        raise InputError(f"{where} must be true or false, got {value!r}")
    if f.type == "str" and not isinstance(value, str):
        raise InputError(f"{where} must be a string, got {value!r}")
    if f.type == "tuple[str, ...]" and not (isinstance(value, str) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))):
        raise InputError(f"{where} must be a list of strings, got {value!r}")
    if "range" not in f.metadata:
        return
    low, high = f.metadata["range"]
    number = isinstance(value, int if f.type == "int" else (int, float)) and not isinstance(value, bool)
    if number and math.isfinite(value) and (low is None or value >= low) and (high is None or value <= high):
        return
    raise InputError(f"{where} must be {_allowed(f.type, low, high)}, got {value!r}"
                     + _percent_hint(value, low, high))


def _allowed(kind: str, low: float | None, high: float | None) -> str:
    """"an integer >= 1", "a fraction in [0, 1]", "a number >= 0"."""
    noun = "an integer" if kind == "int" else "a fraction" if (low, high) == (0, 1) else "a number"
    if low is not None and high is not None:
        return f"{noun} in [{low:g}, {high:g}]"
    if low is not None:
        return f"{noun} >= {low:g}"
    return f"{noun} <= {high:g}" if high is not None else noun


def _percent_hint(value: Any, low: float | None, high: float | None) -> str:
    """A fraction written as a percentage (85 for 0.85) is the likely mistake: suggest the fraction."""
    if (low, high) == (0, 1) and isinstance(value, (int, float)) and 10 <= value <= 100:
        return f" (did you mean {value / 100:g}?)"
    return ""


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def parse_target(data: dict, source: str = "<memory>") -> TargetProfile:
    if not isinstance(data, dict):
        raise InputError(f"{source}: a target file must be a mapping")
    data = dict(data)
    cpu = build_dataclass(CpuSpec, data.pop("cpu", None), source, "cpu")
    cpu = dataclasses.replace(cpu, features=_as_tuple(cpu.features))
    raw_builds = data.pop("builds", None)
    if not raw_builds or not isinstance(raw_builds, list):
        raise InputError(f"{source}: 'builds' must list at least one backend")
    builds = []
    for i, raw in enumerate(raw_builds):
        b = build_dataclass(BuildSpec, raw, source, f"builds[{i}]")
        builds.append(dataclasses.replace(b, precisions=_as_tuple(b.precisions)))
    parity = build_dataclass(ParitySpec, data.pop("parity", {}) or {}, source, "parity")
    target = build_dataclass(TargetProfile, {**data, "cpu": cpu, "builds": tuple(builds), "parity": parity},
                    source)
    target = dataclasses.replace(target, source=source)
    _validate(target)
    return target


def _validate(target: TargetProfile) -> None:
    from .backends.base import PRECISIONS, list_backends

    where = target.source
    if not target.name.strip() or target.name in (".", "..") or any(c in target.name for c in "/\\"):
        raise InputError(f"{where}: name must be a plain folder name (build/<name>), got {target.name!r}")
    check_threads(target.threads, target.cpu.cores, what=f"{where}: threads")
    backends = [b.backend for b in target.builds]
    for b in target.builds:
        if b.backend not in list_backends():
            raise InputError(f"{where}: unknown backend '{b.backend}'{suggest(b.backend, list_backends())}")
        if backends.count(b.backend) > 1:
            raise InputError(f"{where}: backend '{b.backend}' is listed twice in builds "
                             "(give one build with all its precisions)")
        if not b.precisions:
            raise InputError(f"{where}: {b.backend} lists no precisions")
        twice = sorted({p for p in b.precisions if b.precisions.count(p) > 1})
        if twice:
            raise InputError(f"{where}: precision '{twice[0]}' is listed twice for {b.backend}")
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
    if path.suffix in (".yaml", ".yml"):
        source = _target_file(path)
    else:
        files = target_files()
        if name_or_path not in files:
            raise unknown("target", name_or_path, files)
        source = files[name_or_path]
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: invalid YAML: {first_line(exc)}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: not a UTF-8 text file (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise InputError(f"cannot read target file {source}: {exc.strerror or exc}") from None
    target = parse_target(data, str(source))
    if target.name != source.stem and source.parent == TARGETS_DIR:
        raise InputError(f"{source}: name '{target.name}' does not match the file name")
    return target


def _target_file(path: Path) -> Path:
    """A target given as a .yaml path: the file, or why it cannot be read."""
    if path.is_file():
        return path
    if path.is_dir():
        raise InputError(f"target file {path} is a directory")
    hint = f" (did you mean the target '{path.stem}'?)" if path.stem in target_files() else ""
    raise InputError(f"target file not found: {path}{hint}")
