"""The fleet views read a store in bounded memory and still say exactly what the in-memory ones say: the streamed
report is the report of every record held at once, the JSON written key by key is the same document, the table of
a large fleet summarises, and the audit's one-pass correlation is the correlation of every record."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from keysweep.central.audit.correlation import FleetFindings, correlate
from keysweep.central.evidence import verification_times
from keysweep.central.fleet_report import MAX_SUGGESTIONS, TABLE_HOSTS, build_report, load_report, render_report
from keysweep.central.handler import MessageHandler, Outcome, Result
from keysweep.central.store import Store, open_store

from tests.support import messages as M
from tests.support.fleet import NOW

HOSTS = TABLE_HOSTS + 20  # more than the default table lists
KEYS = ("AKIAXYZDQCEN4B6JSJQI", "AKIASP2TPHJSQH3FJRUX", "AKIAYVP4CIPPERUVIFXG", "ASIAYVP4CIPPERUVIFXH")


def _fleet() -> list[dict[str, Any]]:
    """Every host holds some of the keys at one or two places; each host's suggestion names its own role; a few
    hosts are silent (an old heartbeat), a few never sent one."""
    out = []
    for h in range(HOSTS):
        info = M.host(f"i-{h:017x}", f"web-{h:03d}", "ec2" if h % 4 else "on-premises")
        for k, key_id in enumerate(KEYS):
            if (h + k) % 3 == 0:
                continue
            status = ("live", "invalid", None)[(h + k) % 3 - 1] if k != 1 else ("invalid" if h % 5 else "live")
            for place in range(1 + (h + k) % 2 * (h < 10)):
                m = M.finding_message(
                    host_info=info,
                    key_id=key_id,
                    path=f"/srv/{place}/.env",
                    status=status,
                    sent_at=f"2026-11-28T{10 + place}:{h % 60:02d}:00Z",
                )
                m["suggestion"]["role_name"] = f"web-{h:03d}-role"
                out.append(m)
        if h % 9:
            out.append(
                M.heartbeat_message(host_info=info, sent_at="2026-11-28T11:50:00Z" if h % 7 else "2026-11-20T11:50:00Z")
            )
    return out


@pytest.fixture(scope="module")
def fleet_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fleet") / "fleet.db"
    store = open_store(str(path))
    handler = MessageHandler(store)
    results = handler.handle_batch([(json.dumps(m), None) for m in _fleet()])  # one transaction: one sync
    assert all(isinstance(r, Result) and r.outcome is Outcome.OK for r in results)
    store.close()
    return path


def _open(path: Path) -> Store:
    return open_store(str(path), create=False)


def test_streamed_report_is_the_report_of_every_record(fleet_db: Path) -> None:
    store = _open(fleet_db)
    streamed = load_report(store, now=NOW)
    held = build_report(list(store.iter_findings()), list(store.iter_hosts()), now=NOW)
    assert streamed.to_dict() == held.to_dict()
    doc = streamed.to_dict()
    assert doc["summary"]["keys"] == len(KEYS) and doc["summary"]["hosts"] == HOSTS
    key = next(k for k in doc["keys"] if k["suggestions_total"] > MAX_SUGGESTIONS)
    assert len(key["suggestions"]) == MAX_SUGGESTIONS  # the rest are counted, not read
    assert len({s["role_name"] for s in key["suggestions"]}) == MAX_SUGGESTIONS
    out = io.StringIO()
    render_report(streamed, "json", out)
    assert json.loads(out.getvalue()) == json.loads(json.dumps(held.to_dict()))
    store.close()


def test_table_of_a_large_fleet_summarises_its_coverage(fleet_db: Path) -> None:
    store = _open(fleet_db)
    report = load_report(store, now=NOW)
    store.close()
    out = io.StringIO()
    render_report(report, "table", out)
    lines = out.getvalue().splitlines()
    attention = [row.coverage.hostname for row in report.hosts if row.silent or row.coverage.errors]
    assert 0 < len(attention) < TABLE_HOSTS
    assert len(lines) == 1 + len(KEYS) + 4 + len(attention) + 1 + 3  # keys; coverage: summary, those needing care
    assert f"{HOSTS} host(s): " in out.getvalue() and "silent" in out.getvalue()
    assert all(any(line.startswith(name) for line in lines) for name in attention)
    assert lines[-4].startswith(f"... {HOSTS - len(attention)} more host(s)")
    detailed = io.StringIO()
    render_report(report, "table", detailed, details=True)
    assert all(f"\n{row.coverage.hostname} " in detailed.getvalue() for row in report.hosts)


def test_audit_reads_the_store_in_one_pass_to_the_same_correlation(fleet_db: Path) -> None:
    store = _open(fleet_db)
    records = list(store.iter_findings())
    fleet = FleetFindings.read(store)
    store.close()
    assert fleet.verified == verification_times(records) and fleet.verified
    assert fleet.temporary == {KEYS[3]}
    held_fleet = FleetFindings.of_records(records)  # the store's columns say what the decoded records say
    assert fleet.sightings == held_fleet.sightings
    assert len(fleet.sightings[KEYS[0]].roles) > 1  # each host's own role, read from a column
    streamed, streamed_items = correlate(fleet, [], {}, fleet.verified)
    held, held_items = correlate(records, [], {}, verification_times(records))
    assert streamed == held and streamed_items == held_items
    assert [hk.key_id for hk in streamed] == sorted(KEYS[:3])
    assert {hk.key_id: hk.fleet_status for hk in streamed}[KEYS[1]] == "live"  # one host's live outweighs


def test_filters_report_the_keys_asked_for_and_their_hosts(fleet_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from keysweep.cli import main

    def doc(*argv: str) -> dict[str, Any]:
        assert main(["report", "--db", str(fleet_db), "--format", "json", *argv]) == 0
        return json.loads(capsys.readouterr().out)

    whole = doc()
    one = doc("--key", KEYS[1])
    assert [k["key_id"] for k in one["keys"]] == [KEYS[1]]
    assert one["keys"][0] == next(k for k in whole["keys"] if k["key_id"] == KEYS[1])
    assert {h["hostname"] for h in one["hosts"]} == set(one["keys"][0]["hosts"])
    invalid = doc("--status", "invalid", "--status", "unverified")
    assert {k["status"] for k in invalid["keys"]} <= {"invalid", "unverified"}
    assert len(invalid["keys"]) == sum(k["status"] in ("invalid", "unverified") for k in whole["keys"])
    host = doc("--host", "web-004")
    assert [h["hostname"] for h in host["hosts"]] == ["web-004"]
    assert {k["key_id"] for k in host["keys"]} == {k["key_id"] for k in whole["keys"] if "web-004" in k["hosts"]}
    assert doc("--key", "AKIANOSUCHKEY0000000")["keys"] == []
