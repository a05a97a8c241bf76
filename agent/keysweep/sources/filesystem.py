"""The files source: an iterative, read-only walk by directory fds and a bounded-memory chunked reader.

Every decision comes from ``lstat``: symlinks are not followed (unless asked, then with loop protection by
device and inode), FIFOs, sockets and devices are never opened, pseudo filesystems are not entered. No path
below a walk root is ever resolved by the kernel as a whole: each directory is opened relative to its parent's
fd (``O_NOFOLLOW``) and its ``(st_dev, st_ino)`` checked against what the walk saw, each file relative to its
directory's fd (``O_NOFOLLOW|O_NONBLOCK|O_NOATIME``) and checked with ``fstat``, so a directory or file swapped
for a symlink, a FIFO or another inode between the listing and the open is skipped (``replaced``), never
followed. Nothing is ever written into the scanned tree. Every skip and error is counted with a reason; none
stops the walk.
"""

from __future__ import annotations

import errno
import io
import itertools
import os
import re
import stat
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple, Optional, cast

from keysweep.detect import Place
from keysweep.models import Finding, Location
from keysweep.ruleset import glob_to_regex
from keysweep.sources import archives, aws_files
from keysweep.sources.mounts import PSEUDO_PATHS, MountTable
from keysweep.sources.names import readable

if TYPE_CHECKING:
    from keysweep.detect import Detector
    from keysweep.scan_types import ScanOptions, ScanStats

CHUNK_SIZE = 2 * 1024 * 1024
_O_NOATIME = getattr(os, "O_NOATIME", 0)
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC
MAX_DIR_FDS = 32  # directory fds one process keeps open; deeper chains are reopened from a nearer one
_SEEK_DATA = getattr(os, "SEEK_DATA", None)
_SEEK_HOLE = getattr(os, "SEEK_HOLE", None)
LISTING_MAX = 4096  # files of one directory handed on together at most (a larger one comes in parts)


class Skip(Exception):
    """A file or directory that is not scanned; ``error`` marks it as a failure rather than a policy skip."""

    def __init__(self, reason: str, *, error: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error

    def count(self, stats: ScanStats, where: str | None = None) -> None:
        """Count it by reason; an error at a known place (a readable path) also keeps that place."""
        if self.error and where is not None:
            stats.fail(self.reason, where)
        else:
            (stats.errors if self.error else stats.skipped)[self.reason] += 1


def os_error_skip(exc: OSError) -> Skip:
    """Map an OSError while reading the tree to a counted reason."""
    if exc.errno == errno.ENOENT or exc.errno == errno.ESTALE:
        return Skip("vanished")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Skip("permission-denied", error=True)
    if exc.errno == errno.ELOOP:
        return Skip("symlink")
    if exc.errno == errno.ENAMETOOLONG:
        return Skip("name-too-long", error=True)
    if exc.errno == errno.EIO:
        return Skip("io-error", error=True)
    name = errno.errorcode.get(exc.errno or 0, "unknown")
    return Skip(f"os-error-{name.lower()}", error=True)


def display_path(path: str, prefix: str | None = None) -> str:
    """A readable path: host prefix stripped, undecodable bytes shown as ``\\xNN`` (never a lone surrogate)."""
    if prefix and (path == prefix or path.startswith(prefix + "/")):
        path = path[len(prefix) :] or "/"
    return readable(path)


class Dir(NamedTuple):
    """A directory the walk reached and how to reach it again without resolving its path: the chain of
    ``(name, st_dev, st_ino)`` from its walk root (whose name is its absolute path, opened as named) down to it.
    A flat tuple, not parent links, so it pickles to a worker at any depth."""

    path: str
    chain: tuple[tuple[str, int, int], ...]

    @classmethod
    def root(cls, path: str, st: os.stat_result) -> Dir:
        return cls(path, ((path, st.st_dev, st.st_ino),))

    @property
    def base(self) -> str:
        """Its path with one trailing slash: what its entries' paths start with."""
        return self.path.rstrip("/") + "/"

    def child(self, name: str, st: os.stat_result) -> Dir:
        return Dir(self.base + name, (*self.chain, (name, st.st_dev, st.st_ino)))

    @property
    def ident(self) -> tuple[int, int]:
        return self.chain[-1][1], self.chain[-1][2]


class FileRef(NamedTuple):
    """A regular file the walk saw: its path (shown, matched by excludes, the file cache's key) and where to
    open it: its directory and name there, with the identity the walk saw (``dev`` None: only the inode number
    of the directory entry is known). ``dir`` None: a file named on the command line, opened by its path."""

    path: str
    dir: Dir | None
    name: str
    dev: int | None
    ino: int

    @classmethod
    def named(cls, path: str, st: os.stat_result) -> FileRef:
        return cls(path, None, path, st.st_dev, st.st_ino)


class DirCache:
    """The verified directory fds of one process, at most ``cap`` open (the least recently used is closed).

    A directory is reached from the nearest cached directory of its chain (or its walk root, opened by its
    path as the operator named it) by ``openat(parent, name, O_NOFOLLOW)``, one component at a time, and each
    fd's ``(st_dev, st_ino)`` is checked against the chain: a directory swapped for a symlink, a file or another
    directory after the walk saw it raises :class:`Skip` ``replaced`` and is never entered. A forked worker
    inherits a copy (its fds stay valid in the child)."""

    def __init__(self, *, follow: bool = False, cap: int = MAX_DIR_FDS) -> None:
        self.follow = follow  # --follow-symlinks: a component may be a symlink (its target is checked)
        self.cap = max(2, cap)
        self._fds: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._last: tuple[tuple[tuple[str, int, int], ...], int] | None = None  # the last chain asked for, its fd

    def fd(self, d: Dir) -> int:
        """An fd of ``d`` owned by the cache: valid until the next call. Raises :class:`Skip`."""
        chain = d.chain
        last = self._last
        if last is not None and last[0] is chain:  # the files of one directory come one after another
            return last[1]
        i = len(chain) - 1
        fd = -1
        while i >= 0:
            key = chain[i][1], chain[i][2]
            if key in self._fds:
                self._fds.move_to_end(key)
                fd = self._fds[key]
                break
            i -= 1
        if i < 0:
            name, dev, ino = chain[0]
            fd = self._verified(_open_dir(name, None, follow=True), dev, ino)
            i = 0
        for name, dev, ino in chain[i + 1 :]:
            fd = self._verified(_open_dir(name, fd, follow=self.follow), dev, ino)
        self._last = chain, fd
        return fd

    def open(self, d: Dir) -> int:
        """An fd of ``d`` for the caller to close (a listing holds it while the cache moves on)."""
        return os.dup(self.fd(d))

    def detach(self, d: Dir, fd: int) -> None:
        """Hand ``fd``, the cache's fd of ``d``, over to the caller, who closes it (the cache opens ``d`` again
        when asked): a listing that pauses keeps the fd its directory entries ``stat`` relative to."""
        if self._fds.get(d.ident) != fd:
            raise ValueError(f"fd {fd} is not the cache's fd of {d.path!r}")
        del self._fds[d.ident]
        self._last = None

    def _verified(self, fd: int, dev: int, ino: int) -> int:
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise os_error_skip(exc) from None
        if (st.st_dev, st.st_ino) != (dev, ino) or not stat.S_ISDIR(st.st_mode):
            os.close(fd)
            raise Skip("replaced")
        old = self._fds.pop((dev, ino), None)
        if old is not None:
            self._last = None
            os.close(old)
        self._fds[(dev, ino)] = fd
        while len(self._fds) > self.cap:
            self._last = None
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def close(self) -> None:
        self._last = None
        while self._fds:
            os.close(self._fds.popitem()[1])

    def __enter__(self) -> DirCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PathFilter:
    """Exclude globs (rules' glob syntax: ``**`` spans directories; without a leading ``/`` a glob matches at
    any depth, so ``*.log`` is a file name and ``/var/cache`` one place), on the prefix-stripped path."""

    def __init__(self, patterns: Sequence[str]) -> None:
        globs = [p.rstrip("/") or "/" for p in patterns]
        regex = "|".join(f"(?:{glob_to_regex(g)})" for g in globs)
        self._re = re.compile(regex) if regex else None
        self.patterns = bool(regex)
        # what an anchored glob's matches start with (up to its first wildcard); None: a glob matching at any depth
        self._starts: list[str] | None = [
            g[: min((i for i in (g.find("*"), g.find("?")) if i >= 0), default=len(g))] for g in globs
        ]
        if any(not g.startswith("/") for g in globs):
            self._starts = None

    def excluded(self, path: str, prefix: str | None = None) -> bool:
        return self._re is not None and self._re.search(display_path(path, prefix)) is not None

    def may_match_in(self, directory: str, prefix: str | None = None) -> bool:
        """Whether a glob could match an entry directly in ``directory``; when not (the agent's own state
        directory excluded, say, far from it), its entries need no match each."""
        if self._re is None:
            return False
        if self._starts is None:
            return True
        shown = display_path(directory, prefix)
        base = shown if shown.endswith("/") else shown + "/"
        # a match starts with the glob's literal start: the directory lies below it, or it names an entry here
        return any(base.startswith(s) or (s.startswith(base) and "/" not in s[len(base) :]) for s in self._starts)


class Listing(NamedTuple):
    """Regular files of one directory handed on together (the incremental walk): their names and the inode numbers
    of their directory entries. ``whole``: all the files of the directory the walk hands on (a directory over
    :data:`LISTING_MAX` files comes in several parts, none whole)."""

    dir: Dir
    names: list[str]
    inodes: list[int]
    whole: bool
    changed: bool = False  # a file cache's digest of it was found stale: its reader goes file by file

    def refs(self) -> Iterator[FileRef]:
        base = self.dir.base
        for name, ino in zip(self.names, self.inodes):
            yield FileRef(base + name, self.dir, name, None, ino)


_SDK_CACHE_DIRS = tuple("/.aws/" + c for c in aws_files.SDK_CACHES)


def _is_sdk_cache_dir(path: str) -> bool:
    return path.endswith(_SDK_CACHE_DIRS)


def iter_files(
    options: ScanOptions,
    stats: ScanStats,
    *,
    mounts: MountTable | None = None,
    skip_ids: set[tuple[int, int]] | None = None,
    should_stop: Callable[[], bool] | None = None,
    file_stat: bool = False,
    dirs: DirCache | None = None,
) -> Iterator[tuple[FileRef, os.stat_result | None]]:
    """Yield ``(file, lstat)`` for every regular file to read under the options' paths (or roots); the lstat
    is None unless ``file_stat`` asks for it (the type then comes from the directory entry). Directories are
    opened through ``dirs`` (a private cache, closed at the end, when not given)."""
    files = _walk(options, stats, mounts, skip_ids, should_stop, file_stat, dirs, grouped=False)
    return cast(Iterator[tuple[FileRef, Optional[os.stat_result]]], files)  # not grouped: files only


def iter_listings(
    options: ScanOptions,
    stats: ScanStats,
    *,
    mounts: MountTable | None = None,
    skip_ids: set[tuple[int, int]] | None = None,
    should_stop: Callable[[], bool] | None = None,
    dirs: DirCache | None = None,
) -> Iterator[Listing | tuple[FileRef, os.stat_result | None]]:
    """As :func:`iter_files` (no ``lstat`` of a file), but the files of each directory come as one
    :class:`Listing`; a file named on the command line comes alone, with its ``stat``."""
    return _walk(options, stats, mounts, skip_ids, should_stop, False, dirs, grouped=True)


def _walk(
    options: ScanOptions,
    stats: ScanStats,
    mounts: MountTable | None,
    skip_ids: set[tuple[int, int]] | None,
    should_stop: Callable[[], bool] | None,
    file_stat: bool,
    dirs: DirCache | None,
    *,
    grouped: bool,
) -> Iterator[Listing | tuple[FileRef, os.stat_result | None]]:
    mounts = mounts if mounts is not None else MountTable.current()
    own = dirs is None
    cache = DirCache(follow=options.follow_symlinks) if dirs is None else dirs
    walker = Walker(options, stats, mounts, skip_ids or set(), should_stop, file_stat, cache, grouped=grouped)
    try:
        for path, st, is_dir in start_points(options, stats, mounts):
            if is_dir:
                yield from walker.walk(Dir.root(path, st))
            else:
                yield FileRef.named(path, st), st
    finally:
        if own:
            cache.close()


def start_points(
    options: ScanOptions, stats: ScanStats, mounts: MountTable
) -> Iterator[tuple[str, os.stat_result, bool]]:
    """``(path, stat, is_directory)`` for each path to scan (or root), in order: named files, and the
    directories to walk (with the tmpfs mounts below a skipped pseudo tree as roots of their own)."""
    prefix = options.path_prefix
    starts = list(options.paths) if options.paths else [_prefixed(r, prefix) for r in options.roots]
    for start in starts:
        start = os.path.abspath(start)
        try:  # a path the user named is followed even when it is a symlink (not one a watcher's event named)
            st = os.stat(start, follow_symlinks=options.follow_named or options.follow_symlinks)
        except OSError as exc:
            os_error_skip(exc).count(stats)
            continue
        if stat.S_ISLNK(st.st_mode):
            stats.skipped["symlink"] += 1
            continue
        if stat.S_ISREG(st.st_mode):
            yield start, st, False
            continue
        if not stat.S_ISDIR(st.st_mode):
            stats.skipped[_special_reason(st.st_mode)] += 1
            continue
        held = mounts.containing(start)
        if held is not None and held.is_pseudo:
            stats.skipped["pseudo-fs"] += 1
            continue
        if held is not None and options.skip_network_fs and held.is_network:
            stats.skipped["network-fs"] += 1
            continue
        for root, root_st in [(start, st)] + _tmpfs_below_pseudo(start, mounts, prefix):
            yield root, root_st, True


def _prefixed(root: str, prefix: str | None) -> str:
    return prefix.rstrip("/") + "/" + root.lstrip("/") if prefix else root


def _tmpfs_below_pseudo(start: str, mounts: MountTable, prefix: str | None) -> list[tuple[str, os.stat_result]]:
    """tmpfs mounts inside a skipped pseudo tree (``/dev/shm``) are still walked, as their own roots."""
    out: list[tuple[str, os.stat_result]] = []
    for pseudo in PSEUDO_PATHS:
        top = _prefixed(pseudo, prefix)
        if not (top + "/").startswith(start.rstrip("/") + "/"):
            continue
        for m in mounts.points_under(top):
            if m.fstype == "tmpfs" and not any(
                (p := mounts.at(a)) is not None and p.is_pseudo for a in _ancestors(m.mount_point, top)
            ):
                try:
                    out.append((m.mount_point, os.stat(m.mount_point, follow_symlinks=False)))
                except OSError:
                    continue
    return out


def _ancestors(path: str, stop: str) -> list[str]:
    out = []
    p = os.path.dirname(path)
    while len(p) > len(stop):
        out.append(p)
        p = os.path.dirname(p)
    return out


class Walker:
    """Depth-first with an explicit stack (no recursion limit), by directory fds (:class:`DirCache`).

    :meth:`walk` walks a whole tree; :meth:`list_dir` reads one directory."""

    def __init__(
        self,
        options: ScanOptions,
        stats: ScanStats,
        mounts: MountTable,
        skip_ids: set[tuple[int, int]],
        should_stop: Callable[[], bool] | None,
        file_stat: bool,
        dirs: DirCache | None = None,
        *,
        grouped: bool = False,
    ) -> None:
        self.options = options
        self.file_stat = file_stat or options.same_filesystem
        self.stats = stats
        self.mounts = mounts
        self.skip_ids = skip_ids
        self.should_stop = should_stop
        self.dirs = dirs if dirs is not None else DirCache(follow=options.follow_symlinks)
        self.excl = PathFilter(options.excludes)
        self.seen_dirs: set[tuple[int, int]] = set()
        self.pseudo_paths = {_prefixed(p, options.path_prefix) for p in PSEUDO_PATHS}
        self.root_dev = 0
        # files by directory (the incremental walk): no lstat of a file here; a followed symlink or another
        # filesystem's file needs one, so those options go file by file
        self.grouped = grouped and not self.file_stat and groupable(options)

    def walk(self, root: Dir) -> Iterator[Listing | tuple[FileRef, os.stat_result | None]]:
        if root.ident in self.seen_dirs:
            return
        self.seen_dirs.add(root.ident)
        self.root_dev = root.ident[0]
        stack = [root]
        while stack:
            if self.should_stop is not None and self.should_stop():
                return
            yield from self.list_dir(stack.pop(), stack)

    def list_dir(self, d: Dir, subdirs: list[Dir]) -> Iterator[Listing | tuple[FileRef, os.stat_result | None]]:
        """The files of directory ``d`` to read; its subdirectories to walk are appended to ``subdirs``."""
        try:
            # by listings: the cache's fd (scandir reads through a dup of its own; a listing that pauses takes the
            # fd over); file by file, the walk pauses at each file: a dup of its own, its entries stat'ed relative
            # to it
            dir_fd = self.dirs.fd(d) if self.grouped else self.dirs.open(d)
        except Skip as skip_:
            skip_.count(self.stats, display_path(d.path, self.options.path_prefix))
            return
        except OSError as exc:
            os_error_skip(exc).count(self.stats, display_path(d.path, self.options.path_prefix))
            return
        if self.grouped:
            yield from self._listings(d, dir_fd, subdirs)
            return
        try:
            yield from self._entries(d, dir_fd, subdirs)
        finally:
            os.close(dir_fd)

    def _entries(self, d: Dir, dir_fd: int, stack: list[Dir]) -> Iterator[tuple[FileRef, os.stat_result | None]]:
        in_sdk_cache = _is_sdk_cache_dir(d.path)
        base = d.base
        seen = 0
        with os.scandir(dir_fd) as it:
            while True:
                try:
                    entry = next(it)
                except StopIteration:
                    break
                except OSError as exc:
                    os_error_skip(exc).count(self.stats)
                    break
                seen += 1
                if not seen & 1023 and self.should_stop is not None and self.should_stop():
                    return  # a huge directory is not read to its end after a stop
                path = base + entry.name
                try:
                    yield from self._entry(d, dir_fd, entry, path, in_sdk_cache, stack)
                except Exception as exc:  # a bug on one odd entry must not end the walk; counted with its place
                    self.stats.fail("internal-error", display_path(path, self.options.path_prefix), exc)

    def _listings(self, d: Dir, dir_fd: int, stack: list[Dir]) -> Iterator[Listing]:
        """The regular files of ``d`` to read as one :class:`Listing` (parts of :data:`LISTING_MAX` files in a
        larger directory), typed by the directory entry; everything else as :meth:`_entry` does."""
        in_sdk_cache = _is_sdk_cache_dir(d.path)
        # every regular file is handed on (but those the aws-files source read)
        plain = not (in_sdk_cache or self.excl.may_match_in(d.path, self.options.path_prefix))
        parted = False  # then the fd is this listing's to close
        try:
            with os.scandir(dir_fd) as it:
                while True:
                    try:
                        entries = list(itertools.islice(it, LISTING_MAX))
                    except OSError as exc:
                        os_error_skip(exc).count(self.stats)
                        break
                    if not entries:
                        break
                    names, inodes = self._files_of(d, dir_fd, entries, plain, in_sdk_cache, stack)
                    if len(entries) < LISTING_MAX and not parted:
                        if names:
                            yield Listing(d, names, inodes, True)
                        break
                    if not parted:  # the walk pauses at each part and the cache may close what it holds
                        self.dirs.detach(d, dir_fd)
                    parted = True  # a huge directory comes in parts (memory stays bounded), none of them whole
                    if names:
                        yield Listing(d, names, inodes, False)
                    if self.should_stop is not None and self.should_stop():
                        return
        finally:
            if parted:
                os.close(dir_fd)

    def _files_of(
        self, d: Dir, dir_fd: int, entries: list[os.DirEntry[str]], plain: bool, in_sdk_cache: bool, stack: list[Dir]
    ) -> tuple[list[str], list[int]]:
        """Names and inode numbers of the regular files among ``entries`` to hand on; the other entries as
        :meth:`_entry` takes them (subdirectories onto ``stack``)."""
        base = d.base
        files = _regular(entries) if plain else None
        if files is None:
            names: list[str] = []
            inodes: list[int] = []
            rest = entries
        else:  # every regular file is handed on: no Python step per file
            rest = [e for e in entries if not e.is_file(follow_symlinks=False)] if len(files) < len(entries) else []
            if self.skip_ids:
                dev, skip = d.ident[0], self.skip_ids
                files = [e for e in files if (dev, e.inode()) not in skip]
            names = [e.name for e in files]
            inodes = [e.inode() for e in files]
        for entry in rest:
            try:
                if files is None and entry.is_file(follow_symlinks=False):
                    if self._hand_on(d, entry, base + entry.name, in_sdk_cache):
                        names.append(entry.name)
                        inodes.append(entry.inode())
                    continue
                # a directory, a link, a special file (or an entry that became a file meanwhile)
                for ref, _st in self._entry(d, dir_fd, entry, base + entry.name, in_sdk_cache, stack):
                    names.append(ref.name)
                    inodes.append(ref.ino)
            except OSError as exc:
                os_error_skip(exc).count(self.stats)
            except Exception as exc:  # as in _entries: one odd entry does not end the walk
                self.stats.fail("internal-error", display_path(base + entry.name, self.options.path_prefix), exc)
        return names, inodes

    def _hand_on(self, d: Dir, entry: os.DirEntry[str], path: str, in_sdk_cache: bool) -> bool:
        """Whether a regular file (typed by its directory entry) is to be read; a file left is counted."""
        if self.excl.excluded(path, self.options.path_prefix):
            self.stats.skipped["excluded"] += 1
            return False
        if in_sdk_cache:
            self.stats.skipped["host-role-credentials"] += 1
            return False
        return not self.skip_ids or (d.ident[0], entry.inode()) not in self.skip_ids

    def _entry(
        self, d: Dir, dir_fd: int, entry: os.DirEntry[str], path: str, in_sdk_cache: bool, stack: list[Dir]
    ) -> Iterator[tuple[FileRef, os.stat_result | None]]:
        options = self.options  # skips count into self.stats, which a worker swaps between its messages
        prefix = options.path_prefix
        try:
            # the entry's type from the directory (an lstat when the filesystem does not say): a regular
            # file needs no stat here, the reader fstats what it opened
            if not self.file_stat and entry.is_file(follow_symlinks=False):
                if self._hand_on(d, entry, path, in_sdk_cache):
                    yield FileRef(path, d, entry.name, None, entry.inode()), None
                return
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            os_error_skip(exc).count(self.stats)
            return
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            if not options.follow_symlinks:
                self.stats.skipped["symlink"] += 1
                return
            try:
                st = os.stat(entry.name, dir_fd=dir_fd)  # resolved from this directory, not from its path
            except OSError as exc:
                self.stats.skipped["broken-symlink" if exc.errno in (errno.ENOENT, errno.ELOOP) else "symlink"] += 1
                return
            mode = st.st_mode
        if self.excl.excluded(path, prefix):
            self.stats.skipped["excluded"] += 1
            return
        if stat.S_ISDIR(mode):
            reason = _dir_skip(path, st, self.root_dev, options, self.mounts, self.pseudo_paths)
            if reason is None and (st.st_dev, st.st_ino) in self.seen_dirs:
                reason = "symlink-loop" if options.follow_symlinks else "seen-directory"
            if reason is not None:
                self.stats.skipped[reason] += 1
                return
            self.seen_dirs.add((st.st_dev, st.st_ino))
            stack.append(d.child(entry.name, st))
        elif stat.S_ISREG(mode):
            if in_sdk_cache:
                self.stats.skipped["host-role-credentials"] += 1
            elif (st.st_dev, st.st_ino) in self.skip_ids:
                return  # already read by the aws-files source
            elif options.same_filesystem and st.st_dev != self.root_dev:
                self.stats.skipped["other-filesystem"] += 1  # a file bind-mounted from elsewhere
            else:
                yield FileRef(path, d, entry.name, st.st_dev, st.st_ino), st
        else:
            self.stats.skipped[_special_reason(mode)] += 1


def _regular(entries: list[os.DirEntry[str]]) -> list[os.DirEntry[str]] | None:
    """The regular files among ``entries`` by their directory entries' types; None when one could not be typed
    (the filesystem gave no type and its ``lstat`` failed): each entry is then looked at on its own."""
    try:
        return [e for e in entries if e.is_file(follow_symlinks=False)]
    except OSError:
        return None


def groupable(options: ScanOptions) -> bool:
    """Whether the walk hands on files by directory (:func:`iter_listings`) without an ``lstat`` of each: not
    when a followed symlink's target or each file's filesystem must be looked at."""
    return not (options.follow_symlinks or options.same_filesystem)


def _special_reason(mode: int) -> str:
    """Why an entry that is neither a regular file nor a directory is not opened."""
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "not-regular"


def _open_dir(name: str, dir_fd: int | None, *, follow: bool) -> int:
    """A directory fd (``name`` relative to ``dir_fd``, or a path when None) opened O_NOATIME (reading a
    directory would update its atime) and, unless following, O_NOFOLLOW. Raises :class:`Skip`: ``replaced``
    when ``name`` is no longer a directory (a symlink put in its place fails ``O_DIRECTORY|O_NOFOLLOW``)."""
    flags = _DIR_FLAGS | (0 if follow else os.O_NOFOLLOW)
    try:
        return _open_noatime(name, flags, dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise Skip("replaced") from None
        raise os_error_skip(exc) from None


def _open_noatime(name: str, flags: int, dir_fd: int | None) -> int:
    try:
        return os.open(name, flags | _O_NOATIME, dir_fd=dir_fd)
    except PermissionError as exc:
        if exc.errno != errno.EPERM or not _O_NOATIME:
            raise
        return os.open(name, flags, dir_fd=dir_fd)  # O_NOATIME needs ownership or CAP_FOWNER


def _dir_skip(
    path: str,
    st: os.stat_result,
    root_dev: int,
    options: ScanOptions,
    mounts: MountTable,
    pseudo_paths: set[str],
) -> str | None:
    if path in pseudo_paths:
        return "pseudo-fs"
    m = mounts.at(path)
    if m is not None:
        if m.is_pseudo:
            return "pseudo-fs"
        if options.skip_network_fs and m.is_network:
            return "network-fs"
    if options.same_filesystem and st.st_dev != root_dev:
        return "other-filesystem"
    return None


def open_regular(path: str, *, follow: bool = False, dir_fd: int | None = None) -> tuple[int, os.stat_result]:
    """Open a file read-only without following a symlink, blocking on a FIFO or touching atime; raise Skip.
    With ``dir_fd``, ``path`` is a name in that directory."""
    flags = _OPEN_FLAGS | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = _open_noatime(path, flags, dir_fd)
    except OSError as exc:
        raise os_error_skip(exc) from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise os_error_skip(exc) from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Skip("not-regular")
    return fd, st


def open_file(
    ref: FileRef, dirs: DirCache, *, follow: bool = False, beneath: str | None = None
) -> tuple[int, os.stat_result]:
    """Open a file the walk saw, relative to its verified directory fd, and check by ``fstat`` that it is the
    regular file the walk saw (else :class:`Skip` ``replaced``). A file named by someone other than the
    operator (a watcher's event: ``beneath`` is the root it lives in) is resolved inside that root one component
    at a time, following only links that belong to root or to the file's owner (:mod:`safeopen`)."""
    dir_fd = None if ref.dir is None else dirs.fd(ref.dir)
    if ref.dir is None and beneath is not None:
        from keysweep.sources.safeopen import open_beneath  # it builds on this module

        root = beneath.rstrip("/")
        opened = open_beneath(beneath, ref.path[len(root) :] if root and ref.path.startswith(root + "/") else ref.path)
        fd, st = opened.fd, opened.st
    else:
        fd, st = open_regular(ref.name, follow=follow, dir_fd=dir_fd)
    if not _same_file(ref, st, dir_fd):
        os.close(fd)
        raise Skip("replaced")
    return fd, st


def _beneath(options: ScanOptions) -> str | None:
    """The root a named path is resolved in when the operator did not name it (None: opened as named)."""
    return None if options.follow_named else (options.path_prefix or "/")


def _same_file(ref: FileRef, st: os.stat_result, dir_fd: int | None) -> bool:
    if ref.dev is not None:
        return (st.st_dev, st.st_ino) == (ref.dev, ref.ino)
    assert ref.dir is not None  # only the walk's fast path leaves the device unknown: it is the directory's
    if st.st_dev == ref.dir.ident[0]:
        return st.st_ino == ref.ino
    # another device under this name: a file mount point (whose directory entry names the inode it covers),
    # or overlayfs, whose files keep their layer's device; no file is renamed across devices, so it is the
    # entry if the name holds it now
    try:
        now = os.stat(ref.name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


class _FileReader:
    """``read(n)`` over an open file for Detector.scan_stream: few syscalls (no read past a known EOF, no
    buffer larger than the file), optionally only the data extents of a sparse file (holes are zeros and hold
    no key; offsets then count data bytes only)."""

    def __init__(self, fd: int, size: int, *, limit: int, sparse: bool = False) -> None:
        self.fd = fd
        self.bytes = 0
        self._size = size
        self._limit = limit  # a file still growing is read no further than the size cap
        self._eof = False
        self._extents = _data_extents(fd, size) if sparse else None
        self._extent_end = 0

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes (a negative ``n``: one chunk, as the archive readers do)."""
        if n < 0:
            n = CHUNK_SIZE
        if self._eof or self.bytes >= self._limit:
            return b""
        if self._extents is not None:
            return self._read_sparse(n)
        # a regular file returns short only at EOF; one byte more than its size tells whether it grew
        want = min(n, self._size - self.bytes + 1) if self.bytes <= self._size else n
        data = os.read(self.fd, want)
        self.bytes += len(data)
        if len(data) < want:
            self._eof = True
        return data

    def _read_sparse(self, n: int) -> bytes:
        assert self._extents is not None
        while True:
            pos = os.lseek(self.fd, 0, os.SEEK_CUR)
            if pos >= self._extent_end:
                nxt = next(self._extents, None)
                if nxt is None:
                    self._eof = True
                    return b""
                os.lseek(self.fd, nxt[0], os.SEEK_SET)
                self._extent_end = nxt[1]
                continue
            data = os.read(self.fd, min(n, self._extent_end - pos))
            if not data:
                self._eof = True
            self.bytes += len(data)
            return data


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    assert _SEEK_DATA is not None and _SEEK_HOLE is not None
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, _SEEK_DATA)
            end = os.lseek(fd, start, _SEEK_HOLE)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole after pos
                return
            raise
        yield start, end
        pos = end


def _is_sparse(st: os.stat_result) -> bool:
    return _SEEK_DATA is not None and st.st_size > CHUNK_SIZE and st.st_blocks * 512 < st.st_size // 2


def _scan_archive(
    fd: int,
    kind: str,
    shown: str,
    size: int,
    detector: Detector,
    options: ScanOptions,
    stats: ScanStats,
    whole: bytes | None = None,
) -> list[Finding] | None:
    """An archive file's members; ``whole``: the file's bytes when one read held it all (most jars and zips):
    its members are read from them, not from the file a second time (no buffered file, no system call a member)."""
    if whole is not None:
        found = archives.scan_archive(io.BytesIO(whole), kind, shown, size, detector, options, stats)
    else:
        os.lseek(fd, 0, os.SEEK_SET)
        with os.fdopen(os.dup(fd), "rb") as fh:
            found = archives.scan_archive(fh, kind, shown, size, detector, options, stats)
    if found is not None:
        stats.files_scanned += 1
    return found


_FILE = Location(kind="file")  # a file's findings get its path once found


class SplitFile(NamedTuple):
    """A plain file of ``size`` bytes left to be scanned in parts (:func:`scan_part`) by several workers."""

    size: int
    ref: FileRef


class PartResult(NamedTuple):
    findings: list[Finding]  # line numbers counted from the part's first byte read (``lo``)
    lines_before: int  # newlines between ``lo`` and the part's start
    lines_in: int  # newlines in the part itself
    nbytes: int  # bytes of the part (the overlap read around it not counted)


def scan_part(
    ref: FileRef, start: int, end: int | None, detector: Detector, options: ScanOptions, dirs: DirCache
) -> PartResult:
    """Ids at offsets ``[start, end)`` of a file (``end`` None: to its end), read with half the detector's
    overlap on each side so every pairing window is whole. Raises :class:`Skip`."""
    path = ref.path
    fd, fst = open_file(ref, dirs, follow=options.follow_symlinks, beneath=_beneath(options))
    try:
        half = detector.overlap // 2
        lo = max(0, start - half)
        stop = options.max_file_size if end is None else min(options.max_file_size, end + half)
        os.lseek(fd, lo, os.SEEK_SET)
        counts = [0, 0, 0]  # newlines before start, in [start, end), bytes in [start, end)
        pos = lo
        own_end = stop if end is None else end

        def read(n: int) -> bytes:
            nonlocal pos
            data = os.read(fd, max(0, min(n, stop - pos)))
            a, b = pos, pos + len(data)
            if a < start:
                counts[0] += data.count(b"\n", 0, min(b, start) - a)
            s, e = max(a, start), min(b, own_end)
            if s < e:
                counts[1] += data.count(b"\n", s - a, e - a)
                counts[2] += e - s
            pos = b
            return data

        location = Location(kind="file", path=display_path(path, options.path_prefix))
        findings = detector.scan_stream(
            read, location=location, chunk_size=CHUNK_SIZE, base_offset=lo, min_offset=start, max_offset=end
        )
        return PartResult(findings, counts[0], counts[1], counts[2])
    except OSError as exc:
        raise os_error_skip(exc) from None
    finally:
        os.close(fd)


def scan_file(
    ref: FileRef,
    st: os.stat_result | None,
    detector: Detector,
    options: ScanOptions,
    stats: ScanStats,
    *,
    dirs: DirCache,
    split_over: int | None = None,
    opened: Callable[[os.stat_result], None] | None = None,
) -> list[Finding] | SplitFile | None:
    """Scan one regular file (archives are opened, ~/.aws files parsed per profile).

    None when the file was not read (the reason is counted in ``stats``; nothing is raised). With
    ``split_over``, a plain (not sparse, not archive) file larger than that is not scanned: a
    :class:`SplitFile` says so, for parts of it to be scanned in parallel. ``opened`` is given the ``fstat`` of
    the file opened (what a file cache stores)."""
    path = ref.path
    shown = display_path(path, options.path_prefix)
    if not detector.include_examples and detector.ruleset.is_ignored_path(shown):
        stats.skipped["ignored-path"] += 1  # vendored SDK example data (rules/ignore.yaml)
        return None
    try:
        fd, fst = open_file(ref, dirs, follow=options.follow_symlinks, beneath=_beneath(options))
    except Skip as skip:
        skip.count(stats, shown)
        return None
    if opened is not None:
        opened(fst)
    try:
        if fst.st_size > options.max_file_size:
            stats.unread("too-large", shown)
            return None
        aws_kind = aws_files.aws_file_kind(path)
        if aws_kind is not None and fst.st_size <= aws_files.MAX_AWS_FILE:
            data = os.read(fd, aws_files.MAX_AWS_FILE + 1)
            stats.files_scanned += 1
            stats.bytes_scanned += len(data)
            return aws_files.scan_aws_text(data, shown, aws_kind, detector, stats)
        size = fst.st_size
        if _is_sparse(fst):
            place = Place()  # its cap bounds the keys one file may report; what it drops is counted
            reader = _FileReader(fd, size, limit=options.max_file_size, sparse=True)
            findings = detector.scan_stream(
                reader.read, location=Location(kind="file", path=shown), chunk_size=CHUNK_SIZE, place=place
            )
            stats.files_scanned += 1
            stats.bytes_scanned += reader.bytes
            _count_cap(place, stats)
            return findings
        # one read holds a file up to CHUNK_SIZE (one byte more than its size tells whether it grew)
        want = min(size + 1, CHUNK_SIZE) if size else 65536
        head = os.read(fd, want)
        if options.archive_max_depth > 0 and len(head) >= 4:
            kind = archives.sniff(head)
            if kind == "gzip" and len(head) < want:  # the whole file: a rotated log, a man page
                found = archives.scan_small_gzip(head, shown, detector, options, stats)
                if found is not None:
                    stats.files_scanned += 1
                    return found
            if kind is not None:
                held = head if len(head) < want else None
                found = _scan_archive(fd, kind, shown, size, detector, options, stats, held)
                if found is not None:
                    return found
        if split_over is not None and size > split_over and len(head) >= want:
            return SplitFile(size, ref)
        whole = len(head) < want
        if whole and not detector.may_hold(head):  # almost every file: no Place, no Location, no detector pass
            stats.files_scanned += 1
            stats.bytes_scanned += len(head)
            return []
        place = Place()  # its cap bounds the keys one file may report; what it drops is counted below
        if whole:
            findings = detector.scan(head, location=_FILE, place=place)  # a Location is made only for findings
            if findings:
                findings = [detector.at_path(f, shown) for f in findings]
            nbytes = len(head)
        else:
            reader = _FileReader(fd, size, limit=options.max_file_size)
            os.lseek(fd, len(head), os.SEEK_SET)
            reader.bytes = len(head)
            findings = detector.scan_stream(
                archives.Prefixed(head, reader).read,
                location=Location(kind="file", path=shown),
                chunk_size=CHUNK_SIZE,
                place=place,
            )
            nbytes = reader.bytes
        stats.files_scanned += 1
        stats.bytes_scanned += nbytes
        _count_cap(place, stats)
        return findings
    except OSError as exc:
        os_error_skip(exc).count(stats, shown)
        return None
    finally:
        os.close(fd)


def _count_cap(place: Place, stats: ScanStats) -> None:
    """Key occurrences a file's cap dropped (a file naming more distinct keys than one place may report)."""
    if place.cap.over:
        stats.skipped["too-many-keys"] += place.cap.over
