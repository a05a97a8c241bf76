"""keysweep cloud --queue-url: cloud findings go through the host's spool and message schema, one host context
(kind cloud) per account and region, and the collector's own validation accepts them."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import jsonschema
import pytest
from keysweep.central.handler import MessageHandler, Outcome
from keysweep.cli import main
from keysweep.schemas import message_schema

from tests.support.moto_server import MotoServer
from tests.support.planted import planted_key
from tests.test_cloud import ACCOUNT, REGION, role, zipped

pytestmark = pytest.mark.timeout(120)

SCHEMA = jsonschema.Draft202012Validator(message_schema())


def drain(queue_url: str) -> list[str]:
    sqs = boto3.client("sqs")
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return bodies
        bodies += [m["Body"] for m in got]
        sqs.delete_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
        )


def test_cloud_findings_reach_the_queue_as_host_messages(
    moto_server: MotoServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    in_lambda, in_ssm = planted_key(50), planted_key(51)
    exec_role = role("billing-exec")
    boto3.client("lambda").create_function(
        FunctionName="billing",
        Runtime="python3.12",
        Role=exec_role,
        Handler="h.h",
        Code={"ZipFile": zipped("h.py", "")},
        Environment={"Variables": {"AWS_ACCESS_KEY_ID": in_lambda.key_id, "AWS_SECRET_ACCESS_KEY": in_lambda.secret}},
    )
    boto3.client("ssm", region_name="eu-west-1").put_parameter(Name="/k", Type="String", Value=in_ssm.key_id)
    queue = boto3.client("sqs").create_queue(QueueName="keysweep-findings")["QueueUrl"]

    argv = ["cloud", "--format", "json", "--region", REGION, "eu-west-1", "--queue-url", queue]
    argv += ["--state-dir", str(tmp_path / "state")]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1, err
    assert "queue: 4 messages sent" in err  # two findings, one heartbeat per account-region
    bodies = drain(queue)
    messages = [json.loads(b) for b in bodies]
    for body, msg in zip(bodies, messages, strict=True):
        SCHEMA.validate(msg)
        result, _ = MessageHandler(store=None).classify(body)  # type: ignore[arg-type]  # classify never stores
        assert result.outcome is Outcome.OK, result.reason
        assert in_lambda.secret not in body
    findings = {m["finding"]["key_id"]: m for m in messages if m["type"] == "finding"}
    lam = findings[in_lambda.key_id]
    assert lam["host"]["kind"] == "cloud" and lam["host"]["account_id"] == ACCOUNT
    assert lam["host"]["region"] == REGION and lam["host"]["host_id"] == f"cloud:{ACCOUNT}:{REGION}"
    assert lam["finding"]["location"]["resource_arn"].endswith(":function:billing:$LATEST")
    assert lam["suggestion"]["kind"] == "lambda-execution-role" and lam["suggestion"]["role_name"] == "billing-exec"
    assert findings[in_ssm.key_id]["host"]["region"] == "eu-west-1"
    assert findings[in_ssm.key_id]["suggestion"]["kind"] == "stored-key"
    beats = sorted(
        (m["host"]["region"], m["sweep"]["stats"].get("findings_by_source", {}))
        for m in messages
        if m["type"] == "heartbeat"
    )
    assert beats == [("eu-west-1", {"ssm": 1}), (REGION, {"lambda": 1})]

    # a second run reports nothing new (same spool and sent state), only the heartbeats
    assert main(argv) == 1
    capsys.readouterr()
    assert sorted(json.loads(b)["type"] for b in drain(queue)) == ["heartbeat", "heartbeat"]
    # nothing in the state directory (spool, sent state, fingerprint key) holds the secret
    state_files = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert state_files and all(in_lambda.secret.encode() not in p.read_bytes() for p in state_files)
