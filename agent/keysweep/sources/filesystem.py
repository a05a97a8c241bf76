"""The files source: an iterative, read-only walk and a bounded-memory chunked reader.

Every decision comes from ``lstat``: symlinks are not followed (unless asked, then with loop protection by
device and inode), FIFOs, sockets and devices are never opened, pseudo filesystems are not entered. Files are
opened ``O_NOFOLLOW|O_NONBLOCK|O_NOATIME`` and re-checked with ``fstat``, so a file swapped for a symlink or FIFO
between the walk and the open is skipped. Nothing is ever written into the scanned tree. Every skip and error
is counted with a reason; none stops the walk.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from keysweep.models import Finding, Location
from keysweep.ruleset import glob_to_regex
from keysweep.sources import archives, aws_files
from keysweep.sources.mounts import PSEUDO_PATHS, MountTable
from keysweep.sources.names import readable

if TYPE_CHECKING:
    from keysweep.detect import Detector
    from keysweep.scan import ScanOptions, ScanStats

CHUNK_SIZE = 2 * 1024 * 1024
_O_NOATIME = getattr(os, "O_NOATIME", 0)
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
_SEEK_DATA = getattr(os, "SEEK_DATA", None)
_SEEK_HOLE = getattr(os, "SEEK_HOLE", None)


class Skip(Exception):
    """A file or directory that is not scanned; ``error`` marks it as a failure rather than a policy skip."""

    def __init__(self, reason: str, *, error: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error

    def count(self, stats: ScanStats) -> None:
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


class PathFilter:
    """Exclude globs (rules' glob syntax: ``**`` spans directories; without a leading ``/`` a glob matches at
    any depth, so ``*.log`` is a file name and ``/var/cache`` one place), on the prefix-stripped path."""

    def __init__(self, patterns: Sequence[str]) -> None:
        regex = "|".join(f"(?:{glob_to_regex(p.rstrip('/') or '/')})" for p in patterns)
        self._re = re.compile(regex) if regex else None

    def excluded(self, path: str, prefix: str | None = None) -> bool:
        return self._re is not None and self._re.search(display_path(path, prefix)) is not None


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
) -> Iterator[tuple[str, os.stat_result | None]]:
    """Yield ``(path, lstat)`` for every regular file to read under the options' paths (or roots); the lstat
    is None unless ``file_stat`` asks for it (the type then comes from the directory entry)."""
    mounts = mounts if mounts is not None else MountTable.current()
    walker = Walker(options, stats, mounts, skip_ids or set(), should_stop, file_stat)
    for path, st, is_dir in start_points(options, stats, mounts):
        if is_dir:
            yield from walker.walk(path, st)
        else:
            yield path, st


def start_points(
    options: ScanOptions, stats: ScanStats, mounts: MountTable
) -> Iterator[tuple[str, os.stat_result, bool]]:
    """``(path, stat, is_directory)`` for each path to scan (or root), in order: named files, and the
    directories to walk (with the tmpfs mounts below a skipped pseudo tree as roots of their own)."""
    prefix = options.path_prefix
    starts = list(options.paths) if options.paths else [_prefixed(r, prefix) for r in options.roots]
    for start in starts:
        start = os.path.abspath(start)
        try:
            st = os.stat(start)  # a path the user named is followed even when it is a symlink
        except OSError as exc:
            os_error_skip(exc).count(stats)
            continue
        if stat.S_ISREG(st.st_mode):
            yield start, st, False
            continue
        if not stat.S_ISDIR(st.st_mode):
            stats.skipped["not-regular"] += 1
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
    """Depth-first with an explicit stack (no recursion limit), one directory fd open at a time.

    :meth:`walk` walks a whole tree; :meth:`list_dir` reads one directory (the scan's worker processes share
    a tree that way: each lists directories it is handed and hands back the subdirectories it found)."""

    def __init__(
        self,
        options: ScanOptions,
        stats: ScanStats,
        mounts: MountTable,
        skip_ids: set[tuple[int, int]],
        should_stop: Callable[[], bool] | None,
        file_stat: bool,
    ) -> None:
        self.options = options
        self.file_stat = file_stat or options.same_filesystem
        self.stats = stats
        self.mounts = mounts
        self.skip_ids = skip_ids
        self.should_stop = should_stop
        self.excl = PathFilter(options.excludes)
        self.seen_dirs: set[tuple[int, int]] = set()
        self.pseudo_paths = {_prefixed(p, options.path_prefix) for p in PSEUDO_PATHS}
        self.root_dev = 0
        self.entries_read = 0  # entries of the directory being listed read so far

    def walk(self, root: str, root_st: os.stat_result) -> Iterator[tuple[str, os.stat_result | None]]:
        ident = (root_st.st_dev, root_st.st_ino)
        if ident in self.seen_dirs:
            return
        self.seen_dirs.add(ident)
        self.root_dev = root_st.st_dev
        stack: list[tuple[str, int, int]] = [(root, root_st.st_dev, root_st.st_ino)]
        first = True
        while stack:
            if self.should_stop is not None and self.should_stop():
                return
            d, dev, _ino = stack.pop()
            # a root the user named may itself be a symlink; nothing below it is followed
            yield from self.list_dir(d, dev, stack, follow=first)
            first = False

    def list_dir(
        self, d: str, dev: int, subdirs: list[tuple[str, int, int]], *, follow: bool = False, skip: int = 0
    ) -> Iterator[tuple[str, os.stat_result | None]]:
        """The files of directory ``d`` to read; its subdirectories to walk are appended to ``subdirs`` as
        ``(path, st_dev, st_ino)``. The first ``skip`` entries are passed over (a listing resumed)."""
        self.entries_read = 0
        try:
            dir_fd = _open_dir(d, follow=follow or self.options.follow_symlinks)
        except OSError as exc:
            os_error_skip(exc).count(self.stats)
            return
        try:
            yield from self._entries(d, dev, dir_fd, subdirs, skip)
        finally:
            os.close(dir_fd)

    def _entries(
        self, d: str, dir_dev: int, dir_fd: int, stack: list[tuple[str, int, int]], skip: int
    ) -> Iterator[tuple[str, os.stat_result | None]]:
        options = self.options  # skips count into self.stats, which a worker swaps between its messages
        prefix = options.path_prefix
        in_sdk_cache = _is_sdk_cache_dir(d)
        base = d.rstrip("/") + "/"
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
                self.entries_read = seen
                if seen <= skip:
                    continue
                path = base + entry.name
                if not seen & 1023 and self.should_stop is not None and self.should_stop():
                    return  # a huge directory is not read to its end after a stop
                try:
                    # the entry's type from the directory (an lstat when the filesystem does not say): a regular
                    # file needs no stat here, the reader fstats what it opened
                    if not self.file_stat and entry.is_file(follow_symlinks=False):
                        if self.excl.excluded(path, prefix):
                            self.stats.skipped["excluded"] += 1
                        elif in_sdk_cache:
                            self.stats.skipped["host-role-credentials"] += 1
                        elif not self.skip_ids or (dir_dev, entry.inode()) not in self.skip_ids:
                            yield path, None
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    os_error_skip(exc).count(self.stats)
                    continue
                mode = st.st_mode
                if stat.S_ISLNK(mode):
                    if not options.follow_symlinks:
                        self.stats.skipped["symlink"] += 1
                        continue
                    try:
                        st = os.stat(path)
                    except OSError as exc:
                        self.stats.skipped["broken-symlink" if exc.errno in (errno.ENOENT, errno.ELOOP) else "symlink"] += 1
                        continue
                    mode = st.st_mode
                if self.excl.excluded(path, prefix):
                    self.stats.skipped["excluded"] += 1
                    continue
                if stat.S_ISDIR(mode):
                    reason = _dir_skip(path, st, self.root_dev, options, self.mounts, self.pseudo_paths)
                    if reason is None and (st.st_dev, st.st_ino) in self.seen_dirs:
                        reason = "symlink-loop" if options.follow_symlinks else "seen-directory"
                    if reason is not None:
                        self.stats.skipped[reason] += 1
                        continue
                    self.seen_dirs.add((st.st_dev, st.st_ino))
                    stack.append((path, st.st_dev, st.st_ino))
                elif stat.S_ISREG(mode):
                    if in_sdk_cache:
                        self.stats.skipped["host-role-credentials"] += 1
                    elif (st.st_dev, st.st_ino) in self.skip_ids:
                        continue  # already read by the aws-files source
                    elif options.same_filesystem and st.st_dev != self.root_dev:
                        self.stats.skipped["other-filesystem"] += 1  # a file bind-mounted from elsewhere
                    else:
                        yield path, st
                elif stat.S_ISFIFO(mode):
                    self.stats.skipped["fifo"] += 1
                elif stat.S_ISSOCK(mode):
                    self.stats.skipped["socket"] += 1
                elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                    self.stats.skipped["device"] += 1
                else:
                    self.stats.skipped["not-regular"] += 1


def _open_dir(path: str, *, follow: bool) -> int:
    """A directory fd opened O_NOATIME (reading a directory would update its atime) and, unless following,
    O_NOFOLLOW (a directory swapped for a symlink after the walk saw it is not entered)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        return os.open(path, flags | _O_NOATIME)
    except PermissionError as exc:
        if exc.errno != errno.EPERM or not _O_NOATIME:
            raise
        return os.open(path, flags)


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


def open_regular(path: str, *, follow: bool = False) -> tuple[int, os.stat_result]:
    """Open a file read-only without following a symlink, blocking on a FIFO or touching atime; raise Skip."""
    flags = _OPEN_FLAGS | (0 if follow else os.O_NOFOLLOW)
    try:
        try:
            fd = os.open(path, flags | _O_NOATIME)
        except PermissionError as exc:
            if exc.errno != errno.EPERM or not _O_NOATIME:
                raise
            fd = os.open(path, flags)  # O_NOATIME needs ownership or CAP_FOWNER
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

    def read(self, n: int) -> bytes:
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
    fd: int, kind: str, shown: str, size: int, detector: Detector, options: ScanOptions, stats: ScanStats
) -> list[Finding] | None:
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


class PartResult(NamedTuple):
    findings: list[Finding]  # line numbers counted from the part's first byte read (``lo``)
    lines_before: int  # newlines between ``lo`` and the part's start
    lines_in: int  # newlines in the part itself
    nbytes: int  # bytes of the part (the overlap read around it not counted)


def scan_part(
    path: str, start: int, end: int | None, detector: Detector, options: ScanOptions
) -> PartResult:
    """Ids at offsets ``[start, end)`` of a file (``end`` None: to its end), read with half the detector's
    overlap on each side so every pairing window is whole. Raises :class:`Skip`."""
    fd, fst = open_regular(path, follow=options.follow_symlinks)
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
        findings = detector.scan_stream(read, location=location, chunk_size=CHUNK_SIZE, base_offset=lo,
                                        min_offset=start, max_offset=end)
        return PartResult(findings, counts[0], counts[1], counts[2])
    except OSError as exc:
        raise os_error_skip(exc) from None
    finally:
        os.close(fd)


def scan_file(
    path: str,
    st: os.stat_result | None,
    detector: Detector,
    options: ScanOptions,
    stats: ScanStats,
    *,
    split_over: int | None = None,
) -> list[Finding] | SplitFile | None:
    """Scan one regular file (archives are opened, ~/.aws files parsed per profile).

    None when the file was not read (the reason is counted in ``stats``; nothing is raised). With
    ``split_over``, a plain (not sparse, not archive) file larger than that is not scanned: a
    :class:`SplitFile` says so, for parts of it to be scanned in parallel."""
    shown = display_path(path, options.path_prefix)
    if not detector.include_examples and detector.ruleset.is_ignored_path(shown):
        stats.skipped["ignored-path"] += 1  # vendored SDK example data (rules/ignore.yaml)
        return None
    try:
        fd, fst = open_regular(path, follow=options.follow_symlinks)
    except Skip as skip:
        skip.count(stats)
        return None
    try:
        if fst.st_size > options.max_file_size:
            stats.skipped["too-large"] += 1
            return None
        aws_kind = aws_files.aws_file_kind(path)
        if aws_kind is not None and fst.st_size <= aws_files.MAX_AWS_FILE:
            data = os.read(fd, aws_files.MAX_AWS_FILE + 1)
            stats.files_scanned += 1
            stats.bytes_scanned += len(data)
            return aws_files.scan_aws_text(data, shown, aws_kind, detector, stats)
        size = fst.st_size
        if _is_sparse(fst):
            reader = _FileReader(fd, size, limit=options.max_file_size, sparse=True)
            findings = detector.scan_stream(reader.read, location=Location(kind="file", path=shown),
                                            chunk_size=CHUNK_SIZE)
            stats.files_scanned += 1
            stats.bytes_scanned += reader.bytes
            return findings
        # one read holds a file up to CHUNK_SIZE (one byte more than its size tells whether it grew)
        want = min(size + 1, CHUNK_SIZE) if size else 65536
        head = os.read(fd, want)
        if options.archive_max_depth > 0 and len(head) >= 4:
            kind = archives.sniff(head)
            if kind is not None:
                found = _scan_archive(fd, kind, shown, size, detector, options, stats)
                if found is not None:
                    return found
        if split_over is not None and size > split_over and len(head) >= want:
            return SplitFile(size)
        if len(head) < want:  # the whole file
            # almost every file holds no key: its Location (~1 µs to build) is made only for findings
            findings = detector.scan(head, location=_FILE)
            if findings:
                findings = [dataclasses.replace(f, location=dataclasses.replace(f.location, path=shown))
                            for f in findings]
            nbytes = len(head)
        else:
            reader = _FileReader(fd, size, limit=options.max_file_size)
            os.lseek(fd, len(head), os.SEEK_SET)
            reader.bytes = len(head)
            findings = detector.scan_stream(
                archives.Prefixed(head, reader).read, location=Location(kind="file", path=shown),
                chunk_size=CHUNK_SIZE,
            )
            nbytes = reader.bytes
        stats.files_scanned += 1
        stats.bytes_scanned += nbytes
        return findings
    except OSError as exc:
        os_error_skip(exc).count(stats)
        return None
    finally:
        os.close(fd)
