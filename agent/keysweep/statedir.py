"""The state directory: trusted only when it is ours, and every file in it opened without following a link.

The agent runs as root in directories other users write, so a state directory (or a file in it) that someone else
prepared must never steer root's reads or writes:

* the directory is refused (:class:`StateDirError`, exit 2) when it is a symlink, not owned by the running user, or
  writable by others or by a group other than root's; created, it is mode 0700;
* files are created with ``O_NOFOLLOW`` and mode 0600 (``O_EXCL`` for new ones); modes are fixed with ``fchmod`` on
  the open descriptor, never through a path;
* a state file that is damaged, of the wrong type (a directory, a link, a FIFO) or of the wrong shape is moved
  aside to ``corrupt/`` (timestamped name, mode 0600; the newest :data:`CORRUPT_KEEP` are kept), logged once as
  ``state.corrupt`` and rebuilt: a bad file never stops a sweep and never crash-loops the agent.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keysweep.errors import ConfigError
from keysweep.textsafe import readable

log = logging.getLogger(__name__)

CORRUPT_DIR = "corrupt"
CORRUPT_KEEP = 50  # the newest files moved aside are kept; older ones are removed (a failing disk must not fill it)
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


class StateDirError(ConfigError):
    """The state directory cannot be trusted or created (exit 2)."""


class CorruptStateFile(Exception):
    """A state file failed validation; raised by a validator, caught by :func:`load_json`."""


def _problem(st: os.stat_result, what: str, *, directory: bool) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return f"{what} is a symlink"
    if directory and not stat.S_ISDIR(st.st_mode):
        return f"{what} is not a directory"
    if not directory and not stat.S_ISREG(st.st_mode):
        return f"{what} is not a regular file"
    if st.st_uid != os.geteuid():
        return f"{what} is owned by uid {st.st_uid}, not by the running user (uid {os.geteuid()})"
    # group write is accepted for group root only (gid 0: its members may write root's files anyway) — the
    # container image's state directory is keysweep:root 0770 so that uid 0 without CAP_DAC_OVERRIDE can write it
    if st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid != 0):
        return f"{what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def prepare(state_dir: str | Path) -> Path:
    """Create ``state_dir`` (mode 0700, parents as needed) or check that an existing one can be trusted."""
    path = Path(state_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    except OSError as exc:
        raise StateDirError(f"state dir {readable(str(path))}: cannot create ({exc.strerror})") from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise StateDirError(f"state dir {readable(str(path))}: cannot use ({exc.strerror})") from None
    problem = _problem(st, f"state dir {readable(str(path))}", directory=True)
    if problem:
        raise StateDirError(f"{problem}; refusing to use it (use a directory of your own, mode 0700)")
    return path


def subdir(state_dir: Path, name: str) -> Path:
    """A directory inside the state directory (mode 0700); anything else in its place is moved aside."""
    path = state_dir / name
    for _ in range(3):
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            pass
        st = os.lstat(path)
        problem = _problem(st, name, directory=True)
        if problem is None:
            return path
        quarantine(state_dir, path, problem)
    raise StateDirError(f"state dir {readable(str(state_dir))}: cannot create {name}")


def open_file(path: Path, flags: int, *, create: bool = True, exclusive: bool = False, secret: bool = False) -> int:
    """A descriptor for a state file: never through a link, created mode 0600, checked to be a regular file (else
    :class:`CorruptStateFile`) of ours, its mode narrowed to 0600 by ``fchmod``. ``FileNotFoundError`` when it is
    absent and ``create`` is False. A ``secret`` file (the fingerprint key) that is not ours or was readable by
    others is refused (:class:`StateDirError`): it may have been planted or read."""
    if create:
        flags |= os.O_CREAT | (os.O_EXCL if exclusive else 0)
    try:
        fd = os.open(path, flags | _OPEN_FLAGS | os.O_NONBLOCK, 0o600)  # O_NONBLOCK: a planted FIFO never blocks
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENOTDIR, errno.ENXIO):  # ENXIO: a FIFO opened to write
            raise CorruptStateFile(f"not a regular file ({exc.strerror})") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptStateFile("not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if secret and not exclusive and (st.st_uid != os.geteuid() or mode != 0o600):  # exclusive: we made it
            raise StateDirError(
                f"{readable(str(path))}: owned by uid {st.st_uid} with mode {mode:04o}, not by uid {os.geteuid()} "
                "with mode 0600; refusing to use it (remove it to create a new one)"
            )
        if st.st_uid != os.geteuid():
            raise CorruptStateFile(f"owned by uid {st.st_uid}, not by the running user")
        if mode != 0o600:
            os.fchmod(fd, 0o600)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(path: Path, limit: int = 64 * 1024 * 1024, *, viewer: bool = False) -> bytes:
    """The bytes of a state file (see :func:`open_file`); ``FileNotFoundError`` when absent. A ``viewer`` (``keysweep
    status``, perhaps another user than the agent's) only reads: never through a link, only a regular file."""
    if viewer:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS | os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CorruptStateFile("not a regular file")
    else:
        fd = open_file(path, os.O_RDONLY, create=False)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise CorruptStateFile(f"larger than {limit} bytes")
    return data


def quarantine(state_dir: Path, path: Path, reason: str) -> Path | None:
    """Move ``path`` (whatever it is: file, link, directory) to ``corrupt/`` under a timestamped name, mode 0600
    for a file; log ``state.corrupt`` once. Returns the new place (None when it could not be moved)."""
    corrupt = state_dir / CORRUPT_DIR
    try:
        os.mkdir(corrupt, 0o700)
    except FileExistsError:
        pass
    except OSError:
        pass
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = corrupt / f"{path.name}.{stamp}.{time.time_ns() % 1_000_000_000:09d}"
    moved: Path | None = target
    try:
        if not _problem(os.lstat(corrupt), "corrupt", directory=True):
            os.rename(path, target)
            _narrow(target)
        else:  # not even corrupt/ is usable: the bad file still must not be used
            moved = None
            os.rename(path, path.with_name(f".{path.name}.corrupt.{stamp}"))
    except FileNotFoundError:
        return None
    except OSError as exc:
        moved = None
        reason = f"{reason}; could not move it aside ({exc.strerror})"
    if moved is not None:
        _prune(corrupt)
    log.error(
        "state.corrupt",
        extra={
            "fields": {
                "file": readable(str(path)),
                "reason": reason,
                "moved_to": readable(str(moved)) if moved else None,
                "action": "rebuilt",
            }
        },
    )
    return moved


def _prune(corrupt: Path) -> None:
    try:
        entries = sorted(os.scandir(corrupt), key=lambda e: e.stat(follow_symlinks=False).st_ctime_ns)
        for e in entries[: max(0, len(entries) - CORRUPT_KEEP)]:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                os.unlink(e.path)
    except OSError:
        pass


def _narrow(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS | os.O_NONBLOCK)
    except OSError:
        return  # a link or a FIFO: nothing to narrow, and never followed
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def load_json(state_dir: Path, path: Path, validate: Callable[[Any], Any]) -> Any | None:
    """A JSON state file, checked by ``validate`` (which returns the value to use or raises CorruptStateFile,
    ValueError, TypeError, KeyError). Absent: None. Bad in any way: moved aside (see :func:`quarantine`), None."""
    try:
        return validate(json.loads(read_file(path)))
    except FileNotFoundError:
        return None
    except (CorruptStateFile, ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
        quarantine(state_dir, path, _why(exc))
        return None


def _why(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc.msg})"
    if isinstance(exc, OSError):
        return f"unreadable ({exc.strerror})"
    return f"{type(exc).__name__}: {exc}"[:200]


def require(condition: bool, what: str) -> None:
    """For validators: raise :class:`CorruptStateFile` naming ``what`` unless ``condition`` holds."""
    if not condition:
        raise CorruptStateFile(what)


def entries(doc: Any, version: int, kind: str, entry_ok: Callable[[Any], bool], entry_is: str) -> dict[str, Any]:
    """The entries of a state document ``{"format": version, "entries": {name: entry}}``, each checked by
    ``entry_ok``; else :class:`CorruptStateFile` saying it is not a ``kind`` document, or which entry is not
    ``entry_is``."""
    require(isinstance(doc, dict) and doc.get("format") == version, f"not a {kind} document")
    found = doc.get("entries")
    require(isinstance(found, dict), "entries: not an object")
    for k, v in found.items():
        require(entry_ok(v), f"entry {k[:40]!r}: not {entry_is}")
    return dict(found)
