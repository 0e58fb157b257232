"""Bounds on resource knobs (threads), so a typo cannot start thousands of threads."""
from __future__ import annotations

import os

from .errors import InputError

# A thread count beyond a few per core only adds contention; 4x also leaves room for a device
# with more cores than this machine (its own runner checks again against its own cores).
THREADS_PER_CORE = 4
MIN_THREAD_CAP = 16


def max_threads(cores: int | None = None) -> int:
    """The largest thread count accepted for a machine with ``cores`` cores (default: this one)."""
    cores = cores if cores and cores > 0 else (os.cpu_count() or 1)
    return max(MIN_THREAD_CAP, THREADS_PER_CORE * cores)


def check_threads(value: int | None, cores: int | None = None, what: str = "threads") -> int | None:
    """``value`` if it is None or in [1, max_threads(cores)], else an InputError saying the bound."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{what} must be an integer >= 1, got {value!r}")
    cap = max_threads(cores)
    if value > cap:
        where = f"{cores} cores" if cores else f"this machine's {os.cpu_count() or 1} cores"
        raise InputError(f"{what} {value} is more than {cap} ({THREADS_PER_CORE} per core for "
                         f"{where}, at least {MIN_THREAD_CAP})")
    return value
