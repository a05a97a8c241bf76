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
from keysweep.fingerprint import Fingerprinter
from keysweep.models import HostContext, Verification
from keysweep.report.message import encode_message
from keysweep.report.message import finding_message as agent_finding
from keysweep.suggest import suggest
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
from tests.support.planted import planted_findings


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
    assert dict(charts["key_age"]) == {
        "< 1 day": 2,
        "1–7 days": 0,
        "7–30 days": 0,
        "30–90 days": 0,
        "90–365 days": 0,
        "> 1 year": 1,
    }
    assert dict(charts["hosts_affected"]) == {
        "with live keys": 3,
        "with other keys": 1,
        "no keys found": 1,
        "silent": 2,
    }
    by_name = {h.coverage.hostname: h for h in report.hosts}
    assert by_name["=etl-task"].coverage.state == "silent" and by_name["=etl-task"].coverage.errors
    assert by_name[HOSTILE_HOST].coverage.state == "no-heartbeat"
    assert by_name["web-1"].coverage.agent_version == "0.2.0" and not by_name["web-1"].silent
    assert (by_name["web-1"].keys, by_name["web-1"].live_keys) == (2, 2)
    assert (by_name["quiet-1"].keys, by_name["quiet-1"].coverage.files_scanned) == (0, 42)
    assert [h.silent for h in report.hosts][:2] == [True, True]  # silent hosts first
    summary = report.summary()
    assert summary == {
        "keys": 3,
        "live_keys": 2,
        "locations": 5,
        "hosts": 5,
        "hosts_with_keys": 4,
        "hosts_with_live_keys": 3,
        "silent_hosts": 2,
        "deactivated_keys": 0,
    }
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
    render_report(report, "table", out, details=True)
    assert "  deactivated 2026-11-28T11:00:00Z by arn:aws:sts::123456789012:assumed-role/Sec/alice\n" in out.getvalue()
    table = io.StringIO()
    render_report(report, "table", table)
    assert "1 deactivated" in table.getvalue() and "/alice" not in table.getvalue()


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
    assert rows[0]["locations"].splitlines() == [
        "web-1:/home/app/.aws/credentials [default]:2",
        "web-2:/srv/app/.env [default]:2",
    ]
    assert rows[0]["commands"].splitlines()[0].startswith("aws iam create-role")
    assert rows[2]["hosts"] == "'=etl-task"  # would be a formula in a spreadsheet
    assert all(not v.startswith(("=", "+", "-", "@")) for r in rows for v in r.values() if v)
    assert csv_cell("-1") == "'-1" and csv_cell("ok") == "ok" and csv_cell(None) == ""


def test_table_output_shows_control_characters_instead_of_running_them(fleet_db, capsys):
    code, out = _cli(capsys, "--db", str(fleet_db), "--format", "table", "--details")
    assert code == 0
    assert "\x1b" not in out and "\\x1b[31m" in out
    assert "SILENT" in out and "NO-HEARTBEAT" in out and "0.2.0" in out
    shown = HOSTILE_PATH.replace("\x1b", "\\x1b")  # the whole place, its control character made visible
    assert f"  at {HOSTILE_HOST} (eks): {shown} [default]:2" in out.splitlines()


# ------------------------------------------------------------------------------------------------ the table

ALICE_CTX = HostContext(
    kind="ec2",
    hostname="app-7",
    host_id="i-0ccccccccccccccc7",
    instance_id="i-0ccccccccccccccc7",
    account_id="534261010715",
    region="eu-west-1",
)
ALICE = Verification(
    status="live",
    account="534261010715",
    arn="arn:aws:iam::534261010715:user/engineering/alice.with-a-rather-long-user-name-indeed",
    principal_type="iam-user",
    checked_at="2026-11-28T11:50:00Z",
)


def _genuine(context: HostContext, verification: Verification, sent_at: str) -> dict:
    """A finding message exactly as the agent on ``context`` builds it, with the suggestion it makes."""
    fp = Fingerprinter(b"t" * 32)
    finding = planted_findings(1, fingerprinter=fp, verification=verification, path="/opt/app/.env")[0][0]
    msg = agent_finding(
        finding,
        context,
        finding_fingerprint=fp.finding_fingerprint(context.host_id, finding.location, finding.fingerprint),
        suggestion=suggest(finding, context),
        report_reason="new",
    )
    msg["sent_at"] = msg["finding"]["first_seen"] = msg["finding"]["last_seen"] = sent_at
    return json.loads(encode_message(msg, 256 * 1024))


@pytest.fixture
def genuine_db(tmp_path: Path) -> tuple[Path, str]:
    message = _genuine(ALICE_CTX, ALICE, "2026-11-16T12:00:00Z")
    return build_store(tmp_path / "fleet.db", [message]), message["finding"]["key_id"]


HEADER_LINES, FOOTER_LINES = 1, 3  # the column names; a blank line and the two lines of totals
COVERAGE_LINES = 4  # a blank line, the section's title, its summary and its column names, then one line per host


def test_default_table_is_one_line_per_key(genuine_db, capsys):
    db, alice_key = genuine_db
    code, out = _cli(capsys, "--db", str(db))
    assert code == 0
    lines = out.splitlines()
    report = _report(db)
    assert len(lines) == HEADER_LINES + len(report.keys) + COVERAGE_LINES + len(report.hosts) + FOOTER_LINES
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    assert "$" not in out
    assert lines[0].split() == ["STATUS", "KEY", "ID", "OWNER", "HOSTS", "AGE", "REPLACE", "WITH"]
    owner_column = slice(lines[0].index("OWNER"), lines[0].index("HOSTS") - 1)
    assert all(
        "…" not in line[: owner_column.start] + line[owner_column.stop :] for line in lines[1:5]
    )  # only owners cut

    at_now = io.StringIO()
    render_report(report, "table", at_now)
    rows = [line.split() for line in at_now.getvalue().splitlines()[1:5]]
    # live first, the key on more hosts first; the owner's user name (cut to fit), the account when there is none
    assert [r[:2] for r in rows] == [["live", LIVE_KEY], ["live", OLD_KEY], ["live", alice_key], ["invalid", DEAD_KEY]]
    assert rows[0][2:] == ["deploy", "2", "2h", "ec2-new-instance-profile"]  # first seen 10:00, now 12:00
    assert rows[1][3:5] == ["2", "696d"]  # first seen 2025-01-01
    assert rows[2][2].startswith("alice.with-a-rather") and rows[2][2].endswith("…")
    assert rows[2][3:] == ["1", "12d", "ec2-new-instance-profile"]
    assert rows[3][2] == "534261010715"
    assert lines[5] == "" and lines[6].startswith("HOST COVERAGE")
    assert lines[-2] == "4 key(s): 3 live, 0 deactivated; in 6 place(s) on 5 host(s)"


def test_details_has_the_whole_commands_and_prose_as_prose(genuine_db, capsys):
    db, alice_key = genuine_db
    _, doc = _cli(capsys, "--db", str(db), "--format", "json")
    suggestion = next(k for k in json.loads(doc)["keys"] if k["key_id"] == alice_key)["suggestions"][0]
    assert max(len(c) for c in suggestion["commands"]) > 100  # the trust policy: a command no table cell holds
    code, out = _cli(capsys, "--db", str(db), "--details")
    assert code == 0
    lines = out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"{alice_key}  live")))
    block = lines[start : lines.index("", start)]
    for command in suggestion["commands"]:
        assert f"    $ {command}" in block, command  # whole: pastes as it is
    assert f"  replace with {suggestion['kind']} (suggested by host app-7):" in block
    assert block[2].startswith(f"  owner: {ALICE.arn} (account ")  # whole
    assert "  at app-7 (ec2): /opt/app/.env:1" in block
    commands = [line for line in block if line.startswith("    $ ")]
    replace = block.index(f"  replace with {suggestion['kind']} (suggested by host app-7):")
    prose = [line for line in block[replace + 1 :] if not line.startswith("    $ ")]
    assert all(not line.lstrip().startswith("$") for line in prose)
    assert max(len(step) for step in suggestion["steps"]) > 100
    assert all(len(line) <= 100 or " " not in line.strip() for line in prose)  # wrapped; a long path stays whole
    # the clean-up's sentences are prose, its commands commands, in their order
    cleanup = suggestion["cleanup"]
    assert cleanup[0].startswith("Remove the key") and not any(c.startswith("    $ Remove") for c in commands)
    assert [c for c in commands if "update-access-key" in c] == [
        f"    $ {c}" for c in cleanup if c.startswith("aws iam update-access-key")
    ]
    joined = " ".join(line.strip() for line in prose)
    for step in suggestion["steps"]:
        assert step in joined, step
    assert code == 0 and main(["report", "--db", str(db), "--format", "json", "--details"]) == 2


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
