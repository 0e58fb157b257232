"""The LiteRT (or tflite-runtime) interpreter behind a TFLite artifact: loading it (a compiled
Edge TPU model through the libedgetpu delegate), reading its ops and delegate partitions, and
the Session that runs it."""
from __future__ import annotations

import importlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MissingDependencyError, first_line
from ..quiet import native_output_silenced
from .base import RuntimeInfo, Session, TensorSpec
from .tflite_placement import DELEGATE, outside_delegates

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
EDGETPU_LIBRARY = "libedgetpu.so.1"


def interpreter_api() -> tuple[str, Any]:
    """(runtime name, interpreter module): ai-edge-litert first, tflite-runtime as a fallback."""
    for name, module in (("ai-edge-litert", "ai_edge_litert.interpreter"),
                         ("tflite-runtime", "tflite_runtime.interpreter")):
        try:
            return name, importlib.import_module(module)
        except ImportError:
            continue
    raise MissingDependencyError("ai-edge-litert", "tflite")


def runtime_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def make_interpreter(path: Path, threads: int | None = None, delegates: bool = True) -> Any:
    """An allocated interpreter. ``delegates=False`` keeps XNNPACK out so the real ops show."""
    _, api = interpreter_api()
    kwargs: dict[str, Any] = {"model_path": str(path)}
    if threads:
        kwargs["num_threads"] = int(threads)
    if not delegates:
        kwargs["experimental_op_resolver_type"] = api.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with native_output_silenced():
            interpreter = api.Interpreter(**kwargs)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        if EDGETPU_CUSTOM_OP in str(exc):
            return _edgetpu_interpreter(api, kwargs, path)
        raise InputError(f"cannot load TFLite model {path}: {first_line(exc)}") from exc
    return interpreter


def _edgetpu_interpreter(api: Any, kwargs: dict[str, Any], path: Path) -> Any:
    """A compiled Edge TPU model: its custom op runs only through the libedgetpu delegate."""
    import ctypes

    try:
        ctypes.CDLL(EDGETPU_LIBRARY)  # probe first: a failed load_delegate() leaves noisy cleanup
        delegate = api.load_delegate(EDGETPU_LIBRARY)
    except (ValueError, OSError, RuntimeError, AttributeError) as exc:
        raise InputError(
            f"{path.name} is compiled for the Edge TPU ({EDGETPU_CUSTOM_OP}) and needs the Edge TPU "
            f"runtime ({EDGETPU_LIBRARY}, Debian package libedgetpu1-std) and an attached Edge TPU; "
            f"none is available here ({first_line(exc)}). Run the uncompiled int8 .tflite on the "
            "CPU instead.") from exc
    kwargs = {k: v for k, v in kwargs.items() if k != "experimental_op_resolver_type"}
    try:
        interpreter = api.Interpreter(experimental_delegates=[delegate], **kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"cannot load Edge TPU model {path}: {first_line(exc)}") from exc
    return interpreter


def ops_details(interpreter: Any) -> list[dict]:
    get = getattr(interpreter, "_get_ops_details", None)
    return list(get()) if get is not None else []


def op_counts(path: str | Path) -> dict[str, int]:
    """{op type: count} of a .tflite as the interpreter sees it, without XNNPACK's DELEGATE
    node hiding the real ops."""
    interpreter = make_interpreter(Path(path), delegates=False)
    return dict(Counter(d["op_name"] for d in ops_details(interpreter)))


def xnnpack_partitions(path: str | Path, threads: int | None = None) -> int:
    """How many DELEGATE nodes XNNPACK makes of the graph (1 = one partition, the fast case;
    0 = XNNPACK not applied)."""
    interpreter = make_interpreter(Path(path), threads)
    return sum(d["op_name"] == "DELEGATE" for d in ops_details(interpreter))


def undelegated_ops(interpreter: Any) -> list[str]:
    """Op types that run outside the delegate partitions (LiteRT's own kernels); none when no
    delegate applies at all."""
    details = ops_details(interpreter)
    if not any(d["op_name"] == DELEGATE for d in details):
        return []
    outside = outside_delegates(details, {int(o["index"]) for o in interpreter.get_output_details()})
    return [d["op_name"] for d in details if d["op_name"] != DELEGATE and d["index"] in outside]


def _dtype_name(dtype: Any) -> str:
    return np.dtype(dtype).name


def tensor_spec(detail: dict) -> TensorSpec:
    shape = tuple(int(d) for d in detail["shape"])
    dtype = _dtype_name(detail["dtype"])
    layout = "NHWC" if len(shape) == 4 and shape[-1] == 3 and shape[1] != 3 else "NCHW"
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if dtype in ("int8", "uint8") and scale:
        return TensorSpec(shape, dtype, layout, float(scale), int(zero_point))
    return TensorSpec(shape, dtype, layout)


class TFLiteSession(Session):
    """A .tflite in LiteRT (or tflite-runtime) with the default delegates (XNNPACK on CPU)."""

    def __init__(self, path: Path, threads: int | None = None):
        name, _ = interpreter_api()
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"TFLite model not found: {self.path}")
        self.interpreter = make_interpreter(self.path, threads)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1:
            raise InputError(f"{self.path.name} has {len(inputs)} inputs; edgekit expects one image")
        self.input = tensor_spec(inputs[0])
        self.output = tensor_spec(outputs[0])
        self._in = inputs[0]["index"]
        self._out = outputs[0]["index"]
        details = ops_details(self.interpreter)
        partitions = sum(d["op_name"] == "DELEGATE" for d in details)
        edgetpu = any(d["op_name"] == EDGETPU_CUSTOM_OP for d in details)
        self.runtime = RuntimeInfo(name, runtime_version(name), {
            "xnnpack": partitions > 0 and not edgetpu,
            "delegate_partitions": partitions,
            "ops_outside_delegate": undelegated_ops(self.interpreter),
            "edgetpu": edgetpu,
            "threads": threads or "default"})

    def infer(self, native: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._in, native)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out)

    def output_grid(self) -> tuple[float, int] | None:
        if self.output.scale is None:
            return None
        return float(self.output.scale), int(self.output.zero_point or 0)

    def finish(self, raw: np.ndarray) -> np.ndarray:
        out = np.asarray(raw)
        if self.output.scale is not None:
            return ((out.astype(np.float32) - self.output.zero_point) * self.output.scale).reshape(-1)
        return out.astype(np.float32, copy=False).reshape(-1)


def float_ops(interpreter: Any) -> list[str]:
    """Op types that compute in float (any float32 result): none in a fully integer model."""
    return sorted({d["op_name"] for d in ops_details(interpreter)
                   if any(np.dtype(t) == np.float32 for t in d.get("result_types", []))})
