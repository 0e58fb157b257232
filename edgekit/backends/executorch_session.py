"""Running a .pte program with ExecuTorch's Python runtime (``executorch.runtime``).

ExecuTorch runs every program of a process on one global thread pool. Its size can be changed
(``_unsafe_reset_threadpool``), but a program loaded before the change keeps pointers into the
old pool: running it afterwards aborts the process (measured: a pthread assertion). So the pool
is set before a program loads, and a session whose thread count is not the pool's any more
(another session changed it) reloads its program on the pool it asked for.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingDependencyError, first_line
from ..quiet import native_output_silenced
from .base import RuntimeInfo, Session, TensorSpec

EXTRA = "executorch"
# ExecuTorch's ScalarType codes -> numpy dtype names (executorch/exir/scalar_type.fbs)
SCALAR_TYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32"}


_LIB = None


def portable_lib():
    """ExecuTorch's native runtime module (it imports torch: the runtime links libtorch)."""
    global _LIB
    if _LIB is None:
        try:
            with warnings.catch_warnings(), native_output_silenced():
                warnings.simplefilter("ignore")  # "This API is experimental" on every import
                from executorch.extension.pybindings import portable_lib as lib
        except ImportError:
            raise MissingDependencyError("executorch", EXTRA) from None
        _LIB = lib
    return _LIB


def runtime_version() -> str:
    from importlib.metadata import version

    return version("executorch")


class _Pool:
    """The process's one ExecuTorch thread pool: its size, and a count of its resizes."""

    default: int | None = None  # the size ExecuTorch chose (the number of cores)
    resizes = 0

    @classmethod
    def size(cls) -> int:
        lib = portable_lib()
        if cls.default is None:
            with native_output_silenced():  # creating the pool, cpuinfo logs ARM id files it lacks
                cls.default = int(lib._threadpool_get_thread_count())
        return int(lib._threadpool_get_thread_count())

    @classmethod
    def ensure(cls, threads: int | None) -> int:
        """Resize the pool to ``threads`` (None: ExecuTorch's default) unless it has that size."""
        current = cls.size()
        wanted = threads or cls.default
        if wanted != current:
            with native_output_silenced():  # "Resetting threadpool to N threads."
                portable_lib()._unsafe_reset_threadpool(int(wanted))
            cls.resizes += 1
        return wanted


class ExecuTorchSession(Session):
    def __init__(self, path: Path, threads: int | None):
        self.path, self.threads = Path(path), threads
        self._load()
        meta = self._method.metadata
        inp, out = meta.input_tensor_meta(0), meta.output_tensor_meta(0)
        if meta.num_inputs() != 1:
            raise InputError(f"{self.path.name} takes {meta.num_inputs()} inputs; edgekit runs "
                             "image classifiers with one")
        dtype = SCALAR_TYPES.get(int(inp.dtype()), str(inp.dtype()))
        shape = tuple(int(d) for d in inp.sizes())
        layout = "NHWC" if len(shape) == 4 and shape[-1] == 3 and shape[1] != 3 else "NCHW"
        self.input = TensorSpec(shape, dtype, layout)
        self.output_shape = tuple(int(d) for d in out.sizes())
        self.runtime = RuntimeInfo("executorch", runtime_version(), {
            "backends": list(self._backends), "threads": self._threads})

    def _load(self) -> None:
        portable_lib()  # the missing-dependency message before anything else
        from executorch.runtime import Runtime

        self._threads = _Pool.ensure(self.threads)
        self._resizes = _Pool.resizes
        try:
            with native_output_silenced():  # cpuinfo's notes about ARM id files on x86
                runtime = Runtime.get()
                program = runtime.load_program(self.path)
                self._method = program.load_method("forward")
        except Exception as exc:  # a file that is not a program, or one this runtime cannot run
            raise InputError(f"ExecuTorch cannot load {self.path.name}: {first_line(exc)}") from exc
        if self._method is None:
            raise InputError(f"{self.path.name} has no 'forward' method")
        self._program = program
        self._backends = tuple(runtime.backend_registry.registered_backend_names)

    def infer(self, native: np.ndarray) -> np.ndarray:
        import torch

        if _Pool.resizes != self._resizes or _Pool.size() != self._threads:
            self._load()  # another session resized the pool: this program's pointers are stale
        return self._method.execute([torch.from_numpy(native)])[0].numpy()
