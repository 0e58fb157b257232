"""Atomic writes: everything edgekit produces appears whole or not at all."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:
        raise InputError(f"cannot write to {final.parent}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def writable_folder(folder: Path, what: str = "output folder") -> Iterator[Path]:
    """Create ``folder`` and check that a file can be written in it, before any work; if the
    block fails, remove the folders this created (still empty), so a failed run leaves none."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} {folder} is a file, not a folder")
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".edgekit-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{what} {folder} is not writable: {exc.strerror or exc}") from None
    try:
        yield folder
    except BaseException:
        for path in created:  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()
        raise


STAGING_PREFIX = ".edgekit-build-"
# .edgekit-build-<pid>@<host>-<mkdtemp's random part>: which run owns it, so a later run can
# remove the folders of runs that died (killed) without touching a live run's
_STAGING_NAME = re.compile(re.escape(STAGING_PREFIX) + r"(\d+)@(.*)-[^-]+$")


@contextlib.contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """Create ``folder`` (checking it is writable) and yield a hidden staging folder inside it:
    build there, then ``publish``. Whatever the block leaves unpublished is removed; if it fails,
    ``folder`` is left as it was, and the folders this created are removed, so a failed or
    interrupted run changes nothing. Staging folders that dead runs on this machine left behind
    are removed first."""
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    with writable_folder(folder):
        remove_dead_staging(folder)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}@{socket.gethostname()}-",
                                        dir=folder))
        _live_staging[staging] = created
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            _live_staging.pop(staging, None)


_live_staging: dict[Path, list[Path]] = {}  # this process's staging folders -> the folders their runs created
_publishing: list[int] = []  # a signal that came while a publish was moving files
_stderr: list[int] = []  # a copy of fd 2, for the handler's message


@contextlib.contextmanager
def cleanup_on_sigterm() -> Iterator[None]:
    """SIGTERM (kill, a CI timeout) ends the run as a failure does: the staging folders and the
    folders the run created are removed, worker processes stopped, exit 143; a publish under way
    finishes first. Done in the handler rather than by raising KeyboardInterrupt there: raised
    inside the TFLite converter's native code, that aborts the process (SIGABRT) and nothing is
    cleaned up. Main thread only, and only where nobody handles SIGTERM already."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return
    # the message goes to the real stderr even while quiet.py has fd 2 silenced
    _stderr.append(os.dup(2))
    signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.close(_stderr.pop())


def _forked_child() -> None:
    """A process forked from this one (a library's helper: OpenVINO's telemetry sender, ...) must
    not inherit the handler: it would remove this run's folders, and while its main thread is
    stuck in native code the Python handler never runs, so the parent's terminate() and join()
    would wait forever."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _live_staging.clear()
    _publishing.clear()


os.register_at_fork(after_in_child=_forked_child)


def _terminated(signum: int, _frame) -> None:
    if _publishing:
        _publishing.append(signum)
        return
    for child in multiprocessing.active_children():  # the convert worker
        child.terminate()
        child.join(timeout=5)
    for staging, created in list(_live_staging.items()):
        shutil.rmtree(staging, ignore_errors=True)
        for path in created:  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()
    with contextlib.suppress(OSError):
        os.write(_stderr[-1] if _stderr else 2, b"\nterminated: the unfinished build was removed\n")
    os._exit(128 + signum)


def remove_dead_staging(folder: Path) -> list[Path]:
    """Remove the staging folders in ``folder`` whose run (pid, on this host) is no longer alive."""
    removed = []
    host = socket.gethostname()
    for path in folder.glob(f"{STAGING_PREFIX}*"):
        match = _STAGING_NAME.match(path.name)
        if match and match.group(2) == host and path.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or a name we cannot judge): leave it
    return True


def publish(staging: Path, folder: Path, names: list[str], index: str, stale: list[str]) -> None:
    """Move ``names`` from ``staging`` into ``folder``, the ``index`` file (a manifest) last,
    removing the ``stale`` files of the previous build. Nothing is removed until every staged file
    is known to exist; the previous build's files (index first) are moved aside into ``staging``
    and moved back if any step fails, so a failed publish leaves the previous build as it was.
    A crash half-way leaves files without an index, never an index that lies about them."""
    names = list(dict.fromkeys([n for n in names if n != index] + [index]))
    missing = [n for n in names if not (staging / n).is_file()]
    if missing:
        raise InputError(f"the build did not produce {', '.join(missing)}; {folder} is left as it was")
    blocked = [n for n in names if (folder / n).is_dir() and not (folder / n).is_symlink()]
    if blocked:
        raise InputError(f"{folder / blocked[0]} is a folder: cannot publish the build over it "
                         f"({folder} is left as it was)")
    aside = Path(tempfile.mkdtemp(prefix=".previous-", dir=staging))
    moved_aside, placed = [], []
    _publishing.append(0)  # a SIGTERM now waits until the folder is consistent
    try:
        for name in dict.fromkeys([index, *stale, *names]):
            if (folder / name).is_file() or (folder / name).is_symlink():
                os.replace(folder / name, aside / name)
                moved_aside.append(name)
        for name in names:
            os.replace(staging / name, folder / name)
            placed.append(name)
    except BaseException as exc:
        for name in reversed(placed):
            with contextlib.suppress(OSError):
                os.replace(folder / name, staging / name)
        for name in reversed(moved_aside):
            with contextlib.suppress(OSError):
                os.replace(aside / name, folder / name)
        if isinstance(exc, OSError):
            raise InputError(f"cannot publish the build into {folder}: {exc.strerror or exc} "
                             "(the previous build is left as it was)") from None
        raise
    finally:
        signals = _publishing[1:]
        _publishing.clear()
        if signals:
            _terminated(signals[0], None)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def check_outputs(outputs: list[tuple[str, str | Path | None]], inputs: list[str | Path] = (),
                  allowed: list[str | Path] = ()) -> None:
    """Refuse, before any work, an output path (``(option, path)``, None skipped) that is one of
    ``inputs`` (or an existing file inside an input folder), another of ``outputs``, or a file in a
    build folder (one holding manifest.json) other than the ``allowed`` ones. Paths are compared
    resolved (symlinks followed) and, when both exist, as the same file (hard links)."""
    seen: list[tuple[str, Path]] = []
    for option, path in outputs:
        if path is None:
            continue
        path = Path(path)
        for other_option, other in seen:
            if _same_file(path, other):
                raise InputError(f"{option} {path} is also {other_option}: give each output its own file")
        mine = any(_same_file(path, Path(a)) for a in allowed)  # the command's own file in a folder
        for source in map(Path, inputs):
            if _same_file(path, source):
                raise InputError(f"{option} {path} would overwrite the input {source}: "
                                 "write it somewhere else")
            if not mine and source.is_dir() and path.exists() \
                    and path.resolve().is_relative_to(source.resolve()):
                raise InputError(f"{option} {path} would overwrite the input {path.name} (in "
                                 f"{source}): write it somewhere else")
        folder = path.resolve().parent
        if (folder / "manifest.json").is_file() and not mine:
            raise InputError(f"{option} {path} is inside the build folder {folder}: write it "
                             "somewhere else (a build's files are its convert's)")
        seen.append((option, path))


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # unreadable, or a symlink loop: not provably the same
        return False
