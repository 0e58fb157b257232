"""What every backend is: a registered class that converts a model into an Artifact and loads an
Artifact into a Session. Nothing outside edgekit/backends/ branches on backend names."""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError, MissingDependencyError, unknown

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str  # "float32", "int8", "uint8", ...
    layout: str  # "NCHW" or "NHWC"
    scale: float | None = None  # quantized I/O: real = (q - zero_point) * scale
    zero_point: int | None = None

    def to_dict(self) -> dict:
        d = {"shape": list(self.shape), "dtype": self.dtype, "layout": self.layout}
        if self.scale is not None:
            d.update(scale=self.scale, zero_point=self.zero_point)
        return d


@dataclass
class Artifact:
    """A file (plus sidecars, e.g. OpenVINO's .bin) a backend produced or can load."""

    path: Path
    backend: str
    precision: str
    input: TensorSpec | None = None
    files: list[Path] = field(default_factory=list)  # every file, path included
    details: dict[str, Any] = field(default_factory=dict)  # backend-specific facts (op list, ...)

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in (self.files or [self.path]))


@dataclass(frozen=True)
class ConvertOptions:
    """What a target asks of a conversion. Backends read only the fields that concern them."""

    io_dtype: str = "float32"  # quantized I/O for int8 artifacts: "int8", "uint8" or "float32"
    layout: str = "NCHW"  # input layout of the artifact
    activation_type: str = "int8"  # ONNX Runtime QDQ activations: "int8" or "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    calibration_method: str = "minmax"
    threads: int | None = None
    # Mixed precision: module paths ("features.3.conv.1") whose ops stay float in an int8 build;
    # see backends/layer_names.py for how each backend finds them.
    float_layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    version: str
    details: dict[str, Any] = field(default_factory=dict)  # acceleration actually in use

    def to_dict(self) -> dict:
        return asdict(self)


class Session(ABC):
    """A loaded artifact. ``run`` takes preprocessed float32 NCHW images, returns float logits.

    ``prepare`` / ``infer`` / ``finish`` split ``run`` so benchmarks can time ``infer`` alone.
    """

    input: TensorSpec
    runtime: RuntimeInfo

    def prepare(self, image: np.ndarray) -> Any:
        """One float32 CHW (or 1xCxHxW) image -> the runtime's native input."""
        x = image.reshape(1, *image.shape[-3:]).astype(np.float32, copy=False)
        if self.input.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        if self.input.scale is not None:
            info = np.iinfo(self.input.dtype)
            x = np.clip(np.round(x / self.input.scale) + self.input.zero_point, info.min, info.max)
        return np.ascontiguousarray(x, dtype=self.input.dtype)

    @abstractmethod
    def infer(self, native: Any) -> np.ndarray:
        """Run the runtime on a prepared input; returns its raw first output."""

    def output_grid(self) -> tuple[float, int] | None:
        """(scale, zero point) of the quantization grid the raw output lies on, if any: outputs
        that differ differ by whole steps of it."""
        return None

    def finish(self, raw: np.ndarray) -> np.ndarray:
        """Raw output -> float32 logits (dequantized where needed), shape (num_classes,)."""
        return np.asarray(raw, dtype=np.float32).reshape(-1)

    def run(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 -> (N, num_classes) float32, one image at a time (static batch 1)."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        return np.stack([self.finish(self.infer(self.prepare(x))) for x in images])


class Backend(ABC):
    """One row of the backend table: its attributes describe it, its methods do the work.
    Everything edgekit knows about a backend is here; the rest of the code reads it from the
    registry (the functions at the end of this module)."""

    name: ClassVar[str]
    suffix: ClassVar[str]  # main artifact suffix (".onnx", ".xml", ".tflite")
    # How the names of its artifacts end (default: the suffix; the first is what it writes); the
    # longest match names the backend of a file outside a convert folder (edgetpu's
    # "_edgetpu.tflite" before ".tflite").
    name_endings: ClassVar[tuple[str, ...]] = ()
    sidecars: ClassVar[tuple[str, ...]] = ()  # suffixes of files that travel with it (".bin")
    precisions: ClassVar[tuple[str, ...]]
    extra: ClassVar[str]  # pip extra that installs the runtime
    modules: ClassVar[tuple[str, ...]]  # importable modules the backend needs
    description: ClassVar[str] = ""
    color: ClassVar[tuple[int, int, int]] = (100, 100, 100)  # its points in the bench chart
    # PyPI packages (besides numpy) that run its artifacts on an aarch64 board, for
    # `bench --emulate aarch64`; empty: its artifacts are not emulated.
    aarch64_wheels: ClassVar[tuple[str, ...]] = ()
    accepts_onnx: ClassVar[bool] = False  # can convert a user's ONNX file (not only nn.Module)
    base: ClassVar[str | None] = None  # e.g. edgetpu builds on tflite's int8 artifact
    mixed_precision: ClassVar[bool] = True  # can keep some layers float in an int8 build
    # Corrects the output bias its int8 quantization causes itself (NNCF's fast bias correction);
    # the others get edgekit's (quant.PreparedInt8.for_backend).
    corrects_bias: ClassVar[bool] = False
    # The calibration method int8 builds use unless one is asked for: the one that measured
    # best here (tools/calibration_table.py; see the README).
    default_calibration_method: ClassVar[str] = "minmax"
    # The calibration methods its int8 builds support (register_backend checks the default is
    # one of them; convert refuses any other before the first build)
    calibration_methods: ClassVar[tuple[str, ...]] = ()
    # Conversion is single-threaded Python work: `edgekit convert` runs it in a worker process
    # beside the other builds (convert_worker.py).
    converts_in_python: ClassVar[bool] = False
    # The per-layer int8 report (quant/report.py): the runtime's name when this backend can read
    # every layer's tensors of its own fp32 and int8 artifacts (layer_report) and quantize any
    # model to simulate another backend's int8 build (simulated_layer_report); None: it cannot.
    layer_report_runtime: ClassVar[str | None] = None

    def layer_report(self, float_path: Path, int8_path: Path, images: np.ndarray) -> "QuantReport":
        """Compare this backend's fp32 and int8 artifacts layer by layer on ``images``."""
        raise NotImplementedError(f"the {self.name} backend has no per-layer report")

    def simulated_layer_report(self, source: "ModelSource", calibration: "CalibrationSet",
                               options: ConvertOptions, images: np.ndarray,
                               reference: "ModelSource | None" = None) -> "QuantReport":
        """Quantize ``source`` with ``calibration`` and ``options``' int8 settings for this runtime
        and compare it layer by layer with the float export of ``reference`` (default: source)."""
        raise NotImplementedError(f"the {self.name} backend has no per-layer report")

    def require(self) -> None:
        for module in self.modules:
            try:
                importlib.import_module(module)
            except ImportError:
                raise MissingDependencyError(module.split(".")[0].replace("_", "-"), self.extra) from None

    def require_converter(self) -> None:
        """Import what ``convert`` needs beyond the runtime (the convert worker does it early)."""

    def available(self) -> bool:
        try:
            self.require()
            return True
        except MissingDependencyError:
            return False

    def filename(self, stem: str, precision: str) -> str:
        return f"{stem}_{precision}{(self.name_endings or (self.suffix,))[0]}"

    @abstractmethod
    def convert(self, source: "ModelSource", precision: str, calibration: "CalibrationSet | None",
                out: Path, options: ConvertOptions) -> Artifact:
        """Write the artifact at ``out`` (atomically) and describe it."""

    @abstractmethod
    def load(self, artifact: Artifact | Path, threads: int | None = None) -> Session:
        """Load an artifact for inference with ``threads`` (None: the runtime's default)."""

    @abstractmethod
    def runtime_info(self) -> RuntimeInfo:
        ...

    def placement(self, path: Path) -> "Placement":
        """Where each op of ``path`` runs on this backend (`edgekit check`)."""
        raise InputError(f"edgekit check cannot yet tell where the {self.name} backend runs each op")

    def describe(self, path: Path) -> Artifact:
        """An Artifact for a file this backend did not build (a user's own .onnx/.xml/.tflite)."""
        session = self.load(path)
        return Artifact(path=Path(path), backend=self.name, precision=self.stored_precision(Path(path)),
                        input=session.input, files=[Path(path)])

    def stored_precision(self, path: Path) -> str:
        """The precision a model file holds, read from it (backends that can say override this)."""
        return "int8" if self.load(path).input.scale is not None else "fp32"


def precision_of(integer_weights: bool, float16_weights: bool) -> str:
    return "int8" if integer_weights else "fp16" if float16_weights else "fp32"


_REGISTRY: dict[str, Backend] = {}
# The built-in backends' modules. Each imports its runtime (and torch) only when it converts or
# loads, so reading the registry stays cheap (`edgekit targets`, `--help`).
BUILTIN_MODULES = ("onnxruntime", "openvino", "tflite", "edgetpu", "executorch")


def register_backend(cls: type[Backend]) -> type[Backend]:
    if cls.name in _REGISTRY:
        raise ValueError(f"backend {cls.name!r} registered twice")
    if "int8" in cls.precisions and cls.default_calibration_method not in cls.calibration_methods:
        raise ValueError(f"backend {cls.name!r}: default calibration method "
                         f"{cls.default_calibration_method!r} is not among {cls.calibration_methods}")
    _REGISTRY[cls.name] = cls()
    return cls


def _load_builtin() -> None:
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(f"edgekit.backends.{module}_backend")
        except ModuleNotFoundError as exc:
            if exc.name != f"edgekit.backends.{module}_backend":
                raise


def list_backends() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_backend(name: str) -> Backend:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown("backend", name, _REGISTRY) from None


def backends() -> list[Backend]:
    """Every registered backend, by name."""
    return [get_backend(name) for name in list_backends()]


def list_calibration_methods() -> tuple[str, ...]:
    """Every calibration method some backend supports (the CLI's --calib-method choices); convert
    refuses one that a build it was asked for does not support."""
    return tuple(dict.fromkeys(m for b in backends() for m in b.calibration_methods))


def artifact_suffixes() -> tuple[str, ...]:
    """The suffixes of the files edgekit can run (".onnx", ".xml", ".tflite")."""
    return tuple(dict.fromkeys(b.suffix for b in backends() if b.base is None))


def backend_for_path(path: Path) -> Backend:
    """The backend that runs a file, by suffix (a user's own artifact)."""
    path = Path(path)
    for backend in backends():
        if backend.base is None and path.suffix == backend.suffix:
            return backend
    raise InputError(f"don't know how to run {path.name}: expected one of {', '.join(artifact_suffixes())}")


def backend_named_by(path: Path) -> Backend:
    """The backend whose artifacts are named like ``path`` (a file outside a convert folder):
    the longest matching name ending, so an Edge TPU model is not taken for a plain .tflite."""
    name = Path(path).name
    matches = [(len(end), b) for b in backends() for end in (b.name_endings or (b.suffix,))
               if name.endswith(end)]
    if not matches:
        return backend_for_path(path)  # its error
    return max(matches, key=lambda m: m[0])[1]
