"""The default store: one SQLite file in WAL mode, safe with several collector processes at once.

Each upsert is a read-merge-write inside ``BEGIN IMMEDIATE``, which takes SQLite's write lock before reading, so two
processes can never merge from the same old record and lose one update; a busy timeout makes the other writer
wait instead of failing. A batch of messages (:meth:`SQLiteStore.apply_messages`) is one such transaction.

A finding record is kept as columns (the fields fleet views aggregate: key, host, place, times, status, owner) and
the rest of it (verification, history, host context, suggestion) as canonical JSON deflated with its key's
*exemplar* as zlib's preset dictionary: the first record stored for that key (fingerprint) and suggestion kind.
What is the same for every finding of a key — the suggestion's text, steps and commands, the owner, the host
context's shape — is thus kept once, in the exemplar, and each record keeps only what differs (about 150 bytes
instead of 6 KB). An exemplar never changes once written. Two more columns keep what the audit's correlation reads
of the rest (the suggestion's role name, the times the key signed a request: :func:`evidence.signed_stamps`), so it
never inflates a record; one more keeps ``example`` for the fleet views' summaries. Schema 1 to 4 stores are
upgraded in place on opening.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from keysweep.central.evidence import signed_stamps
from keysweep.central.key_states import KeyState
from keysweep.central.records import (
    FindingRecord,
    FindingSummary,
    HostRecord,
    Origin,
    canonical_json,
    merge_finding,
    merge_host,
    suggestion_digest,
    suggestion_kind,
)
from keysweep.central.store import MessageRefused
from keysweep.errors import StoreError
from keysweep.retry import Backoff

SCHEMA_VERSION = 5
BUSY_TIMEOUT_S = 60.0
# between tries of an opening that met another process switching the new database to WAL
OPEN_BACKOFF = Backoff(0.02, 0.2, "equal")
_PAGE_ROWS = 500
MAX_CACHED_EXEMPLARS = 4096

# the finding fields kept as columns (what fleet views aggregate, sort and filter on), in table order; the rest of
# the record is the ``data`` column (see the module's docstring)
_COLUMNS = (
    "finding_fingerprint",
    "fingerprint",
    "key_id",
    "account_id",
    "host_id",
    "status",
    "last_seen",
    "hostname",
    "host_kind",
    "first_seen",
    "verified_at",
    "version",
    "received_first",
    "severity",
    "key_type",
    "owner_arn",
    "location",
)
_EXTRA = ("suggestion_kind", "suggestion_digest")
# what correlation reads of the rest of a record (schema 4): the suggestion's role name, the signed stamps as JSON
_CORRELATION = ("role_name", "signed")
# what a summary reads of the rest of a record (schema 5): why detection would have hidden the finding
_SUMMARISED = ("example",)
_IN_COLUMNS = frozenset(_COLUMNS)
_FINDINGS = """
CREATE TABLE IF NOT EXISTS {name} (
    finding_fingerprint TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    key_id TEXT NOT NULL,
    account_id TEXT,
    host_id TEXT NOT NULL,
    status TEXT,
    last_seen TEXT NOT NULL,
    hostname TEXT NOT NULL,
    host_kind TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    verified_at TEXT,
    version TEXT NOT NULL,
    received_first TEXT,
    severity TEXT NOT NULL,
    key_type TEXT,
    owner_arn TEXT,
    location TEXT NOT NULL,
    suggestion_kind TEXT,
    suggestion_digest TEXT,
    data BLOB NOT NULL,
    role_name TEXT,
    signed TEXT,
    example TEXT,
    PRIMARY KEY (host_id, finding_fingerprint)
) WITHOUT ROWID"""
_SCHEMA = (
    _FINDINGS.format(name="findings")
    + """;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS findings_key ON findings (fingerprint, host_id);
CREATE TABLE IF NOT EXISTS exemplars (fingerprint TEXT NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (fingerprint, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hosts (host_id TEXT PRIMARY KEY, last_heartbeat TEXT, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS host_owners (host_id TEXT PRIMARY KEY, sender TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deactivations (key_id TEXT PRIMARY KEY, actor TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS key_states (key_id TEXT NOT NULL, state TEXT NOT NULL, at TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (key_id, state));
"""
)

_RECORD_COLUMNS = ", ".join(f"f.{c}" for c in (*_COLUMNS, *_EXTRA, "data"))
_SUMMARY_COLUMNS = tuple(f.name for f in dataclasses.fields(FindingSummary))[:-2]

_ALL_COLUMNS = (*_COLUMNS, *_EXTRA, "data", *_CORRELATION, *_SUMMARISED)
_INSERT_FINDING = (
    f"INSERT OR REPLACE INTO findings ({', '.join(_ALL_COLUMNS)}) VALUES ({', '.join('?' * len(_ALL_COLUMNS))})"
)

T = TypeVar("T")
# host id -> (the host's record as merged so far in a batch's transaction, whether it differs from the stored one)
_HostBatch = dict[str, tuple[HostRecord, bool]]


def _correlation_columns(rec: FindingRecord) -> tuple[str | None, str | None]:
    """The role the record's suggestion names and its signed stamps (JSON), as the correlation columns keep them."""
    role = (rec.suggestion or {}).get("role_name")
    stamps = signed_stamps(rec)
    return (None if role is None else str(role)), (json.dumps(stamps) if stamps else None)


def json_with_member(data: Mapping[str, Any], name: str) -> tuple[str, str]:
    """:func:`canonical_json` of ``data`` and of its member ``name``, that member serialised once (the suggestion,
    most of a record's remainder, is also what its digest is of)."""
    member = canonical_json(data[name])
    before = canonical_json({k: v for k, v in data.items() if k < name})[1:-1]
    after = canonical_json({k: v for k, v in data.items() if k > name})[1:-1]
    return "{" + ",".join(p for p in (before, f"{canonical_json(name)}:{member}", after) if p) + "}", member


def _deflate(data: bytes, exemplar: bytes) -> bytes:
    # level 3: against the exemplar as little as level 6 (about 120 bytes instead of 110) in half the CPU
    packer = zlib.compressobj(3, zlib.DEFLATED, -15, zdict=exemplar)
    return packer.compress(data) + packer.flush()


def _inflate(blob: bytes, exemplar: bytes) -> bytes:
    unpacker = zlib.decompressobj(-15, zdict=exemplar)
    return unpacker.decompress(blob) + unpacker.flush()


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
        self._exemplars: dict[tuple[str, str], bytes] = {}  # (key fingerprint, suggestion kind) -> exemplar JSON
        self._new_exemplars: dict[tuple[str, str], bytes] = {}  # written in the open transaction
        self._in_transaction = False
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        attempt = 0
        while True:
            attempt += 1
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
                time.sleep(OPEN_BACKOFF.delay(attempt))

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

    def _init_schema(self, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise StoreError(f"store schema version {row[0]} is newer than this keysweep ({SCHEMA_VERSION})")
        old = row is not None and int(row[0]) < 3
        if row is not None and int(row[0]) == 3:
            self._add_correlation_columns(db)
        if row is not None and int(row[0]) in (3, 4):
            # earlier versions dropped the field: no record of theirs has one to fill in
            db.execute("ALTER TABLE findings ADD COLUMN example TEXT")
        if old:
            # versions 1 and 2 kept each whole record as JSON (1 keyed findings by the agent's finding fingerprint
            # alone, 2 by host and fingerprint): store every record again in this version's layout
            db.execute("ALTER TABLE findings RENAME TO findings_old")
            db.execute("DROP INDEX IF EXISTS findings_fingerprint")
        # an index by key id (versions 1 to 5) served no query and cost every new finding a page write
        db.execute("DROP INDEX IF EXISTS findings_key_id")
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        if old:
            for (data,) in db.execute("SELECT data FROM findings_old"):
                self._put_finding(db, FindingRecord.from_dict(json.loads(data)))
            db.execute("DROP TABLE findings_old")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _add_correlation_columns(self, db: sqlite3.Connection) -> None:
        """Upgrade a schema-3 table: add the correlation columns and fill them from each record, a page at a time."""
        for column in _CORRELATION:
            db.execute(f"ALTER TABLE findings ADD COLUMN {column} TEXT")
        page = (
            f"SELECT {_RECORD_COLUMNS}, NULL, NULL FROM findings f WHERE (host_id, finding_fingerprint) > (?, ?) "
            f"ORDER BY host_id, finding_fingerprint LIMIT {_PAGE_ROWS}"
        )
        after = ("", "")
        while rows := db.execute(page, after).fetchall():
            recs = [self._record(db, r) for r in rows]
            db.executemany(
                "UPDATE findings SET role_name = ?, signed = ? WHERE host_id = ? AND finding_fingerprint = ?",
                [(*_correlation_columns(rec), rec.host_id, rec.finding_fingerprint) for rec in recs],
            )
            after = (recs[-1].host_id, recs[-1].finding_fingerprint)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Every write inside is one write transaction (write lock taken up front, one commit and one sync at the
        end; rolled back if the block raises). Nested: part of the outer one."""
        with self._lock:
            if self._in_transaction:
                yield
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: {exc}") from exc
            self._in_transaction = True
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._new_exemplars.clear()
                try:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the error that made us roll back is the one to report
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"store {self.path}: {exc}") from exc
                raise
            finally:
                self._in_transaction = False
            self._remember_exemplars(self._new_exemplars)
            self._new_exemplars.clear()

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction, or in the open one of :meth:`transaction`."""
        with self.transaction():
            try:
                return work(self._db)
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: {exc}") from exc

    # -- exemplars -------------------------------------------------------------------------------------------

    def _remember_exemplars(self, exemplars: Mapping[tuple[str, str], bytes]) -> None:
        if len(self._exemplars) + len(exemplars) > MAX_CACHED_EXEMPLARS:
            self._exemplars.clear()
        self._exemplars.update(exemplars)

    def _exemplar(self, db: sqlite3.Connection, fingerprint: str, kind: str, candidate: bytes | None = None) -> bytes:
        """The exemplar of (key, suggestion kind); ``candidate`` becomes it when there is none yet (inside a write
        transaction: known to this process only once that commits)."""
        name = (fingerprint, kind)
        known = self._exemplars.get(name) or self._new_exemplars.get(name)
        if known is not None:
            return known
        row = db.execute("SELECT data FROM exemplars WHERE fingerprint = ? AND kind = ?", name).fetchone()
        if row is not None:
            known = zlib.decompress(row[0])
            self._remember_exemplars({name: known})
            return known
        if candidate is None:
            raise StoreError(f"store {self.path}: a finding of key {fingerprint[:16]} has no exemplar")
        db.execute("INSERT INTO exemplars VALUES (?, ?, ?)", (fingerprint, kind, zlib.compress(candidate)))
        self._new_exemplars[name] = candidate
        return candidate

    # -- writes ----------------------------------------------------------------------------------------------

    def _put_finding(self, db: sqlite3.Connection, rec: FindingRecord) -> None:
        fields = rec.fields()
        text, suggestion = json_with_member({k: v for k, v in fields.items() if k not in _IN_COLUMNS}, "suggestion")
        rest = text.encode()
        kind = suggestion_kind(rec.suggestion)
        exemplar = self._exemplar(db, rec.fingerprint, kind or "", rest)
        columns = [fields[c] for c in _COLUMNS]
        columns[-1] = canonical_json(rec.location)
        digest = suggestion_digest(rec.suggestion, suggestion)
        db.execute(
            _INSERT_FINDING,
            (*columns, kind, digest, _deflate(rest, exemplar), *_correlation_columns(rec), rec.example),
        )

    def _upsert(
        self, db: sqlite3.Connection, message: Mapping[str, Any], origin: Origin | None, hosts: _HostBatch | None = None
    ) -> bool:
        fp, host_id = message["finding"]["finding_fingerprint"], message["host"]["host_id"]
        row = db.execute(
            f"SELECT {_RECORD_COLUMNS}, NULL, NULL FROM findings f WHERE host_id = ? AND finding_fingerprint = ?",
            (host_id, fp),
        ).fetchone()
        old = self._record(db, row) if row else None
        new = merge_finding(old, message, origin)
        changed = new != old
        if changed:
            self._put_finding(db, new)
        return self._merge_host(db, message, origin, hosts) or changed

    def upsert_finding(self, message: Mapping[str, Any], origin: Origin | None = None) -> bool:
        return self._write(lambda db: self._upsert(db, message, origin))

    def record_heartbeat(self, message: Mapping[str, Any], origin: Origin | None = None) -> bool:
        return self._write(lambda db: self._merge_host(db, message, origin))

    def apply_messages(self, items: Sequence[tuple[Mapping[str, Any], Origin | None]]) -> list[bool | MessageRefused]:
        """Every message in one write transaction (one commit, one sync to disk for the batch)."""

        def work(db: sqlite3.Connection) -> list[bool | MessageRefused]:
            hosts: _HostBatch = {}
            out: list[bool | MessageRefused] = [
                self._upsert(db, message, origin, hosts)
                if message["type"] == "finding"
                else self._merge_host(db, message, origin, hosts)
                for message, origin in items
            ]
            for record, changed in hosts.values():
                if changed:
                    self._put_host(db, record)
            return out

        return self._write(work)

    def claim_host(self, host_id: str, sender: str, *, take_over: bool = False) -> str:
        def work(db: sqlite3.Connection) -> str:
            if take_over:
                db.execute("INSERT OR REPLACE INTO host_owners VALUES (?, ?)", (host_id, sender))
            else:
                db.execute("INSERT OR IGNORE INTO host_owners VALUES (?, ?)", (host_id, sender))
            return str(db.execute("SELECT sender FROM host_owners WHERE host_id = ?", (host_id,)).fetchone()[0])

        return self._write(work)

    @staticmethod
    def _merge_host(
        db: sqlite3.Connection, message: Mapping[str, Any], origin: Origin | None, hosts: _HostBatch | None = None
    ) -> bool:
        """Merge ``message`` into its host's record; with ``hosts`` (a batch's transaction) the record is read once
        and kept there, written by the caller once for the batch (the host's several messages in one batch)."""
        host_id = message["host"]["host_id"]
        if hosts is not None and host_id in hosts:
            old: HostRecord | None = hosts[host_id][0]
            changed_before = hosts[host_id][1]
        else:
            row = db.execute("SELECT data FROM hosts WHERE host_id = ?", (host_id,)).fetchone()
            old = HostRecord.from_dict(json.loads(row[0])) if row else None
            changed_before = False
        new = merge_host(old, message, origin)
        changed = new != old
        if hosts is not None:
            hosts[host_id] = (new, changed or changed_before)
        elif changed:
            SQLiteStore._put_host(db, new)
        return changed

    @staticmethod
    def _put_host(db: sqlite3.Connection, record: HostRecord) -> None:
        db.execute(
            "INSERT OR REPLACE INTO hosts VALUES (?, ?, ?)",
            (record.host_id, record.last_heartbeat, canonical_json(record.fields())),
        )

    def record_deactivation(self, key_id: str, actor: str, at: str) -> None:
        self._write(lambda db: db.execute("INSERT OR REPLACE INTO deactivations VALUES (?, ?, ?)", (key_id, actor, at)))

    def record_key_state(self, state: KeyState) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT OR IGNORE INTO key_states VALUES (?, ?, ?, ?)",
                (state.key_id, state.state, state.at, canonical_json(state.to_dict())),
            )
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
        f"SELECT {_RECORD_COLUMNS}, d.actor, d.at FROM findings f LEFT JOIN deactivations d ON d.key_id = f.key_id"
    )

    def _record(self, db: sqlite3.Connection, row: Sequence[Any]) -> FindingRecord:
        """A record from a row of ``_RECORD_COLUMNS``, the deactivation's actor and time."""
        n = len(_COLUMNS)
        exemplar = self._exemplar(db, row[1], row[n] or "")
        data = json.loads(_inflate(row[n + 2], exemplar))
        data.update({c: row[i] for i, c in enumerate(_COLUMNS)})
        data["location"] = json.loads(row[n - 1])
        if row[n + 3] is not None:
            data["deactivated_by"], data["deactivated_at"] = row[n + 3], row[n + 4]
        return FindingRecord.from_dict(data)

    def _stream(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of ``sql`` a page at a time, from a read-only connection of its own: memory stays bounded
        whatever the store's size, the rows are one consistent snapshot (WAL), and writers are never held up."""
        try:
            db = sqlite3.connect(
                f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode=ro",
                uri=True,
                timeout=BUSY_TIMEOUT_S,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc
        try:
            cursor = db.execute(sql, params)
            while rows := cursor.fetchmany(_PAGE_ROWS):
                yield from rows
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc
        finally:
            db.close()

    def _records(self, rows: Iterable[Sequence[Any]]) -> Iterator[FindingRecord]:
        for row in rows:
            try:
                with self._lock:
                    rec = self._record(self._db, row)
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: {exc}") from exc
            yield rec

    def iter_findings(self) -> Iterator[FindingRecord]:
        yield from self._records(self._stream(self._FINDINGS_SQL + " ORDER BY f.finding_fingerprint, f.host_id"))

    def iter_key_findings(self, fingerprint: str) -> Iterator[FindingRecord]:
        yield from self._records(
            self._stream(
                self._FINDINGS_SQL + " WHERE f.fingerprint = ? ORDER BY f.host_id, f.finding_fingerprint",
                (fingerprint,),
            )
        )

    def _summaries(self, extra: Sequence[str] = ()) -> Iterator[tuple[FindingSummary, tuple[Any, ...]]]:
        """Every finding's summary, with the values of the ``extra`` columns of its row."""
        columns = ", ".join(f"f.{c}" for c in (*_SUMMARY_COLUMNS, *extra))
        sql = (
            f"SELECT {columns}, d.actor, d.at FROM findings f "
            "INDEXED BY findings_key LEFT JOIN deactivations d ON d.key_id = f.key_id "
            "ORDER BY f.fingerprint, f.host_id, f.finding_fingerprint"
        )
        at, n = _SUMMARY_COLUMNS.index("location"), len(_SUMMARY_COLUMNS)
        locations: dict[str, Mapping[str, Any]] = {}  # the same place on many hosts: one dict
        for row in self._stream(sql):
            values = [*row[:n], *row[n + len(extra) :]]
            location = locations.get(row[at])
            if location is None:
                if len(locations) > 10_000:
                    locations.clear()
                location = locations[row[at]] = json.loads(row[at])
            values[at] = location
            yield FindingSummary(*values), row[n : n + len(extra)]

    def iter_finding_summaries(self) -> Iterator[FindingSummary]:
        for summary, _ in self._summaries():
            yield summary

    def iter_signed_summaries(self) -> Iterator[tuple[FindingSummary, str | None, list[str]]]:
        """Every finding's summary (in :meth:`iter_finding_summaries`' order) with the role its suggestion names
        and its :func:`evidence.signed_stamps`: what the audit's correlation reads, without inflating a record."""
        for summary, (role, signed) in self._summaries(_CORRELATION):
            yield summary, role, json.loads(signed) if signed else []

    def get_finding(self, host_id: str, finding_fingerprint: str) -> FindingRecord | None:
        rows = self._query(
            self._FINDINGS_SQL + " WHERE f.host_id = ? AND f.finding_fingerprint = ?", (host_id, finding_fingerprint)
        )
        return next(self._records(rows), None)

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
