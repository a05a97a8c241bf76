"""The store as date-partitioned, gzip JSON lines in S3, for Athena (``keysweep export``).

Each export is a snapshot of the whole store on its day (UTC)::

    s3://BUCKET/PREFIX/findings/dt=2026-12-03/part-0000.json.gz   one object per finding (a key at a place on a host)
    s3://BUCKET/PREFIX/hosts/dt=2026-12-03/part-0000.json.gz      one object per host, with its coverage that day

so a table over all days holds the fleet's history: a key's status and places on any day, when a host went
silent. Exporting again on the same day replaces that day's partition (parts left from an earlier, larger export of
the day are deleted). Rows are streamed from the store into a part file on local disk (a new part every
``rows_per_part`` rows), each part uploaded when complete: memory stays bounded whatever the store's size.

The columns are declared once here (:data:`FINDING_COLUMNS`, :data:`HOST_COLUMNS`); the rows are made to fit them
exactly (:func:`keysweep.central.athena.conform`) and :func:`athena_ddl` writes the tables from the same list. The
store holds no secret and neither does the export: not even the finding's redacted secret is written.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from importlib import resources
from typing import IO, Any

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from keysweep import timeutil
from keysweep.central.athena import Array, AthenaType, Struct, conform, from_schema, render
from keysweep.central.coverage import DEFAULT_SILENT_AFTER, host_coverage
from keysweep.central.fleet_report import place
from keysweep.central.records import HostRecord
from keysweep.central.store import Store
from keysweep.errors import ConfigError, KeysweepError
from keysweep.retry import failure_name

ROWS_PER_PART = 250_000
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")


class ExportError(KeysweepError):
    """S3 refused or failed a request of the export."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # without leading or trailing "/"; may be empty

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not url.startswith("s3://"):
            raise ConfigError(f"--s3 {url}: expected s3://BUCKET/PREFIX")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not _BUCKET.match(bucket):
            raise ConfigError(f"--s3 {url}: {bucket!r} is not an S3 bucket name")
        return cls(bucket, prefix.strip("/"))

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def url(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


@dataclass(frozen=True)
class Column:
    name: str
    kind: AthenaType
    value: Callable[[Any], Any]
    comment: str = ""


@lru_cache(maxsize=1)
def _schema_types() -> dict[str, AthenaType | None]:
    schema = json.loads(resources.files("keysweep.schemas").joinpath("message-v1.schema.json").read_text())
    defs = schema["$defs"]
    return {name: from_schema(defs[name], defs) for name in ("host", "location", "verification", "spool")}


def _schema_type(name: str) -> AthenaType:
    kind = _schema_types()[name]
    assert kind is not None
    return kind


HISTORY = Array(
    Struct(tuple((n, "string") for n in ("status", "at", "last_at", "arn", "reason", "request_id", "last_request_id")))
)


def _attr(name: str) -> Callable[[Any], Any]:
    return lambda record: getattr(record, name)


def _finding_columns() -> tuple[Column, ...]:
    s = "string"
    plain = [
        ("host_id", s, "the host (join hosts on host_id and dt)"),
        ("hostname", s, ""),
        ("host_kind", s, ""),
        ("finding_fingerprint", s, "with host_id: the place"),
        ("fingerprint", s, "the key: shared by its places"),
        ("key_id", s, ""),
        ("key_type", s, ""),
        ("account_id", s, "the key's account"),
        ("rule", s, ""),
        ("severity", s, ""),
        ("has_secret", "boolean", "the secret was found beside the key id"),
        ("pairing", s, ""),
        ("status", s, "this host's newest verification status (null: not verified)"),
        ("verified_at", s, "ISO-8601 UTC"),
        ("owner_arn", s, ""),
        ("first_seen", s, "ISO-8601 UTC"),
        ("last_seen", s, "ISO-8601 UTC"),
        ("received_first", s, "the queue's time of the first message"),
        ("agent_version", s, ""),
        ("sender", s, "SQS SenderId of the newest message"),
        ("deactivated_by", s, ""),
        ("deactivated_at", s, ""),
    ]
    return (
        *(Column(name, kind, _attr(name), comment) for name, kind, comment in plain),
        Column("place", s, lambda r: place(r.location), "where on the host, in short"),
        Column("location", _schema_type("location"), _attr("location")),
        Column("verification", _schema_type("verification"), _attr("verification")),
        Column("verification_history", HISTORY, lambda r: list(r.verification_history)),
        Column("suggestion_kind", s, lambda r: (r.suggestion or {}).get("kind")),
        Column("suggestion_summary", s, lambda r: (r.suggestion or {}).get("summary")),
    )


@dataclass(frozen=True)
class _CoveredHost:
    """A host record with its coverage state on the export's day, for the hosts table."""

    record: HostRecord
    coverage_state: str


SWEEP = Struct(
    (
        ("sweep_id", "string"),
        ("started_at", "string"),
        ("finished_at", "string"),
        ("duration_s", "double"),
        ("files_scanned", "bigint"),
        ("bytes_scanned", "bigint"),
    )
)


def _sweep(host: _CoveredHost) -> dict[str, Any] | None:
    record = host.record
    if not record.last_sweep:
        return None
    stats = record.last_sweep.get("stats") or {}
    return {
        **record.last_sweep,
        "files_scanned": stats.get("files_scanned"),
        "bytes_scanned": stats.get("bytes_scanned"),
    }


def _host_attr(name: str) -> Callable[[_CoveredHost], Any]:
    return lambda host: getattr(host.record, name)


def _host_columns() -> tuple[Column, ...]:
    s = "string"
    plain = [
        ("host_id", s, ""),
        ("hostname", s, ""),
        ("kind", s, ""),
        ("agent_version", s, ""),
        ("agent_mode", s, ""),
        ("first_seen", s, "ISO-8601 UTC"),
        ("last_message_at", s, "any message"),
        ("last_heartbeat", s, "null: findings but never a heartbeat"),
        ("sender", s, "SQS SenderId"),
    ]
    return (
        *(Column(name, kind, _host_attr(name), comment) for name, kind, comment in plain),
        Column("coverage_state", s, lambda h: h.coverage_state, "on the export's day: ok | silent | no-heartbeat"),
        Column("errors", Array(s), lambda h: list(h.record.errors)),
        Column("context", _schema_type("host"), _host_attr("host"), "where the host runs (account, region, instance…)"),
        Column("last_sweep", SWEEP, _sweep),
        Column("spool", _schema_type("spool"), _host_attr("spool")),
    )


FINDING_COLUMNS = _finding_columns()
HOST_COLUMNS = _host_columns()
TABLES: Mapping[str, tuple[Column, ...]] = {"findings": FINDING_COLUMNS, "hosts": HOST_COLUMNS}


def row(columns: Iterable[Column], record: Any) -> dict[str, Any]:
    return {c.name: conform(c.kind, c.value(record)) for c in columns}


@dataclass
class TableExport:
    rows: int = 0
    parts: list[str] = field(default_factory=list)  # keys written
    removed: int = 0  # parts of an earlier export of the same day deleted
    bytes: int = 0  # compressed bytes uploaded


@dataclass
class ExportResult:
    dt: str
    tables: dict[str, TableExport] = field(default_factory=dict)


def _s3_error(what: str, exc: Exception) -> ExportError:
    code = failure_name(exc)
    if isinstance(exc, S3UploadFailedError):  # the transfer manager's wrapper: "… error occurred (Code) …"
        found = re.search(r"\((\w+)\)", str(exc))
        code = found.group(1) if found else code
    return ExportError(f"export: {what}: {code}")


class _PartWriter:
    """Rows as gzip JSON lines into local part files, each uploaded (and removed) once it is complete."""

    def __init__(self, s3: Any, location: S3Location, table: str, dt: str, rows_per_part: int) -> None:
        self._s3, self._location, self._rows_per_part = s3, location, rows_per_part
        self._dir = f"{table}/dt={dt}"
        self.result = TableExport()
        self._file: IO[bytes] | None = None
        self._gzip: gzip.GzipFile | None = None
        self._in_part = 0

    def write(self, data: Mapping[str, Any]) -> None:
        if self._gzip is None:
            self._file = tempfile.TemporaryFile(prefix="keysweep-export-")  # noqa: SIM115 (closed in _flush)
            self._gzip = gzip.GzipFile(fileobj=self._file, mode="wb", compresslevel=6, mtime=0)
        line = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"
        self._gzip.write(line.encode("utf-8"))
        self._in_part += 1
        self.result.rows += 1
        if self._in_part >= self._rows_per_part:
            self._flush()

    def _flush(self) -> None:
        assert self._gzip is not None and self._file is not None
        self._gzip.close()
        key = self._location.key(self._dir, f"part-{len(self.result.parts):04d}.json.gz")
        try:
            self.result.bytes += self._file.tell()
            self._file.seek(0)
            self._s3.upload_fileobj(
                self._file,
                self._location.bucket,
                key,
                ExtraArgs={"ContentType": "application/x-ndjson", "ContentEncoding": "gzip"},
                Config=_transfer_config(),
            )
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise _s3_error(f"upload of {self._location.url(key)} failed", exc) from exc
        finally:
            self._file.close()
            self._file = self._gzip = None
        self.result.parts.append(key)
        self._in_part = 0

    def finish(self) -> TableExport:
        """Upload the last part (an empty table still gets one, empty part: the day's partition exists), then
        delete the day's parts this export did not write."""
        if self._gzip is not None or not self.result.parts:
            if self._gzip is None:
                self._file = tempfile.TemporaryFile(prefix="keysweep-export-")  # noqa: SIM115
                self._gzip = gzip.GzipFile(fileobj=self._file, mode="wb", mtime=0)
            self._flush()
        written = set(self.result.parts)
        stale: list[str] = []
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._location.bucket, Prefix=self._location.key(self._dir) + "/"
            )
            for page in pages:
                stale += [o["Key"] for o in page.get("Contents", []) if o["Key"] not in written]
            for start in range(0, len(stale), 1000):
                answer = self._s3.delete_objects(
                    Bucket=self._location.bucket,
                    Delete={"Objects": [{"Key": k} for k in stale[start : start + 1000]], "Quiet": True},
                )
                if answer.get("Errors"):
                    raise ExportError(
                        f"export: could not delete {len(answer['Errors'])} old part(s) under "
                        f"{self._location.url(self._dir)}: {answer['Errors'][0].get('Code')}"
                    )
        except (ClientError, BotoCoreError) as exc:
            raise _s3_error(f"clean-up of {self._location.url(self._dir)} failed", exc) from exc
        self.result.removed = len(stale)
        return self.result


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    # a few 8 MiB chunks in flight at most: the upload's memory stays small whatever the part's size
    return TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024, max_concurrency=2)


def _covered(hosts: Iterable[HostRecord], now: datetime, silent_after: timedelta) -> Iterator[_CoveredHost]:
    for host in hosts:
        state = host_coverage([host], now=now, silent_after=silent_after).hosts[0].state
        yield _CoveredHost(host, state)


def export_store(
    store: Store,
    location: S3Location,
    s3: Any,
    *,
    now: datetime | None = None,
    silent_after: timedelta = DEFAULT_SILENT_AFTER,
    rows_per_part: int = ROWS_PER_PART,
) -> ExportResult:
    """Write the store's findings and hosts as the partition of ``now``'s day (UTC)."""
    now = now or timeutil.now()
    dt = now.astimezone(timeutil.UTC).date().isoformat()
    result = ExportResult(dt)
    sources: dict[str, Iterable[Any]] = {
        "findings": store.iter_findings(),
        "hosts": _covered(store.iter_hosts(), now, silent_after),
    }
    for table, records in sources.items():
        writer = _PartWriter(s3, location, table, dt, rows_per_part)
        columns = TABLES[table]
        for record in records:
            writer.write(row(columns, record))
        result.tables[table] = writer.finish()
    return result


# -- Athena ----------------------------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def athena_ddl(
    location: S3Location, *, database: str = "keysweep", first_day: date | None = None, day: date | None = None
) -> str:
    """The CREATE statements for both tables (partition projection on ``dt``), and ready queries on ``day``'s
    export (default today, UTC)."""
    first = (first_day or date(2026, 1, 1)).isoformat()
    out = [
        f"-- keysweep export tables over {location.url()} (Athena engine version 3).",
        "-- Partitions are found by partition projection: no MSCK REPAIR TABLE or ALTER TABLE ADD PARTITION needed.",
        "-- Without projection (remove the projection.* properties), run `MSCK REPAIR TABLE <table>;` after each",
        "-- export to add its new dt=YYYY-MM-DD partition. Times are ISO-8601 UTC strings: from_iso8601_timestamp().",
        f"CREATE DATABASE IF NOT EXISTS {database};",
        "",
    ]
    for table, columns in TABLES.items():
        cols = ",\n".join(
            f"  `{c.name}` {render(c.kind)}" + (f" COMMENT {_quote(c.comment)}" if c.comment else "") for c in columns
        )
        root = location.url(table)
        out += [
            f"CREATE EXTERNAL TABLE IF NOT EXISTS {database}.{table} (",
            cols,
            ")",
            "PARTITIONED BY (`dt` string)",
            "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'",
            "WITH SERDEPROPERTIES ('ignore.malformed.json' = 'false')",
            "STORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'",
            "OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'",
            f"LOCATION {_quote(root + '/')}",
            "TBLPROPERTIES (",
            "  'projection.enabled' = 'true',",
            "  'projection.dt.type' = 'date',",
            "  'projection.dt.format' = 'yyyy-MM-dd',",
            f"  'projection.dt.range' = '{first},NOW',",
            "  'projection.dt.interval' = '1',",
            "  'projection.dt.interval.unit' = 'DAYS',",
            f"  'storage.location.template' = {_quote(root + '/dt=${dt}/')}",
            ");",
            "",
        ]
    out += _queries(database, (day or timeutil.now().date()).isoformat())
    return "\n".join(out)


def _queries(db: str, day: str) -> list[str]:
    # a literal day, so that Athena reads one partition only (a `max(dt)` subquery would read them all)
    latest = f"'{day}'"
    return [
        f"-- Ready queries on the export of {day}: change the dt condition for another day or a range of days.",
        "",
        "-- Live keys by account: each key's status is its most urgent host's own newest check.",
        "WITH host_word AS (",
        "  SELECT key_id, account_id, host_id, status,",
        "         row_number() OVER (PARTITION BY key_id, host_id ORDER BY verified_at DESC NULLS LAST) AS newest",
        f"  FROM {db}.findings WHERE dt = {latest}",
        ")",
        "SELECT account_id, count(DISTINCT key_id) AS live_keys, count(DISTINCT host_id) AS hosts",
        "FROM host_word WHERE newest = 1 AND status = 'live'",
        "GROUP BY account_id ORDER BY live_keys DESC;",
        "",
        "-- Hosts per key, with the places and the first time any host reported it.",
        "SELECT key_id, account_id, count(DISTINCT host_id) AS hosts, count(*) AS places,",
        "       min(first_seen) AS first_seen, array_join(slice(array_agg(DISTINCT hostname), 1, 10), ', ') AS some_hosts",
        f"FROM {db}.findings WHERE dt = {latest}",
        "GROUP BY key_id, account_id ORDER BY hosts DESC;",
        "",
        "-- Coverage: hosts by state and agent version on that day, and the hosts that are not ok.",
        "SELECT coverage_state, agent_version, count(*) AS hosts",
        f"FROM {db}.hosts WHERE dt = {latest}",
        "GROUP BY coverage_state, agent_version ORDER BY coverage_state, hosts DESC;",
        "SELECT host_id, hostname, kind, context.account_id, context.region, last_heartbeat",
        f"FROM {db}.hosts WHERE dt = {latest} AND coverage_state <> 'ok' ORDER BY last_heartbeat NULLS FIRST;",
        "",
        "-- A key's history across exports: on which days it was found, on how many hosts, with which statuses.",
        "SELECT dt, count(DISTINCT host_id) AS hosts, array_join(array_agg(DISTINCT coalesce(status, 'unverified')), ',')",
        f"FROM {db}.findings WHERE key_id = 'AKIA…' GROUP BY dt ORDER BY dt;",
        "",
    ]
