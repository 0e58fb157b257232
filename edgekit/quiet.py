"""Silence native libraries (absl/glog in LiteRT and TensorFlow's converter, torchao's loader)
that print straight to file descriptors 1 and 2, bypassing Python's sys.stdout/sys.stderr."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GLOG_minloglevel", "2")


@contextlib.contextmanager
def native_output_silenced() -> Iterator[None]:
    """Send fds 1 and 2 to a temporary file for the duration (set EDGEKIT_DEBUG to see them)."""
    if os.environ.get("EDGEKIT_DEBUG"):
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = []
    try:
        sink = tempfile.TemporaryFile()
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(sink.fileno(), fd)
    except OSError:  # no real fds (e.g. captured by a test runner): nothing to silence
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        yield
        return
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        sink.close()


def openvino_telemetry_off() -> None:
    """Decline OpenVINO's usage telemetry (NNCF and the model converter send it to Google Analytics
    unless the user opted out) for this process. Besides sending data nobody asked edgekit to
    send, its sender forks from a thread while other threads resolve DNS: without network the
    child has been seen deadlocked in the resolver, hanging `edgekit convert` at exit."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:
        return
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED
