from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from keysweep.aws import make_client
from keysweep.errors import ConfigError
from keysweep.fingerprint import Fingerprinter
from keysweep.models import HostContext, Verification
from keysweep.report.sqs import Reporter, dedup_id
from keysweep.stage_config import SQS_MAX_BYTES, ReportConfig

from tests.support.metadata_server import blackhole_endpoint, closed_endpoint
from tests.support.planted import planted_findings
from tests.support.recording_proxy import recording_proxy
from tests.support.sqs_fault_proxy import fault_proxy

pytestmark = pytest.mark.timeout(120)

FP = Fingerprinter(b"t" * 32)
CTX = HostContext(
    kind="ec2",
    hostname="web-1",
    host_id="i-0abc123def4567890",
    instance_id="i-0abc123def4567890",
    account_id="123456789012",
    region="us-east-1",
)
LIVE = Verification(
    status="live",
    account="123456789012",
    arn="arn:aws:iam::123456789012:user/ci-deployer",
    principal_type="iam-user",
    checked_at="2026-01-01T00:00:00Z",
)
UNKNOWN = Verification(status="unknown", reason="throttled", checked_at="2026-01-01T00:00:00Z")
SCHEMA = json.loads(resources.files("keysweep.schemas").joinpath("message-v1.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


class Stats:
    def to_dict(self) -> dict:
        return {
            "files_scanned": 40,
            "bytes_scanned": 12345,
            "skipped": {"too-large": 2},
            "errors": {},
            "findings_by_source": {"files": 3},
        }


def _queue(name: str = "keysweep-findings", fifo: bool = False) -> str:
    sqs = make_client("sqs", region="us-east-1")
    attrs = {"FifoQueue": "true"} if fifo else {}
    return sqs.create_queue(QueueName=name + (".fifo" if fifo else ""), Attributes=attrs)["QueueUrl"]


def _drain(url: str) -> list[dict]:
    sqs = make_client("sqs", region="us-east-1")
    out: list[dict] = []
    while True:
        msgs = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
            VisibilityTimeout=600,
        ).get("Messages", [])
        if not msgs:
            return out
        out += msgs
        # deleted, so a FIFO queue hands out the rest of a message group
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)]
        )


def _reporter(tmp_path: Path, url: str, **cfg) -> Reporter:
    return Reporter(ReportConfig(queue_url=url, **cfg), tmp_path / "state", CTX, fingerprinter=FP)


def _assert_no_secret_anywhere(planted, *texts: str) -> None:
    for text in texts:
        for p in planted:
            assert p.secret not in text


def _state_files_text(state: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in state.rglob("*") if p.is_file())


def test_findings_arrive_valid_filterable_and_without_secrets(moto_server, tmp_path):
    url = _queue()
    findings, planted = planted_findings(12, fingerprinter=FP, verification=LIVE)
    rep = _reporter(tmp_path, url)
    result = rep.report(findings, Stats())
    assert (result.spooled, result.sent, result.pending, result.refused) == (13, 13, 0, 0)
    assert result.queue_reachable is True
    msgs = _drain(url)
    assert len(msgs) == 13
    bodies = [json.loads(m["Body"]) for m in msgs]
    for body in bodies:
        VALIDATOR.validate(body)
    _assert_no_secret_anywhere(planted, *(m["Body"] for m in msgs), json.dumps(result.to_dict()))
    kinds = Counter(b["type"] for b in bodies)
    assert kinds == {"finding": 12, "heartbeat": 1}
    expected = {FP.finding_fingerprint(CTX.host_id, f.location, f.fingerprint) for f in findings}
    assert {b["finding"]["finding_fingerprint"] for b in bodies if b["type"] == "finding"} == expected
    for m, b in zip(msgs, bodies, strict=True):
        attrs = {k: v["StringValue"] for k, v in m["MessageAttributes"].items()}
        assert attrs["schema_version"] == "1" and attrs["type"] == b["type"]
        if b["type"] == "finding":
            assert attrs["severity"] == b["finding"]["severity"] and attrs["account"] == "123456789012"
            assert b["finding"]["report_reason"] == "new"
            assert b["suggestion"]["kind"] == "ec2-new-instance-profile"
            assert b["host"]["instance_id"] == "i-0abc123def4567890"
    hb = next(b for b in bodies if b["type"] == "heartbeat")
    assert hb["sweep"]["stats"]["files_scanned"] == 40
    assert hb["sweep"]["stats"]["findings_by_status"] == {"live": 12}
    assert hb["spool"]["depth"] >= 0 and hb["spool"]["filling"] is False

    # nothing in the state directory (spool, sent state) holds a secret; the spool is private
    state = tmp_path / "state"
    _assert_no_secret_anywhere(planted, _state_files_text(state))
    assert (state / "spool").stat().st_mode & 0o777 == 0o700
    assert (state / "sent-state.json").stat().st_mode & 0o777 == 0o600

    # the next sweep sends only the heartbeat; a changed verification is sent again
    again = _reporter(tmp_path, url).report(findings, Stats())
    assert (again.unchanged, again.spooled, again.sent) == (12, 1, 1)
    assert [json.loads(m["Body"])["type"] for m in _drain(url)] == ["heartbeat"]
    changed = [findings[0].with_verification(Verification(status="invalid", account="123456789012"))] + findings[1:]
    third = _reporter(tmp_path, url).report(changed, Stats(), heartbeat=False)
    assert (third.spooled, third.sent, third.unchanged) == (1, 1, 11)
    (only,) = [json.loads(m["Body"]) for m in _drain(url)]
    assert only["finding"]["report_reason"] == "verification-changed"
    assert only["finding"]["verification"]["status"] == "invalid"
    assert only["finding"]["first_seen"] <= only["finding"]["last_seen"]

    # the periodic re-report keeps the central "last seen" true
    periodic = _reporter(tmp_path, url, rereport_interval=0).report(changed, heartbeat=False)
    assert periodic.sent == 12
    assert {json.loads(m["Body"])["finding"]["report_reason"] for m in _drain(url)} == {"re-report"}


def test_batches_respect_sqs_limits_and_oversize_messages_are_trimmed(moto_server, tmp_path, monkeypatch):
    url = _queue()
    # ~10 KB per message (a path at the schema's 4096-character bound shows twice): with a 64 KiB batch limit,
    # that limit, not the 10-entry limit, decides the batch size
    findings, planted = planted_findings(25, fingerprinter=FP, verification=LIVE, path="/data/" + "d" * 4000 + "{i}")
    huge, huge_planted = planted_findings(1, fingerprinter=FP, path="/x/" + "h" * 2_000_000)
    batch_limit = 64 * 1024
    small, _ = planted_findings(12, fingerprinter=FP, path="/small{i}")
    with recording_proxy(moto_server.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", proxy.endpoint)
        first = _reporter(tmp_path, url).report(small, Stats())
        n_first = len(proxy.snapshot())
        result = _reporter(tmp_path, url, max_batch_size=batch_limit).report(findings + huge, Stats())
        requests = proxy.snapshot()
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS")
    assert first.sent == 13 and result.sent == 27 and result.pending == 0

    def batch_entries(recorded):
        return [
            json.loads(r.body)["Entries"] for r in recorded if "SendMessageBatch" in r.headers.get("X-Amz-Target", "")
        ]

    assert [len(b) for b in batch_entries(requests[:n_first])] == [10, 3]  # small messages: 10 per batch
    batches = batch_entries(requests[n_first:])
    assert sum(len(b) for b in batches) == 27
    assert max(len(b) for b in batches) < 10  # large messages: the batch size limit decides
    for entries in batches:
        assert 1 <= len(entries) <= 10
        assert len({e["Id"] for e in entries}) == len(entries)
        size = sum(len(e["MessageBody"].encode()) for e in entries)
        size += sum(
            len(k) + len(v["DataType"]) + len(v["StringValue"])
            for e in entries
            for k, v in e["MessageAttributes"].items()
        )
        assert size <= batch_limit <= SQS_MAX_BYTES
        for e in entries:
            assert len(e["MessageBody"]) <= 256 * 1024
    bodies = [json.loads(m["Body"]) for m in _drain(url)]
    assert len(bodies) == 40
    for body in bodies:
        VALIDATOR.validate(body)
    trimmed = [b for b in bodies if b.get("truncated")]
    assert len(trimmed) == 1
    assert "finding.location.path" in trimmed[0]["truncated"]
    assert trimmed[0]["finding"]["key_id"] == huge[0].key_id
    assert trimmed[0]["finding"]["location"]["path"].endswith("…[truncated]")
    _assert_no_secret_anywhere(planted + huge_planted, *(json.dumps(b) for b in bodies))


def test_fifo_queue_deduplicates_what_was_reported_not_the_finding(moto_server, tmp_path):
    url = _queue("keysweep-findings", fifo=True)
    findings, _ = planted_findings(4, fingerprinter=FP, verification=UNKNOWN)
    first = _reporter(tmp_path / "a", url).report(findings, Stats())
    # a second installation state (e.g. the state was lost): the same findings are sent again, and dropped
    second = _reporter(tmp_path / "b", url).report(findings, Stats())
    # within the 5-minute window the key is verified: unknown -> live must reach the collector
    third = _reporter(tmp_path / "a", url).report([f.with_verification(LIVE) for f in findings], Stats())
    assert first.sent == second.sent == third.sent == 5
    msgs = _drain(url)
    bodies = [json.loads(m["Body"]) for m in msgs]
    per_status = Counter(
        (b["finding"]["finding_fingerprint"], b["finding"]["verification"]["status"])
        for b in bodies
        if b["type"] == "finding"
    )
    assert len(per_status) == 8 and set(per_status.values()) == {1}
    assert sum(b["type"] == "heartbeat" for b in bodies) == 3
    for m, b in zip(msgs, bodies, strict=True):
        assert m["Attributes"]["MessageGroupId"] == CTX.host_id
        assert m["Attributes"]["MessageDeduplicationId"] == dedup_id(b)
    assert len({m["Attributes"]["MessageDeduplicationId"] for m in msgs}) == len(msgs)


def test_failed_entries_in_a_200_answer_are_retried(moto_server, tmp_path, monkeypatch):
    url = _queue()
    findings, _ = planted_findings(6, fingerprinter=FP, verification=LIVE)
    with fault_proxy(moto_server.endpoint, fail_batches=2) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", proxy.endpoint)
        result = _reporter(tmp_path, url, backoff_base=0.01).report(findings, Stats())
        assert len(proxy.failed_ids) == 2 and proxy.batch_calls >= 3
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS")
    assert result.failed == 2
    assert (result.sent, result.pending) == (7, 0)
    per_finding = Counter(json.loads(m["Body"]).get("finding", {}).get("finding_fingerprint") for m in _drain(url))
    assert per_finding.pop(None) == 1 and set(per_finding.values()) == {1} and len(per_finding) == 6


def test_queue_down_for_whole_sweeps_then_back_delivers_everything_once(moto_server, tmp_path, monkeypatch, caplog):
    url = _queue()
    findings, planted = planted_findings(15, fingerprinter=FP, verification=LIVE)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", closed_endpoint())
    down = _reporter(tmp_path, url, flush_timeout=0.5, backoff_base=0.05)
    with caplog.at_level(logging.DEBUG):
        r1 = down.report(findings, Stats())
        r2 = down.report(findings, Stats())  # a second sweep while still down: nothing is spooled twice
    assert any("unreachable" in r.getMessage() for r in caplog.records)
    _assert_no_secret_anywhere(planted, caplog.text, repr(r1), repr(r2))
    assert (r1.sent, r1.spooled, r1.pending) == (0, 16, 16)
    assert r1.queue_reachable is False and any("unreachable" in e for e in r1.errors)
    assert (r2.spooled, r2.unchanged, r2.pending) == (1, 15, 17)
    _assert_no_secret_anywhere(planted, _state_files_text(tmp_path / "state"))

    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS")
    back = _reporter(tmp_path, url).flush()  # a restarted process delivers what earlier runs spooled
    assert (back.sent, back.pending, back.queue_reachable) == (17, 0, True)
    bodies = [json.loads(m["Body"]) for m in _drain(url)]
    per_finding = Counter(b["finding"]["finding_fingerprint"] for b in bodies if b["type"] == "finding")
    assert len(per_finding) == 15 and set(per_finding.values()) == {1}
    heartbeats = [b for b in bodies if b["type"] == "heartbeat"]
    assert len(heartbeats) == 2 and heartbeats[-1]["spool"]["depth"] >= 16


_CHILD = r"""
import os, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from keysweep.fingerprint import Fingerprinter
from keysweep.models import HostContext, Verification
from keysweep.report.sqs import Reporter
from keysweep.stage_config import ReportConfig
from tests.support.planted import planted_findings
fp = Fingerprinter(b"t" * 32)
ctx = HostContext(kind="on-premises", hostname="h", host_id="machine-1")
findings, _ = planted_findings(7, fingerprinter=fp, verification=Verification(status="live", account="123456789012"))
rep = Reporter(ReportConfig(queue_url={url!r}, flush_timeout=60), Path({state!r}), ctx, fingerprinter=fp)
print("spooling", flush=True)
rep.report(findings)  # the endpoint never answers: killed while sending
"""


def test_killed_between_spooling_and_sending_delivers_after_restart(moto_server, tmp_path):
    url = _queue()
    state = tmp_path / "state"
    with blackhole_endpoint() as hole:
        env = {**os.environ, "AWS_ENDPOINT_URL_SQS": hole}
        code = _CHILD.format(root=str(Path(__file__).resolve().parents[1]), url=url, state=str(state))
        child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if (state / "spool").is_dir() and len(list((state / "spool").glob("*.msg"))) == 8:
                    break
                assert child.poll() is None, "child ended before it was killed"
                time.sleep(0.05)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    ctx = HostContext(kind="on-premises", hostname="h", host_id="machine-1")
    restarted = Reporter(ReportConfig(queue_url=url), state, ctx, fingerprinter=FP)
    result = restarted.flush()
    assert (result.sent, result.pending) == (8, 0)
    bodies = [json.loads(m["Body"]) for m in _drain(url)]
    assert Counter(b["type"] for b in bodies) == {"finding": 7, "heartbeat": 1}
    for body in bodies:
        VALIDATOR.validate(body)


def test_full_spool_is_reported_and_nothing_is_silently_dropped(moto_server, tmp_path, monkeypatch, caplog):
    url = _queue()
    findings, _ = planted_findings(8, fingerprinter=FP, verification=LIVE)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", closed_endpoint())
    cfg = {"flush_timeout": 0.2, "backoff_base": 0.05, "spool_max_messages": 5}
    with caplog.at_level(logging.WARNING, logger="keysweep.report"):
        full = _reporter(tmp_path, url, **cfg).report(findings, Stats())
    assert full.spooled == 5 and full.refused == 4  # 3 findings and the heartbeat did not fit
    assert full.pending == 5 and full.spool_filling is True
    assert any("full" in e for e in full.errors)
    assert any("spool" in r.getMessage() and r.levelno >= logging.ERROR for r in caplog.records)
    assert any("filling" in r.getMessage() for r in caplog.records)

    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS")
    later = _reporter(tmp_path, url, **cfg).report(findings, Stats())  # queue back: the refused ones come again
    assert later.refused == 0 and later.pending == 0
    bodies = [json.loads(m["Body"]) for m in _drain(url)]
    per_finding = Counter(b["finding"]["finding_fingerprint"] for b in bodies if b["type"] == "finding")
    assert len(per_finding) == 8 and set(per_finding.values()) == {1}
    (hb,) = [b for b in bodies if b["type"] == "heartbeat"]
    assert hb["spool"]["refused"] == 4  # the central side learns what the full spool refused, across restarts


def test_report_config_from_mapping_names_bad_keys_and_values():
    cfg = ReportConfig.from_mapping(
        {
            "queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/q.fifo",
            "spool_max_size": "10MiB",
            "rereport_interval": "6h",
        }
    )
    assert cfg.is_fifo and cfg.queue_region() == "eu-west-1"
    assert cfg.spool_max_size == 10 * 1024 * 1024 and cfg.rereport_interval == 6 * 3600
    with pytest.raises(ConfigError) as err:
        ReportConfig.from_mapping({"queue_ur": "x", "max_message_size": "4MiB", "heartbeats": "yes"})
    text = str(err.value)
    assert "queue_ur" in text and "max_message_size" in text and "heartbeats" in text
    with pytest.raises(ConfigError, match="queue_url"):
        ReportConfig.from_mapping({"queue_url": "not a url"})
    with pytest.raises(ConfigError, match="queue_url"):
        Reporter(ReportConfig(), Path("/nonexistent"), CTX, fingerprinter=FP)


def _keysweep(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keysweep", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_scan_queue_url_sends_and_a_later_run_delivers_what_an_earlier_could_not(moto_server, tmp_path):
    url = _queue()
    tree = tmp_path / "tree"
    tree.mkdir()
    from tests.support.planted import planted_key

    keys = [planted_key(100 + i) for i in range(3)]
    for i, k in enumerate(keys):
        (tree / f"app{i}.env").write_text(f"AWS_ACCESS_KEY_ID={k.key_id}\nAWS_SECRET_ACCESS_KEY={k.secret}\n")
    state = tmp_path / "state"
    config = tmp_path / "agent.yaml"
    config.write_text(f"state_dir: {state}\nreport:\n  flush_timeout: 1s\n")
    args = (
        "scan",
        str(tree),
        "--queue-url",
        url,
        "--state-dir",
        str(state),
        "--format",
        "json",
        "--config",
        str(config),
    )
    down = {**os.environ, "AWS_ENDPOINT_URL_SQS": closed_endpoint()}
    first = _keysweep(*args, env=down)
    assert first.returncode == 1, first.stderr  # findings
    assert {f["key_id"] for f in json.loads(first.stdout)["findings"]} == {k.key_id for k in keys}
    assert "4 wait in" in first.stderr and _drain(url) == []
    _assert_no_secret_anywhere(keys, first.stderr, _state_files_text(state))

    second = _keysweep(*args, env=dict(os.environ))
    assert second.returncode == 1, second.stderr
    assert "5 messages sent" in second.stderr  # the 4 spooled earlier and this run's heartbeat
    bodies = [json.loads(m["Body"]) for m in _drain(url)]
    assert Counter(b["type"] for b in bodies) == {"finding": 3, "heartbeat": 2}
    assert {b["agent"]["mode"] for b in bodies} == {"scan"}
    for body in bodies:
        VALIDATOR.validate(body)
    _assert_no_secret_anywhere(keys, second.stderr, second.stdout, *(json.dumps(b) for b in bodies))


def test_a_queue_that_does_not_exist_is_an_error_not_an_outage(moto_server, tmp_path):
    url = _queue()
    findings, _ = planted_findings(2, fingerprinter=FP, verification=LIVE)
    missing = url.rsplit("/", 1)[0] + "/no-such-queue"
    result = _reporter(tmp_path, missing, flush_timeout=60).report(findings)
    assert result.sent == 0 and result.pending == 3
    assert result.queue_reachable is True
    assert any("QueueDoesNotExist" in e or "NonExistentQueue" in e for e in result.errors), result.errors
    assert _reporter(tmp_path, url).flush().sent == 3  # fixed configuration: delivered from the spool


def test_unwritable_state_directory_is_a_clear_error(tmp_path):
    from keysweep.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="state dir .*/file/state: cannot create"):
        _reporter(blocker, "http://127.0.0.1:1/123456789012/q")


@pytest.mark.parametrize("attrs", [{"SqsManagedSseEnabled": "true"}, {"KmsMasterKeyId": "alias/aws/sqs"}])
def test_encrypted_queues_need_nothing_extra(moto_server, tmp_path, attrs):
    url = make_client("sqs", region="us-east-1").create_queue(QueueName="sse", Attributes=attrs)["QueueUrl"]
    findings, _ = planted_findings(2, fingerprinter=FP, verification=LIVE)
    assert _reporter(tmp_path, url).report(findings).sent == 3
    assert len(_drain(url)) == 3


def test_damaged_spool_files_are_set_aside_and_the_rest_delivered(moto_server, tmp_path):
    url = _queue()
    findings, _ = planted_findings(2, fingerprinter=FP, verification=LIVE)
    rep = _reporter(tmp_path, url, flush_timeout=0.3)
    spool_dir = tmp_path / "state" / "spool"  # another process's spool files, damaged
    (spool_dir / "00000000000000000001-f-1-1-broken.msg").write_text("[1, 2]")
    (spool_dir / "00000000000000000002-f-1-2-halfjson.msg").write_text('{"schema_version": 1,')
    result = rep.report(findings)
    assert (result.sent, result.pending) == (3, 0)
    assert sorted(p.name.split(".msg.")[0] for p in (spool_dir.parent / "corrupt").iterdir()) == [
        "00000000000000000001-f-1-1-broken",
        "00000000000000000002-f-1-2-halfjson",
    ]
    assert rep.spool.status().corrupt == 2
    assert len(_drain(url)) == 3


def test_scan_rejects_a_malformed_queue_url(tmp_path):
    (tmp_path / "f.txt").write_text("nothing here\n")
    proc = _keysweep(
        "scan",
        str(tmp_path / "f.txt"),
        "--queue-url",
        "not-a-queue",
        "--state-dir",
        str(tmp_path / "s"),
        env=dict(os.environ),
    )
    assert proc.returncode == 2 and "--queue-url" in proc.stderr


@pytest.mark.timeout(20)  # flush_timeout is 60 s: retrying a missing-credentials error would hit this bound
def test_missing_credentials_are_reported_at_once_not_retried(moto_server, tmp_path, monkeypatch):
    url = _queue()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    findings, _ = planted_findings(1, fingerprinter=FP, verification=LIVE)
    result = _reporter(tmp_path, url, flush_timeout=60).report(findings)
    assert result.sent == 0 and result.pending == 2
    assert result.queue_reachable is None
    assert any("NoCredentialsError" in e for e in result.errors)
