"""One scan: process environments, every user's AWS files, then the files walk (in worker processes when asked).

Order matters: environments name extra AWS files; the AWS-files source records what it read so the walk does
not report the same file twice. The same key at the same place is reported once; the allowlist is applied last.

Worker processes are forked (they inherit the compiled detector). Without a file cache they share the walk:
each lists the directories it is handed and answers with findings, counts and subdirectories, so this process
neither walks nor sends lists of files; a file cache needs every file's outcome, so then this process walks and
sends batches of files. A plain file over 32 MiB met by a worker is scanned in parts, one per worker, each read
with half the detector's overlap beyond its edges, so one large file found late in the walk does not leave the
other workers idle. A :class:`keysweep.models.Secret` refuses pickling on purpose, so findings cross the pipe
back as ``(finding without secret, secret, token)`` tuples in memory only, never through a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as connection_wait
from typing import TYPE_CHECKING, Any, Protocol

from keysweep.errors import ConfigError, SourceError
from keysweep.models import Finding, Secret
from keysweep.sources import aws_files, filesystem, processes
from keysweep.sources.mounts import MountTable

if TYPE_CHECKING:
    from keysweep.allowlist import Allowlist
    from keysweep.detect import Detector
    from keysweep.sources.aws_files import AwsFile

SOURCES = ("files", "processes", "aws-files")
_BATCH_FILES = 128
_BATCH_BYTES = 16 * 1024 * 1024
_PROGRESS_EVERY = 0.25
_MAX_RESPAWNS = 32
_SPLIT_OVER = 32 * 1024 * 1024  # with workers, a larger plain file is scanned in parts, one per worker
_DIRS_PER_TASK = 16
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
    also knows whole directories (:class:`filesystem.Listings`) spares the walk a lookup per file."""

    def lookup(self, path: str, st: os.stat_result) -> list[Finding] | None: ...

    def store(self, path: str, st: os.stat_result, findings: list[Finding]) -> None: ...


def run_scan(
    options: ScanOptions,
    detector: Detector,
    *,
    file_cache: FileCache | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[ScanStats], None] | None = None,
) -> ScanResult:
    started = time.monotonic()
    stats = ScanStats()
    findings: list[Finding] = []
    named_files: list[AwsFile] = []
    stop = should_stop or (lambda: False)
    if "processes" in options.sources:
        with _source_guard("processes", stats):
            found, named_files = processes.scan_processes(detector, stats)
            stats.findings_by_source["processes"] += len(found)
            findings += found
    handled: set[tuple[int, int]] = set()
    if "aws-files" in options.sources and not stop():
        with _source_guard("aws-files", stats):
            homes = _aws_files_under(options) if options.paths else aws_files.home_files(options.path_prefix)
            files = homes + named_files
            found = aws_files.scan_aws_files(
                files, detector, options, stats, handled=handled, count_caches="files" not in options.sources
            )
            stats.findings_by_source["aws-files"] += len(found)
            findings += found
    if "files" in options.sources and not stop():
        walk = _FilesScan(options, detector, stats, file_cache, stop, progress)
        with _source_guard("files", stats):
            walk.run(handled)
        findings += walk.findings  # what was found before a failure still counts
    stats.interrupted = stop()
    findings = dedupe(findings)
    if options.allowlist is not None:
        findings, stats.suppressed = options.allowlist.apply(findings)
    stats.duration_seconds = time.monotonic() - started
    return ScanResult(findings=findings, stats=stats)


def _aws_files_under(options: ScanOptions) -> list[AwsFile]:
    """With PATHs, the AWS files source reads only what they hold: a named file as an AWS file (``config`` by
    its name, else credentials); in a directory D, ``D/.aws/*`` and ``D/*/.aws/*`` (a home, or a directory of
    homes such as /home), or ``D/*`` when D is itself an ``.aws`` directory."""
    out: list[AwsFile] = []
    for start in options.paths:
        start = os.path.abspath(start)
        if not os.path.isdir(start):
            kind = "aws-config" if os.path.basename(start) == "config" else "aws-credentials"
            out.append(aws_files.AwsFile(start, filesystem.display_path(start, options.path_prefix), kind))
            continue
        dirs = [start] if os.path.basename(start) == ".aws" else [os.path.join(start, ".aws")]
        if os.path.basename(start) != ".aws":
            with contextlib.suppress(OSError), os.scandir(start) as it:
                dirs += sorted(os.path.join(e.path, ".aws") for e in it if e.is_dir(follow_symlinks=False))
        for d in dirs:
            for base, kind in (("credentials", "aws-credentials"), ("config", "aws-config")):
                path = os.path.join(d, base)
                out.append(aws_files.AwsFile(path, filesystem.display_path(path, options.path_prefix), kind))
    return out


@contextlib.contextmanager
def _source_guard(name: str, stats: ScanStats) -> Iterator[None]:
    """A source that fails unexpectedly is counted (``source-failed``, path ``source:NAME``); the others run."""
    try:
        yield
    except Exception as exc:
        stats.fail("source-failed", f"source:{name}", exc)


def dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per key, secret and place (a place is a file, archive member, profile, variable of one
    executable/unit/container — not a line); an id-only finding yields to a paired one at the same place.
    Sorted by place for stable output."""
    best: dict[tuple[str, str, str | None], Finding] = {}
    for f in findings:
        k = (f.key_id, f.location.identity(), f.secret_fingerprint)
        old = best.get(k)
        if old is None or (f.has_session_token and not old.has_session_token):
            best[k] = f
    paired = {(k[0], k[1]) for k, f in best.items() if f.has_secret}
    out = [f for k, f in best.items() if f.has_secret or (k[0], k[1]) not in paired]
    out.sort(key=_order)
    return out


def _order(f: Finding) -> tuple[Any, ...]:
    loc = f.location
    return (loc.kind, loc.path or "", loc.member or "", loc.pid or 0, loc.profile or "", loc.line or 0, f.key_id)


# --- the files walk -----------------------------------------------------------------------------------------

_Exported = tuple[Finding, str | None, str | None]
_Item = tuple[filesystem.FileRef, os.stat_result | None]  # the lstat only when a FileCache needs it
_Part = tuple[filesystem.FileRef, os.stat_result | None, int, int, int | None]  # file, lstat, index, start, end
_PartDone = tuple[int, list[_Exported], int, int, int]  # index, findings, lines before, lines in, bytes
# what a worker sends back about a file, by path (a file to split carries its FileRef in the SplitFile)
_Outcome = tuple[str, os.stat_result | None, "list[_Exported] | filesystem.SplitFile | _PartDone | str | None"]
# a directory for a worker to list: the directory, its root's st_dev, entries to pass over (the rest of a
# listing a dead worker had begun)
_Dir = tuple[filesystem.Dir, int, int]


def _export(f: Finding) -> _Exported:
    return (
        f.without_secret(),
        f.secret.reveal() if f.secret else None,
        f.session_token.reveal() if f.session_token else None,
    )


def _import(t: _Exported) -> Finding:
    f, secret, token = t
    return dataclasses.replace(
        f, secret=Secret(secret) if secret is not None else None, session_token=Secret(token) if token else None
    )


def _scan_one(
    ref: filesystem.FileRef, st: os.stat_result | None, detector: Detector, options: ScanOptions,
    stats: ScanStats, dirs: filesystem.DirCache, split_over: int | None = None,
) -> list[Finding] | filesystem.SplitFile | None:
    try:
        return filesystem.scan_file(ref, st, detector, options, stats, dirs=dirs, split_over=split_over)
    except Exception as exc:  # a bug on one odd file must not end the sweep; it is counted with its place
        stats.fail("internal-error", filesystem.display_path(ref.path, options.path_prefix), exc)
        return None


class _FilesScan:
    def __init__(
        self,
        options: ScanOptions,
        detector: Detector,
        stats: ScanStats,
        cache: FileCache | None,
        stop: Callable[[], bool],
        progress: Callable[[ScanStats], None] | None,
    ) -> None:
        self.options = options
        self.detector = detector
        self.stats = stats
        self.cache = cache
        self.stop = stop
        self.progress = progress
        self.findings: list[Finding] = []
        self._last_progress = 0.0
        self._parts: dict[str, list[_PartDone | None]] = {}  # large files scanned in parts, by path
        self.dirs = filesystem.DirCache(follow=options.follow_symlinks)  # this process's directory fds

    def run(self, handled: set[tuple[int, int]]) -> list[Finding]:
        with self.dirs:
            self._run(handled)
        if self.progress is not None:
            self.progress(self.stats)
        return self.findings

    def _scan_here(self, items: Iterable[_Item]) -> None:
        for ref, st in items:
            self._done(ref.path, st, _scan_one(ref, st, self.detector, self.options, self.stats, self.dirs))

    def _run(self, handled: set[tuple[int, int]]) -> None:
        if self.options.worker_count > 1 and self.cache is None:
            small = self._probe(handled)
            if small is None:
                self._walk_in_workers(handled)
            else:
                self._scan_here(small)
            return
        batches = _batches(self._candidates(handled))
        first = next(batches, None)
        second = next(batches, None) if first is not None and self.options.worker_count > 1 else None
        if second is None:  # one process: asked for, or too few files to be worth forking
            self._scan_here(itertools.chain(first or (), itertools.chain.from_iterable(batches)))
        else:
            with _Pool(self.options.worker_count, self.detector, self.options) as pool:
                for outcomes, wstats in pool.run(itertools.chain([first, second], batches)):
                    self.stats.merge(wstats)
                    self._take(pool, outcomes)
                    self._tick()
                self.stats.errors.update(pool.lost)

    def _take(self, pool: _Pool, outcomes: Iterable[_Outcome]) -> None:
        """Record what the workers sent back: a file's findings, a part of a split file, or a file to split."""
        for path, st, exported in outcomes:
            if isinstance(exported, filesystem.SplitFile):
                pool.push(self._split(exported.ref, st, exported.size, self.options.worker_count))
            elif isinstance(exported, (tuple, str)):
                self._part_done(path, st, exported)
            else:
                self._done(path, st, None if exported is None else [_import(t) for t in exported])

    def _probe(self, handled: set[tuple[int, int]]) -> list[_Item] | None:
        """The whole walk when it yields at most one batch of files (not worth forking for), else None."""
        scratch = ScanStats()
        walk = filesystem.iter_files(self.options, scratch, skip_ids=handled, should_stop=self.stop, dirs=self.dirs)
        items = list(itertools.islice(walk, _BATCH_FILES + 1))
        walk.close()
        if len(items) > _BATCH_FILES:
            return None
        self.stats.merge(scratch)
        return items

    def _walk_in_workers(self, handled: set[tuple[int, int]]) -> None:
        """The workers share the walk: each lists the directories it is handed, reads their files and sends
        back only findings, counts and the subdirectories it found; this process keeps the stack of
        directories (one set of directories seen, for bind mounts and loops) and hands them out."""
        opts, stats = self.options, self.stats
        mounts = MountTable.current()
        stack: list[_Dir] = []
        named: list[_Item] = []
        seen: set[tuple[int, int]] = set()
        for path, st, is_dir in filesystem.start_points(opts, stats, mounts):
            if not is_dir:
                if st.st_size > opts.max_file_size:
                    stats.unread("too-large", filesystem.display_path(path, opts.path_prefix))
                else:
                    named.append((filesystem.FileRef.named(path, st), st))
            elif (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                stack.append((filesystem.Dir.root(path, st), st.st_dev, 0))
        stack.reverse()  # the first path first
        again = "symlink-loop" if opts.follow_symlinks else "seen-directory"
        with _Pool(self.options.worker_count, self.detector, self.options, handled, mounts) as pool:
            pool.push(named)
            for outcomes, wstats, subdirs in pool.walk(stack, self.stop):
                stats.merge(wstats)
                for sub, root_dev in subdirs:
                    if sub.ident in seen:
                        stats.skipped[again] += 1
                    else:
                        seen.add(sub.ident)
                        stack.append((sub, root_dev, 0))
                self._take(pool, outcomes)
                self._tick()
            stats.errors.update(pool.lost)

    def _candidates(self, handled: set[tuple[int, int]]) -> Iterator[_Item]:
        opts = self.options
        walk = filesystem.iter_files(
            opts, self.stats, skip_ids=handled, should_stop=self.stop, file_stat=self.cache is not None,
            dirs=self.dirs, listings=self.cache if isinstance(self.cache, filesystem.Listings) else None,
        )
        for ref, st in walk:
            if st is not None and st.st_size > opts.max_file_size:
                self.stats.unread("too-large", filesystem.display_path(ref.path, opts.path_prefix))
                continue
            if self.cache is not None and st is not None:
                cached = self._cached(ref, st)
                if cached is not None:
                    self.stats.files_cached += 1
                    self.stats.findings_by_source["files"] += len(cached)
                    self.findings += cached
                    continue
            yield ref, st
            self._tick()

    def _split(self, ref: filesystem.FileRef, st: os.stat_result | None, size: int, n: int) -> list[_Part]:
        """Parts of a large file, one per worker, each scanned with its neighbours' edges as context."""
        bounds = [size * i // n for i in range(n)]
        self._parts[ref.path] = [None] * n
        return [(ref, st, i, lo, bounds[i + 1] if i + 1 < n else None) for i, lo in enumerate(bounds)]

    def _part_done(self, path: str, st: os.stat_result | None, part: _PartDone | str) -> None:
        """A part of a split file; once all are in, line numbers are made absolute and the file is done."""
        parts = self._parts.get(path)
        if parts is None:
            return  # an earlier part failed: the file is already counted
        if isinstance(part, str):
            del self._parts[path]
            kind, reason = part.split(":", 1)
            if kind == "error":
                self.stats.fail(reason, filesystem.display_path(path, self.options.path_prefix))
            else:
                self.stats.skipped[reason] += 1
            return
        parts[part[0]] = part
        if any(p is None for p in parts):
            return
        del self._parts[path]
        found: dict[tuple[str, int | None], Finding] = {}
        lines = 0  # newlines before the current part
        for _i, exported, before, inside, nbytes in parts:  # type: ignore[misc]
            for t in exported:
                f = _import(t)
                if f.location.line is not None:
                    f = dataclasses.replace(
                        f, location=dataclasses.replace(f.location, line=f.location.line + lines - before)
                    )
                found.setdefault((f.key_id, f.location.line), f)
            lines += inside
            self.stats.bytes_scanned += nbytes
        self.stats.files_scanned += 1
        self._done(path, st, list(found.values()))

    def _done(self, path: str, st: os.stat_result | None, found: list[Finding] | None) -> None:
        if found is None:
            return
        self.findings += found
        self.stats.findings_by_source["files"] += len(found)
        if self.cache is not None and st is not None:
            try:
                self.cache.store(path, st, found)
            except Exception as exc:  # the file's findings stand; it is read again next time
                self.stats.fail("state-error", filesystem.display_path(path, self.options.path_prefix), exc)

    def _cached(self, ref: filesystem.FileRef, st: os.stat_result) -> list[Finding] | None:
        """The file cache's findings for an unchanged file; a cache that fails on one file is counted, and the
        file is read."""
        assert self.cache is not None
        try:
            return self.cache.lookup(ref.path, st)
        except Exception as exc:
            self.stats.fail("state-error", filesystem.display_path(ref.path, self.options.path_prefix), exc)
            return None

    def _tick(self) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self._last_progress >= _PROGRESS_EVERY:
            self._last_progress = now
            self.progress(self.stats)


def _batches(items: Iterator[_Item]) -> Iterator[list[_Item]]:
    batch: list[_Item] = []
    size = 0
    for item in items:
        batch.append(item)
        size += item[1].st_size if item[1] is not None else 0
        if len(batch) >= _BATCH_FILES or size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _worker(
    tasks: Connection, results: Connection, detector: Detector, options: ScanOptions,
    walker: filesystem.Walker, stopped: Any,
) -> None:
    """Answers each task with messages: ``("batch", outcomes, stats)`` for a batch of files or parts, and
    for directories ``("dirs", outcomes, stats, claim)`` each time it is about to read a group of files,
    and once more with ``claim`` None when the task is done. The outcomes and stats of a message are those
    of the group claimed by the message before, so a worker killed while reading loses only that group."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    while True:
        try:
            item = tasks.recv()
        except EOFError:
            return
        if item is None:
            return
        if isinstance(item, tuple):
            _walk_dirs(item[1], results, detector, options, walker, stopped)
            continue
        stats = ScanStats()
        out: list[_Outcome] = []
        for task in item:
            if len(task) == 5:  # a part of a large file
                out.append(_scan_part(task, detector, options, walker.dirs))
                continue
            ref, st = task
            found = _scan_one(ref, st, detector, options, stats, walker.dirs, split_over=_SPLIT_OVER)
            if isinstance(found, filesystem.SplitFile):
                out.append((ref.path, st, found))
            elif found or st is not None:  # without a stat (no FileCache) a file with no finding needs no answer
                out.append((ref.path, st, None if found is None else [_export(f) for f in found]))
        results.send(("batch", out, stats))


def _walk_dirs(
    dirs: list[_Dir], results: Connection, detector: Detector, options: ScanOptions,
    walker: filesystem.Walker, stopped: Any,
) -> None:
    """List ``dirs`` in turn, reading their files in groups of up to a batch (a group may span directories:
    one message per group, not per directory). Each claim names where the listing stands (directory index,
    entries read), so the rest can be listed again by another worker if this one dies."""
    out: list[_Outcome] = []
    walker.stats = ScanStats()
    subdirs: list[filesystem.Dir] = []
    found_in: list[tuple[filesystem.Dir, int]] = []  # subdirectories with their root's st_dev
    group: list[filesystem.FileRef] = []
    last = len(dirs) - 1
    for index, (d, root_dev, skip) in enumerate(dirs):
        if stopped.value:
            break
        walker.root_dev = root_dev
        listing = walker.list_dir(d, subdirs, skip=skip)
        while True:
            item = next(listing, None)
            if item is not None:
                group.append(item[0])
                if len(group) < _BATCH_FILES:
                    continue
            elif index < last and len(subdirs) + len(found_in) < _BATCH_FILES:
                break  # the next directory joins this group
            found_in += [(sub, root_dev) for sub in subdirs]
            subdirs.clear()
            if group or found_in:
                results.send(("dirs", out, walker.stats, (index, walker.entries_read, found_in, len(group))))
                out, walker.stats, found_in = [], ScanStats(), []
                for ref in group:
                    if stopped.value:
                        break
                    found = _scan_one(ref, None, detector, options, walker.stats, walker.dirs, split_over=_SPLIT_OVER)
                    if isinstance(found, filesystem.SplitFile):
                        out.append((ref.path, None, found))
                    elif found:
                        out.append((ref.path, None, [_export(f) for f in found]))
                group = []
            if item is None:
                break
        found_in += [(sub, root_dev) for sub in subdirs]
        subdirs.clear()
    results.send(("dirs", out, walker.stats, None))


def _scan_part(task: _Part, detector: Detector, options: ScanOptions, dirs: filesystem.DirCache) -> _Outcome:
    ref, st, index, start, end = task
    try:
        part = filesystem.scan_part(ref, start, end, detector, options, dirs)
    except filesystem.Skip as skip:
        return ref.path, st, ("error:" if skip.error else "skip:") + skip.reason
    except Exception:
        return ref.path, st, "error:internal-error"
    return ref.path, st, (index, [_export(f) for f in part.findings], part.lines_before, part.lines_in, part.nbytes)


class _Worker:
    def __init__(self, ctx: Any, args: tuple[Any, ...]) -> None:
        task_r, self.tasks = ctx.Pipe(duplex=False)
        self.results, result_w = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_worker, args=(task_r, result_w, *args), daemon=True)
        self.proc.start()
        task_r.close()
        result_w.close()
        self.batch: Any = None  # what it is working on: a list of files or parts, or ("dirs", directories)
        self.claim: tuple[int, int, int] | None = None  # directory index, entries read, files being read

    def close(self) -> None:
        self.tasks.close()
        self.results.close()


class _Pool:
    """Forked workers, each with its own pair of pipes and at most one task at a time.

    No lock is shared between processes (the stop flag is a plain shared byte), so a worker killed at any
    moment (the OOM killer) cannot leave the others stuck: what it was reading is counted as lost and a new
    worker takes its place (and the rest of its directories). The walk runs at most one batch ahead of the
    workers.
    """

    def __init__(
        self, n: int, detector: Detector, options: ScanOptions,
        skip_ids: set[tuple[int, int]] | None = None, mounts: MountTable | None = None,
    ) -> None:
        self._ctx = multiprocessing.get_context("fork")
        self._n = n
        self._stopped = self._ctx.RawValue("b", 0)
        walker = filesystem.Walker(options, ScanStats(), mounts or MountTable([]), skip_ids or set(), None, False)
        self._args = (detector, options, walker, self._stopped)
        self.workers: list[_Worker] = []
        self.lost: Counter[str] = Counter()
        self.respawned = 0
        self._urgent: list[list[Any]] = []  # batches handed out before the walk's next one
        self._requeue: list[_Dir] = []  # directories a dead worker had not finished

    def push(self, batch: list[Any]) -> None:
        """Hand out each task of ``batch`` (parts of a large file) on its own, before the walk's next batch."""
        self._urgent.extend([task] for task in batch)

    def _next(self, batches: Iterator[list[_Item]]) -> list[Any] | None:
        return self._urgent.pop(0) if self._urgent else next(batches, None)

    def __enter__(self) -> _Pool:
        self.workers = [_Worker(self._ctx, self._args) for _ in range(self._n)]
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.workers:
            try:
                w.tasks.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 2
        for w in self.workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.terminate()
                w.proc.join(1)
            w.close()

    def run(self, batches: Iterator[list[_Item]]) -> Iterator[tuple[list[_Outcome], ScanStats]]:
        # stopping is the walk's business (it checks should_stop): what it has yielded is still scanned
        pending = self._next(batches)
        while True:
            if pending is None:
                pending = self._next(batches)  # parts pushed while the walk had ended
            idle = [w for w in self.workers if w.batch is None]
            while pending is not None and idle:
                w = idle.pop()
                fresh = self._send(w, pending)
                if fresh is not None:
                    idle.append(fresh)
                    continue
                pending = self._next(batches)  # walk ahead while the workers read
            busy = [w for w in self.workers if w.batch is not None]
            if not busy and pending is None:
                return
            for _w, msg in self._collect(busy):
                yield msg[1], msg[2]

    def walk(
        self, stack: list[_Dir], stop: Callable[[], bool]
    ) -> Iterator[tuple[list[_Outcome], ScanStats, list[tuple[filesystem.Dir, int]]]]:
        """Hand out directories from ``stack`` (which the caller grows with the subdirectories each message
        names) and the pushed batches; yield ``(outcomes, stats, subdirectories with their root's st_dev)``."""
        while True:
            if not self._stopped.value and stop():
                self._stopped.value = 1
                stack.clear()
                self._requeue.clear()
            stack.extend(self._requeue)
            self._requeue.clear()
            idle = [w for w in self.workers if w.batch is None]
            for w in idle:
                if self._urgent:
                    task: Any = self._urgent.pop(0)
                elif stack:
                    share = max(1, min(_DIRS_PER_TASK, len(stack) // self._n))
                    task = ("dirs", stack[-share:])
                    del stack[-share:]
                else:
                    break
                if self._send(w, task) is not None:  # it had died: its replacement is idle next time
                    if isinstance(task, tuple):
                        stack.extend(task[1])
                    else:
                        self._urgent.insert(0, task)
            busy = [w for w in self.workers if w.batch is not None]
            if not busy:
                if stack or self._urgent:
                    continue
                return
            for w, msg in self._collect(busy):
                if msg[0] == "batch":
                    yield msg[1], msg[2], []
                    continue
                claim = msg[3]
                w.claim = None if claim is None else (claim[0], claim[1], claim[3])
                if claim is None:
                    w.batch = None
                yield msg[1], msg[2], ([] if self._stopped.value or claim is None else claim[2])

    def _send(self, w: _Worker, task: Any) -> _Worker | None:
        """None once ``w`` has the task; if it had died while idle, the new worker taking its place."""
        try:
            w.tasks.send(task)
        except OSError:
            return self._replace(w)
        w.batch = task
        w.claim = None
        return None

    def _collect(self, busy: list[_Worker]) -> Iterator[tuple[_Worker, tuple[Any, ...]]]:
        by_conn = {w.results: w for w in busy}
        by_sentinel = {w.proc.sentinel: w for w in busy}
        ready = connection_wait([*by_conn, *by_sentinel])
        for obj in ready:
            w = by_conn.get(obj)  # type: ignore[call-overload]
            if w is None:
                continue
            while w.batch is not None:
                try:
                    msg = w.results.recv()
                except (EOFError, OSError):
                    break  # it died; its sentinel says so
                if msg[0] == "batch":
                    w.batch = None
                yield w, msg
                if not w.results.poll():
                    break
        for obj in ready:
            w = by_sentinel.get(obj)  # type: ignore[call-overload]
            if w is not None and not w.proc.is_alive():
                while w.batch is not None and w.results.poll():  # what it sent before it died still counts
                    try:
                        msg = w.results.recv()
                    except (EOFError, OSError):
                        break
                    if msg[0] == "batch":
                        w.batch = None
                    yield w, msg
                self._replace(w)

    def _replace(self, dead: _Worker) -> _Worker:
        """A worker that died (killed for memory, say) loses what it was reading: counted; a new worker takes
        its place, and the directories it had not finished go back on the stack."""
        if isinstance(dead.batch, tuple):
            dirs = dead.batch[1]
            if dead.claim is None:
                self._requeue.extend(dirs)
            else:
                index, entries_read, files = dead.claim
                self.lost["worker-crashed"] += files
                self._requeue.append((dirs[index][0], dirs[index][1], entries_read))
                self._requeue.extend(dirs[index + 1 :])
        elif dead.batch is not None:
            self.lost["worker-crashed"] += len(dead.batch)
        dead.batch = None
        self.respawned += 1
        if self.respawned > _MAX_RESPAWNS:
            raise SourceError(f"scan workers keep dying ({self.respawned} replaced); see the system log")
        dead.proc.join(0)
        dead.close()
        fresh = _Worker(self._ctx, self._args)
        self.workers[self.workers.index(dead)] = fresh
        return fresh
