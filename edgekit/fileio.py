"""Atomic writes: everything edgekit produces appears whole or not at all."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
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


@contextlib.contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """Create ``folder`` (checking it is writable) and yield a hidden staging folder inside it:
    build there, then ``publish``. Whatever the block leaves unpublished is removed; if it fails,
    ``folder`` is left as it was, and the folders this created are removed, so a failed or
    interrupted run changes nothing."""
    with writable_folder(folder):
        staging = Path(tempfile.mkdtemp(prefix=".edgekit-build-", dir=folder))
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, folder: Path, names: list[str], index: str, stale: list[str]) -> None:
    """Move ``names`` from ``staging`` into ``folder``, the ``index`` file (a manifest) last. The
    old index goes first and the ``stale`` files of the build it listed with it, so a crash
    half-way leaves files without an index, never an index that lies about them."""
    with contextlib.suppress(FileNotFoundError):
        (folder / index).unlink()
    for name in stale:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            (folder / name).unlink()
    for name in [n for n in names if n != index] + [index]:
        os.replace(staging / name, folder / name)


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
