"""Ctrl-C and SIGTERM during training: finish the current batch, keep the last good checkpoint
(it is only ever replaced by an atomic rename), and exit with 130 / 143.

Unlike convert (fileio.cleanup_on_sigterm, which exits from inside the handler because native
converter code may be running), training is Python between batches: the handler only records
the signal, and the loop stops at the next check."""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from ..errors import EdgekitError

_received: list[int] = []


class TrainingInterrupted(EdgekitError):
    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


def _record(signum: int, _frame) -> None:
    _received.append(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM ask it to stop (``check_stop`` raises). Main thread
    only; a handler someone else installed is left alone."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ours = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)
            if signal.getsignal(s) in (signal.SIG_DFL, signal.default_int_handler)}
    for s in ours:
        signal.signal(s, _record)
    try:
        yield
    finally:
        for s, previous in ours.items():
            signal.signal(s, previous)
        _received.clear()


def stop_requested() -> int | None:
    return _received[0] if _received else None


def check_stop(what: str = "") -> None:
    signum = stop_requested()
    if signum is not None:
        raise TrainingInterrupted(f"interrupted ({signal.Signals(signum).name}){what}", signum)
