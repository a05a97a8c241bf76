"""Collector processes killed mid-batch and running side by side: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from keysweep.central.handler import MessageHandler
from keysweep.central.store import Store, open_store

from tests.support import messages as M
from tests.support.central import (
    counts,
    make_queues,
    send,
    sqs_client,
    start_collector,
    stats_of,
    wait_until_settled,
)
from tests.support.sqs_gate import sqs_gate


def _fleet(n_per_host: int) -> list[dict[str, Any]]:
    """Two agents; every finding reported twice (live, then invalid), plus heartbeats."""
    msgs: list[dict[str, Any]] = []
    for host_id in ("i-agent-1", "i-agent-2"):
        h = M.host(host_id, host_id.replace("i-", ""))
        for i in range(n_per_host):
            msgs.append(M.finding_message(host_info=h, path=f"/srv/{i}.env", sent_at="2026-11-28T10:00:00Z"))
            msgs.append(
                M.finding_message(host_info=h, path=f"/srv/{i}.env", sent_at="2026-11-28T11:00:00Z", status="invalid")
            )
        msgs.append(M.heartbeat_message(host_info=h, sent_at="2026-11-28T11:05:00Z"))
    return msgs


def _content(store: Store) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The records, without what only the queue knows (the sender, the queue's time of the first message)."""

    def own(record: Any) -> dict[str, Any]:
        return {k: v for k, v in record.to_dict().items() if k not in ("sender", "received_first")}

    # sorted: a listing's order is not part of the Store protocol (DynamoDB's parallel scan has none)
    findings = sorted((own(f) for f in store.iter_findings()), key=lambda r: (r["host_id"], r["finding_fingerprint"]))
    return findings, sorted((own(h) for h in store.iter_hosts()), key=lambda r: r["host_id"])


def _reference(messages: list[dict[str, Any]], tmp_path: Path) -> tuple[list[Any], list[Any]]:
    store = open_store(str(tmp_path / f"reference-{uuid.uuid4().hex[:6]}.db"))
    handler = MessageHandler(store)
    for m in messages:
        handler.handle(json.dumps(m))
    return _content(store)


def _drain(queue_url: str, db: str, sqs: Any) -> list[dict[str, int]]:
    """Run ``collect --once`` until the queue is empty (messages held by a killed collector come back first)."""
    runs = []
    deadline = time.monotonic() + 600  # a guard against a hang: a few hundred messages take minutes under load
    while counts(sqs, queue_url) != (0, 0):
        assert time.monotonic() < deadline, "the queue did not drain"
        wait_until_settled(sqs, queue_url)
        proc = start_collector(queue_url, db, "--once", "--wait-seconds", "1", "--visibility-timeout", "2")
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        runs.append(stats_of(err))
    return runs


@pytest.mark.timeout(180)
def test_killed_after_store_commit_before_delete(moto_server: Any, tmp_path: Path) -> None:
    sqs = sqs_client()
    q = make_queues(sqs, max_receive=10, visibility=2)
    messages = _fleet(6)
    send(sqs, q.url, messages)
    db = str(tmp_path / "fleet.db")

    with sqs_gate(moto_server.endpoint, hold={"DeleteMessageBatch"}) as gate:
        proc = start_collector(
            q.url,
            db,
            "--wait-seconds",
            "1",
            "--visibility-timeout",
            "2",
            env={**os.environ, "AWS_ENDPOINT_URL": gate.endpoint},
        )
        try:
            assert gate.held.wait(60), "the collector never asked to delete"
            store = open_store(db, create=False)
            committed = _content(store)
            store.close()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
    # the store committed the batch before the collector asked SQS to delete it
    assert committed[0], "nothing was in the store when the delete was requested"

    runs = _drain(q.url, db, sqs)
    assert sum(r["duplicates"] for r in runs) >= 1  # redelivered after the kill, and changed nothing
    assert sum(r["malformed"] + r["store_errors"] for r in runs) == 0
    store = open_store(db)
    assert _content(store) == _reference(messages, tmp_path)
    assert counts(sqs, q.dlq_url) == (0, 0)


@pytest.mark.timeout(900)  # seven collector start-ups and a drain: a guard against a hang, several minutes under load
def test_random_kills_lose_and_double_nothing(moto_server: Any, tmp_path: Path) -> None:
    sqs = sqs_client()
    q = make_queues(sqs, max_receive=50, visibility=2)
    messages = _fleet(60)
    random.Random(3).shuffle(messages)
    send(sqs, q.url, messages)
    db = str(tmp_path / "fleet.db")
    rng = random.Random(17)  # batch sizes and how far each collector gets; where a kill lands varies with the machine
    for _ in range(6):
        waiting = sum(counts(sqs, q.url))
        proc = start_collector(
            q.url, db, "--wait-seconds", "1", "--visibility-timeout", "2", "--max-messages", str(rng.randint(1, 4))
        )
        # the kill follows the collector's progress, not the clock (however slow a loaded machine is): once it has
        # deleted a few messages (a message leaves the queue only when deleted), wherever it then is in its work
        done_at = waiting - rng.randint(1, 6)
        deadline = time.monotonic() + 120
        while sum(counts(sqs, q.url)) > done_at and proc.poll() is None:
            assert time.monotonic() < deadline, "the collector deleted nothing"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.1))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    before_drain = sum(counts(sqs, q.url))
    assert 0 < before_drain < len(messages)  # the killed collectors did part of the work
    _drain(q.url, db, sqs)
    store = open_store(db)
    findings, hosts = _content(store)
    assert len(findings) == 120 and len(hosts) == 2
    assert all(len(f["verification_history"]) == 2 for f in findings)
    assert (findings, hosts) == _reference(messages, tmp_path)
    assert counts(sqs, q.dlq_url) == (0, 0)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["sqlite", "dynamodb"])
def test_two_collectors_on_one_store(backend: str, moto_server: Any, tmp_path: Path) -> None:
    sqs = sqs_client()
    q = make_queues(sqs, max_receive=10, visibility=30)
    messages = _fleet(25)
    send(sqs, q.url, messages)
    db = str(tmp_path / "fleet.db") if backend == "sqlite" else f"dynamodb://fleet-{uuid.uuid4().hex[:8]}"
    # no store yet: both collectors create it at once
    procs = [start_collector(q.url, db, "--once", "--wait-seconds", "1", "--max-messages", "5") for _ in range(2)]
    runs = []
    for proc in procs:
        _, err = proc.communicate(timeout=200)
        assert proc.returncode == 0, err
        runs.append(stats_of(err))
    # a message both collectors received (its visibility ran out under load) is stored once: the second receipt
    # is a duplicate
    assert sum(r["received"] - r["duplicates"] for r in runs) == len(messages)
    assert sum(r["deleted"] for r in runs) >= len(messages)
    assert counts(sqs, q.url) == (0, 0)
    store = open_store(db)
    assert _content(store) == _reference(messages, tmp_path)


@pytest.mark.timeout(120)
def test_sigterm_stops_cleanly_after_storing(moto_server: Any, tmp_path: Path) -> None:
    sqs = sqs_client()
    q = make_queues(sqs)
    messages = _fleet(3)
    send(sqs, q.url, messages)
    db = str(tmp_path / "fleet.db")
    proc = start_collector(q.url, db, "--wait-seconds", "1")
    deadline = time.monotonic() + 60
    while counts(sqs, q.url) != (0, 0):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert stats_of(err)["deleted"] == len(messages)
    assert _content(open_store(db)) == _reference(messages, tmp_path)
