"""Queues and collector processes for the central side's tests (against the moto server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parents[2]
# moto gives every message this SenderId (an IAM user's id): to the collector, one on-premises sender
MOTO_SENDER = "AIDAIT2UOQQY3AUEKVGXU"
# a sender map that lets moto's one sender speak for any host id, for tests about something else than the binding
TRUST_MOTO_SENDER: dict[str, Any] = {"principals": {MOTO_SENDER: ["*"]}}
# a secret put into bad messages: the collector must never log or store it
PLANTED_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzPLANTEDzz"


@dataclass(frozen=True)
class Queues:
    url: str
    dlq_url: str


def sqs_client() -> Any:
    return boto3.client("sqs", region_name="us-east-1")


def make_queues(sqs: Any, *, max_receive: int = 5, visibility: int = 30) -> Queues:
    name = f"keysweep-{uuid.uuid4().hex[:8]}"
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive}),
        },
    )["QueueUrl"]
    return Queues(url, dlq)


def send_bodies(sqs: Any, url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])]
        response = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not response.get("Failed"), response.get("Failed")


def send(sqs: Any, url: str, messages: list[dict[str, Any]]) -> None:
    send_bodies(sqs, url, [json.dumps(m) for m in messages])


def counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def drain_bodies(sqs: Any, url: str) -> list[str]:
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return bodies
        for m in got:
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def wait_until_settled(sqs: Any, url: str, timeout: float = 60.0) -> None:
    """Wait until no message of the queue is in flight (held by a killed consumer)."""
    deadline = time.monotonic() + timeout
    while counts(sqs, url)[1]:
        assert time.monotonic() < deadline, "messages stayed in flight"
        time.sleep(0.2)


def collect_cmd(queue_url: str, db: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "keysweep", "collect", "--queue-url", queue_url, "--db", db, *extra]


def start_collector(queue_url: str, db: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        collect_cmd(queue_url, db, *extra),
        cwd=ROOT,
        env=env or os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stats_of(stderr: str) -> dict[str, int]:
    """The counters of the summary line ``keysweep collect`` prints at exit."""
    line = [ln for ln in stderr.splitlines() if ln.startswith("collect: ")][-1]
    return {k: int(v) for k, v in (kv.split("=") for kv in line[len("collect: ") :].split())}
