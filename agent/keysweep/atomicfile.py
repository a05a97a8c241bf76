"""Crash-safe file writes for the state directory and report files: a reader sees the old file or the new one.

The new content goes to a fresh file beside the target (``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 0600 and then
``fchmod`` to the wanted mode on the descriptor), which is fsynced and renamed over the target. A symlink at the
target is replaced, never followed, and an existing file's wider mode is never kept.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Make renames and unlinks inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: Path, *, mode: int = 0o600, sync_dir: bool = True, parents: bool = True) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content to; renamed into place when the block ends without error
    (removed otherwise). ``sync_dir=False`` leaves the directory fsync to a caller that renames many files;
    ``parents`` creates missing parent directories (mode 0700)."""
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkstemp opens with O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_dir:
        fsync_dir(path.parent)


@contextmanager
def report_output(path: Path, *, mode: int = 0o600, parents: bool = True) -> Iterator[BinaryIO]:
    """Where a command writes the report the user named (``--output FILE``): a file as :func:`atomic_output` writes
    it; a device, pipe or terminal (``/dev/null``, ``/dev/stdout``, a FIFO) written to as it is, since a file
    renamed over it would take its place (run as root, over ``/dev/null`` itself)."""
    try:
        special = not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        special = False
    if not special:
        with atomic_output(path, mode=mode, parents=parents) as fh:
            yield fh
        return
    with open(path, "wb") as fh:
        yield fh


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` (see :func:`atomic_output`)."""
    with atomic_output(path, mode=mode, sync_dir=sync_dir) as fh:
        fh.write(data)
