"""The files source's engine: this process walks, worker processes read.

The walk (:func:`keysweep.sources.filesystem.iter_files`) runs here, consults the :class:`FileCache` for files
unchanged since the last scan, and hands the rest out in batches (up to 128 files or 16 MiB). Workers are forked:
they inherit the compiled detector, and open each file relative to a directory fd of their own, verified as the
walk's (:class:`keysweep.sources.filesystem.DirCache`). Each has its own pair of pipes
and one task at a time, and nothing is locked across processes, so a worker killed at any moment (the OOM
killer) loses only the task it held: its files are counted as ``worker-crashed`` with their places, a new worker
takes its place, and every other file's findings stand. A plain file over 32 MiB met by a worker is scanned in
parts, one per worker, each read with half the detector's overlap beyond its edges, so one large file found late
in the walk does not leave the other workers idle. A scan that finds at most one batch of files, or is asked for
one worker, reads in this process.

Parent and workers speak in the small frozen dataclasses below. A :class:`keysweep.models.Secret` refuses
pickling on purpose, so a finding crosses the pipe as an :class:`Exported` (finding without its secret, the
secret and token as plain strings), in memory only, never through a file.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as connection_wait
from typing import TYPE_CHECKING, Any, Union

from keysweep.errors import SourceError
from keysweep.models import Finding, Secret
from keysweep.scan_types import FileCache, ScanContext, ScanOptions, ScanStats
from keysweep.sources import filesystem

if TYPE_CHECKING:
    from keysweep.detect import Detector

BATCH_FILES = 128
BATCH_BYTES = 16 * 1024 * 1024
SPLIT_OVER = 32 * 1024 * 1024  # with workers, a larger plain file is scanned in parts, one per worker
PROGRESS_EVERY = 0.25
MAX_RESPAWNS = 32

# a file to read, with its lstat when a FileCache needs it (Union: a runtime alias, and Python 3.9 has no `|` there)
Item = tuple[filesystem.FileRef, Union[os.stat_result, None]]  # noqa: UP007


# --- the protocol -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    """A finding as it crosses the pipe: without its secrets, which travel beside it as plain strings."""

    finding: Finding
    secret: str | None
    token: str | None

    @classmethod
    def of(cls, f: Finding) -> Exported:
        return cls(
            f.without_secret(),
            f.secret.reveal() if f.secret else None,
            f.session_token.reveal() if f.session_token else None,
        )

    def restore(self) -> Finding:
        return dataclasses.replace(
            self.finding,
            secret=Secret(self.secret) if self.secret is not None else None,
            session_token=Secret(self.token) if self.token else None,
        )


@dataclass(frozen=True)
class ReadFiles:
    """Task: read these files; ``answer_all``: answer for each file, not only those with findings (a file cache
    needs every outcome)."""

    files: list[Item]
    answer_all: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as runs of files of one directory: the directory once, then each file's name and inode (no
        object per file; its path is the directory's joined with its name), the others as they are."""
        runs: list[Any] = []
        names: list[str] = []
        inos: list[int] = []
        for item in self.files:
            ref, st = item
            d = ref.dir
            if d is None or st is not None or ref.dev is not None or ref.path != _base(d) + ref.name:
                runs.append(item)
                continue
            if not runs or runs[-1][0] is not d:
                names, inos = [], []
                runs.append((d, names, inos))
            names.append(ref.name)
            inos.append(ref.ino)
        return _unpack, (runs, self.answer_all)


def _base(d: filesystem.Dir) -> str:
    return d.path.rstrip("/") + "/"


def _unpack(runs: list[Any], answer_all: bool) -> ReadFiles:
    files: list[Item] = []
    new, ref = tuple.__new__, filesystem.FileRef  # FileRef._make without a call per file
    for run in runs:
        if len(run) == 2:  # an item as it was
            files.append(run)
            continue
        d, names, inos = run
        base = _base(d)
        files += [(new(ref, (base + name, d, name, None, ino)), None) for name, ino in zip(names, inos)]
    return ReadFiles(files, answer_all)


@dataclass(frozen=True)
class ReadPart:
    """Task: read bytes ``[start, end)`` of a file split in parts (``end`` None: to its end)."""

    ref: filesystem.FileRef
    st: os.stat_result | None
    index: int
    start: int
    end: int | None


@dataclass(frozen=True)
class FileDone:
    """A file read: its findings (None: not read, the reason counted in the reply's stats)."""

    path: str
    st: os.stat_result | None
    findings: list[Exported] | None


@dataclass(frozen=True)
class SplitMe:
    """A plain file too large for one worker: to be split in parts (:class:`ReadPart`)."""

    path: str
    st: os.stat_result | None
    ref: filesystem.FileRef
    size: int


@dataclass(frozen=True)
class PartDone:
    """One part of a split file: findings with lines counted from the part's first byte read."""

    path: str
    st: os.stat_result | None
    index: int
    findings: list[Exported]
    lines_before: int  # newlines read before the part's start (its leading overlap)
    lines_in: int  # newlines in the part itself
    nbytes: int


@dataclass(frozen=True)
class PartFailed:
    """A part that could not be read: the whole file is counted as skipped or failed, by ``reason``."""

    path: str
    st: os.stat_result | None
    reason: str
    error: bool


Task = Union[ReadFiles, ReadPart]  # noqa: UP007
Outcome = Union[FileDone, SplitMe, PartDone, PartFailed]  # noqa: UP007


@dataclass(frozen=True)
class Reply:
    """A worker's answer to one task: what became of each file or part, and the counts of the work."""

    outcomes: list[Outcome]
    stats: ScanStats


# --- the worker side ----------------------------------------------------------------------------------------


def _scan_one(
    ref: filesystem.FileRef,
    st: os.stat_result | None,
    detector: Detector,
    options: ScanOptions,
    stats: ScanStats,
    dirs: filesystem.DirCache,
    split_over: int | None = None,
) -> list[Finding] | filesystem.SplitFile | None:
    try:
        return filesystem.scan_file(ref, st, detector, options, stats, dirs=dirs, split_over=split_over)
    except Exception as exc:  # a bug on one odd file must not end the sweep; it is counted with its place
        stats.fail("internal-error", filesystem.display_path(ref.path, options.path_prefix), exc)
        return None


def _read_files(task: ReadFiles, detector: Detector, options: ScanOptions, dirs: filesystem.DirCache) -> Reply:
    stats = ScanStats()
    out: list[Outcome] = []
    for ref, st in task.files:
        found = _scan_one(ref, st, detector, options, stats, dirs, split_over=SPLIT_OVER)
        if isinstance(found, filesystem.SplitFile):
            out.append(SplitMe(ref.path, st, found.ref, found.size))
        elif found or st is not None or task.answer_all:  # without a FileCache, no finding needs no answer
            out.append(FileDone(ref.path, st, None if found is None else [Exported.of(f) for f in found]))
    return Reply(out, stats)


def _read_part(task: ReadPart, detector: Detector, options: ScanOptions, dirs: filesystem.DirCache) -> Reply:
    path, st = task.ref.path, task.st
    try:
        part = filesystem.scan_part(task.ref, task.start, task.end, detector, options, dirs)
    except filesystem.Skip as skip:
        return Reply([PartFailed(path, st, skip.reason, skip.error)], ScanStats())
    except Exception:
        return Reply([PartFailed(path, st, "internal-error", True)], ScanStats())
    found = [Exported.of(f) for f in part.findings]
    return Reply([PartDone(path, st, task.index, found, part.lines_before, part.lines_in, part.nbytes)], ScanStats())


def _worker_main(
    tasks: Connection, results: Connection, detector: Detector, options: ScanOptions, dirs: filesystem.DirCache
) -> None:
    """Answer each task with one :class:`Reply` until the pipe closes or None arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    while True:
        try:
            task = tasks.recv()
        except EOFError:
            return
        if task is None:
            return
        if isinstance(task, ReadPart):
            results.send(_read_part(task, detector, options, dirs))
        else:
            results.send(_read_files(task, detector, options, dirs))


# --- the parent side ----------------------------------------------------------------------------------------


class _Worker:
    def __init__(self, ctx: Any, args: tuple[Any, ...]) -> None:
        task_r, self.tasks = ctx.Pipe(duplex=False)
        self.results, result_w = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_worker_main, args=(task_r, result_w, *args), daemon=True)
        self.proc.start()
        task_r.close()
        result_w.close()
        self.task: Task | None = None  # what it is working on

    def close(self) -> None:
        self.tasks.close()
        self.results.close()


class Pool:
    """Forked workers, each with its own pair of pipes and at most one task at a time.

    No lock is shared between processes, so a worker killed at any moment cannot leave the others stuck: the
    files of the task it held are listed in :attr:`lost` and a new worker takes its place. The walk runs at
    most one batch ahead of the workers."""

    def __init__(self, n: int, detector: Detector, options: ScanOptions) -> None:
        self._ctx = multiprocessing.get_context("fork")
        self._n = n
        self._args = (detector, options, filesystem.DirCache(follow=options.follow_symlinks))
        self.workers: list[_Worker] = []
        self.lost: list[str] = []  # paths of the files a dead worker was reading
        self.respawned = 0
        self._urgent: list[Task] = []  # parts of split files, handed out before the walk's next batch

    def push(self, tasks: Iterable[Task]) -> None:
        self._urgent.extend(tasks)

    def __enter__(self) -> Pool:
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

    def _next(self, batches: Iterator[ReadFiles]) -> Task | None:
        return self._urgent.pop(0) if self._urgent else next(batches, None)

    def run(self, batches: Iterator[ReadFiles]) -> Iterator[Reply]:
        """Hand out the pushed parts and the walk's batches; yield each reply. Stopping is the walk's business
        (it checks should_stop): what it has yielded is still read."""
        pending = self._next(batches)
        while True:
            if pending is None:
                pending = self._next(batches)  # parts pushed while the walk had ended
            idle = [w for w in self.workers if w.task is None]
            while pending is not None and idle:
                w = idle.pop()
                fresh = self._send(w, pending)
                if fresh is not None:
                    idle.append(fresh)
                    continue
                pending = self._next(batches)  # walk ahead while the workers read
            busy = [w for w in self.workers if w.task is not None]
            if not busy and pending is None:
                return
            yield from self._collect(busy)

    def _send(self, w: _Worker, task: Task) -> _Worker | None:
        """None once ``w`` has the task; if it had died while idle, the new worker taking its place."""
        try:
            w.tasks.send(task)
        except OSError:
            return self._replace(w)
        w.task = task
        return None

    def _collect(self, busy: list[_Worker]) -> Iterator[Reply]:
        by_conn = {w.results: w for w in busy}
        by_sentinel = {w.proc.sentinel: w for w in busy}
        ready = connection_wait([*by_conn, *by_sentinel])
        for obj in ready:
            w = by_conn.get(obj)  # type: ignore[call-overload]
            if w is not None and w.task is not None:
                try:
                    reply = w.results.recv()
                except (EOFError, OSError):
                    continue  # it died; its sentinel says so
                w.task = None
                yield reply
        for obj in ready:
            w = by_sentinel.get(obj)  # type: ignore[call-overload]
            if w is not None and not w.proc.is_alive():
                if w.task is not None and w.results.poll():  # what it sent before it died still counts
                    try:
                        reply = w.results.recv()
                        w.task = None
                        yield reply
                    except (EOFError, OSError):
                        pass
                self._replace(w)

    def _replace(self, dead: _Worker) -> _Worker:
        """A worker that died (killed for memory, say) loses what it was reading: listed in :attr:`lost`; a new
        worker takes its place."""
        task = dead.task
        if isinstance(task, ReadFiles):
            self.lost += [ref.path for ref, _ in task.files]
        elif isinstance(task, ReadPart):
            self.lost.append(task.ref.path)
        dead.task = None
        self.respawned += 1
        if self.respawned > MAX_RESPAWNS:
            raise SourceError(f"scan workers keep dying ({self.respawned} replaced); see the system log")
        dead.proc.join(0)
        dead.close()
        fresh = _Worker(self._ctx, self._args)
        self.workers[self.workers.index(dead)] = fresh
        return fresh


def _batches(items: Iterator[Item]) -> Iterator[ReadFiles]:
    batch: list[Item] = []
    size = 0
    for item in items:
        batch.append(item)
        size += item[1].st_size if item[1] is not None else 0
        if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
            yield ReadFiles(batch)
            batch, size = [], 0
    if batch:
        yield ReadFiles(batch)


class FilesScan:
    """One walk of the files source: reads in this process or hands batches to a :class:`Pool`; findings are
    yielded as they come in."""

    def __init__(self, ctx: ScanContext) -> None:
        self.options = ctx.options
        self.detector = ctx.detector
        self.stats = ctx.stats
        self.cache: FileCache | None = ctx.file_cache
        self.stop = ctx.should_stop
        self.progress = ctx.progress
        self.handled = ctx.handled
        self._last_progress = 0.0
        self._parts: dict[str, list[PartDone | None]] = {}  # large files scanned in parts, by path
        self._from_cache: list[Finding] = []  # findings of unchanged files, not yet yielded
        self._stat_of: dict[str, os.stat_result] = {}  # the walk's stat of each file a worker holds (file cache)
        self.dirs = filesystem.DirCache(follow=self.options.follow_symlinks)  # this process's directory fds

    def run(self) -> Iterator[Finding]:
        with self.dirs:
            yield from self._run()
        if self.progress is not None:
            self.progress(self.stats)

    def _run(self) -> Iterator[Finding]:
        batches = _batches(self._candidates())
        first = next(batches, None)
        second = next(batches, None) if first is not None and self.options.worker_count > 1 else None
        if second is None:  # one process: asked for, or too few files to be worth forking
            rest = itertools.chain.from_iterable(b.files for b in batches)
            for ref, st in itertools.chain(first.files if first else (), rest):
                yield from self._drain()
                found = _scan_one(ref, st, self.detector, self.options, self.stats, self.dirs)
                assert not isinstance(found, filesystem.SplitFile)  # only with split_over
                yield from self._done(ref.path, st, found)
            yield from self._drain()
            return
        assert first is not None
        with Pool(self.options.worker_count, self.detector, self.options) as pool:
            for reply in pool.run(self._sent(itertools.chain([first, second], batches))):
                self.stats.merge(reply.stats)
                for outcome in reply.outcomes:
                    yield from self._take(pool, outcome)
                yield from self._drain()
                self._tick()
            yield from self._drain()
            for path in pool.lost:
                self.stats.fail("worker-crashed", filesystem.display_path(path, self.options.path_prefix))

    def _sent(self, batches: Iterator[ReadFiles]) -> Iterator[ReadFiles]:
        """With a file cache, batches go to the workers without the files' stats (pickling an ``os.stat_result``
        both ways cost more than reading a small file): each is kept here until its file's outcome is back."""
        for batch in batches:
            if self.cache is None:
                yield batch
                continue
            for ref, st in batch.files:
                if st is not None:
                    self._stat_of[ref.path] = st
            yield ReadFiles([(ref, None) for ref, _st in batch.files], answer_all=True)

    def _take(self, pool: Pool, outcome: Outcome) -> Iterator[Finding]:
        """Record what a worker sent back: a file's findings, a part of a split file, or a file to split."""
        if isinstance(outcome, FileDone):
            found = None if outcome.findings is None else [e.restore() for e in outcome.findings]
            st = outcome.st if outcome.st is not None else self._stat_of.pop(outcome.path, None)
            yield from self._done(outcome.path, st, found)
        elif isinstance(outcome, SplitMe):
            if outcome.st is None and outcome.path in self._stat_of:
                outcome = dataclasses.replace(outcome, st=self._stat_of.pop(outcome.path))
            pool.push(self._split(outcome, self.options.worker_count))
        else:
            yield from self._part_done(outcome)

    def _candidates(self) -> Iterator[Item]:
        opts = self.options
        walk = filesystem.iter_files(
            opts,
            self.stats,
            skip_ids=self.handled,
            should_stop=self.stop,
            file_stat=self.cache is not None,
            dirs=self.dirs,
            listings=self.cache if isinstance(self.cache, filesystem.Listings) else None,
        )
        for ref, st in walk:
            if st is not None and st.st_size > opts.max_file_size:
                self.stats.unread("too-large", filesystem.display_path(ref.path, opts.path_prefix))
                continue
            if self.cache is not None and st is not None:
                cached = self._cached(ref, st)
                if cached is not None:
                    self.stats.files_cached += 1
                    self._from_cache += cached
                    continue
            yield ref, st
            self._tick()

    def _drain(self) -> list[Finding]:
        """The findings the file cache gave for unchanged files since the last call."""
        out, self._from_cache = self._from_cache, []
        return out

    def _split(self, big: SplitMe, n: int) -> list[Task]:
        """Parts of a large file, one per worker, each scanned with its neighbours' edges as context."""
        bounds = [big.size * i // n for i in range(n)]
        self._parts[big.path] = [None] * n
        return [ReadPart(big.ref, big.st, i, lo, bounds[i + 1] if i + 1 < n else None) for i, lo in enumerate(bounds)]

    def _part_done(self, part: PartDone | PartFailed) -> Iterator[Finding]:
        """A part of a split file; once all are in, line numbers are made absolute and the file is done."""
        parts = self._parts.get(part.path)
        if parts is None:
            return  # an earlier part failed: the file is already counted
        if isinstance(part, PartFailed):
            del self._parts[part.path]
            if part.error:
                self.stats.fail(part.reason, filesystem.display_path(part.path, self.options.path_prefix))
            else:
                self.stats.skipped[part.reason] += 1
            return
        parts[part.index] = part
        if any(p is None for p in parts):
            return
        del self._parts[part.path]
        found: dict[tuple[str, int | None], Finding] = {}
        lines = 0  # newlines before the current part
        for p in parts:
            assert p is not None
            for e in p.findings:
                f = e.restore()
                if f.location.line is not None:
                    f = dataclasses.replace(
                        f, location=dataclasses.replace(f.location, line=f.location.line + lines - p.lines_before)
                    )
                found.setdefault((f.key_id, f.location.line), f)
            lines += p.lines_in
            self.stats.bytes_scanned += p.nbytes
        self.stats.files_scanned += 1
        yield from self._done(part.path, part.st, list(found.values()))

    def _done(self, path: str, st: os.stat_result | None, found: list[Finding] | None) -> Iterator[Finding]:
        if found is None:
            return
        if self.cache is not None and st is not None:
            try:
                self.cache.store(path, st, found)
            except Exception as exc:  # the file's findings stand; it is read again next time
                self.stats.fail("state-error", filesystem.display_path(path, self.options.path_prefix), exc)
        yield from found

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
        if now - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = now
            self.progress(self.stats)


class FilesSource:
    """The files walk as a :class:`keysweep.scan_types.Source`."""

    name = "files"

    def scan(self, ctx: ScanContext) -> Iterator[Finding]:
        return FilesScan(ctx).run()
