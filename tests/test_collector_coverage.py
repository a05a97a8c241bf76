"""Host coverage from heartbeats: checked in, silent, or never sent a heartbeat."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from keysweep.central.coverage import NO_HEARTBEAT, OK, SILENT, host_coverage
from keysweep.central.store import open_store

from tests.support import messages as M

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat().replace("+00:00", "Z")


def test_states_versions_and_order(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "fleet.db"))
    store.record_heartbeat(M.heartbeat_message(host_info=M.host("i-1", "fresh"), sent_at=_at(1), agent_version="0.2.0"))
    store.record_heartbeat(M.heartbeat_message(host_info=M.host("i-2", "stale"), sent_at=_at(30)))
    store.record_heartbeat(
        M.heartbeat_message(host_info=M.host("i-3", "staler"), sent_at=_at(80), errors=["permission denied: /root"])
    )
    store.upsert_finding(M.finding_message(host_info=M.host("i-4", "no-hb"), sent_at=_at(2)))
    # a finding after the last heartbeat does not make a silent host look alive
    store.upsert_finding(M.finding_message(host_info=M.host("i-2", "stale"), sent_at=_at(0.5)))

    cov = host_coverage(store.iter_hosts(), now=NOW)
    assert [(h.hostname, h.state) for h in cov.hosts] == [
        ("no-hb", NO_HEARTBEAT),
        ("staler", SILENT),
        ("stale", SILENT),
        ("fresh", OK),
    ]
    assert cov.by_state == {OK: 1, SILENT: 2, NO_HEARTBEAT: 1}
    assert cov.by_agent_version == {"0.2.0": 1, "0.1.0": 3}
    fresh = cov.hosts[-1]
    assert fresh.silent_for_s == 3600 and fresh.files_scanned == 1000 and fresh.agent_version == "0.2.0"
    assert cov.hosts[1].errors == ("permission denied: /root",)
    assert {h.host_id for h in cov.silent} == {"i-2", "i-3", "i-4"}

    # a tighter threshold (twice an hourly sweep) and a looser one
    assert host_coverage(store.iter_hosts(), now=NOW, silent_after=timedelta(minutes=30)).by_state[OK] == 0
    assert host_coverage(store.iter_hosts(), now=NOW, silent_after=timedelta(days=7)).by_state[SILENT] == 0
    d = cov.to_dict()
    assert d["by_state"] == {"no-heartbeat": 1, "ok": 1, "silent": 2} and len(d["hosts"]) == 4
