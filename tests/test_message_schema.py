from __future__ import annotations

import json
import time
from importlib import resources

import jsonschema
import pytest
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Finding, HostContext, Location, Secret, Verification
from keysweep.report.message import (
    MessageTooLarge,
    SecretInMessage,
    assert_no_secret,
    encode_message,
    finding_message,
    heartbeat_message,
)
from keysweep.report.sent_state import SentState
from keysweep.suggest import suggest

from tests.support.planted import planted_findings

pytestmark = pytest.mark.timeout(60)

FP = Fingerprinter(b"s" * 32)
SCHEMA = json.loads(resources.files("keysweep.schemas").joinpath("message-v1.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
SQS_ALLOWED = {0x9, 0xA, 0xD, *range(0x20, 0xD800), *range(0xE000, 0xFFFE)}

CONTEXTS = {
    "ec2": HostContext(
        kind="ec2",
        hostname="w",
        host_id="i-1",
        instance_id="i-1",
        account_id="123456789012",
        region="eu-west-1",
        availability_zone="eu-west-1a",
        ami_id="ami-1",
    ),
    "ec2-profile": HostContext(
        kind="ec2",
        hostname="w",
        host_id="i-2",
        instance_id="i-2",
        instance_profile_arn="arn:aws:iam::123456789012:instance-profile/p",
    ),
    "ecs": HostContext(
        kind="ecs",
        hostname="t",
        host_id="arn:aws:ecs:us-east-2:1:task/c/x",
        task_family="f",
        task_revision="3",
        launch_type="FARGATE",
        task_role_present=True,
    ),
    "eks": HostContext(
        kind="eks", hostname="p", host_id="ns/p", pod="p", namespace="ns", service_account="sa", pod_identity=True
    ),
    "kubernetes": HostContext(kind="kubernetes", hostname="p", host_id="ns/p", pod="p", namespace="ns"),
    "lambda": HostContext(kind="lambda", hostname="l", host_id="lambda:r:f", function_name="f"),
    "on-premises": HostContext(
        kind="on-premises", hostname="b", host_id="machine-x", errors=("imds: metadata unreachable (timed out)",)
    ),
    "unknown": HostContext(kind="unknown", hostname="u", host_id="u"),
}
VERIFICATIONS = [
    None,
    Verification(
        status="live",
        account="123456789012",
        arn="arn:aws:iam::123456789012:user/u",
        principal_type="iam-user",
        checked_at="2026-01-01T00:00:00Z",
    ),
    Verification(status="live", account="123456789012", arn="arn:aws:iam::123456789012:root", principal_type="root"),
    Verification(status="canary", account="717712589309", reason="known-canary-account"),
    Verification(status="unknown", reason="throttled"),
]


def _finding(path: str, **fields) -> Finding:
    """A file finding of one fixed key id at ``path``."""
    return Finding(
        rule="r",
        key_id="AKIAXYZDQCEN4B6JSJQI",
        location=Location(kind="file", path=path),
        fingerprint="a" * 32,
        **fields,
    )


def _valid_body(msg: dict, limit: int = 256 * 1024) -> str:
    """``msg`` encoded within ``limit``, checked against the schema and by the collector's own validation."""
    body = encode_message(msg, limit)
    VALIDATOR.validate(json.loads(body))
    _central_accepts(body)
    return body


def _central_accepts(body: str) -> None:
    """The collector's own validation (standard library only) accepts what the agent sends."""
    from keysweep.central.handler import MessageHandler, Outcome

    result, message = MessageHandler(store=None).classify(body)  # classify never touches the store
    assert result.outcome == Outcome.OK, result.reason
    assert message is not None


@pytest.mark.parametrize("ctx_name", sorted(CONTEXTS))
def test_finding_messages_validate_for_every_context_and_status(ctx_name):
    ctx = CONTEXTS[ctx_name]
    (finding,), planted = planted_findings(1, fingerprinter=FP, path="/home/dev/.aws/credentials")
    for v in VERIFICATIONS:
        f = finding.with_verification(v) if v else finding
        ffp = FP.finding_fingerprint(ctx.host_id, f.location, f.fingerprint)
        msg = finding_message(f, ctx, finding_fingerprint=ffp, suggestion=suggest(f, ctx), report_reason="new")
        body = _valid_body(msg)
        assert planted[0].secret not in body
        assert_no_secret(body, [f])
        decoded = json.loads(body)
        assert decoded["finding"]["finding_fingerprint"] == ffp
        assert decoded["finding"]["secret_redacted"] == planted[0].secret[:4] + "…"
        assert decoded["host"]["kind"] == ctx.kind


def test_heartbeat_validates_and_carries_sweep_and_spool():
    (f,), _ = planted_findings(1, fingerprinter=FP, verification=VERIFICATIONS[1])

    class Stats:
        def to_dict(self):
            return {
                "files_scanned": 3,
                "bytes_scanned": 10,
                "skipped": {"binary": 1},
                "errors": {"EACCES": 2},
                "findings_by_source": {"files": 1},
                "interrupted": False,
            }

    now = time.time()
    msg = heartbeat_message(
        CONTEXTS["on-premises"],
        stats=Stats(),
        findings=[f],
        started_at=now - 2.5,
        finished_at=now,
        spool={"depth": 3, "bytes": 100, "filling": True, "refused": 1},
        errors=["scan: /proc unreadable"],
        mode="agent",
    )
    hb = json.loads(_valid_body(msg))
    assert hb["sweep"]["stats"]["errors"] == {"EACCES": 2}
    assert hb["sweep"]["stats"]["findings_by_status"] == {"live": 1}
    assert hb["sweep"]["duration_s"] == 2.5
    assert hb["spool"]["filling"] is True and hb["host"]["errors"] == ["imds: metadata unreachable (timed out)"]
    empty = heartbeat_message(CONTEXTS["ec2"], stats=None, findings=[], started_at=now, finished_at=now, spool={})
    _valid_body(empty, 4096)


def test_bodies_hold_only_characters_sqs_accepts():
    path = "/srv/\udcff\x01weird\u2028名前/🔑.env"  # undecodable byte, control character, non-BMP
    f = _finding(path)
    ctx = CONTEXTS["unknown"]
    msg = finding_message(f, ctx, finding_fingerprint="b" * 32, suggestion=suggest(f, ctx), report_reason="new")
    body = encode_message(msg, 256 * 1024)
    assert all(ord(c) in SQS_ALLOWED for c in body)
    # an undecodable byte travels as \xNN (a lone surrogate would not fit the collector's UTF-8 store)
    assert json.loads(body)["finding"]["location"]["path"] == "/srv/\\xff\x01weird\u2028名前/🔑.env"
    assert "\\udc" not in body


def test_oversize_messages_are_trimmed_with_a_marker_and_stay_valid():
    long_path = "/deep/" + "x" * 300_000
    f = _finding(long_path, verification=VERIFICATIONS[1])
    ctx = CONTEXTS["ec2"]
    msg = finding_message(f, ctx, finding_fingerprint="c" * 32, suggestion=suggest(f, ctx), report_reason="new")
    # the schema's bound on a path comes first, then the body's size limit: optional parts, then longest strings
    for limit, dropped_first in ((64 * 1024, []), (6 * 1024, ["suggestion.terraform", "suggestion.scp"])):
        body = _valid_body(msg, limit)
        assert len(body) <= limit
        out = json.loads(body)
        assert out["truncated"][0] == "finding.location.path"
        assert all(name in out["truncated"] for name in dropped_first)
        path = out["finding"]["location"]["path"]
        assert path.startswith("/deep/xxx") and path.endswith("…[truncated]") and len(path) <= 4096
        assert out["finding"]["key_id"] == f.key_id and out["finding"]["finding_fingerprint"] == "c" * 32
    # a message that fits is never touched
    short = _finding("/a", verification=VERIFICATIONS[1])
    small = finding_message(
        short, ctx, finding_fingerprint="c" * 32, suggestion=suggest(short, ctx), report_reason="new"
    )
    assert json.loads(encode_message(small, 64 * 1024)) == small
    with pytest.raises(MessageTooLarge):
        encode_message(msg, 200)


def test_a_secret_that_reached_a_body_is_refused():
    f = _finding("/p", secret=Secret("Zq3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"))
    with pytest.raises(SecretInMessage) as err:
        assert_no_secret('{"x": "Zq3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"}', [f])
    assert "Zq3v" not in str(err.value)


def test_implausible_derived_account_does_not_get_the_finding_rejected():
    f = _finding("/p", account_id="1006947016951")
    ctx = CONTEXTS["unknown"]
    msg = finding_message(f, ctx, finding_fingerprint="d" * 32, suggestion=None, report_reason="new")
    assert msg["finding"]["account_id"] is None
    VALIDATOR.validate(msg)


def test_sent_state_new_changed_periodic_and_forgotten(tmp_path):
    path = tmp_path / "sent.json"
    st = SentState(path, rereport_after=100, retention=1000)
    assert st.reason("f1", "live", now=0) == "new"
    st.record_sent("f1", "live", now=0)
    st.save(now=0)
    st = SentState(path, rereport_after=100, retention=1000)  # survives a restart
    assert st.reason("f1", "live", now=50) is None
    assert st.reason("f1", "invalid", now=50) == "verification-changed"
    assert st.reason("f1", "live", now=100) == "re-report"
    st.record_sent("f1", "invalid", now=60)
    assert st.first_seen("f1") == 0
    st.seen("f1", now=900)
    st.save(now=900)
    assert SentState(path, retention=1000).reason("f1", "invalid", now=950) is None
    st.save(now=1901)  # not seen for longer than the retention: forgotten, a return is "new"
    assert SentState(path, retention=1000).reason("f1", "invalid", now=1901) == "new"
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("{not json")
    assert SentState(path).reason("f1", "live") == "new"  # damaged state: report again, never crash
