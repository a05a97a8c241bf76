"""What a scan is asked to do and what it counts: the types every source and the scan engine share.

Below the sources (they import these; nothing here imports a source): :class:`ScanOptions` (what to scan and
how), :class:`ScanStats` (every count and skip reason), :class:`ScanResult`, the :class:`FileCache` an
incremental scan plugs in, and :class:`Source`, the one interface each source implements.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Protocol, runtime_checkable

from keysweep.errors import ConfigError
from keysweep.models import Finding

if TYPE_CHECKING:
    from keysweep.allowlist import Allowlist
    from keysweep.detect import Detector

SOURCES = ("files", "processes", "aws-files")
_MAX_ERROR_DETAILS = 100  # places of errors kept in the stats (the counts are complete)


@dataclass(frozen=True)
class ScanOptions:
    """What to scan and how. ``paths`` (files or directories) win over ``roots`` (the host's configured
    roots, used when no path is given); ``path_prefix`` is where the host's filesystem is mounted (``/host``
    in a container) — walked under it, reported without it. ``workers``: 1 scans in this process, 0 uses one
    worker process per CPU."""

    paths: tuple[str, ...] = ()
    roots: tuple[str, ...] = ("/",)
    sources: tuple[str, ...] = SOURCES
    excludes: tuple[str, ...] = ()
    max_file_size: int = 256 * 1024 * 1024
    workers: int = 1
    archive_max_depth: int = 3
    archive_max_bytes: int = 512 * 1024 * 1024
    archive_max_ratio: float = 100.0
    same_filesystem: bool = False
    skip_network_fs: bool = False
    allowlist: Allowlist | None = None
    follow_symlinks: bool = False
    path_prefix: str | None = None
    follow_named: bool = True  # a path the operator named is followed even if a symlink; a watcher's event's is not

    def __post_init__(self) -> None:
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown:
            raise ConfigError(f"source {unknown[0]!r}: unknown (choose from {', '.join(SOURCES)})")
        if self.workers < 0:
            raise ConfigError(f"workers: must be 0 (one per CPU) or more, got {self.workers}")
        if self.max_file_size < 0 or self.archive_max_depth < 0 or self.archive_max_bytes < 0:
            raise ConfigError("max_file_size, archive_max_depth and archive_max_bytes must not be negative")
        if self.path_prefix is not None:
            prefix = self.path_prefix.rstrip("/")
            object.__setattr__(self, "path_prefix", prefix if prefix else None)

    @property
    def worker_count(self) -> int:
        if self.workers:
            return self.workers
        try:
            return len(os.sched_getaffinity(0))  # the CPUs this process may use (containers, taskset)
        except (AttributeError, OSError):
            return os.cpu_count() or 1


def _counter() -> Counter[str]:
    return Counter()


@dataclass
class ScanStats:
    files_scanned: int = 0
    bytes_scanned: int = 0
    files_cached: int = 0  # unchanged since the last scan (FileCache hit): not read again
    archives_scanned: int = 0
    archive_members_scanned: int = 0
    processes_scanned: int = 0
    aws_files_scanned: int = 0
    skipped: Counter[str] = field(default_factory=_counter)
    errors: Counter[str] = field(default_factory=_counter)
    findings_by_source: Counter[str] = field(default_factory=_counter)
    profiles: Counter[str] = field(default_factory=_counter)  # AWS profiles by kind: static, sso, role_arn, …
    suppressed: int = 0  # findings the allowlist accepted
    duration_seconds: float = 0.0
    interrupted: bool = False
    # where the first errors happened: {"reason", "path" (a readable path, or "source:NAME"), and for an exception
    # "error" (its type) and "at" (file:line where it was raised)}
    error_details: list[dict[str, str]] = field(default_factory=list)
    # files a limit left unread or partly read: {"reason", "path"}, the first ones only (the counts are complete)
    unread_details: list[dict[str, str]] = field(default_factory=list)

    def fail(self, reason: str, where: str, exc: BaseException | None = None) -> None:
        """Count an error by reason and keep its place (while few are kept). Only the exception's type is kept:
        its message may quote the bytes being scanned."""
        self.errors[reason] += 1
        if len(self.error_details) < _MAX_ERROR_DETAILS:
            detail = {"reason": reason, "path": where}
            if exc is not None:
                detail["error"] = type(exc).__name__
                frames = traceback.extract_tb(exc.__traceback__)
                if frames:  # where it was raised, for a bug report
                    detail["at"] = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}"
            self.error_details.append(detail)

    def unread(self, reason: str, where: str) -> None:
        """Count a file a limit left unread or partly read (too large, an archive's budget) and keep its place."""
        self.skipped[reason] += 1
        if len(self.unread_details) < _MAX_ERROR_DETAILS:
            self.unread_details.append({"reason": reason, "path": where})

    def merge(self, other: ScanStats) -> None:
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, Counter):
                mine.update(theirs)
            elif isinstance(mine, list):
                mine.extend(theirs[: max(0, _MAX_ERROR_DETAILS - len(mine))])
            elif isinstance(mine, int) and not isinstance(mine, bool):
                setattr(self, f.name, mine + theirs)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in ("skipped", "errors", "findings_by_source", "profiles"):
            d[name] = dict(sorted(getattr(self, name).items()))
        d["duration_seconds"] = round(self.duration_seconds, 3)
        return d


@dataclass
class ScanResult:
    findings: list[Finding]
    stats: ScanStats


class FileCache(Protocol):
    """Incremental scanning: findings of files unchanged since they were last read (keysweep.state). One that
    also knows whole directories (:class:`DirectoryCache`) lets the process that reads a directory's files decide
    which are unchanged."""

    def lookup(self, path: str, st: os.stat_result) -> list[Finding] | None: ...

    def store(self, path: str, st: os.stat_result, findings: list[Finding]) -> None: ...


# what a directory cache holds per file: (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns), and its findings as
# stored (None: none)
Markers = tuple[int, int, int, int, int]


def markers(st: os.stat_result) -> Markers:
    """A file's markers as the directory cache stores and compares them."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _coarse_tick_ns() -> int:
    """The resolution of the clock the kernel stamps files with (``CLOCK_REALTIME_COARSE``: one jiffy); 0 where
    it cannot be asked."""
    clock = getattr(time, "CLOCK_REALTIME_COARSE", 5 if sys.platform.startswith("linux") else None)
    if clock is None:
        return 0
    try:
        return int(time.clock_getres(clock) * 1e9)
    except OSError:
        return 0


# A file's change is stamped with the coarse realtime clock (kernels before 6.13: one tick of 1-10 ms, up to a tick
# behind time.time_ns()), so a file rewritten in place, same size, within the tick of its last change keeps every
# marker: read in that tick, its markers would pass it as unchanged for good ("racily clean", as git says). Its
# ctime must be older than the moment it was read by more than this margin for its markers to be recorded.
RACY_MARGIN_NS = max(2 * _coarse_tick_ns(), 20_000_000)
# a filesystem keeping whole seconds (ext4 with 128-byte inodes; FAT: two) leaves a ctime as it was for up to 2 s
_WHOLE_SECONDS_MARGIN_NS = 2_000_000_000 + RACY_MARGIN_NS
UNMATCHED_SIZE = -1  # the size recorded for a file read while racy: no stat has it, so it is read again


def settled(st: os.stat_result, read_from: int) -> bool:
    """Whether a file stat'ed after ``read_from`` (``time.time_ns()`` taken before it was opened) may be
    recorded as unchanged by its markers: its ctime is old enough that any later change gives it a new one. The
    ctime alone decides: every write or ``utime`` sets it to the current time (the mtime can be set to any time)."""
    ctime = st.st_ctime_ns
    if ctime >= read_from - RACY_MARGIN_NS:
        return False
    return ctime % 1_000_000_000 != 0 or ctime < read_from - _WHOLE_SECONDS_MARGIN_NS


class ListingView(Protocol):
    """A read-only view of a :class:`DirectoryCache`, used by whichever process reads a directory's files (a
    worker opens a connection of its own): a directory's number and digest, its files' stored markers."""

    sweep_no: int  # the sweep the rows written now belong to
    empty: bool  # it knew no directory when it was made (a first sweep): nothing to look up

    def digests(self) -> set[bytes] | None:
        """Every still valid directory digest (each covers its directory's path); None when there are too many
        to hold: :meth:`directory` then answers one directory at a time."""

    def directory(self, path: str) -> tuple[int, bytes | None] | None:
        """``(number, digest)`` of a known directory (digest None when none is still valid); None when unknown."""

    def files(self, ident: int, names: list[bytes] | None) -> dict[bytes, tuple[Markers, str | None]]:
        """The still valid markers and stored findings of directory ``ident``'s files (of ``names``, or all)."""

    def encode(self, findings: list[Finding]) -> str | None:
        """Findings as the cache stores them (never a secret); None for none."""

    def close(self) -> None: ...


# a file row as a directory's reader sends it back: (name as bytes, *markers, sweep number, findings as stored)
FileRow = tuple[bytes, int, int, int, int, int, int, Optional[str]]


@runtime_checkable
class DirectoryCache(Protocol):
    """A file cache that also knows whole directories (keysweep.state): the files of a directory are handed with
    a :class:`ListingView` to the process that reads them, which sends back the rows to store."""

    def listing_view(self) -> ListingView: ...

    def record_listing(
        self, directory: str, ident: int | None, rows: list[FileRow], digest: bytes | None, *, whole: bool, cached: int
    ) -> None:
        """Store the rows of the files read in ``directory``; with ``whole``, its digest (None: none valid)."""

    def stored_findings(self, payload: str) -> list[Finding] | None:
        """The findings of an unchanged file, as stored; None when it must be read again (a secret to verify
        again, a damaged row)."""


@dataclass
class ScanContext:
    """One scan as its sources see it: what to scan, the detector, where to count, and what the sources tell
    each other (files named by process environments for the AWS-files source; the files that source read, by
    ``(st_dev, st_ino)``, for the files walk not to report again)."""

    options: ScanOptions
    detector: Detector
    stats: ScanStats
    should_stop: Callable[[], bool]
    file_cache: FileCache | None = None
    progress: Callable[[ScanStats], None] | None = None
    named_files: list[Any] = field(default_factory=list)  # keysweep.sources.aws_files.AwsFile (a layer above)
    handled: set[tuple[int, int]] = field(default_factory=set)


class Source(Protocol):
    """A source of findings (files, process environments, AWS files …). ``scan`` yields each finding as it is
    found and counts everything else (what it read, skipped and why, failed) into ``ctx.stats``; a finding
    yielded before a failure stands."""

    name: str

    def scan(self, ctx: ScanContext) -> Iterator[Finding]: ...
