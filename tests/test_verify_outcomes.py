"""Outcome mapping against a scripted STS endpoint over real HTTP: every non-STS answer is unknown, never live."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from keysweep.verify import Verifier

from tests.support.moto_server import free_port
from tests.support.sts_stub import Reply, html, identity, running_stub, sts_error
from tests.support.verify_findings import FAST as SUPPORT_FAST
from tests.support.verify_findings import FINGERPRINTER, finding

KEY = "AKIAQQQQRRRRSSSSTTT2"  # decodes to a non-canary account
SECRET = "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"
TEMP_KEY = "ASIAQQQQRRRRSSSSTTT2"
TOKEN = "FwoGZXIvYXdzEJr//////////wEaDOnm8Ex0aHtoken0tokenTOKENtoken"

FAST = dataclasses.replace(SUPPORT_FAST, connect_timeout=1.0, read_timeout=2.0, max_retries=2)


def verify_one(endpoint: str, f=None, state_dir: Path | None = None, **overrides):
    config = dataclasses.replace(FAST, endpoint=endpoint, **overrides)
    verifier = Verifier(config, state_dir=state_dir, fingerprinter=FINGERPRINTER)
    (out,) = verifier.verify_all([f or finding(KEY, SECRET)])
    return out


@pytest.mark.timeout(30)
def test_root_key_is_live_and_critical():
    with running_stub(identity("210987654321", "arn:aws:iam::210987654321:root", "210987654321")) as stub:
        out = verify_one(stub.endpoint, dataclasses.replace(finding(KEY, SECRET), severity="medium"))
    v = out.verification
    assert (v.status, v.account, v.arn, v.principal_type) == (
        "live",
        "210987654321",
        "arn:aws:iam::210987654321:root",
        "root",
    )
    assert out.severity == "critical"
    assert stub.count == 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "arn, kind",
    [
        ("arn:aws:iam::210987654321:user/deploy", "iam-user"),
        ("arn:aws:sts::210987654321:assumed-role/ci/build-17", "assumed-role"),
        ("arn:aws:sts::210987654321:federated-user/bob", "federated-user"),
    ],
)
def test_principal_types(arn, kind):
    with running_stub(identity("210987654321", arn, "AIDAEXAMPLEUSERID01")) as stub:
        out = verify_one(stub.endpoint, dataclasses.replace(finding(KEY, SECRET), severity="medium"))
    assert out.verification.status == "live"
    assert out.verification.principal_type == kind
    assert out.severity == "medium"


@pytest.mark.timeout(30)
def test_expired_token_is_expired():
    with running_stub(sts_error("ExpiredToken", "The security token included in the request is expired", 400)) as stub:
        out = verify_one(stub.endpoint, finding(TEMP_KEY, SECRET, TOKEN))
    assert out.verification.status == "expired"
    assert stub.count == 1
    assert stub.requests[0].get("X-Amz-Security-Token") == TOKEN


@pytest.mark.timeout(30)
def test_server_errors_are_unknown_after_bounded_retries():
    with running_stub(Reply(500, "")) as stub:
        out = verify_one(stub.endpoint)
    assert out.verification.status == "unknown"
    assert out.verification.reason == "server-error-500"
    assert stub.count == 1 + FAST.max_retries


@pytest.mark.timeout(30)
def test_throttling_is_unknown_after_bounded_retries():
    with running_stub(sts_error("Throttling", "Rate exceeded", 400)) as stub:
        out = verify_one(stub.endpoint, max_retries=3)
    assert (out.verification.status, out.verification.reason) == ("unknown", "throttled")
    assert stub.count == 4


@pytest.mark.timeout(30)
@pytest.mark.parametrize("content_type", ["text/plain", "text/html", "application/json"])
def test_plain_429_is_throttling_retried_then_answer(content_type):
    throttled = Reply(429, "Too Many Requests", content_type)
    with running_stub(
        throttled, throttled, identity("210987654321", "arn:aws:iam::210987654321:user/x", "AIDAX")
    ) as stub:
        out = verify_one(stub.endpoint, max_retries=3)
    assert out.verification.status == "live"
    assert stub.count == 3


@pytest.mark.timeout(30)
def test_plain_429_until_retries_run_out_is_unknown_throttled():
    with running_stub(Reply(429, "rate exceeded, slow down", "text/plain")) as stub:
        out = verify_one(stub.endpoint, max_retries=2)
    assert (out.verification.status, out.verification.reason) == ("unknown", "throttled")
    assert stub.count == 3


@pytest.mark.timeout(30)
def test_plain_text_server_error_is_retried():
    with running_stub(Reply(502, "Bad Gateway", "text/plain")) as stub:
        out = verify_one(stub.endpoint, max_retries=1)
    assert (out.verification.status, out.verification.reason) == ("unknown", "server-error-502")
    assert stub.count == 2


@pytest.mark.timeout(30)
def test_old_key_account_lookup_retries_a_plain_429(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAQQQQRRRRSSSSAGNT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    account_info = Reply(
        200,
        '<GetAccessKeyInfoResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetAccessKeyInfoResult>'
        "<Account>210987654321</Account></GetAccessKeyInfoResult></GetAccessKeyInfoResponse>",
    )
    with running_stub(
        Reply(429, "Too Many Requests", "text/plain"),
        account_info,
        identity("210987654321", "arn:aws:iam::210987654321:user/x", "AIDAX"),
    ) as stub:
        out = verify_one(stub.endpoint, f=finding("AKIAJ2ZZZZQQQQRRRRSS", SECRET), max_retries=2)
    assert (out.verification.status, out.account_id) == ("live", "210987654321")
    assert stub.count == 3


@pytest.mark.timeout(30)
def test_transient_error_then_answer_uses_the_answer():
    with running_stub(Reply(503, ""), identity("210987654321", "arn:aws:iam::210987654321:user/x", "AIDAX")) as stub:
        out = verify_one(stub.endpoint)
    assert out.verification.status == "live"
    assert stub.count == 2


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "reply",
    [html(403), html(200), Reply(200, "not xml at all"), html(407, "Proxy Authentication Required")],
    ids=["proxy-403-html", "captive-200-html", "200-garbage", "proxy-407"],
)
def test_answers_that_are_not_sts_are_unknown_and_not_retried(reply):
    with running_stub(reply) as stub:
        out = verify_one(stub.endpoint)
    assert out.verification.status == "unknown"
    assert out.verification.reason == f"not-sts-response-{reply.status}"
    assert stub.count == 1


@pytest.mark.timeout(30)
def test_other_sts_error_is_unknown():
    with running_stub(sts_error("AccessDenied", "nope", 403)) as stub:
        out = verify_one(stub.endpoint)
    assert (out.verification.status, out.verification.reason) == ("unknown", "sts-error:AccessDenied")


@pytest.mark.timeout(30)
def test_signature_mismatch_is_retried_once_after_a_pause():
    with running_stub(
        sts_error("SignatureDoesNotMatch"), identity("210987654321", "arn:aws:iam::210987654321:user/x", "AIDAX")
    ) as stub:
        out = verify_one(stub.endpoint)
    assert out.verification.status == "live"  # the first rejection was the spurious kind
    assert stub.count == 2

    with running_stub(sts_error("SignatureDoesNotMatch")) as stub:
        out = verify_one(stub.endpoint)
    assert out.verification.status == "wrong_secret"
    assert stub.count == 2


@pytest.mark.timeout(30)
def test_unreachable_endpoint_is_unknown_without_crash():
    closed = f"http://127.0.0.1:{free_port()}"
    config = dataclasses.replace(FAST, endpoint=closed)
    findings = [finding(KEY, SECRET), finding("AKIAQQQQRRRRSSSSTTT3", SECRET), finding("AKIAQQQQRRRRSSSSTTT4", SECRET)]
    out = Verifier(config, state_dir=None, fingerprinter=FINGERPRINTER).verify_all(findings)
    assert [f.verification.status for f in out] == ["unknown"] * 3
    assert all(f.verification.reason in ("connection-failed", "endpoint-unreachable") for f in out)
    assert "connection-failed" in {f.verification.reason for f in out}


@pytest.mark.timeout(30)
def test_read_timeout_is_unknown():
    with running_stub(Reply(200, "", delay=1.5)) as stub:
        out = verify_one(stub.endpoint, read_timeout=0.3, max_retries=1)
    assert (out.verification.status, out.verification.reason) == ("unknown", "timeout")
    assert stub.count == 2


@pytest.mark.timeout(30)
def test_unknown_is_not_cached_but_answers_are(tmp_path: Path):
    with running_stub(Reply(500, "")) as stub:
        verify_one(stub.endpoint, state_dir=tmp_path, max_retries=0)
        verify_one(stub.endpoint, state_dir=tmp_path, max_retries=0)
        assert stub.count == 2  # asked again: unknown is retried on the next run

    with running_stub(sts_error("InvalidClientTokenId")) as stub:
        first = verify_one(stub.endpoint, state_dir=tmp_path)
        second = verify_one(stub.endpoint, state_dir=tmp_path)
        assert stub.count == 1
    assert (first.verification.status, first.verification.cached) == ("invalid", False)
    assert (second.verification.status, second.verification.cached) == ("invalid", True)


@pytest.mark.timeout(30)
def test_disabled_verification_sends_nothing():
    with running_stub(Reply(500, "")) as stub:
        out = verify_one(stub.endpoint, enabled=False)
    assert (out.verification.status, out.verification.reason) == ("skipped", "verification-disabled")
    assert stub.count == 0


@pytest.mark.timeout(30)
def test_offline_skips_send_nothing():
    cases = [
        (finding(KEY), "no-secret"),
        (finding(TEMP_KEY, SECRET), "no-session-token"),
        (finding("ABIAQQQQRRRRSSSSTTT2", SECRET), "key-type-not-verifiable"),
        (finding("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), "example-key"),
    ]
    with running_stub(Reply(500, "")) as stub:
        config = dataclasses.replace(FAST, endpoint=stub.endpoint)
        out = Verifier(config, state_dir=None, fingerprinter=FINGERPRINTER).verify_all([f for f, _ in cases])
    assert [(f.verification.status, f.verification.reason) for f in out] == [("skipped", r) for _, r in cases]
    assert stub.count == 0


@pytest.mark.timeout(30)
def test_same_key_in_many_places_is_checked_once():
    with running_stub(sts_error("InvalidClientTokenId")) as stub:
        config = dataclasses.replace(FAST, endpoint=stub.endpoint)
        findings = [finding(KEY, SECRET, path=f"/srv/app{i}/.env") for i in range(5)]
        out = Verifier(config, state_dir=None, fingerprinter=FINGERPRINTER).verify_all(findings)
    assert [f.verification.status for f in out] == ["invalid"] * 5
    assert [f.location.path for f in out] == [f.location.path for f in findings]
    assert stub.count == 1


@pytest.mark.timeout(30)
def test_calls_with_the_same_key_id_are_spaced_and_the_global_rate_holds():
    # lower bounds only: pacing may never be faster than configured (spacing counts from the previous answer)
    with running_stub(sts_error("SignatureDoesNotMatch")) as stub:
        findings = [finding(KEY, SECRET), finding(KEY, SECRET[::-1])]
        config = dataclasses.replace(FAST, endpoint=stub.endpoint, same_key_spacing=0.3)
        out = Verifier(config, state_dir=None, fingerprinter=FINGERPRINTER).verify_all(findings)
    assert [f.verification.status for f in out] == ["wrong_secret"] * 2
    assert stub.count == 4
    gaps = [b - a for a, b in zip(stub.arrivals, stub.arrivals[1:], strict=False)]
    assert min(gaps) >= 0.25

    with running_stub(sts_error("InvalidClientTokenId")) as stub:
        findings = [finding(f"AKIAQQQQRRRRSSSSTT{c}2", SECRET) for c in "ABCDEF"]
        config = dataclasses.replace(FAST, endpoint=stub.endpoint, rate_limit_per_s=10, max_concurrency=6)
        out = Verifier(config, state_dir=None, fingerprinter=FINGERPRINTER).verify_all(findings)
    assert [f.verification.status for f in out] == ["invalid"] * 6
    # 6 calls at 10/s are 5 intervals of 0.1 s apart; without the bucket they would arrive together
    assert stub.arrivals[-1] - stub.arrivals[0] >= 0.25


@pytest.mark.timeout(30)
def test_a_long_lived_verifier_tries_again_on_the_next_run():
    answer = identity("210987654321", "arn:aws:iam::210987654321:user/x", "AIDAX")
    with running_stub(Reply(200, "", delay=1.0), answer) as stub:
        config = dataclasses.replace(FAST, endpoint=stub.endpoint, read_timeout=0.3, max_retries=0)
        verifier = Verifier(config, state_dir=None, fingerprinter=FINGERPRINTER)
        (first,) = verifier.verify_all([finding(KEY, SECRET)])
        (second,) = verifier.verify_all([finding(KEY, SECRET)])
    assert (first.verification.status, first.verification.reason) == ("unknown", "timeout")
    assert second.verification.status == "live"


@pytest.mark.timeout(30)
def test_known_answers_for_findings_restored_without_their_secret(tmp_path: Path):
    with running_stub(sts_error("InvalidClientTokenId")) as stub:
        config = dataclasses.replace(FAST, endpoint=stub.endpoint)
        Verifier(config, state_dir=tmp_path, fingerprinter=FINGERPRINTER).verify_all([finding(KEY, SECRET)])
        later = Verifier(config, state_dir=tmp_path, fingerprinter=FINGERPRINTER)
        restored = finding(KEY, SECRET).without_secret()
        assert later.known(restored).status == "invalid"
        assert later.known(restored).cached
        assert later.known(finding("AKIAQQQQRRRRSSSSTTT5", SECRET).without_secret()) is None
        assert later.known(finding("AKIAXYZDQCEN4B6JSJQI", SECRET).without_secret()).status == "canary"
        assert later.known(finding(KEY)).reason == "no-secret"
        assert stub.count == 1


@pytest.mark.timeout(30)
def test_should_stop_ends_the_run_early_and_reports_every_finding():
    with running_stub(sts_error("InvalidClientTokenId")) as stub:
        config = dataclasses.replace(FAST, endpoint=stub.endpoint, max_concurrency=1)
        findings = [finding(f"AKIAQQQQRRRRSSSSTT{c}2", SECRET) for c in "ABCDEFGH"]
        out = Verifier(config, state_dir=None, fingerprinter=FINGERPRINTER).verify_all(
            findings, should_stop=lambda: stub.count >= 2
        )
    statuses = [f.verification.status for f in out]
    assert len(out) == 8
    assert statuses.count("invalid") == 2 and stub.count == 2
    assert {f.verification.reason for f in out if f.verification.status == "unknown"} == {"interrupted"}


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "key_id, secret, token",
    [
        (KEY, "ü" * 40, None),
        (KEY, "\x00\r\n" * 14, None),
        (KEY, "s" * 5000, None),
        (TEMP_KEY, SECRET, "\u2028" * 50),
    ],
    ids=["non-ascii-secret", "control-chars", "huge-secret", "odd-token"],
)
def test_hostile_credentials_never_crash(key_id, secret, token):
    with running_stub(sts_error("InvalidClientTokenId")) as stub:
        (out,) = Verifier(
            dataclasses.replace(FAST, endpoint=stub.endpoint), state_dir=None, fingerprinter=FINGERPRINTER
        ).verify_all([finding(key_id, secret, token)])
    assert out.verification.status in ("invalid", "unknown")
    assert secret not in repr(out.verification) and secret not in (out.verification.reason or "")


@pytest.mark.timeout(30)
def test_clock_skew_is_not_a_wrong_secret():
    skew = "Signature expired: 20261128T120000Z is now earlier than 20261128T121500Z (20261128T122000Z - 5 min.)"
    with running_stub(sts_error("SignatureDoesNotMatch", skew)) as stub:
        out = verify_one(stub.endpoint)
    assert (out.verification.status, out.verification.reason) == ("unknown", "clock-skew")
    assert stub.count == 1
