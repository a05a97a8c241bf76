"""The files source's engine: this process walks, worker processes read.

The walk (:func:`keysweep.sources.filesystem.iter_files`) runs here, consults the :class:`FileCache` for files
unchanged since the last scan, and hands the rest out in batches (up to 128 files or 16 MiB). Workers are forked:
they inherit the compiled detector, and open each file relative to a directory fd of their own, verified as the
walk's (:class:`keysweep.sources.filesystem.DirCache`). Each has its own pair of pipes and two tasks in flight, the
one it reads and the next waiting in its pipe (so it never waits for this process to take an answer and walk on),
and nothing is locked across processes. A worker answers its tasks in order, so when one is killed at any moment
(the OOM killer) the first task it has not answered is the one it was reading: its files are counted as
``worker-crashed`` with their places, the task behind it goes to another worker, a new worker takes its place, and
every other file's findings stand. A plain file over 32 MiB met by a worker is scanned in parts, one per worker,
each read with half the detector's overlap beyond its edges, so one large file found late in the walk does not leave
the other workers idle. A scan that finds at most one batch of files, or is asked for one worker, reads in this
process.

With a file cache that knows whole directories (:class:`keysweep.scan_types.DirectoryCache`, the incremental
state) the walk here does not ``lstat`` files: it hands out each directory's regular files as one
:class:`keysweep.sources.filesystem.Listing`, and the worker decides against its own read-only view of the cache
which are unchanged (the digest of their names and ``lstat`` markers, else each file's stored markers), reads the
others (their markers are the ``fstat`` of what it opened; a file opened within the racy margin of its last change
gets markers no stat matches, and its directory no digest) and sends back the rows to store, which this process
writes. A killed worker's listings are not stored, so they are read on the next scan.

Parent and workers speak in the small frozen dataclasses below. A :class:`keysweep.models.Secret` refuses
pickling on purpose, so a finding crosses the pipe as an :class:`Exported` (finding without its secret, the
secret and token as plain strings), in memory only, never through a file.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import itertools
import multiprocessing
import os
import pickle
import signal
import stat
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as connection_wait
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any, Union

from keysweep.errors import SourceError
from keysweep.models import Finding, Secret
from keysweep.scan_types import (
    UNMATCHED_SIZE,
    DirectoryCache,
    FileCache,
    FileRow,
    ListingView,
    Markers,
    ScanContext,
    ScanOptions,
    ScanStats,
    markers,
    settled,
)
from keysweep.sources import filesystem

if TYPE_CHECKING:
    from keysweep.detect import Detector

BATCH_FILES = 128
# files of whole directories per task: most are found unchanged at the cost of an lstat each, so fewer, larger
# tasks (each round trip costs both processes ~0.3 ms of CPU)
LISTING_BATCH_FILES = 512
BATCH_BYTES = 16 * 1024 * 1024
SPLIT_OVER = 32 * 1024 * 1024  # with workers, a larger plain file is scanned in parts, one per worker
PROGRESS_EVERY = 0.25
MAX_RESPAWNS = 32
IN_FLIGHT = 2  # tasks a worker holds: the one it reads and the next, already in its pipe
TASK_PIPE_BYTES = 256 * 1024  # a worker's task pipe, pages allocated as written

# a file to read, with its lstat when a FileCache needs it (Union: a runtime alias, and Python 3.9 has no `|` there)
Item = tuple[filesystem.FileRef, Union[os.stat_result, None]]  # noqa: UP007
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux's, named in Python 3.10
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()  # os.fsencode's, inlined


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
            if d is None or st is not None or ref.dev is not None or ref.path != d.base + ref.name:
                runs.append(item)
                continue
            if not runs or runs[-1][0] is not d:
                names, inos = [], []
                runs.append((d, names, inos))
            names.append(ref.name)
            inos.append(ref.ino)
        return _unpack, (runs, self.answer_all)


def _unpack(runs: list[Any], answer_all: bool) -> ReadFiles:
    files: list[Item] = []
    new, ref = tuple.__new__, filesystem.FileRef  # FileRef._make without a call per file
    for run in runs:
        if len(run) == 2:  # an item as it was
            files.append(run)
            continue
        d, names, inos = run
        base = d.base
        files += [(new(ref, (base + name, d, name, None, ino)), None) for name, ino in zip(names, inos)]
    return ReadFiles(files, answer_all)


@dataclass(frozen=True)
class ReadListings:
    """Task: the files of these directories, each decided unchanged or read against the file cache's view."""

    listings: list[filesystem.Listing]


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


@dataclass(frozen=True)
class ListingDone:
    """A directory's files read or found unchanged: the rows of the files read (to store), the findings of those
    files, how many were unchanged; ``record``: its digest is to be recorded (``digest`` None: none is valid)."""

    path: str
    ident: int | None  # its number in the file cache (None: not known there yet)
    rows: list[FileRow]
    digest: bytes | None
    record: bool
    cached: int
    findings: list[Exported]


@dataclass(frozen=True)
class Unchanged:
    """An unchanged file whose stored findings the parent takes (or reads it again: a secret to verify again)."""

    ref: filesystem.FileRef
    payload: str


Task = Union[ReadFiles, ReadListings, ReadPart]  # noqa: UP007
Outcome = Union[FileDone, SplitMe, PartDone, PartFailed, ListingDone, Unchanged]  # noqa: UP007


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
    opened: Callable[[os.stat_result], None] | None = None,
) -> list[Finding] | filesystem.SplitFile | None:
    try:
        return filesystem.scan_file(ref, st, detector, options, stats, dirs=dirs, split_over=split_over, opened=opened)
    except Exception as exc:  # a bug on one odd file must not end the sweep; it is counted with its place
        stats.fail("internal-error", filesystem.display_path(ref.path, options.path_prefix), exc)
        return None


def _read_files(task: ReadFiles, detector: Detector, options: ScanOptions, dirs: filesystem.DirCache) -> Reply:
    stats = ScanStats()
    return Reply(_read_items(task.files, task.answer_all, detector, options, stats, dirs), stats)


def _read_items(
    items: Iterable[Item],
    answer_all: bool,
    detector: Detector,
    options: ScanOptions,
    stats: ScanStats,
    dirs: filesystem.DirCache,
) -> list[Outcome]:
    out: list[Outcome] = []
    for ref, st in items:
        found = _scan_one(ref, st, detector, options, stats, dirs, split_over=SPLIT_OVER)
        if isinstance(found, filesystem.SplitFile):
            out.append(SplitMe(ref.path, st, found.ref, found.size))
        elif found or st is not None or answer_all:  # without a FileCache, no finding needs no answer
            out.append(FileDone(ref.path, st, None if found is None else [Exported.of(f) for f in found]))
    return out


def digest_seed(options: ScanOptions) -> hashlib.blake2b:
    """What else decides which files of a directory are handed on (excludes match the shown path): the start of
    every directory's digest."""
    return hashlib.blake2b(repr((options.excludes, options.path_prefix)).encode(), digest_size=16)


def listing_digest(seed: hashlib.blake2b, path: str, names: list[str], flat: list[int]) -> bytes:
    """One digest of a directory: its path, its files' names and their markers (``flat``: each file's
    :func:`markers` one after another), in the order listed (an order that changed only costs a look at each
    file). Exact for any name (a name holds neither ``/`` nor NUL) and any number."""
    h = seed.copy()
    h.update(path.encode(_FS_ENCODING, _FS_ERRORS) + b"\0" + "/".join(names).encode(_FS_ENCODING, _FS_ERRORS) + b"\0")
    try:
        h.update(b"q" + array("q", flat).tobytes())  # packed: no object per file to build or pickle
    except OverflowError:  # a number beyond a signed 64-bit integer (an inode number on some filesystems)
        h.update(b"p" + pickle.dumps(flat, 5))
    return h.digest()


def _lstat(dirs: filesystem.DirCache, d: filesystem.Dir, name: str) -> Markers | None:
    """A regular file's markers by ``lstat`` relative to its directory's verified fd; None when it is not one
    now (or cannot be reached: reading it says why)."""
    try:
        st = os.stat(name, dir_fd=dirs.fd(d), follow_symlinks=False)
    except (OSError, filesystem.Skip):
        return None
    if st.st_mode & 0o170000 != stat.S_IFREG:
        return None
    return markers(st)


def _all_markers(lst: filesystem.Listing, dirs: filesystem.DirCache) -> list[int] | None:
    """Every file's markers one after another, in the listing's order (``lstat`` relative to its directory's
    verified fd); None when one is not a regular file now (or is gone)."""
    try:
        fd = dirs.fd(lst.dir)
        sts = [os.stat(name, dir_fd=fd, follow_symlinks=False) for name in lst.names]
    except (OSError, filesystem.Skip):
        return None
    flat: list[int] = []
    for st in sts:
        if st.st_mode & 0o170000 != stat.S_IFREG:
            return None
        flat += markers(st)
    return flat


def _read_listing(
    lst: filesystem.Listing,
    view: ListingView,
    detector: Detector,
    options: ScanOptions,
    stats: ScanStats,
    dirs: filesystem.DirCache,
    seed: hashlib.blake2b,
    split_over: int | None = None,
) -> list[Outcome]:
    """The files of one directory: answered whole when the digest of their names and markers (``lstat``) is the
    one the view holds; else each file whose markers are stored unchanged is taken as it is, and the others read
    (their markers from the ``fstat`` of what was opened). A whole listing read without a finding gets a digest."""
    d = lst.dir
    ident: int | None = None
    digest: bytes | None = None
    stored: dict[bytes, tuple[Markers, str | None]] = {}
    bnames = [n.encode(_FS_ENCODING, _FS_ERRORS) for n in lst.names]
    try:
        known = None if view.empty else view.directory(d.path)
        if known is not None:
            ident, digest = known
            if digest is not None and lst.whole and not lst.changed:
                flat = _all_markers(lst, dirs)
                if flat is not None and listing_digest(seed, d.path, lst.names, flat) == digest:
                    return [ListingDone(d.path, ident, [], digest, False, len(lst.names), [])]
            stored = view.files(ident, bnames)
    except Exception as exc:  # the state cannot be read: every file is read (and stored if it can be)
        stats.fail("state-error", filesystem.display_path(d.path, options.path_prefix), exc)
    out: list[Outcome] = []
    rows: list[FileRow] = []
    found: list[Exported] = []
    clean: list[str] = []  # files without a finding, and their markers: the new digest
    clean_marks: list[int] = []
    whole = lst.whole
    cached = 0
    for ref, bname in zip(lst.refs(), bnames):
        old = stored.get(bname)
        if old is not None and _lstat(dirs, d, ref.name) == old[0]:
            if old[1] is None:
                cached += 1
                clean.append(ref.name)
                clean_marks += old[0]
            else:
                out.append(Unchanged(ref, old[1]))
                whole = False
            continue
        seen: list[os.stat_result] = []
        read_from = time.time_ns()
        result = _scan_one(ref, None, detector, options, stats, dirs, split_over, opened=seen.append)
        if isinstance(result, filesystem.SplitFile):
            out.append(SplitMe(ref.path, seen[-1] if seen else None, result.ref, result.size))
            whole = False
            continue
        if result is None or not seen:  # not read (the reason is counted): no row, no digest
            whole = False
            continue
        st = seen[-1]
        m = markers(st)
        if not settled(st, read_from):  # racily clean: a row no stat matches, and no digest
            m = (m[0], m[1], UNMATCHED_SIZE, m[3], m[4])
            whole = False
        rows.append((bname, *m, view.sweep_no, view.encode(result) if result else None))
        if result:
            found.extend(Exported.of(f) for f in result)
            whole = False
        else:
            clean.append(ref.name)
            clean_marks += m
    digest = listing_digest(seed, d.path, clean, clean_marks) if whole else None
    out.append(ListingDone(d.path, ident, rows, digest, lst.whole, cached, found))
    return out


def _read_listings(
    task: ReadListings,
    view: ListingView | None,
    detector: Detector,
    options: ScanOptions,
    dirs: filesystem.DirCache,
    seed: hashlib.blake2b,
) -> Reply:
    """Directories' files: decided against the file cache's view when there is one; else (a stateless scan) each
    read, and only those with findings answered."""
    stats = ScanStats()
    out: list[Outcome] = []
    for lst in task.listings:
        if view is None:
            out += _read_items(((ref, None) for ref in lst.refs()), False, detector, options, stats, dirs)
        else:
            out += _read_listing(lst, view, detector, options, stats, dirs, seed, SPLIT_OVER)
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
    tasks: Connection,
    results: Connection,
    detector: Detector,
    options: ScanOptions,
    dirs: filesystem.DirCache,
    view: ListingView | None,
) -> None:
    """Answer each task with one :class:`Reply` until the pipe closes or None arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    seed = digest_seed(options)
    try:
        while True:
            try:
                task = tasks.recv()
            except EOFError:
                return
            if task is None:
                return
            if isinstance(task, ReadPart):
                results.send(_read_part(task, detector, options, dirs))
            elif isinstance(task, ReadListings):
                results.send(_read_listings(task, view, detector, options, dirs, seed))
            else:
                results.send(_read_files(task, detector, options, dirs))
    finally:
        if view is not None:
            view.close()


# --- the parent side ----------------------------------------------------------------------------------------


def _pipe_room(conn: Connection) -> int:
    """Bytes of tasks a worker's pipe takes without the sender waiting: half its capacity (each message may
    leave part of a page unused), the pipe first widened to TASK_PIPE_BYTES where the system lets it be (a task of
    whole directories, with a state, is ~20 KB; the default pipe's 64 KiB would hold one)."""
    fd = conn.fileno()
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, TASK_PIPE_BYTES)
    except OSError:  # over the limit of this user's pipes, or not Linux: the size it has
        pass
    try:
        return fcntl.fcntl(fd, _F_GETPIPE_SZ) // 2
    except OSError:  # not Linux: what POSIX promises
        return 4096


class _Worker:
    def __init__(self, ctx: Any, args: tuple[Any, ...]) -> None:
        task_r, self.tasks = ctx.Pipe(duplex=False)
        self.results, result_w = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_worker_main, args=(task_r, result_w, *args), daemon=True)
        self.proc.start()
        task_r.close()
        result_w.close()
        self.held: deque[tuple[Task, int]] = deque()  # tasks sent and not answered yet, in order, with their size
        self.held_bytes = 0
        self.room = _pipe_room(self.tasks)

    def close(self) -> None:
        self.tasks.close()
        self.results.close()


class Pool:
    """Forked workers, each with its own pair of pipes and up to IN_FLIGHT tasks: the one it reads and the next
    ones, waiting in its pipe, so it goes on without waiting for this process to take its answer and walk further.

    No lock is shared between processes, and a worker answers its tasks in order, one at a time: when one is
    killed, its first unanswered task is the one it was reading (its files are listed in :attr:`lost`), the later
    ones were never started (other workers read them), and a new worker takes its place. The walk runs at most
    one batch ahead of the tasks in flight."""

    def __init__(self, n: int, detector: Detector, options: ScanOptions, view: ListingView | None = None) -> None:
        self._ctx = multiprocessing.get_context("fork")
        self._n = n
        self._args = (detector, options, filesystem.DirCache(follow=options.follow_symlinks), view)
        self.workers: list[_Worker] = []
        self.lost: list[str] = []  # paths of the files a dead worker was reading
        self.respawned = 0
        self.resent = 0  # tasks a dead worker held unstarted, handed to another
        self._urgent: deque[Task] = deque()  # handed out before the walk's next batch: parts of split files, the
        # tasks a dead worker had not started
        self._pending: tuple[Task, memoryview] | None = None  # the next task, pickled, waiting for room
        self._answered: list[Reply] = []  # replies taken from a worker found dead when sending to it

    def push(self, tasks: Iterable[Task]) -> None:
        self._urgent.extend(tasks)

    def __enter__(self) -> Pool:
        self.workers = [_Worker(self._ctx, self._args) for _ in range(self._n)]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        for w in self.workers:
            if exc_type is not None:  # cut short: what the workers hold is not wanted, nor waited for
                w.proc.terminate()
                continue
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

    def run(self, batches: Iterator[Task]) -> Iterator[Reply]:
        """Hand out the pushed tasks and the walk's batches; yield each reply. Stopping is the walk's business
        (it checks should_stop): what it has yielded is still read."""
        while True:
            self._fill(batches)
            if self._answered:
                replies, self._answered = self._answered, []
                yield from replies
                continue
            if not any(w.held for w in self.workers):
                return  # nothing held, nothing pending: the walk is done and no part was pushed
            yield from self._collect()

    def _fill(self, batches: Iterator[Task]) -> None:
        """Give each worker tasks up to IN_FLIGHT, the one with the fewest first. A task is queued behind
        another only when it fits in the pipe's room: this process then never waits on a worker busy reading
        (which might itself be waiting to send an answer this process would not be taking)."""
        while True:
            if self._pending is None:
                task = self._urgent.popleft() if self._urgent else next(batches, None)
                if task is None:
                    return
                self._pending = (task, ForkingPickler.dumps(task))
            task, data = self._pending
            w = min(self.workers, key=lambda w: len(w.held))
            if w.held and (len(w.held) >= IN_FLIGHT or w.held_bytes + len(data) > w.room):
                return
            try:
                w.tasks.send_bytes(data)
            except OSError:  # it died with nothing to read: its sentinel is ready or about to be
                w.proc.join(1)
                self._answered += self._bury(w)
                continue
            w.held.append((task, len(data)))
            w.held_bytes += len(data)
            self._pending = None

    def _collect(self) -> Iterator[Reply]:
        """Wait for an answer or a death; yield the answers."""
        by_conn = {w.results: w for w in self.workers if w.held}
        by_sentinel = {w.proc.sentinel: w for w in self.workers}
        ready = connection_wait([*by_conn, *by_sentinel])
        for obj in ready:
            w = by_conn.get(obj)  # type: ignore[call-overload]
            if w is not None:
                try:
                    reply = w.results.recv()
                except (EOFError, OSError):
                    continue  # it died; its sentinel says so
                self._answer(w)
                yield reply
        for obj in ready:
            w = by_sentinel.get(obj)  # type: ignore[call-overload]
            if w is not None and w in self.workers and not w.proc.is_alive():
                yield from self._bury(w)

    @staticmethod
    def _answer(w: _Worker) -> None:
        _task, size = w.held.popleft()
        w.held_bytes -= size

    def _bury(self, dead: _Worker) -> list[Reply]:
        """A worker that died (killed for memory, say): the answers it sent still count; the task it was reading
        is lost (its files listed in :attr:`lost`), the ones behind it go to other workers first; a new worker
        takes its place."""
        replies: list[Reply] = []
        while dead.held and dead.results.poll():
            try:
                replies.append(dead.results.recv())
            except (EOFError, OSError):
                break  # cut off while answering: that task is lost too
            self._answer(dead)
        if dead.held:
            self._lose(dead.held.popleft()[0])
            self._urgent.extendleft(reversed([task for task, _size in dead.held]))
            self.resent += len(dead.held)
            dead.held.clear()
        self.respawned += 1
        if self.respawned > MAX_RESPAWNS:
            raise SourceError(f"scan workers keep dying ({self.respawned} replaced); see the system log")
        dead.proc.join(0)
        dead.close()
        self.workers[self.workers.index(dead)] = _Worker(self._ctx, self._args)
        return replies

    def _lose(self, task: Task) -> None:
        if isinstance(task, ReadFiles):
            self.lost += [ref.path for ref, _ in task.files]
        elif isinstance(task, ReadListings):
            self.lost += [ref.path for lst in task.listings for ref in lst.refs()]
        else:
            self.lost.append(task.ref.path)


def _batches(items: Iterator[filesystem.Listing | Item], *, whole: bool = True) -> Iterator[ReadFiles | ReadListings]:
    """Tasks of up to BATCH_FILES files (or BATCH_BYTES, when sizes are known). With ``whole`` (a file cache decides
    on whole directories) a directory's listing stays whole and a task holds about LISTING_BATCH_FILES files (most
    are answered by one lstat each); else listings are cut to fill each batch exactly."""
    limit = LISTING_BATCH_FILES if whole else BATCH_FILES
    batch: list[Item] = []
    listings: list[filesystem.Listing] = []
    size = count = 0
    for item in items:
        if isinstance(item, filesystem.Listing):
            rest: filesystem.Listing | None = item
            while rest is not None:
                room = limit - count
                if whole or len(rest.names) <= room:
                    lst, rest = rest, None
                else:
                    d, names, inodes = rest.dir, rest.names, rest.inodes
                    lst = filesystem.Listing(d, names[:room], inodes[:room], False)
                    rest = filesystem.Listing(d, names[room:], inodes[room:], False)
                listings.append(lst)
                count += len(lst.names)
                if count >= limit:
                    yield ReadListings(listings)
                    listings, count = [], 0
            continue
        batch.append(item)
        size += item[1].st_size if item[1] is not None else 0
        if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
            yield ReadFiles(batch)
            batch, size = [], 0
    if batch:
        yield ReadFiles(batch)
    if listings:
        yield ReadListings(listings)


class FilesScan:
    """One walk of the files source: reads in this process or hands batches to a :class:`Pool`; findings are
    yielded as they come in."""

    def __init__(self, ctx: ScanContext) -> None:
        self._began = time.time_ns()  # before any file of this scan is opened (racily clean files are not stored)
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
        # a cache of whole directories: files go by directory, decided unchanged where they are read
        self.by_dir: DirectoryCache | None = (
            self.cache if isinstance(self.cache, DirectoryCache) and filesystem.groupable(self.options) else None
        )
        self.view: ListingView | None = None
        self._seed = digest_seed(self.options)
        self._check = False  # whether the walk looks for unchanged directories
        self._digests: set[bytes] | None = None  # every valid digest (None: asked directory by directory)

    def run(self) -> Iterator[Finding]:
        if self.by_dir is not None:
            self.view = self.by_dir.listing_view()
            self._check = not self.view.empty
            if self._check:
                try:
                    self._digests = self.view.digests()
                except Exception:  # asked per directory: where that fails too, it is counted
                    self._digests = None
                self._check = self._digests is None or bool(self._digests)  # none valid (a full re-read): none
        try:
            with self.dirs:
                yield from self._run()
        finally:
            if self.view is not None:
                self.view.close()
        if self.progress is not None:
            self.progress(self.stats)

    def _run(self) -> Iterator[Finding]:
        batches = _batches(self._candidates(), whole=self.view is not None)
        first = next(batches, None)
        second = next(batches, None) if first is not None and self.options.worker_count > 1 else None
        if second is None:  # one process: asked for, or too few files to be worth forking
            for task in itertools.chain([first] if first else [], batches):
                yield from self._here(task)
                yield from self._drain()
            return
        assert first is not None
        with Pool(self.options.worker_count, self.detector, self.options, self.view) as pool:
            for reply in pool.run(self._sent(itertools.chain([first, second], batches))):
                self.stats.merge(reply.stats)
                for outcome in reply.outcomes:
                    yield from self._take(pool, outcome)
                yield from self._drain()
                self._tick()
            yield from self._drain()
            for path in pool.lost:
                self.stats.fail("worker-crashed", filesystem.display_path(path, self.options.path_prefix))

    def _here(self, task: ReadFiles | ReadListings) -> Iterator[Finding]:
        """A task read in this process."""
        if isinstance(task, ReadListings) and self.view is not None:
            for lst in task.listings:
                for outcome in _read_listing(
                    lst, self.view, self.detector, self.options, self.stats, self.dirs, self._seed
                ):
                    yield from self._take(None, outcome)
            return
        items: Iterable[Item] = (
            task.files
            if isinstance(task, ReadFiles)
            else ((ref, None) for lst in task.listings for ref in lst.refs())  # a stateless scan's directories
        )
        for ref, st in items:
            yield from self._drain()
            found = _scan_one(ref, st, self.detector, self.options, self.stats, self.dirs)
            assert not isinstance(found, filesystem.SplitFile)  # only with split_over
            yield from self._done(ref.path, st, found)

    def _sent(self, batches: Iterator[ReadFiles | ReadListings]) -> Iterator[ReadFiles | ReadListings]:
        """With a file cache, batches go to the workers without the files' stats (pickling an ``os.stat_result``
        both ways cost more than reading a small file): each is kept here until its file's outcome is back."""
        for batch in batches:
            if self.cache is None or isinstance(batch, ReadListings):
                yield batch
                continue
            for ref, st in batch.files:
                if st is not None:
                    self._stat_of[ref.path] = st
            yield ReadFiles([(ref, None) for ref, _st in batch.files], answer_all=True)

    def _take(self, pool: Pool | None, outcome: Outcome) -> Iterator[Finding]:
        """Record what a worker sent back: a file's findings, a directory's, a part of a split file, or a file to
        split."""
        if isinstance(outcome, ListingDone):
            yield from self._listing_done(outcome)
        elif isinstance(outcome, Unchanged):
            yield from self._unchanged(outcome)
        elif isinstance(outcome, FileDone):
            found = None if outcome.findings is None else [e.restore() for e in outcome.findings]
            st = outcome.st if outcome.st is not None else self._stat_of.pop(outcome.path, None)
            yield from self._done(outcome.path, st, found)
        elif isinstance(outcome, SplitMe):
            if outcome.st is None and outcome.path in self._stat_of:
                outcome = dataclasses.replace(outcome, st=self._stat_of.pop(outcome.path))
            assert pool is not None  # only workers split
            pool.push(self._split(outcome, self.options.worker_count))
        else:
            yield from self._part_done(outcome)

    def _candidates(self) -> Iterator[filesystem.Listing | Item]:
        opts = self.options
        walk: Iterator[filesystem.Listing | Item]
        if self.by_dir is not None or (self.cache is None and filesystem.groupable(opts)):
            # by directory: each one's files decided against the cache's view, or (stateless) all read
            walk = filesystem.iter_listings(
                opts, self.stats, skip_ids=self.handled, should_stop=self.stop, dirs=self.dirs
            )
        else:
            walk = filesystem.iter_files(
                opts,
                self.stats,
                skip_ids=self.handled,
                should_stop=self.stop,
                file_stat=self.cache is not None,
                dirs=self.dirs,
            )
        for item in walk:
            if isinstance(item, filesystem.Listing):
                checked = self._unchanged_here(item)
                if checked is not None:
                    yield checked
                self._tick()
                continue
            ref, st = item
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
        # a file changed since the scan began (less the margin) may change again unseen: no row, read next time
        if self.cache is not None and st is not None and settled(st, self._began):
            try:
                self.cache.store(path, st, found)
            except Exception as exc:  # the file's findings stand; it is read again next time
                self.stats.fail("state-error", filesystem.display_path(path, self.options.path_prefix), exc)
        yield from found

    def _unchanged_here(self, lst: filesystem.Listing) -> filesystem.Listing | None:
        """None when the directory's files have a digest the file cache recorded (counted as unchanged: nothing
        to hand out, so an unchanged tree forks no worker); else the listing to read, marked ``changed`` when its
        digest was looked at here in vain."""
        if not self._check or not lst.whole:
            return lst
        d = lst.dir
        digests = self._digests
        if digests is None:
            assert self.view is not None
            try:
                known = self.view.directory(d.path)
            except Exception as exc:  # the reader of the listing looks again (and counts what fails there)
                self.stats.fail("state-error", filesystem.display_path(d.path, self.options.path_prefix), exc)
                return lst
            if known is None or known[1] is None:
                return lst
            digests = {known[1]}
        flat = _all_markers(lst, self.dirs)
        if flat is None or listing_digest(self._seed, d.path, lst.names, flat) not in digests:
            return lst._replace(changed=True)
        assert self.by_dir is not None
        self.stats.files_cached += len(lst.names)
        self.by_dir.record_listing(d.path, None, [], None, whole=False, cached=len(lst.names))
        return None

    def _listing_done(self, done: ListingDone) -> Iterator[Finding]:
        """A directory's outcome: its rows and digest into the file cache, its findings on."""
        assert self.by_dir is not None
        self.stats.files_cached += done.cached
        try:
            self.by_dir.record_listing(
                done.path,
                done.ident,
                done.rows,
                done.digest if done.record else None,
                whole=done.record,
                cached=done.cached,
            )
        except Exception as exc:  # the findings stand; the files are read again next time
            self.stats.fail("state-error", filesystem.display_path(done.path, self.options.path_prefix), exc)
        for e in done.findings:
            yield e.restore()

    def _unchanged(self, item: Unchanged) -> Iterator[Finding]:
        """An unchanged file with findings: the stored ones, or (a secret to verify again) read here again."""
        assert self.by_dir is not None
        try:
            found = self.by_dir.stored_findings(item.payload)
        except Exception as exc:
            self.stats.fail("state-error", filesystem.display_path(item.ref.path, self.options.path_prefix), exc)
            found = None
        if found is not None:
            self.stats.files_cached += 1
            yield from found
            return
        seen: list[os.stat_result] = []
        result = _scan_one(item.ref, None, self.detector, self.options, self.stats, self.dirs, opened=seen.append)
        assert not isinstance(result, filesystem.SplitFile)  # only with split_over
        yield from self._done(item.ref.path, seen[-1] if seen else None, result)

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
