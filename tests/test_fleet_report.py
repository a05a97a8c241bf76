"""The fleet report from a real SQLite store filled by the collector's handler: grouping, charts, coverage, formats."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from keysweep.central.fleet_report import build_report, load_report, render_report
from keysweep.central.handler import MessageHandler
from keysweep.central.store import open_store
from keysweep.cli import main
from keysweep.textsafe import csv_cell

from tests.support.fleet import (
    DEAD_KEY,
    HOSTILE_HOST,
    HOSTILE_PATH,
    LIVE_KEY,
    NOW,
    OLD_KEY,
    SECRET_SHAPE,
    build_store,
    messages,
)


@pytest.fixture
def fleet_db(tmp_path: Path) -> Path:
    return build_store(tmp_path / "fleet.db")


def _report(db: Path, **kw):
    store = open_store(str(db), create=False)
    try:
        return load_report(store, now=NOW, **kw)
    finally:
        store.close()


def test_one_row_per_key_with_its_places(fleet_db):
    report = _report(fleet_db)
    assert [k.key_id for k in report.keys] == [LIVE_KEY, OLD_KEY, DEAD_KEY]  # live first, most places first
    live = report.keys[0]
    assert live.status == "live" and live.owner_arn == "arn:aws:iam::534261010715:user/deploy"
    assert live.account_id == "534261010715" and live.compute_kinds == ["ec2"]
    assert live.hosts == ["web-1", "web-2"]  # the duplicate delivery added nothing
    assert [(loc.hostname, loc.place) for loc in live.locations] == [
        ("web-1", "/home/app/.aws/credentials [default]:2"),
        ("web-2", "/srv/app/.env [default]:2"),
    ]
    assert live.first_seen.startswith("2026-11-28T10:00") and live.last_seen.startswith("2026-11-28T10:01")
    assert live.suggestions and live.suggestions[0]["kind"] == "ec2-new-instance-profile"
    old = report.keys[1]
    # the newest verification decides: an unverified sighting later does not hide the live result
    assert old.status == "live" and old.compute_kinds == ["ec2", "eks"] and old.first_seen.startswith("2025-01-01")
    assert report.keys[2].status == "invalid" and report.keys[2].severity == "medium"


def test_charts_and_coverage(fleet_db):
    report = _report(fleet_db)
    charts = report.charts
    assert charts["live_keys_by_account"] == [("534261010715", 2)]
    assert charts["keys_by_status"] == [("live", 2), ("invalid", 1)]
    assert sorted(charts["live_keys_by_compute_kind"]) == [("ec2", 2), ("eks", 1)]
    assert dict(charts["key_age"]) == {"< 1 day": 2, "1–7 days": 0, "7–30 days": 0, "30–90 days": 0,
                                       "90–365 days": 0, "> 1 year": 1}
    assert dict(charts["hosts_affected"]) == {"with live keys": 3, "with other keys": 1, "no keys found": 1,
                                              "silent": 2}
    by_name = {h.coverage.hostname: h for h in report.hosts}
    assert by_name["=etl-task"].coverage.state == "silent" and by_name["=etl-task"].coverage.errors
    assert by_name[HOSTILE_HOST].coverage.state == "no-heartbeat"
    assert by_name["web-1"].coverage.agent_version == "0.2.0" and not by_name["web-1"].silent
    assert (by_name["web-1"].keys, by_name["web-1"].live_keys) == (2, 2)
    assert (by_name["quiet-1"].keys, by_name["quiet-1"].coverage.files_scanned) == (0, 42)
    assert [h.silent for h in report.hosts][:2] == [True, True]  # silent hosts first
    summary = report.summary()
    assert summary == {"keys": 3, "live_keys": 2, "locations": 5, "hosts": 5, "hosts_with_keys": 4,
                       "hosts_with_live_keys": 3, "silent_hosts": 2, "deactivated_keys": 0}
    # a wider silence window brings the ETL task back
    assert _report(fleet_db, silent_after=timedelta(days=7)).summary()["silent_hosts"] == 1


def test_deactivation_shows_on_the_key(fleet_db):
    store = open_store(str(fleet_db), create=False)
    try:
        store.record_deactivation(LIVE_KEY, "arn:aws:sts::123456789012:assumed-role/Sec/alice", "2026-11-28T11:00:00Z")
        report = load_report(store, now=NOW)
    finally:
        store.close()
    key = next(k for k in report.keys if k.key_id == LIVE_KEY)
    assert key.deactivated_by.endswith("/alice") and key.deactivated_at == "2026-11-28T11:00:00Z"
    out = io.StringIO()
    render_report(report, "table", out)
    assert "deactivated 2026-11-28T11:00:00Z by arn:aws:sts::123456789012:assumed-role/Sec/alice" in out.getvalue()


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main(["report", *argv])
    captured = capsys.readouterr()
    return code, captured.out


def test_json_output(fleet_db, capsys):
    code, out = _cli(capsys, "--db", str(fleet_db), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["summary"]["keys"] == 3
    live = doc["keys"][0]
    assert live["key_id"] == LIVE_KEY and live["hosts"] == ["web-1", "web-2"]
    assert live["suggestions"][0]["commands"] and live["locations"][0]["location"]["profile"] == "default"
    assert {h["hostname"] for h in doc["hosts"]} == {"web-1", "web-2", "=etl-task", HOSTILE_HOST, "quiet-1"}
    assert "live_keys_by_account" in doc["charts"]


def test_csv_output_is_spreadsheet_safe(fleet_db, capsys):
    code, out = _cli(capsys, "--db", str(fleet_db), "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["key_id"] for r in rows] == [LIVE_KEY, OLD_KEY, DEAD_KEY]
    assert rows[0]["locations"].splitlines() == ["web-1:/home/app/.aws/credentials [default]:2",
                                                "web-2:/srv/app/.env [default]:2"]
    assert rows[0]["commands"].splitlines()[0].startswith("aws iam create-role")
    assert rows[2]["hosts"] == "'=etl-task"  # would be a formula in a spreadsheet
    assert all(not v.startswith(("=", "+", "-", "@")) for r in rows for v in r.values() if v)
    assert csv_cell("-1") == "'-1" and csv_cell("ok") == "ok" and csv_cell(None) == ""


def test_table_output_shows_control_characters_instead_of_running_them(fleet_db, capsys):
    code, out = _cli(capsys, "--db", str(fleet_db), "--format", "table")
    assert code == 0
    assert "\x1b" not in out and "\\x1b[31m" in out
    assert "SILENT" in out and "NO-HEARTBEAT" in out and "0.2.0" in out
    assert f"{LIVE_KEY}   534261010715  live" in out


def test_output_file_and_missing_store(fleet_db, tmp_path, capsys):
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()
    assert main(["report", "--db", str(fleet_db), "--format", "json", "--output", str(target)]) == 0
    assert json.loads(target.read_text())["summary"]["live_keys"] == 2
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]  # no temporary file left behind
    assert main(["report", "--db", str(tmp_path / "nope.db")]) == 2  # a usage error: the store is not there
    assert not (tmp_path / "nope.db").exists()  # a typo does not create an empty store
    assert "run `keysweep collect" in capsys.readouterr().err
    assert main(["report", "--db", str(fleet_db), "--silent-after", "0"]) == 2


def test_empty_store(tmp_path, capsys):
    db = tmp_path / "empty.db"
    open_store(str(db)).close()
    for fmt in ("table", "json", "csv", "html"):
        assert main(["report", "--db", str(db), "--format", fmt]) == 0
    assert "0 key(s)" in capsys.readouterr().out


def test_no_secret_in_store_or_any_output(fleet_db, tmp_path, capsys):
    outputs = [fleet_db.read_bytes().decode("utf-8", "replace")]
    for fmt in ("table", "json", "csv", "html"):
        assert main(["report", "--db", str(fleet_db), "--format", fmt]) == 0
        outputs.append(capsys.readouterr().out)
    for text in outputs:
        assert not SECRET_SHAPE.search(text), SECRET_SHAPE.search(text)
        assert "wJalrXUtnFEMI" not in text  # only the 4-character redaction ever travels
    report = build_report([], [], now=NOW)
    assert report.summary()["keys"] == 0


def test_hostile_values_survive_as_text(fleet_db):
    report = _report(fleet_db)
    old = next(k for k in report.keys if k.key_id == OLD_KEY)
    assert any(loc.place.startswith(HOSTILE_PATH) for loc in old.locations)


@pytest.mark.timeout(120)
def test_report_from_the_dynamodb_store(moto_server, capsys):
    store = open_store("dynamodb://keysweep-fleet")
    try:
        handler = MessageHandler(store)
        for message in messages():
            handler.handle(json.dumps(message))
    finally:
        store.close()
    sqlite_doc = build_report([], [], now=NOW)  # shape only
    assert main(["report", "--db", "dynamodb://keysweep-fleet", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [k["key_id"] for k in doc["keys"]] == [LIVE_KEY, OLD_KEY, DEAD_KEY]
    assert doc["keys"][0]["hosts"] == ["web-1", "web-2"] and doc["summary"]["hosts"] == 5
    assert set(doc) == set(sqlite_doc.to_dict())
