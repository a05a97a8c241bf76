"""Open a file that someone else named, inside a root directory, the way a root agent must.

A path from a home directory or a process environment is attacker-controlled: any component may be a symlink to
another user's file, to ``/dev/ptmx`` or to a host path outside a container. :func:`open_beneath` resolves it one
component at a time relative to directory descriptors (``O_NOFOLLOW``; ``..`` is handled here, never by the
kernel, and never climbs above the root), reads each symlink and continues inside the same root (an absolute
target restarts at the root), and opens the last component only if ``lstat`` says it is a regular file — then
with ``O_NOFOLLOW|O_NONBLOCK`` and checks by ``fstat`` that it is the same file. A FIFO, socket or device is never
opened, not even non-blocking (opening a FIFO for reading releases its writer).

Link policy: a symlink is followed only when it belongs to root or to the owner of the file it leads to (a link in
one user's home never makes root read, or attribute to that user, another user's file), and never into ``/dev``,
``/proc`` or ``/sys`` of the root.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from keysweep.sources.filesystem import Skip, open_regular, os_error_skip

MAX_LINK_HOPS = 40  # the kernel's own limit (MAXSYMLINKS)
MAX_COMPONENTS = 4096
PSEUDO_TOPS = frozenset({"dev", "proc", "sys"})
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Opened:
    """A regular file opened read-only: ``path`` is its real path inside the root (after every link),
    ``followed_links`` says whether a symlink was followed to reach it."""

    fd: int
    st: os.stat_result
    path: str
    followed_links: bool


def open_beneath(root: str, path: str, *, cwd: str = "/") -> Opened:
    """Open ``path`` as seen from inside ``root`` (``/`` for the host, ``/proc/PID/root`` for a process, a host
    prefix); a relative ``path`` starts at ``cwd``, a path inside the root. Raises :class:`Skip` with a counted
    reason: ``not-regular``, ``symlink-other-owner``, ``pseudo-fs``, ``symlink-loop``, ``not-a-directory``,
    ``replaced``, ``vanished``, ``permission-denied``, …"""
    try:
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # a process's root: followed on purpose
    except OSError as exc:
        raise os_error_skip(exc) from None
    try:
        return _Resolver(root_fd).open(path, cwd)
    finally:
        os.close(root_fd)


class _Resolver:
    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.dirs: list[tuple[str, int]] = []  # (name, O_PATH fd) of each directory below the root
        self.link_owners: set[int] = set()

    def open(self, path: str, cwd: str) -> Opened:
        try:
            todo = _components(path if path.startswith("/") else cwd.rstrip("/") + "/" + path)
            return self._walk(todo)
        finally:
            self._pop_to(0)

    def _here(self) -> int:
        return self.dirs[-1][1] if self.dirs else self.root_fd

    def _pop_to(self, depth: int) -> None:
        while len(self.dirs) > depth:
            os.close(self.dirs.pop()[1])

    def _walk(self, todo: list[str]) -> Opened:
        hops = 0
        steps = 0
        todo.reverse()  # a stack: the next component last
        while todo:
            steps += 1
            if steps > MAX_COMPONENTS:
                raise Skip("path-too-deep", error=True)
            name = todo.pop()
            if name == "..":
                self._pop_to(max(len(self.dirs) - 1, 0))  # never above the root
                continue
            if not self.dirs and name in PSEUDO_TOPS:
                raise Skip("pseudo-fs")
            st = self._lstat(name)
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise Skip("symlink-loop")
                self.link_owners.add(st.st_uid)
                target = self._readlink(name)
                if target.startswith("/"):
                    self._pop_to(0)
                todo.extend(reversed(_components(target)))
                continue
            if todo:
                if not stat.S_ISDIR(st.st_mode):
                    raise Skip("not-a-directory")
                self._enter(name, st)
                continue
            return self._open_file(name, st)
        raise Skip("not-regular")  # the path named a directory (the root itself)

    def _lstat(self, name: str) -> os.stat_result:
        try:
            return os.stat(name, dir_fd=self._here(), follow_symlinks=False)
        except OSError as exc:
            raise os_error_skip(exc) from None

    def _readlink(self, name: str) -> str:
        try:
            return os.readlink(name, dir_fd=self._here())
        except OSError as exc:
            raise os_error_skip(exc) from None

    def _enter(self, name: str, st: os.stat_result) -> None:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self._here())
        except OSError as exc:
            raise os_error_skip(exc) from None
        self.dirs.append((name, fd))
        if not _same(os.fstat(fd), st):
            raise Skip("replaced")

    def _open_file(self, name: str, st: os.stat_result) -> Opened:
        if not stat.S_ISREG(st.st_mode):
            raise Skip("not-regular")  # FIFOs, sockets and devices are never opened
        if any(uid not in (0, st.st_uid) for uid in self.link_owners):
            raise Skip("symlink-other-owner")
        fd, fst = open_regular(name, dir_fd=self._here())
        if not _same(fst, st):
            os.close(fd)
            raise Skip("replaced")
        real = "/" + "/".join([n for n, _ in self.dirs] + [name])
        return Opened(fd=fd, st=fst, path=real, followed_links=bool(self.link_owners))


def _components(path: str) -> list[str]:
    return [c for c in path.split("/") if c and c != "."]


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
