"""A second process for the int8 conversions that are single-threaded Python work.

litert-torch traces, re-traces and lowers the model in Python on one core, so building the rpi4
target serially left one of this machine's two cores idle for ~25 s. Backends that say so
(``Backend.converts_in_python``) build int8 in a worker process: it starts with the build and
imports their converters while this process rounds the int8 weights, receives each job as soon as
the weights are ready, and converts while this process builds everything else; parity is checked
here. The worker is spawned, not forked (torch's thread pools do not survive a fork), and runs
torch on one thread: the two processes share two cores (with two threads the rpi4 build took as
long as converting serially). One consequence: the worker's calibration pass sums in another
order than a two-thread one, so a parallel build's int8 .tflite can differ from a `--serial`
build's in the last bit of a scale (V2, 200 photos: SQNR to fp32 24.37 vs 24.38 dB).
"""
from __future__ import annotations

import importlib.machinery
import multiprocessing
import os
import pickle
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

import torch

from .backends.base import Artifact, ConvertOptions, get_backend
from .calibration import CalibrationSet
from .errors import EdgekitError
from .source import ModelSource
from .user_model import sendable

SERIAL_ENV = "EDGEKIT_SERIAL"  # set to 1 to convert everything in this process


class ConvertWorker:
    """One worker process, started on the first submit; ``close`` stops it (collect the results
    first: a job still running is abandoned)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and not os.environ.get(SERIAL_ENV)
        self._pool: ProcessPoolExecutor | None = None
        self._outputs: list[Path] = []

    def takes(self, backend_name: str, source: ModelSource) -> bool:
        return (self.enabled and source.module is not None and sendable(source.module)
                and get_backend(backend_name).converts_in_python)

    def submit(self, backend_name: str, source: ModelSource, precision: str,
               calibration: CalibrationSet | None, out: Path, options: ConvertOptions) -> Future | None:
        """Start the conversion in the worker; None when the model cannot be sent there (convert
        it in this process then)."""
        try:
            # Pickled here and now, as plain bytes: handing the module to the pool would move its
            # tensors into shared memory from the pool's feeder thread while this process is
            # still computing with them (seen: a corrupted weight rounding).
            job = pickle.dumps((backend_name, source, precision, calibration, Path(out), options),
                               protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - e.g. a module defined in a notebook
            return None
        self.start({backend_name})
        try:
            future = self._pool.submit(_convert, job)
        except BrokenProcessPool:  # the worker died (killed, out of memory): convert in-process
            return None
        self._outputs.append(Path(out))
        return future

    def start(self, backends: set[str]) -> None:
        """Start the worker (when there is work for it) and import the ``backends``' converters
        there, ahead of the first job."""
        if self._pool is None and backends and self.enabled:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker)
            with _main_script_not_rerun():  # the process starts here
                self._pool.submit(_import_converters, sorted(backends))

    def close(self, failed: bool = False) -> None:
        """Stop the worker; when the build ``failed``, also remove what a killed write left."""
        if self._pool is None:
            return
        # Stopped rather than shut down: an idle worker takes ~2 s to tear torch down on exit.
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
            process.join()
        self._pool = None
        if failed:
            for out in self._outputs:  # fileio.atomic_path's temporary files of a killed write
                for tmp in out.parent.glob(f".{out.name}.*.tmp"):
                    tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ConvertWorker":
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        self.close(failed=exc_type is not None)


def result(future: Future) -> tuple[Artifact, float] | None:
    """The worker's (artifact, seconds); None when the worker could not do the job for reasons of
    its own (the model does not pickle, the process died), so the caller converts in-process.
    The backend's own errors are re-raised as they are."""
    try:
        return future.result()
    except EdgekitError:
        raise
    except Exception:  # noqa: BLE001 - anything else is retried in-process, where it surfaces
        return None


@contextmanager
def _main_script_not_rerun():
    """Spawn runs the parent's ``__main__`` script again in the new process unless its spec names
    ``__main__``. A script calling ``convert()`` without ``if __name__ == "__main__":`` would then
    repeat all it did (load, train, convert) in the worker and break it. The worker needs nothing
    from the script: classes defined there are never sent to it (user_model.sendable)."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        yield
        return
    main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)
    try:
        yield
    finally:
        main.__spec__ = None


def _init_worker() -> None:
    torch.set_num_threads(1)
    try:  # tqdm's default lock is a multiprocessing semaphore that a stopped worker would leak
        import threading

        from tqdm import tqdm

        tqdm.set_lock(threading.RLock())
    except ImportError:
        pass


def _import_converters(backends: list[str]) -> None:
    for name in backends:
        get_backend(name).require_converter()


def _convert(job: bytes) -> tuple[Artifact, float]:
    start = time.perf_counter()
    backend_name, source, precision, calibration, out, options = pickle.loads(job)
    artifact = get_backend(backend_name).convert(source, precision, calibration, out, options)
    return artifact, time.perf_counter() - start
