"""Incremental file state: an unchanged file costs one ``stat``, an unchanged directory one query.

Per file the identity and change markers (device, inode, size, mtime_ns, ctime_ns) and the findings of its last
read, stored without any secret; a file read within a timestamp tick of its last change (racily clean: rewritten in
that tick, it would keep every marker) is recorded with markers no stat matches (:func:`keysweep.scan_types.settled`),
so it is read again. Per directory whose files were all read (or found unchanged) without a finding (none racily),
a digest of its files' names and markers: a directory whose files have the same digest needs nothing more, not
even one row read per file; its subdirectories are still walked (a file changed deep below changes only its own
directory's digest). Whoever reads a directory's files (a worker process) decides this through a read-only
:class:`StateView` of its own and sends back the rows of the files it read; this process alone writes them.
SQLite in WAL mode inside the state directory (which scans exclude); rows are buffered and written with
``executemany``, committed in batches: a crash loses at most the last batch, whose files are simply read again. The state is a cache that a full read rebuilds, so SQLite never
waits for the disk (``synchronous=OFF``): a database damaged by a power loss is moved aside and rebuilt on open.

A different cache digest (rules, detector settings, fingerprint key, scan options that change per-file results)
empties the cache. Every ``full_reread_every`` sweeps a sweep ignores the markers and reads everything again; such a
sweep resumes where it stopped if it is interrupted, because a row records the sweep that last read it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import stat
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from keysweep import statedir
from keysweep.models import Finding, Location
from keysweep.scan_types import FileRow, Markers, markers

log = logging.getLogger(__name__)

STATE_FILE = "state.sqlite"
# 3: paths as BLOBs (the exact bytes of any name); 5: directories numbered, with digests; 6: no row or digest
# recorded from markers a file's ctime made racy (a state of 5 may hold such rows: it is rebuilt)
_SCHEMA_VERSION = "6"
_DIR_ROWS_MAX = 4096  # a directory with more files is looked up file by file (memory stays bounded)
# the digests a sweep holds in memory to answer unchanged directories without a query each (~80 bytes a digest:
# ~10 MB at most); a state with more is asked directory by directory
_DIGESTS_MAX = 131_072

# a directory is a row of its own (its path as the bytes of the path, os.fsencode, so any name round-trips
# exactly), numbered: a file row is keyed by (directory number, name), small and quick to write; the walk goes
# directory by directory, so one query answers a whole directory
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dirs (
    id INTEGER PRIMARY KEY, path BLOB NOT NULL UNIQUE,
    digest BLOB, files INTEGER NOT NULL DEFAULT 0, excluded INTEGER NOT NULL DEFAULT 0,
    sweep_no INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    dir INTEGER NOT NULL, name BLOB NOT NULL,
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    sweep_no INTEGER NOT NULL,
    findings TEXT,
    PRIMARY KEY (dir, name)
) WITHOUT ROWID;
"""
_DAMAGED = {"SQLITE_NOTADB", "SQLITE_CORRUPT", "SQLITE_CORRUPT_VTAB", "SQLITE_CORRUPT_SEQUENCE", "SQLITE_CORRUPT_INDEX"}
_COLUMNS = "name, dev, ino, size, mtime_ns, ctime_ns, sweep_no, findings"
_INSERT_FILE = f"INSERT OR REPLACE INTO files (dir, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_RECORD_DIR = "UPDATE dirs SET digest = ?, files = ?, excluded = ?, sweep_no = ? WHERE id = ?"
_DIR_IDS_MAX = 4096  # directory numbers remembered
_Row = tuple[int, int, int, int, int, int, Optional[str]]
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()  # os.fsencode's, inlined


def cache_digest(*parts: object) -> str:
    """One hash over everything that changes what reading a file yields."""
    h = hashlib.sha256(_SCHEMA_VERSION.encode())
    for part in parts:
        h.update(b"\x1f" + json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def finding_to_state(finding: Finding) -> dict[str, Any]:
    """A JSON-able dict of a finding without its secret or session token (and without verification)."""
    d = finding.to_dict()  # never holds the secret or the session token
    del d["verification"]
    return d


def finding_from_state(d: dict[str, Any]) -> Finding:
    d = dict(d)
    d["location"] = Location(**d["location"])
    return Finding(**d)


@dataclass(frozen=True)
class SweepPlan:
    number: int
    full: bool  # ignore the markers of files not read since ``full_start``
    full_start: int
    resumed: bool  # the previous sweep was interrupted


@dataclass
class CacheCounters:
    hits: int = 0
    misses: int = 0
    reverify: int = 0  # hits turned into reads because a verification must be re-checked
    stored: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def encode_findings(findings: Sequence[Finding]) -> str | None:
    """Findings as a row stores them: JSON without any secret; None for none."""
    return json.dumps([finding_to_state(f) for f in findings]) if findings else None


class StateView:
    """The state as the reader of a directory's files sees it (:class:`keysweep.scan_types.ListingView`):
    read-only, through a connection of its own opened in the process that uses it (a forked worker never touches
    its parent's connection). Rows and digests written before ``valid_from`` (a full re-read) do not count."""

    def __init__(self, path: Path, sweep_no: int, valid_from: int) -> None:
        self.path = path
        self.sweep_no = sweep_no
        self._valid_from = valid_from
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self.empty = self._conn().execute("SELECT 1 FROM dirs LIMIT 1").fetchone() is None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():  # one inherited across a fork is left alone
            uri = "file:" + urllib.parse.quote(os.fspath(self.path)) + "?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)
            self._pid = os.getpid()
        return self._db

    def digests(self) -> set[bytes] | None:
        """Every still valid directory digest, read in one query (a digest covers its directory's path, so
        being in this set is the whole check); None when there are more than :data:`_DIGESTS_MAX`."""
        rows = self._conn().execute(
            f"SELECT digest FROM dirs WHERE digest IS NOT NULL AND sweep_no >= ? LIMIT {_DIGESTS_MAX + 1}",
            (self._valid_from,),
        )
        found = {r[0] for r in rows}  # row by row: no list of them all beside the set
        return found if len(found) <= _DIGESTS_MAX else None

    def directory(self, path: str) -> tuple[int, bytes | None] | None:
        row = (
            self._conn()
            .execute("SELECT id, digest, sweep_no FROM dirs WHERE path = ?", (path.encode(_FS_ENCODING, _FS_ERRORS),))
            .fetchone()
        )
        if row is None:
            return None
        return int(row[0]), (row[1] if row[1] is not None and row[2] >= self._valid_from else None)

    def files(self, ident: int, names: list[bytes] | None) -> dict[bytes, tuple[Markers, str | None]]:
        db = self._conn()
        limit = 2 * _DIR_ROWS_MAX
        found = db.execute(f"SELECT {_COLUMNS} FROM files WHERE dir = ? LIMIT {limit + 1}", (ident,)).fetchall()
        if len(found) > limit and names is not None:  # a huge directory: only the names asked for
            found = []
            for i in range(0, len(names), 500):
                part = names[i : i + 500]
                found += db.execute(
                    f"SELECT {_COLUMNS} FROM files WHERE dir = ? AND name IN ({', '.join('?' * len(part))})",
                    (ident, *part),
                ).fetchall()
        valid = self._valid_from
        return {r[0]: (r[1:6], r[7]) for r in found if r[6] >= valid}

    def encode(self, findings: list[Finding]) -> str | None:
        return encode_findings(findings)

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None


class StateStore:
    """The agent's persistent file cache; implements the scan's ``FileCache`` protocol (lookup/store, file by
    file) and ``DirectoryCache`` (a :class:`StateView` for the readers of whole directories, and what they read).

    ``needs_reverify(finding)`` is asked for every cached finding that had a secret: when it answers True the
    file is read again, because only a fresh read brings the secret back for verification.
    """

    def __init__(
        self,
        state_dir: str | Path,
        *,
        digest: str,
        needs_reverify: Callable[[Finding], bool] | None = None,
        commit_every: int = 500,
        commit_interval: float = 1.0,
    ) -> None:
        self.dir = statedir.prepare(state_dir)
        self.path = self.dir / STATE_FILE
        self.needs_reverify = needs_reverify
        self.counters = CacheCounters()
        self.invalidated = False
        self._commit_every = commit_every
        self._commit_interval = commit_interval
        self._in_txn = False
        self._file_rows: list[tuple[Any, ...]] = []  # buffered, written by executemany
        self._dir_out: list[tuple[Any, ...]] = []
        self._ids: dict[str, int] = {}  # directory numbers, by path
        self._last_commit = time.monotonic()
        self._lock = threading.RLock()
        self._plan: SweepPlan | None = None
        try:
            self._open()
        except (sqlite3.DatabaseError, statedir.CorruptStateFile) as exc:
            # garbage, truncated, a link or a directory where the database should be: moved aside, rebuilt;
            # anything else (locked by another process, I/O error, read-only) is not the file's fault: raised
            if isinstance(exc, sqlite3.DatabaseError) and getattr(exc, "sqlite_errorname", "") not in _DAMAGED:
                raise
            if getattr(self, "_db", None) is not None:
                self._db.close()
            for suffix in ("", "-wal", "-shm"):
                if os.path.lexists(f"{self.path}{suffix}"):
                    statedir.quarantine(self.dir, Path(f"{self.path}{suffix}"), f"not a usable database ({exc})")
            self._open()
        self._dir_key: str | None = None
        self._dir_rows: dict[bytes, _Row] | None = None  # rows of the directory the walk is in (None: too many)
        self._check_digest(digest)
        self._sweep_no = self._int("sweep_no") or 0

    def _open(self) -> None:
        for suffix in ("-wal", "-shm"):  # SQLite opens these itself: a planted link must not be followed
            side = Path(f"{self.path}{suffix}")
            try:
                if not stat.S_ISREG(os.lstat(side).st_mode):
                    statedir.quarantine(self.dir, side, "not a regular file")
            except FileNotFoundError:
                pass
        os.close(statedir.open_file(self.path, os.O_RDWR))
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")  # a cache: damage is found on open and rebuilt
        self._db.execute("PRAGMA cache_size=-4096")  # 4 MiB page cache: bounded memory on any tree size
        check = self._db.execute("PRAGMA quick_check(1)").fetchone()
        if not check or check[0] != "ok":
            raise statedir.CorruptStateFile(f"quick_check: {check[0] if check else 'no answer'}")
        if self._get_schema() != _SCHEMA_VERSION:  # an older layout (text paths) is rebuilt, not migrated
            self._db.executescript("DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS dirs; DROP TABLE IF EXISTS meta;")
        self._db.executescript(_SCHEMA)
        self._set("schema", _SCHEMA_VERSION)
        for key in ("sweep_no", "running", "full_pending", "last_full"):
            value = self._get(key)
            if value is not None and not value.isdigit():
                raise statedir.CorruptStateFile(f"meta {key}: {value[:20]!r} is not a number")

    def _get_schema(self) -> str | None:
        try:
            return self._get("schema")
        except sqlite3.OperationalError:  # a new file
            return None

    # --- meta -----------------------------------------------------------------------------------------------
    def _get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set(self, key: str, value: object | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    def _int(self, key: str) -> int | None:
        v = self._get(key)
        return int(v) if v is not None else None

    def _check_digest(self, digest: str) -> None:
        with self._lock:
            old = self._get("digest")
            if old == digest:
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM files")
            self._db.execute("DELETE FROM dirs")
            self._dir_key = None
            self._ids = {}
            self._set("digest", digest)
            self._set("last_full", None)
            self._set("full_pending", None)
            self._db.execute("COMMIT")
            self.invalidated = old is not None
            if self.invalidated:
                log.info("state.invalidated", extra={"fields": {"reason": "rules or scan configuration changed"}})

    # --- sweeps ---------------------------------------------------------------------------------------------
    @property
    def sweep_number(self) -> int:
        with self._lock:
            return self._int("sweep_no") or 0

    def interrupted(self) -> bool:
        """Whether the last sweep started did not finish (crash, kill, SIGTERM mid-sweep)."""
        with self._lock:
            return self._get("running") is not None

    def begin_sweep(self, full_reread_every: int) -> SweepPlan:
        with self._lock:
            self._commit()
            self._dir_key = None  # rows are read afresh: another scan may have used this state meanwhile
            number = (self._int("sweep_no") or 0) + 1
            resumed = self._get("running") is not None
            pending = self._int("full_pending")
            last_full = self._int("last_full")
            if pending is not None:
                full, start = True, pending
            elif last_full is None or number - last_full >= full_reread_every:
                full, start = True, number
            else:
                full, start = False, number
            self._db.execute("BEGIN IMMEDIATE")
            self._set("sweep_no", number)
            self._set("running", number)
            self._set("full_pending", start if full else None)
            self._db.execute("COMMIT")
            self._sweep_no = number
            self._plan = SweepPlan(number=number, full=full, full_start=start, resumed=resumed)
            return self._plan

    def finish_sweep(self, plan: SweepPlan, *, completed: bool) -> int:
        """Close a sweep; a completed full sweep forgets files it did not see (deleted). Returns rows pruned."""
        pruned = 0
        with self._lock:
            self._commit()
            self._db.execute("BEGIN IMMEDIATE")
            if completed:
                self._set("running", None)
                if plan.full:
                    pruned = self._db.execute("DELETE FROM files WHERE sweep_no < ?", (plan.full_start,)).rowcount
                    # a digest not recorded again by this full sweep is dropped, and a directory left without files
                    self._db.execute("UPDATE dirs SET digest = NULL WHERE sweep_no < ?", (plan.full_start,))
                    self._db.execute(
                        "DELETE FROM dirs WHERE digest IS NULL AND NOT EXISTS "
                        "(SELECT 1 FROM files WHERE files.dir = dirs.id)"
                    )
                    self._ids = {}
                    self._dir_key = None
                    self._set("last_full", plan.number)
                    self._set("full_pending", None)
            self._db.execute("COMMIT")
            self._plan = None
        return pruned

    # --- FileCache protocol ---------------------------------------------------------------------------------
    def _dir_id(self, d: str, *, create: bool) -> int | None:
        """The number of directory ``d`` (path without its trailing slash); None when unknown and not ``create``."""
        ident = self._ids.get(d)
        if ident is not None:
            return ident
        path = d.encode(_FS_ENCODING, _FS_ERRORS)
        row = self._db.execute("SELECT id FROM dirs WHERE path = ?", (path,)).fetchone()
        if row is not None:
            ident = int(row[0])
        elif not create:
            return None
        else:
            self._begin()
            ident = int(
                self._db.execute("INSERT INTO dirs (path, sweep_no) VALUES (?, ?)", (path, self._sweep_no)).lastrowid
                or 0
            )
        if len(self._ids) >= _DIR_IDS_MAX:
            self._ids = {}
        self._ids[d] = ident
        return ident

    def _row(self, d: str, name: bytes) -> _Row | None:
        if d != self._dir_key:
            self._write()  # rows stored earlier in this process are found too
            ident = self._dir_id(d, create=False)
            rows = (
                []
                if ident is None
                else self._db.execute(
                    f"SELECT {_COLUMNS} FROM files WHERE dir = ? LIMIT {_DIR_ROWS_MAX + 1}", (ident,)
                ).fetchall()
            )
            self._dir_key = d
            self._dir_rows = {r[0]: r[1:] for r in rows} if len(rows) <= _DIR_ROWS_MAX else None
        if self._dir_rows is not None:
            return self._dir_rows.get(name)
        r = self._db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE dir = ? AND name = ?", (self._dir_id(d, create=False), name)
        ).fetchone()
        return r[1:] if r else None

    def lookup(self, path: str, st: os.stat_result) -> list[Finding] | None:
        d, _, name = path.rpartition("/")
        with self._lock:
            row = self._row(d, name.encode(_FS_ENCODING, _FS_ERRORS))
            plan = self._plan
        if row is None or row[:5] != markers(st) or (plan and plan.full and row[5] < plan.full_start):
            self.counters.misses += 1
            return None
        return self.stored_findings(row[6]) if row[6] else self._hit([])

    def _hit(self, findings: list[Finding]) -> list[Finding]:
        self.counters.hits += 1
        return findings

    def stored_findings(self, payload: str) -> list[Finding] | None:
        """The findings of an unchanged file as stored; None when it must be read again: a damaged row, or a
        finding whose secret ``needs_reverify`` (only a fresh read brings the secret back)."""
        try:
            findings = [finding_from_state(d) for d in json.loads(payload)]
        except (ValueError, TypeError, KeyError):
            self.counters.misses += 1
            return None
        if self.needs_reverify and any(f.has_secret and self.needs_reverify(f) for f in findings):
            self.counters.reverify += 1
            self.counters.misses += 1
            return None
        return self._hit(findings)

    def store(self, path: str, st: os.stat_result, findings: Sequence[Finding]) -> None:
        payload = encode_findings(findings)
        d, _, name = path.rpartition("/")
        bname = name.encode(_FS_ENCODING, _FS_ERRORS)
        with self._lock:
            row = (*markers(st), self._sweep_no, payload)
            self._file_rows.append((self._dir_id(d, create=True), bname, *row))
            if d == self._dir_key and self._dir_rows is not None:
                self._dir_rows[bname] = row
            self.counters.stored += 1
            if len(self._file_rows) >= self._commit_every or not self.counters.stored & 63:
                self._maybe_commit()

    # --- whole directories (scan_types.DirectoryCache) ------------------------------------------------------
    def listing_view(self) -> StateView:
        """A read-only view for the processes that read directories' files (each opens its own connection)."""
        with self._lock:
            self._commit()  # what this process stored is seen
            plan = self._plan
            return StateView(self.path, self._sweep_no, plan.full_start if plan is not None and plan.full else 0)

    def record_listing(
        self, directory: str, ident: int | None, rows: list[FileRow], digest: bytes | None, *, whole: bool, cached: int
    ) -> None:
        """Rows of the files read in ``directory`` (numbered ``ident``, None: not yet); with ``whole``, its digest
        (None: no valid one: its files are looked at one by one next time)."""
        with self._lock:
            self.counters.hits += cached
            self.counters.misses += len(rows)
            self.counters.stored += len(rows)
            if not rows and (ident is None or not whole):
                return
            if ident is None:
                ident = self._dir_id(directory, create=True)
            if rows:
                self._file_rows.extend([(ident, *r) for r in rows])
            if whole:
                self._dir_out.append((digest, len(rows) + cached, 0, self._sweep_no, ident))
            if directory == self._dir_key:
                self._dir_key = None
            self._maybe_commit()

    # --- housekeeping ---------------------------------------------------------------------------------------
    def _write(self) -> None:
        """Buffered rows into the open transaction (begun here)."""
        if not (self._file_rows or self._dir_out):
            return
        self._begin()
        if self._file_rows:
            self._db.executemany(_INSERT_FILE, self._file_rows)
            self._file_rows.clear()
        if self._dir_out:
            self._db.executemany(_RECORD_DIR, self._dir_out)
            self._dir_out.clear()

    def _begin(self) -> None:
        if not self._in_txn:
            self._db.execute("BEGIN")
            self._in_txn = True

    def _maybe_commit(self) -> None:
        if (
            len(self._file_rows) + len(self._dir_out) >= self._commit_every
            or time.monotonic() - self._last_commit >= self._commit_interval
        ):
            self._commit()

    def _commit(self) -> None:
        self._write()
        if self._in_txn:
            self._db.execute("COMMIT")
            self._in_txn = False
        self._last_commit = time.monotonic()

    def flush(self) -> None:
        with self._lock:
            self._commit()

    def file_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM files").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._commit()
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
