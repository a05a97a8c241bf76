"""`keysweep collect --from-file`: backfill and replay through the queue's own validation and sender binding."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keysweep.central.replay import MAX_LINE_BYTES, read_lines
from keysweep.central.store import open_store
from keysweep.cli import main

from tests.support import messages as M
from tests.support.central import MOTO_SENDER, ROOT, make_queues, send, sqs_client, stats_of

INSTANCE = "i-0123456789abcdef0"
OTHER_INSTANCE = "i-0fedcba9876543210"
INSTANCE_SENDER = f"AROAEXAMPLEAGENTROLE1:{INSTANCE}"


class BoundedReads(io.BytesIO):
    """A stream that checks every read asks for a bounded size."""

    def __init__(self, data: bytes, bound: int) -> None:
        super().__init__(data)
        self.bound = bound

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        assert size is not None and 0 < size <= self.bound
        return super().readline(size)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12),
    final_newline=st.booleans(),
    limit=st.integers(min_value=1, max_value=30),
)
def test_line_reader_matches_split(lines: list[bytes], final_newline: bool, limit: int) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    expected = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        expected.pop()
    got = list(read_lines(BoundedReads(data, limit + 1), limit))
    assert [line.number for line in got] == list(range(1, len(expected) + 1))
    assert len(got) == len(expected)
    for line, raw in zip(got, expected, strict=True):
        if len(raw) > limit:
            assert line.data is None
        else:
            assert line.data == (raw[:-1] if raw.endswith(b"\r") else raw)


def envelope(message: dict[str, Any], sender: str | None = INSTANCE_SENDER, sent_ms: int | None = None) -> str:
    """A line as `aws sqs receive-message --attribute-names All | jq -c '.Messages[]'` gives it."""
    attributes = {"ApproximateReceiveCount": "5"}
    if sender:
        attributes["SenderId"] = sender
    if sent_ms:
        attributes["SentTimestamp"] = str(sent_ms)
    return json.dumps(
        {"MessageId": "m-1", "ReceiptHandle": "rh", "Body": json.dumps(message), "Attributes": attributes}
    )


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, int], str]:
    code = main(["collect", *args])
    err = capsys.readouterr().err
    return code, stats_of(err), err


def findings(db: str) -> dict[str, Any]:
    store = open_store(db, create=False)
    try:
        return {(r.host_id, r.location["path"]): r for r in store.iter_findings()}
    finally:
        store.close()


def test_bad_lines_are_counted_and_skipped_the_rest_is_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    good = M.finding_message(path="/srv/app/.env", sent_at="2026-11-28T10:00:00Z")
    queued = int(datetime(2026, 11, 28, 10, 0, 1, tzinfo=UTC).timestamp() * 1000)
    lines = [
        envelope(good, sent_ms=queued).encode(),  # 1 stored, bound to its instance
        envelope(good, sent_ms=queued).encode(),  # 2 the same again: duplicate
        b"",  # 3 blank
        b"{not json",  # 4 malformed
        b'{"Body": "x\xff\xfe"}',  # 5 not UTF-8
        b"x" * (MAX_LINE_BYTES + 10),  # 6 too long
        json.dumps(M.variant(good, schema_version=7)).encode(),  # 7 unknown version (bare)
        json.dumps(M.finding_message(path="/bare")).encode(),  # 8 bare body: no SenderId
        envelope(M.finding_message(host_info=M.host(OTHER_INSTANCE), path="/other")).encode(),  # 9 not its host
        envelope(M.finding_message(path="/secret.txt")).encode() + b"\r",  # 10 CRLF ending: stored
        envelope(M.variant(good, type="finding", finding={"key_id": "x"})).encode(),  # 11 schema-invalid
    ]
    source = tmp_path / "dlq.jsonl"
    source.write_bytes(b"\n".join(lines))  # no final newline
    db = str(tmp_path / "fleet.db")
    code, stats, err = run(capsys, "--from-file", str(source), "--db", db)
    assert code == 1
    assert stats == {
        "lines": 11,
        "blank": 1,
        "stored": 2,
        "duplicates": 1,
        "malformed": 2,
        "not_utf8": 1,
        "too_long": 1,
        "unknown_version": 1,
        "rejected_sender": 2,
        "no_sender": 1,
        "clamped_times": 0,
        "refused": 0,
        "internal_errors": 0,
        "store_errors": 0,
    }
    log = caplog.text
    for n in (4, 5, 6, 7, 8, 9, 11):
        assert f"line {n} skipped" in log
    assert "line 8 skipped (rejected: the line carries no SenderId" in log
    assert "line 9 skipped (rejected: sender AROAEXAMPLEAGENTROLE1:i-0123456789abcdef0 is an EC2 instance" in log
    assert "1 line(s) of" in err and "--sender SENDER_ID" in err
    assert "x" * 100 not in log + err and "/bare" not in log + err  # reasons, never content
    stored = findings(db)
    assert set(stored) == {(INSTANCE, "/srv/app/.env"), (INSTANCE, "/secret.txt")}
    assert stored[(INSTANCE, "/srv/app/.env")].sender == INSTANCE_SENDER
    assert stored[(INSTANCE, "/srv/app/.env")].received_first == "2026-11-28T10:00:01.000Z"  # the envelope's time

    # a replay of the same file changes nothing; the exit code still says lines were skipped
    code, stats, _ = run(capsys, "--from-file", str(source), "--db", db)
    assert (code, stats["stored"], stats["duplicates"]) == (1, 0, 3)


def test_a_file_cannot_speak_for_a_host_its_sender_does_not_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    db = str(tmp_path / "fleet.db")
    build = M.host("build-01", "build-01", "on-premises")
    first = tmp_path / "first.jsonl"
    first.write_text(json.dumps(M.finding_message(host_info=build, path="/a")) + "\n")
    code, stats, _ = run(capsys, "--from-file", str(first), "--db", db, "--sender", "AIDAEXAMPLEBUILDUSER1")
    assert (code, stats["stored"]) == (0, 1)

    # another sender, through a file: refused exactly as through the queue, by --sender or by the envelope
    second = tmp_path / "second.jsonl"
    second.write_text(
        json.dumps(M.finding_message(host_info=build, path="/b", status="invalid"))
        + "\n"
        + envelope(M.finding_message(host_info=build, path="/c"), sender="AIDAEXAMPLEOTHERUSER")
        + "\n"
    )
    code, stats, err = run(capsys, "--from-file", str(second), "--db", db, "--sender", "AIDAEXAMPLEOTHERUSER2")
    assert (code, stats["rejected_sender"], stats["stored"]) == (1, 2, 0)
    assert "owned by sender AIDAEXAMPLEBUILDUSER1" in caplog.text
    code, stats, _ = run(capsys, "--from-file", str(second), "--db", db)  # the envelope's own sender: also refused
    assert (stats["rejected_sender"], stats["no_sender"], stats["stored"]) == (2, 1, 0)
    assert set(findings(db)) == {("build-01", "/a")}

    # the operator vouches for the file: applied without binding, the records keep no sender
    code, stats, _ = run(capsys, "--from-file", str(second), "--db", db, "--no-sender-binding")
    assert (code, stats["stored"]) == (0, 2)
    assert findings(db)[("build-01", "/b")].sender is None


@pytest.mark.parametrize(
    "args",
    [
        ["--from-file", "x", "--queue-url", "https://sqs.eu-west-1.amazonaws.com/1/q"],
        ["--from-file", "x", "--sender", "AIDAX", "--no-sender-binding"],
        ["--queue-url", "https://sqs.eu-west-1.amazonaws.com/1/q", "--sender", "AIDAX"],
    ],
)
def test_conflicting_options_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert main(["collect", *args, "--db", str(tmp_path / "f.db")]) == 2
    assert not (tmp_path / "f.db").exists()


def test_a_missing_file_is_a_usage_error_and_creates_no_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["collect", "--from-file", str(tmp_path / "nope.jsonl"), "--db", str(tmp_path / "f.db")]) == 2
    assert "No such file" in capsys.readouterr().err
    assert not (tmp_path / "f.db").exists()


def test_dead_letter_queue_replayed_from_stdin_into_dynamodb(moto_server: Any, tmp_path: Path) -> None:
    """The documented flow: receive the DLQ with its attributes, one SQS message per line, pipe it in."""
    sqs = sqs_client()
    queues = make_queues(sqs)
    hosts = [M.host(f"build-{i:02d}", f"build-{i:02d}", "on-premises") for i in range(3)]
    send(
        sqs,
        queues.dlq_url,
        [M.finding_message(host_info=h, path=f"/p{i}") for i, h in enumerate(hosts)]
        + [M.heartbeat_message(host_info=hosts[0])],
    )
    dump = []
    while True:
        got = sqs.receive_message(
            QueueUrl=queues.dlq_url, MaxNumberOfMessages=10, AttributeNames=["All"], VisibilityTimeout=60
        ).get("Messages", [])
        if not got:
            break
        dump += [json.dumps(m) for m in got]
    assert len(dump) == 4
    proc = subprocess.run(
        [sys.executable, "-m", "keysweep", "collect", "--from-file", "-", "--db", "dynamodb://fleet-replay"],
        input="\n".join(dump) + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert stats_of(proc.stderr)["stored"] == 4
    store = open_store("dynamodb://fleet-replay", create=False)
    try:
        assert sorted(r.host_id for r in store.iter_findings()) == ["build-00", "build-01", "build-02"]
        assert {r.sender for r in store.iter_findings()} == {MOTO_SENDER}
        assert [h.last_heartbeat is not None for h in store.iter_hosts()] == [True, False, False]
    finally:
        store.close()


def test_store_failure_stops_at_the_line_and_says_where_to_resume(moto_server: Any) -> None:
    """The table is deleted while lines still come in on standard input: exit 3 naming the first line not applied."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keysweep",
            "collect",
            "--from-file",
            "-",
            "--db",
            "dynamodb://fleet-gone",
            "--no-sender-binding",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(M.finding_message(path="/one")) + "\n")
    proc.stdin.flush()
    ddb = boto3.client("dynamodb")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tables = ddb.list_tables()["TableNames"]
        if (
            "fleet-gone" in tables
            and ddb.scan(
                TableName="fleet-gone",
                Select="COUNT",
                FilterExpression="#t = :t",
                ExpressionAttributeNames={"#t": "type"},
                ExpressionAttributeValues={":t": {"S": "finding"}},
            )["Count"]
        ):
            break
        time.sleep(0.1)
    ddb.delete_table(TableName="fleet-gone")
    _, err = proc.communicate(
        json.dumps(M.finding_message(path="/two")) + "\n" + json.dumps(M.finding_message(path="/three")) + "\n",
        timeout=120,
    )
    assert proc.returncode == 3, err
    assert "the store failed at line 2 of standard input" in err
    stats = stats_of(err)
    assert (stats["lines"], stats["stored"], stats["store_errors"]) == (2, 1, 1)
