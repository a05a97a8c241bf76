"""The collector against the SQS emulator over real HTTP: storing, duplicates, poison messages, slow batches."""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from keysweep.central.collector import Collector, CollectorConfig
from keysweep.central.senders import SenderMap
from keysweep.central.store import open_store
from keysweep.cli import main

from tests.support import messages as M
from tests.support.central import (
    PLANTED_SECRET,
    TRUST_MOTO_SENDER,
    counts,
    drain_bodies,
    make_queues,
    send,
    send_bodies,
    sqs_client,
)


def _agent_messages(host_id: str, hostname: str, n: int) -> list[dict[str, Any]]:
    h = M.host(host_id, hostname)
    msgs = [M.finding_message(host_info=h, path=f"/srv/app{i}/.env", sent_at="2026-11-28T10:00:00Z") for i in range(n)]
    msgs.append(M.finding_message(host_info=h, path="/root/.aws/credentials", key_id="AKIASP2TPHJSQH3FJRUX"))
    msgs.append(M.heartbeat_message(host_info=h))
    return msgs


def _collect_once(url: str, store: Any, **config: Any) -> Any:
    senders = SenderMap.from_mapping(TRUST_MOTO_SENDER, source="test")  # the binding has tests of its own
    cfg = CollectorConfig(
        queue_url=url, wait_seconds=config.pop("wait_seconds", 0), once=True, senders=senders, **config
    )
    return Collector(cfg, store).run()


@pytest.mark.timeout(60)
def test_two_agents_stored_once_each_duplicates_change_nothing(moto_server: Any, tmp_path: Path) -> None:
    sqs = sqs_client()
    q = make_queues(sqs)
    a = _agent_messages("i-aaaa", "web-a", 12)
    b = _agent_messages("i-bbbb", "web-b", 7)
    send(sqs, q.url, a + b)
    send(sqs, q.url, a[:5])  # at-least-once delivery: the first agent re-sent part of a batch
    store = open_store(str(tmp_path / "fleet.db"))
    stats = _collect_once(q.url, store)

    records = list(store.iter_findings())
    assert len(records) == 13 + 8
    assert len({r.finding_fingerprint for r in records}) == len(records)
    by_key = {}
    for r in records:
        by_key.setdefault(r.key_id, set()).add(r.host_id)
    assert by_key["AKIASP2TPHJSQH3FJRUX"] == {"i-aaaa", "i-bbbb"}  # the same key on both hosts
    assert {h.host_id: h.last_heartbeat is not None for h in store.iter_hosts()} == {"i-aaaa": True, "i-bbbb": True}
    assert stats.received == len(a) + len(b) + 5
    assert stats.duplicates == 5
    assert stats.deleted == stats.received
    assert stats.malformed == stats.unknown_version == 0
    assert counts(sqs, q.url) == (0, 0)


@pytest.mark.timeout(90)
def test_poison_messages_go_to_the_dlq_and_the_rest_are_stored(
    moto_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sqs = sqs_client()
    q = make_queues(sqs, max_receive=1, visibility=1)
    good = _agent_messages("i-good", "good", 4)
    bad_schema = M.finding_message()
    bad_schema["finding"]["secret"] = PLANTED_SECRET  # extra fields are fine, but…
    bad_schema["finding"]["severity"] = PLANTED_SECRET  # …this one is not an allowed severity
    future = M.variant(M.heartbeat_message(), schema_version=2)
    bad_time = M.finding_message(sent_at="2026-11-28T10:00:00Z")
    bad_time["sent_at"] = "yesterday " + PLANTED_SECRET
    poison = [
        f"not json {PLANTED_SECRET}",
        json.dumps(bad_schema),
        json.dumps(future),
        json.dumps(bad_time),
        "[" * 100000,
        json.dumps([PLANTED_SECRET]),
    ]
    send(sqs, q.url, good[:3])
    send_bodies(sqs, q.url, poison)
    send(sqs, q.url, good[3:])
    store = open_store(str(tmp_path / "fleet.db"))

    caplog.set_level(logging.INFO, logger="keysweep")
    total = None
    deadline = time.monotonic() + 60
    while len(drain_dlq := _peek_count(sqs, q.dlq_url)) < len(poison):  # each run re-receives what reappeared
        assert time.monotonic() < deadline, f"only {len(drain_dlq)} poison messages reached the DLQ"
        stats = _collect_once(q.url, store, wait_seconds=1, visibility_timeout=1)
        total = stats if total is None else total
        time.sleep(0.3)
    assert total is not None
    assert total.malformed == len(poison) - 1 and total.unknown_version == 1
    assert total.deleted == len(good)
    assert sorted(drain_bodies(sqs, q.dlq_url)) == sorted(poison)
    assert len(list(store.iter_findings())) == len(good) - 1
    assert counts(sqs, q.url) == (0, 0)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "rejected (malformed" in logged and "rejected (unknown-version" in logged
    assert PLANTED_SECRET not in logged and "not json" not in logged


def _peek_count(sqs: Any, url: str) -> list[int]:
    visible, in_flight = counts(sqs, url)
    return [0] * (visible + in_flight)


@pytest.mark.timeout(60)
def test_fifo_queue(moto_server: Any, tmp_path: Path) -> None:
    sqs = sqs_client()
    url = sqs.create_queue(QueueName=f"keysweep-{uuid.uuid4().hex[:6]}.fifo", Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    msgs = _agent_messages("i-fifo", "fifo", 12)
    for m in msgs:  # as the agents send to FIFO queues: one group per host, dedup by finding fingerprint
        dedup = m["finding"]["finding_fingerprint"] if m["type"] == "finding" else m["message_id"]
        sqs.send_message(
            QueueUrl=url, MessageBody=json.dumps(m), MessageGroupId=m["host"]["host_id"], MessageDeduplicationId=dedup
        )
    store = open_store(str(tmp_path / "fleet.db"))
    stats = _collect_once(url, store)
    assert stats.deleted == len(msgs) and len(list(store.iter_findings())) == len(msgs) - 1
    assert counts(sqs, url) == (0, 0)


@pytest.mark.timeout(90)
def test_slow_batch_keeps_its_messages_hidden(moto_server: Any, tmp_path: Path) -> None:
    """The store is held locked by another writer for longer than the visibility timeout: the collector waits on
    it, keeps extending visibility, so no other consumer receives the batch, and finally stores and deletes it."""
    sqs = sqs_client()
    q = make_queues(sqs, visibility=3)
    msgs = _agent_messages("i-slow", "slow", 3)
    db = tmp_path / "fleet.db"
    store = open_store(str(db))
    send(sqs, q.url, msgs)

    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    cfg = CollectorConfig(queue_url=q.url, wait_seconds=1, once=True, visibility_timeout=3)
    collector = Collector(cfg, store)
    worker = threading.Thread(target=collector.run)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while counts(sqs, q.url)[1] < len(msgs):  # the collector has the batch in hand
            assert time.monotonic() < deadline
            time.sleep(0.05)
        other = boto3.client("sqs", region_name="us-east-1")
        stolen = []
        hold_until = time.monotonic() + 7.5  # two and a half visibility timeouts
        while time.monotonic() < hold_until:
            stolen += other.receive_message(
                QueueUrl=q.url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0
            ).get("Messages", [])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        worker.join(timeout=60)
    assert not stolen, "a message of the slow batch became visible to another consumer"
    assert collector.stats.visibility_extensions > 0
    assert collector.stats.deleted == len(msgs)
    assert len(list(store.iter_findings())) == len(msgs) - 1
    assert counts(sqs, q.url) == (0, 0)


@pytest.mark.timeout(60)
def test_store_failure_leaves_messages_on_the_queue(moto_server: Any) -> None:
    sqs = sqs_client()
    q = make_queues(sqs, visibility=1)
    table = f"fleet-{uuid.uuid4().hex[:8]}"
    store = open_store(f"dynamodb://{table}")
    boto3.client("dynamodb", region_name="us-east-1").delete_table(TableName=table)  # the store goes away
    send(sqs, q.url, _agent_messages("i-x", "x", 2))
    stats = _collect_once(q.url, store)
    # the first failure stops the batch and --once: receiving more would only push good messages to the DLQ
    assert (stats.batches, stats.store_errors, stats.deleted) == (1, 1, 0)
    assert sum(counts(sqs, q.url)) == 4  # nothing lost: all still on the queue


@pytest.mark.timeout(60)
def test_record_too_large_for_dynamodb_is_rejected_not_an_outage(
    moto_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sqs = sqs_client()
    q = make_queues(sqs)
    sqs.set_queue_attributes(QueueUrl=q.url, Attributes={"MaximumMessageSize": str(1024 * 1024)})
    huge = M.finding_message(path="/huge")
    # within the schema's bounds (a policy document's depth, the body's size), larger than a DynamoDB item
    huge["suggestion"]["trust_policy"] = {"Sid": base64.b64encode(os.urandom(520_000)).decode()}
    good = _agent_messages("i-ok", "ok", 3)
    send(sqs, q.url, [huge, *good])
    store = open_store(f"dynamodb://fleet-{uuid.uuid4().hex[:8]}")
    stats = _collect_once(q.url, store, wait_seconds=1)
    assert (stats.refused, stats.malformed, stats.store_errors, stats.deleted) == (1, 0, 0, len(good))
    assert len(list(store.iter_findings())) == len(good) - 1
    assert sum(counts(sqs, q.url)) == 1  # left for the DLQ
    assert "too large" in caplog.text


@pytest.mark.timeout(60)
def test_a_message_dynamodb_refuses_fails_alone_and_the_store_is_not_down(
    moto_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # a collector whose schema would let a 3000-character host id through (as the schema once did): DynamoDB's
    # ValidationException for the over-long key is that message's failure, not an outage of the store
    from keysweep.central.handler import MessageHandler
    from keysweep.central.validate import Validator
    from keysweep.schemas import message_schema

    loose = json.loads(json.dumps(message_schema()))
    del loose["$defs"]["host"]["properties"]["host_id"]["maxLength"]
    sqs = sqs_client()
    q = make_queues(sqs, max_receive=1, visibility=1)
    bad = [M.finding_message(host_info=M.host("x", "long", "on-premises")), M.heartbeat_message()]
    for message in bad:
        message["host"]["host_id"] = "h-" + "a" * 2998
    good = _agent_messages("i-ok", "ok", 12)  # two batches of good messages around the refused ones
    send(sqs, q.url, good[:6] + bad + good[6:])
    store = open_store(f"dynamodb://fleet-{uuid.uuid4().hex[:8]}")
    cfg = CollectorConfig(queue_url=q.url, wait_seconds=1, once=True, visibility_timeout=1)
    started = time.monotonic()
    stats = Collector(cfg, store, handler=MessageHandler(store, Validator(loose))).run()
    assert (stats.refused, stats.store_errors, stats.deleted) == (2, 0, len(good))
    assert time.monotonic() - started < 20  # no backoff: the store was never taken for down
    assert {r.host_id for r in store.iter_findings()} == {"i-ok"}
    assert "ValidationException" in caplog.text and "a" * 100 not in caplog.text
    for _ in range(20):  # the redrive policy moves exactly the refused ones to the DLQ
        if counts(sqs, q.dlq_url)[0] == 2:
            break
        time.sleep(0.5)
        sqs.receive_message(QueueUrl=q.url, WaitTimeSeconds=0)
    assert sorted(json.loads(b)["type"] for b in drain_bodies(sqs, q.dlq_url)) == ["finding", "heartbeat"]


@pytest.mark.timeout(60)
def test_cli_collect_once_then_coverage(moto_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sqs = sqs_client()
    q = make_queues(sqs)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    fresh = M.heartbeat_message(host_info=M.host("i-fresh", "fresh"), sent_at=now)
    old = M.heartbeat_message(host_info=M.host("i-old", "old"), sent_at="2026-01-01T00:00:00Z")
    send(sqs, q.url, [fresh, old, M.finding_message(host_info=M.host("i-quiet", "quiet"))])
    db = str(tmp_path / "fleet.db")
    assert main(["collect", "--queue-url", q.url, "--db", db, "--once", "--wait-seconds", "0"]) == 0
    summary = capsys.readouterr().err
    assert "stored=3 " in summary and "deleted=3 " in summary

    assert main(["collect", "--coverage", "--db", db, "--format", "json"]) == 1  # a host is silent
    cov = json.loads(capsys.readouterr().out)
    assert {h["host_id"]: h["state"] for h in cov["hosts"]} == {
        "i-fresh": "ok",
        "i-old": "silent",
        "i-quiet": "no-heartbeat",
    }
    assert main(["collect", "--coverage", "--db", db]) == 1
    table = capsys.readouterr().out
    assert "silent" in table and "fresh" in table and "3 host(s)" in table


@pytest.mark.timeout(120)
def test_unreachable_queue_once_fails_cleanly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.moto_server import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    url = "http://127.0.0.1:1/123456789012/keysweep-findings"
    assert main(["collect", "--queue-url", url, "--db", str(tmp_path / "f.db"), "--once", "--wait-seconds", "0"]) == 3
    assert "receive from" in capsys.readouterr().err


def test_cli_collect_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collect", "--db", str(tmp_path / "x.db")]) == 2
    assert "--queue-url" in capsys.readouterr().err
    assert main(["collect", "--queue-url", "http://127.0.0.1:1/q", "--wait-seconds", "30"]) == 2
    assert main(["collect", "--coverage", "--db", str(tmp_path / "missing.db")]) == 2  # no store: collect first
    assert not (tmp_path / "missing.db").exists()
