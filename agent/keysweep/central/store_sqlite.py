"""The default store: one SQLite file in WAL mode, safe with several collector processes at once.

Each upsert is a read-merge-write inside ``BEGIN IMMEDIATE``, which takes SQLite's write lock before reading, so two
processes can never merge from the same old record and lose one update; a busy timeout makes the other writer
wait instead of failing. Records are kept as canonical JSON beside a few indexed columns.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from keysweep.central.key_states import KeyState
from keysweep.central.records import FindingRecord, HostRecord, Origin, merge_finding, merge_host
from keysweep.errors import StoreError

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 60.0
_PAGE_ROWS = 500

_FINDINGS = """
CREATE TABLE IF NOT EXISTS {name} (
    finding_fingerprint TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    key_id TEXT NOT NULL,
    account_id TEXT,
    host_id TEXT NOT NULL,
    status TEXT,
    last_seen TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (host_id, finding_fingerprint)
)"""
_SCHEMA = _FINDINGS.format(name="findings") + """;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS findings_key_id ON findings (key_id);
CREATE INDEX IF NOT EXISTS findings_fingerprint ON findings (fingerprint);
CREATE TABLE IF NOT EXISTS hosts (host_id TEXT PRIMARY KEY, last_heartbeat TEXT, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS host_owners (host_id TEXT PRIMARY KEY, sender TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deactivations (key_id TEXT PRIMARY KEY, actor TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS key_states (key_id TEXT NOT NULL, state TEXT NOT NULL, at TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (key_id, state));
"""

T = TypeVar("T")


def canonical_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class SQLiteStore:
    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise StoreError(f"store {self.path}: no such database")
            # the store names hosts and key ids: readable by its owner only
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as exc:
                raise StoreError(f"store {self.path}: cannot create: {exc.strerror}") from None
        # usable from any one thread at a time (the lock), e.g. a collector running in a worker thread
        self._lock = threading.RLock()
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._open()
                break
            except (sqlite3.Error, StoreError) as exc:
                # switching a new database to WAL while another process creates it too can answer "locked"
                # without consulting the busy handler: retry the whole opening until the busy timeout
                cause = exc.__cause__ if isinstance(exc, StoreError) else exc
                locked = isinstance(cause, sqlite3.OperationalError) and "locked" in str(cause)
                if not locked or time.monotonic() > deadline:
                    if isinstance(exc, StoreError):
                        raise
                    raise StoreError(f"store {self.path}: {exc}") from exc
                time.sleep(random.uniform(0.02, 0.2))

    def _open(self) -> None:
        """Connect, switch to WAL and create the schema; ``self._db`` is the connection once this returns."""
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit survives power loss, since the queue message is deleted right after it
            db.execute("PRAGMA synchronous = FULL")
            self._db = db
            self._write(lambda conn: self._init_schema(conn))
        except BaseException:
            db.close()
            raise

    @staticmethod
    def _init_schema(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise StoreError(f"store schema version {row[0]} is newer than this keysweep ({SCHEMA_VERSION})")
        if row is not None and int(row[0]) == 1:
            # version 1 keyed findings by the agent's finding fingerprint alone: key them by (host, fingerprint)
            db.execute(_FINDINGS.format(name="findings_v2"))
            db.execute("INSERT INTO findings_v2 SELECT finding_fingerprint, fingerprint, key_id, account_id, host_id,"
                       " status, last_seen, data FROM findings")
            db.execute("DROP TABLE findings")
            db.execute("ALTER TABLE findings_v2 RENAME TO findings")
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction (write lock taken up front)."""
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    # -- writes ----------------------------------------------------------------------------------------------

    def upsert_finding(self, message: Mapping[str, Any], origin: Origin | None = None) -> bool:
        fp, host_id = message["finding"]["finding_fingerprint"], message["host"]["host_id"]

        def work(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT data FROM findings WHERE host_id = ? AND finding_fingerprint = ?",
                             (host_id, fp)).fetchone()
            old = FindingRecord.from_dict(json.loads(row[0])) if row else None
            new = merge_finding(old, message, origin)
            changed = new != old
            if changed:
                db.execute(
                    "INSERT OR REPLACE INTO findings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (new.finding_fingerprint, new.fingerprint, new.key_id, new.account_id, new.host_id, new.status,
                     new.last_seen, canonical_json(new.to_dict())),
                )
            return self._merge_host(db, message, origin) or changed

        return self._write(work)

    def record_heartbeat(self, message: Mapping[str, Any], origin: Origin | None = None) -> bool:
        return self._write(lambda db: self._merge_host(db, message, origin))

    def claim_host(self, host_id: str, sender: str, *, take_over: bool = False) -> str:
        def work(db: sqlite3.Connection) -> str:
            if take_over:
                db.execute("INSERT OR REPLACE INTO host_owners VALUES (?, ?)", (host_id, sender))
            else:
                db.execute("INSERT OR IGNORE INTO host_owners VALUES (?, ?)", (host_id, sender))
            return str(db.execute("SELECT sender FROM host_owners WHERE host_id = ?", (host_id,)).fetchone()[0])

        return self._write(work)

    @staticmethod
    def _merge_host(db: sqlite3.Connection, message: Mapping[str, Any], origin: Origin | None) -> bool:
        host_id = message["host"]["host_id"]
        row = db.execute("SELECT data FROM hosts WHERE host_id = ?", (host_id,)).fetchone()
        old = HostRecord.from_dict(json.loads(row[0])) if row else None
        new = merge_host(old, message, origin)
        if new == old:
            return False
        db.execute("INSERT OR REPLACE INTO hosts VALUES (?, ?, ?)",
                   (new.host_id, new.last_heartbeat, canonical_json(new.to_dict())))
        return True

    def record_deactivation(self, key_id: str, actor: str, at: str) -> None:
        self._write(lambda db: db.execute("INSERT OR REPLACE INTO deactivations VALUES (?, ?, ?)", (key_id, actor, at)))

    def record_key_state(self, state: KeyState) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute("INSERT OR IGNORE INTO key_states VALUES (?, ?, ?, ?)",
                                (state.key_id, state.state, state.at, canonical_json(state.to_dict())))
            return cursor.rowcount == 1

        return self._write(work)

    # -- reads -----------------------------------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    _FINDINGS_SQL = (
        "SELECT f.data, d.actor, d.at FROM findings f LEFT JOIN deactivations d ON d.key_id = f.key_id"
    )

    @staticmethod
    def _finding(row: tuple[Any, ...]) -> FindingRecord:
        data = json.loads(row[0])
        if row[1] is not None:
            data["deactivated_by"], data["deactivated_at"] = row[1], row[2]
        return FindingRecord.from_dict(data)

    def _stream(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """The rows of ``sql`` a page at a time, from a read-only connection of its own: memory stays bounded
        whatever the store's size, the rows are one consistent snapshot (WAL), and writers are never held up."""
        try:
            db = sqlite3.connect(f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode=ro", uri=True,
                                 timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc
        try:
            cursor = db.execute(sql)
            while rows := cursor.fetchmany(_PAGE_ROWS):
                yield from rows
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc
        finally:
            db.close()

    def iter_findings(self) -> Iterator[FindingRecord]:
        for row in self._stream(self._FINDINGS_SQL + " ORDER BY f.finding_fingerprint, f.host_id"):
            yield self._finding(row)

    def get_finding(self, host_id: str, finding_fingerprint: str) -> FindingRecord | None:
        rows = self._query(self._FINDINGS_SQL + " WHERE f.host_id = ? AND f.finding_fingerprint = ?",
                           (host_id, finding_fingerprint))
        return self._finding(rows[0]) if rows else None

    def iter_hosts(self) -> Iterator[HostRecord]:
        for (data,) in self._stream("SELECT data FROM hosts ORDER BY host_id"):
            yield HostRecord.from_dict(json.loads(data))

    def iter_key_states(self) -> Iterator[KeyState]:
        for (data,) in self._query("SELECT data FROM key_states ORDER BY key_id, at, state"):
            yield KeyState.from_dict(json.loads(data))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
