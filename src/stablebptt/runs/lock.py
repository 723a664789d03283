"""One writer per output folder: an exclusive lock held for as long as a command writes there.

The lock is ``fcntl.flock`` on a hidden sibling file ``.NAME.lock`` (a sibling,
because a finished run folder replaces ``NAME`` by rename). The holder writes
its pid into the file, so a second writer is told who holds it. The operating
system releases the lock when its process ends, however it ends, so a lock
left by a killed process is simply taken over. Within one process the lock is
re-entrant: a sweep that holds its folder may write runs inside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LockError", "FolderLockedError", "hold", "lock_path"]

_held: dict[Path, int] = {}


class LockError(RuntimeError):
    """The output's lock cannot be taken: its folder cannot be written, or another process holds it."""


class FolderLockedError(LockError):
    """Another process is writing the same output folder."""


def lock_path(out: Path) -> Path:
    """The lock file of the output ``out`` (a folder or a file): ``.NAME.lock`` beside it."""
    out = Path(out).absolute()
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def hold(out: Path) -> Iterator[None]:
    """Hold the exclusive lock on ``out`` for the duration of the block.

    Raises :class:`FolderLockedError` (naming the holder's pid) at once if
    another process holds it; never waits.
    """
    path = lock_path(out)
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise LockError(f"--out {out} cannot be written ({err.strerror}: {err.filename or path.parent}); choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderLockedError(
                f"{out} is being written by another stablebptt process (pid {holder}); wait for it to finish, or choose another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed this file after we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # while still holding the lock: the next writer makes a fresh file
    finally:
        os.close(fd)
