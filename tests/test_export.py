"""`keysweep export`: the store as date-partitioned gzip JSON lines in moto's S3, and Athena DDL that names exactly
the exported fields."""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from keysweep.central.export import S3Location, athena_ddl, export_store
from keysweep.central.handler import MessageHandler, Outcome, queue_origin
from keysweep.central.store import open_store
from keysweep.cli import main
from keysweep.fingerprint import Fingerprinter
from keysweep.models import HostContext
from keysweep.report.message import encode_message, finding_message, heartbeat_message
from keysweep.suggest import suggest

from tests.support import fleet
from tests.support.planted import LIVE, planted_findings

BUCKET = "fleet-exports"
DAY = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
FP = Fingerprinter(b"e" * 32)


def s3() -> Any:
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def objects(client: Any, prefix: str = "") -> dict[str, list[dict[str, Any]]]:
    """Every exported object: key -> its rows."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            data = gzip.decompress(client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read())
            out[obj["Key"]] = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    return out


def planted_store(path: Path) -> tuple[str, list[str]]:
    """A store filled with genuine agent messages about keys whose secrets the agent found (and never sent)."""
    findings, planted = planted_findings(4, fingerprinter=FP, verification=LIVE)
    db = str(fleet.build_store(path))
    store = open_store(db)
    try:
        handler = MessageHandler(store)
        for i, f in enumerate(findings):
            context = HostContext(
                kind="ec2",
                hostname=f"app-{i}",
                host_id=f"i-0bbbbbbbbbbbbbb{i:02d}",
                instance_id=f"i-0bbbbbbbbbbbbbb{i:02d}",
                account_id="123456789012",
                region="eu-west-1",
            )
            ffp = FP.finding_fingerprint(context.host_id, f.location, f.fingerprint)
            msg = finding_message(
                f, context, finding_fingerprint=ffp, suggestion=suggest(f, context), report_reason="new"
            )
            beat = heartbeat_message(context, stats=None, findings=[], started_at=0, finished_at=0, spool={})
            origin = queue_origin({"SenderId": f"AROAEXAMPLEAGENTROLE1:{context.host_id}"})
            for m in (msg, beat):
                assert handler.handle(encode_message(m, 256 * 1024), origin).outcome is Outcome.OK
        store.record_deactivation(findings[0].key_id, "arn:aws:iam::123456789012:user/secops", "2026-12-01T00:00:00Z")
    finally:
        store.close()
    return db, [p.secret for p in planted]


# -- the DDL, parsed on its own terms -------------------------------------------------------------------------------


def _parse_type(text: str) -> tuple[Any, str]:
    """(type tree, rest) of an Athena type: 'string' | ('array', t) | ('struct', {name: t})."""
    m = re.match(r"(string|bigint|double|boolean)", text)
    if m:
        return m.group(1), text[m.end() :]
    if text.startswith("array<"):
        item, rest = _parse_type(text[len("array<") :])
        assert rest.startswith(">")
        return ("array", item), rest[1:]
    assert text.startswith("struct<"), text
    rest, fields = text[len("struct<") :], {}
    while True:
        m = re.match(r"`([a-z_]+)`:", rest)
        assert m, rest
        fields[m.group(1)], rest = _parse_type(rest[m.end() :])
        if rest.startswith(">"):
            return ("struct", fields), rest[1:]
        assert rest.startswith(","), rest
        rest = rest[1:]


def ddl_tables(ddl: str) -> dict[str, dict[str, Any]]:
    """table -> {column: type tree, "<location>": ..., "<template>": ..., "<partitions>": [...]}"""
    tables = {}
    for m in re.finditer(
        r"CREATE EXTERNAL TABLE IF NOT EXISTS \w+\.(\w+) \(\n(.*?)\n\)\nPARTITIONED BY \((.*?)\)"
        r"(.*?);\n",
        ddl,
        re.S,
    ):
        columns: dict[str, Any] = {}
        for line in m.group(2).split("\n"):
            col = re.match(r"  `(\w+)` (\S+)(?: COMMENT '(?:[^']|'')*')?,?\Z", line)
            assert col, line
            columns[col.group(1)], rest = _parse_type(col.group(2).rstrip(","))
            assert rest == ""
        columns["<partitions>"] = re.findall(r"`(\w+)` string", m.group(3))
        columns["<location>"] = re.search(r"LOCATION '([^']*)'", m.group(4)).group(1)
        columns["<template>"] = re.search(r"'storage.location.template' = '([^']*)'", m.group(4)).group(1)
        tables[m.group(1)] = columns
    return tables


def assert_fits(kind: Any, value: Any, where: str) -> None:
    """``value`` is exactly what ``kind`` declares: struct keys equal the declared fields, scalars of the type."""
    if value is None:
        return
    if kind == "string":
        assert isinstance(value, str), where
    elif kind == "bigint":
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif kind == "double":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
    elif kind == "boolean":
        assert isinstance(value, bool), where
    elif kind[0] == "array":
        assert isinstance(value, list), where
        for i, v in enumerate(value):
            assert_fits(kind[1], v, f"{where}[{i}]")
    else:
        assert isinstance(value, dict) and set(value) == set(kind[1]), (where, set(value) ^ set(kind[1]))
        for name, t in kind[1].items():
            assert_fits(t, value[name], f"{where}.{name}")


def test_export_matches_the_ddl_and_holds_no_secret(moto_server: Any, tmp_path: Path) -> None:
    client = s3()
    db, secrets = planted_store(tmp_path / "fleet.db")
    store = open_store(db, create=False)
    try:
        records = list(store.iter_findings())
        hosts = list(store.iter_hosts())
        location = S3Location.parse(f"s3://{BUCKET}/keysweep/prod")
        now = datetime.now(UTC)
        result = export_store(store, location, client, now=now, rows_per_part=3)
    finally:
        store.close()
    day = now.date().isoformat()
    assert result.dt == day
    assert result.tables["findings"].rows == len(records) == 9
    exported = objects(client)
    assert sorted(exported) == [f"keysweep/prod/findings/dt={day}/part-000{i}.json.gz" for i in range(3)] + [
        f"keysweep/prod/hosts/dt={day}/part-000{i}.json.gz" for i in range(3)
    ]
    rows = {t: [r for k, rs in exported.items() if f"/{t}/" in k for r in rs] for t in ("findings", "hosts")}
    assert sorted((r["host_id"], r["finding_fingerprint"]) for r in rows["findings"]) == sorted(
        (r.host_id, r.finding_fingerprint) for r in records
    )
    assert sorted(r["host_id"] for r in rows["hosts"]) == sorted(h.host_id for h in hosts)

    tables = ddl_tables(athena_ddl(location))
    assert set(tables) == {"findings", "hosts"}
    for table, exported_rows in rows.items():
        columns = {k: v for k, v in tables[table].items() if not k.startswith("<")}
        assert tables[table]["<partitions>"] == ["dt"]
        assert tables[table]["<location>"] == f"s3://{BUCKET}/keysweep/prod/{table}/"
        assert tables[table]["<template>"] == f"s3://{BUCKET}/keysweep/prod/{table}/dt=${{dt}}/"
        for i, row in enumerate(exported_rows):
            assert set(row) == set(columns), set(row) ^ set(columns)  # every column in the data, and only those
            for name, kind in columns.items():
                assert_fits(kind, row[name], f"{table}[{i}].{name}")
        # every column (and struct field) the DDL names holds a value in some row: none is named for nothing
        for name in columns:
            assert any(row[name] is not None for row in exported_rows), f"{table}.{name} is always null"

    by_place = {(r["host_id"], r["place"]): r for r in rows["findings"]}
    live = by_place[(fleet.WEB1["host_id"], "/home/app/.aws/credentials [default]:2")]
    assert (live["status"], live["key_id"], live["location"]["line"]) == ("live", fleet.LIVE_KEY, 2)
    assert live["verification_history"][0]["status"] == "live"
    states = {r["host_id"]: r["coverage_state"] for r in rows["hosts"]}
    assert states[fleet.ETL["host_id"]] == "silent" and states[fleet.QUIET["host_id"]] == "silent"
    assert states["i-0bbbbbbbbbbbbbb00"] == "ok"

    everything = json.dumps(rows)
    assert len(secrets) == 4
    for secret in secrets:
        assert secret not in everything and secret[:12] not in everything
    assert "wJal" not in everything  # not even the redacted form the agent sent
    assert not fleet.SECRET_SHAPE.search(everything)


def test_a_second_export_the_same_day_replaces_that_day_only(moto_server: Any, tmp_path: Path) -> None:
    client = s3()
    db = str(fleet.build_store(tmp_path / "fleet.db"))
    location = S3Location.parse(f"s3://{BUCKET}/")
    store = open_store(db, create=False)
    try:
        export_store(store, location, client, now=DAY.replace(day=2), rows_per_part=2)
        first = export_store(store, location, client, now=DAY, rows_per_part=2)
        again = export_store(store, location, client, now=DAY, rows_per_part=100)
    finally:
        store.close()
    assert len(first.tables["findings"].parts) == 3 and first.tables["findings"].removed == 0
    assert again.tables["findings"].parts == ["findings/dt=2026-12-03/part-0000.json.gz"]
    assert again.tables["findings"].removed == 2
    keys = sorted(objects(client, "findings/"))
    assert keys == [f"findings/dt=2026-12-02/part-000{i}.json.gz" for i in range(3)] + [
        "findings/dt=2026-12-03/part-0000.json.gz"
    ]
    assert len(objects(client, "findings/dt=2026-12-03/")["findings/dt=2026-12-03/part-0000.json.gz"]) == 5


def test_empty_store_still_writes_the_days_partition(moto_server: Any, tmp_path: Path) -> None:
    client = s3()
    open_store(str(tmp_path / "empty.db")).close()
    store = open_store(str(tmp_path / "empty.db"), create=False)
    try:
        result = export_store(store, S3Location.parse(f"s3://{BUCKET}/x"), client, now=DAY)
    finally:
        store.close()
    assert result.tables["findings"].rows == 0
    assert objects(client) == {
        "x/findings/dt=2026-12-03/part-0000.json.gz": [],
        "x/hosts/dt=2026-12-03/part-0000.json.gz": [],
    }


def test_cli_exports_from_sqlite_and_dynamodb(
    moto_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = s3()
    db = str(fleet.build_store(tmp_path / "fleet.db"))
    assert main(["export", "--db", db, "--s3", f"s3://{BUCKET}/sqlite"]) == 0
    err = capsys.readouterr().err
    assert re.search(
        r"export: findings: 5 row\(s\) in 1 part\(s\), \d+ bytes, 0 old part\(s\) removed, "
        rf"s3://{BUCKET}/sqlite/findings/dt=\d{{4}}-\d\d-\d\d/",
        err,
    ), err

    store = open_store("dynamodb://fleet-export")
    try:
        handler = MessageHandler(store)
        for message in fleet.messages():
            assert handler.handle(json.dumps(message)).outcome is Outcome.OK
    finally:
        store.close()
    assert main(["export", "--db", "dynamodb://fleet-export", "--s3", f"s3://{BUCKET}/ddb"]) == 0
    capsys.readouterr()
    from_sqlite, from_ddb = objects(client, "sqlite/findings/"), objects(client, "ddb/findings/")
    assert sorted(json.dumps(r, sort_keys=True) for rs in from_sqlite.values() for r in rs) == sorted(
        json.dumps(r, sort_keys=True) for rs in from_ddb.values() for r in rs
    )


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--s3", "https://x/y"], 2, "expected s3://BUCKET/PREFIX"),
        (["--s3", "s3://A_B/x"], 2, "not an S3 bucket name"),
        (["--s3", f"s3://{BUCKET}/x", "--db", "nope.db"], 2, "no such store"),
        (["--s3", "s3://no-such-bucket-here/x"], 3, "NoSuchBucket"),
    ],
)
def test_cli_errors(
    moto_server: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: Any,
    args: list[str],
    code: int,
    says: str,
) -> None:
    s3()
    monkeypatch.chdir(tmp_path)
    fleet.build_store(tmp_path / "keysweep.db")
    assert main(["export", *args]) == code
    assert says in capsys.readouterr().err


def test_athena_ddl_is_printed_without_a_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--s3", "s3://org-security/keysweep", "--athena-ddl", "--database", "fleet"]) == 0
    out = capsys.readouterr().out
    assert set(ddl_tables(out)) == {"findings", "hosts"}
    assert "CREATE DATABASE IF NOT EXISTS fleet;" in out and "MSCK REPAIR TABLE" in out
    for query in ("live_keys", "hosts per key", "coverage_state"):
        assert query.lower() in out.lower()
    assert not (tmp_path / "keysweep.db").exists()
