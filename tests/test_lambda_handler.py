"""The Lambda collector driven with real SQS-shaped event batches, writing to the DynamoDB emulator."""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from typing import Any

import boto3
import pytest
from keysweep.central import lambda_handler
from keysweep.central.senders import SENDER_MAP_ENV
from keysweep.central.store import Store, open_store
from keysweep.errors import ConfigError, StoreError

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


def _event(sqs: Any, queue_url: str, max_messages: int = 10) -> dict[str, Any]:
    """Receive a batch the way Lambda's SQS poller does and shape it as the event the function gets."""
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    got = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=max_messages,
        WaitTimeSeconds=1,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
    )
    records = []
    for m in got.get("Messages", []):
        records.append(
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {
                    name: {
                        "stringValue": v.get("StringValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": v["DataType"],
                    }
                    for name, v in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            }
        )
    return {"Records": records}


def _finish(sqs: Any, queue_url: str, event: dict[str, Any], response: dict[str, Any]) -> None:
    """What the event-source mapping does with ReportBatchItemFailures: delete all but the failed ones."""
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    for record in event["Records"]:
        if record["messageId"] not in failed:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"])


@pytest.fixture
def table(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"keysweep-fleet-{uuid.uuid4().hex[:8]}"
    open_store(f"dynamodb://{name}").close()  # the deployment template creates it
    monkeypatch.setenv(lambda_handler.TABLE_ENV, name)
    monkeypatch.setenv(SENDER_MAP_ENV, json.dumps(TRUST_MOTO_SENDER))  # the binding has tests of its own
    return name


def _content(store: Store) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return [f.to_dict() for f in store.iter_findings()], [h.to_dict() for h in store.iter_hosts()]


@pytest.mark.timeout(60)
def test_batch_with_poison_reports_exactly_the_bad_messages(table: str, caplog: pytest.LogCaptureFixture) -> None:
    sqs = sqs_client()
    q = make_queues(sqs, max_receive=1, visibility=1)
    h = M.host("i-lambda", "fleet-host")
    good = [M.finding_message(host_info=h, path=f"/app/{i}") for i in range(5)] + [M.heartbeat_message(host_info=h)]
    bad_schema = M.finding_message()
    del bad_schema["finding"]["key_id"]
    bad_schema["finding"]["note"] = PLANTED_SECRET
    send(sqs, q.url, good[:3])
    send_bodies(
        sqs,
        q.url,
        [PLANTED_SECRET, json.dumps(bad_schema), json.dumps(M.variant(M.heartbeat_message(), schema_version=7))],
    )
    send(sqs, q.url, good[3:])

    caplog.set_level(logging.INFO, logger="keysweep")
    event = _event(sqs, q.url)
    assert len(event["Records"]) == 9
    response = lambda_handler.handler(event, None)
    bad_ids = {
        r["messageId"]
        for r in event["Records"]
        if r["body"] in (PLANTED_SECRET, json.dumps(bad_schema)) or '"schema_version": 7' in r["body"]
    }
    assert {f["itemIdentifier"] for f in response["batchItemFailures"]} == bad_ids
    assert len(bad_ids) == 3

    store = open_store(f"dynamodb://{table}", create=False)
    stored = _content(store)
    assert len(stored[0]) == 5 and [h["host_id"] for h in stored[1]] == ["i-lambda"]
    assert stored[1][0]["last_heartbeat"] is not None

    # the same batch delivered again (Lambda retries are at-least-once): same answer, store unchanged
    assert lambda_handler.handler(event, None) == response
    assert _content(store) == stored

    # the event-source mapping deletes the rest; the redrive policy moves the failures to the DLQ
    _finish(sqs, q.url, event, response)
    for _ in range(20):
        if counts(sqs, q.dlq_url)[0] == 3:
            break
        _finish(sqs, q.url, retry := _event(sqs, q.url), lambda_handler.handler(retry, None))
    assert len(drain_bodies(sqs, q.dlq_url)) == 3
    assert counts(sqs, q.url) == (0, 0)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "unknown-version" in logged and "malformed" in logged
    assert PLANTED_SECRET not in logged


def test_empty_and_missing_configuration(table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert lambda_handler.handler({"Records": []}, None) == {"batchItemFailures": []}
    monkeypatch.setenv(lambda_handler.TABLE_ENV, "no-such-table-" + uuid.uuid4().hex[:6])
    with pytest.raises(StoreError):  # the whole batch is retried: nothing is lost to a wrong deployment
        lambda_handler.handler({"Records": []}, None)
    monkeypatch.delenv(lambda_handler.TABLE_ENV)
    with pytest.raises(ConfigError):
        lambda_handler.handler({"Records": []}, None)


@pytest.mark.timeout(60)
def test_store_failure_fails_every_unstored_message(table: str) -> None:
    sqs = sqs_client()
    q = make_queues(sqs)
    send(sqs, q.url, [M.finding_message(path=f"/p/{i}") for i in range(3)])
    event = _event(sqs, q.url)
    lambda_handler.handler({"Records": []}, None)  # a warm function: its store is open
    boto3.client("dynamodb", region_name="us-east-1").delete_table(TableName=table)
    response = lambda_handler.handler(event, None)
    assert {f["itemIdentifier"] for f in response["batchItemFailures"]} == {r["messageId"] for r in event["Records"]}


@pytest.mark.timeout(60)
def test_a_message_too_large_for_the_store_fails_alone(table: str) -> None:
    sqs = sqs_client()
    q = make_queues(sqs)
    sqs.set_queue_attributes(QueueUrl=q.url, Attributes={"MaximumMessageSize": str(1024 * 1024)})
    huge = M.finding_message(path="/huge")
    # schema-valid (a policy document's depth and the body's size are bounded), larger than a DynamoDB item
    huge["suggestion"]["trust_policy"] = {"Sid": base64.b64encode(os.urandom(520_000)).decode()}
    good = [M.finding_message(path=f"/ok/{i}") for i in range(4)]
    send(sqs, q.url, [good[0], huge, *good[1:]])
    event = _event(sqs, q.url)
    response = lambda_handler.handler(event, None)
    huge_id = next(r["messageId"] for r in event["Records"] if "/huge" in r["body"])
    assert response == {"batchItemFailures": [{"itemIdentifier": huge_id}]}  # the rest were stored, not retried
    stored = {r.location["path"] for r in open_store(f"dynamodb://{table}", create=False).iter_findings()}
    assert stored == {f"/ok/{i}" for i in range(4)}
