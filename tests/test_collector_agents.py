"""End to end: two real agent reporters (separate state directories and host identities) into one queue, collected
into one store — both hosts, no duplicates, verification changes in the history, and no secret anywhere."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from keysweep.central.collector import Collector, CollectorConfig
from keysweep.central.store import open_store
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Verification
from keysweep.report.sqs import Reporter
from keysweep.stage_config import ReportConfig

from tests.support.central import counts, make_queues, sqs_client
from tests.support.planted import LIVE, ec2_context, planted_findings

FP = Fingerprinter(b"k" * 32)  # the organisation's fingerprint key, shared by the fleet
INVALID = Verification(status="invalid", reason="InvalidClientTokenId", checked_at="2026-11-28T12:00:00Z")


class Stats:
    def to_dict(self) -> dict[str, Any]:
        return {"files_scanned": 10, "bytes_scanned": 4096, "skipped": {}, "errors": {}, "findings_by_source": {}}


@pytest.mark.timeout(120)
def test_two_agents_one_queue_one_store(moto_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sqs = sqs_client()
    q = make_queues(sqs)
    findings, planted = planted_findings(6, fingerprinter=FP, verification=LIVE)
    agent_a = Reporter(
        ReportConfig(queue_url=q.url), tmp_path / "state-a", ec2_context("i-0aaa", "web-a"), fingerprinter=FP
    )
    agent_b = Reporter(
        ReportConfig(queue_url=q.url), tmp_path / "state-b", ec2_context("i-0bbb", "web-b"), fingerprinter=FP
    )
    assert agent_a.report(findings, Stats()).sent == 7  # six findings and a heartbeat
    assert agent_b.report(findings[:4], Stats()).sent == 5  # four of the same keys on the other host
    # the next sweep on host A: two keys were deactivated, the rest unchanged (not re-sent)
    second = [f.with_verification(INVALID) if i < 2 else f for i, f in enumerate(findings)]
    assert agent_a.report(second, Stats()).sent == 3

    db = tmp_path / "fleet.db"
    store = open_store(str(db))
    caplog.set_level(logging.DEBUG)
    stats = Collector(CollectorConfig(queue_url=q.url, wait_seconds=0, once=True), store).run()
    assert stats.received == 15 and stats.deleted == 15 and stats.malformed == 0
    assert counts(sqs, q.url) == (0, 0)

    records = list(store.iter_findings())
    assert len(records) == 10
    assert {(r.host_id, r.hostname) for r in records} == {("i-0aaa", "web-a"), ("i-0bbb", "web-b")}
    by_key: dict[str, set[str]] = {}
    for r in records:
        by_key.setdefault(r.fingerprint, set()).add(r.host_id)
    assert sorted(len(hosts) for hosts in by_key.values()) == [1, 1, 2, 2, 2, 2]  # key-level fingerprint joins hosts
    changed = [r for r in records if r.host_id == "i-0aaa" and r.status == "invalid"]
    assert len(changed) == 2
    for r in changed:
        assert [e["status"] for e in r.verification_history] == ["live", "invalid"]
        assert r.owner_arn == LIVE.arn
    assert all(r.suggestion for r in records)
    hosts = {h.host_id: h for h in store.iter_hosts()}
    assert set(hosts) == {"i-0aaa", "i-0bbb"}
    assert all(h.last_heartbeat and h.last_sweep for h in hosts.values())
    store.close()

    stored_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("fleet.db*"))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for p in planted:
        assert p.secret.encode() not in stored_bytes
        assert p.secret not in logged
