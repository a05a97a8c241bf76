"""Verification against moto's STS over real HTTP, with a recording proxy showing exactly what keysweep sent."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
from pathlib import Path

import boto3
import pytest
from keysweep import __version__, keyid
from keysweep.verify import Verifier
from keysweep.verify_cache import CACHE_FILE

from tests.support.recording_proxy import recording_proxy
from tests.support.verify_findings import (
    CANARY_KEY,
    CANARY_SECRET,
    FAST,
    FINGERPRINTER,
    MADE_UP_KEY,
    MADE_UP_SECRET,
    MOTO_ACCOUNT,
    OLD_FORMAT_KEY,
    Emulator,
    finding,
)


def run(findings, state_dir: Path | None = None, **overrides):
    verifier = Verifier(dataclasses.replace(FAST, **overrides), state_dir=state_dir, fingerprinter=FINGERPRINTER)
    return verifier.verify_all(findings)


@pytest.mark.timeout(60)
def test_live_key_reports_account_and_arn_and_is_recognisable(emulator: Emulator):
    (out,) = run([finding(emulator.alice.key_id, emulator.alice.secret)])
    v = out.verification
    assert (v.status, v.account, v.arn, v.principal_type) == (
        "live",
        MOTO_ACCOUNT,
        f"arn:aws:iam::{MOTO_ACCOUNT}:user/alice",
        "iam-user",
    )
    assert v.user_id and v.checked_at and not v.cached
    assert out.to_dict()["verification"]["status"] == "live"
    (request,) = emulator.requests_with(emulator.alice.key_id)
    assert f"keysweep/{__version__}" in request.headers["User-Agent"]


@pytest.mark.timeout(60)
def test_wrong_secret_is_retried_once_then_wrong_secret(emulator: Emulator):
    (out,) = run([finding(emulator.alice.key_id, MADE_UP_SECRET)])
    assert out.verification.status == "wrong_secret"
    assert len(emulator.requests_with(emulator.alice.key_id)) == 2


@pytest.mark.timeout(60)
def test_made_up_key_is_invalid(emulator: Emulator):
    (out,) = run([finding(MADE_UP_KEY, MADE_UP_SECRET)])
    assert out.verification.status == "invalid"
    assert len(emulator.requests_with(MADE_UP_KEY)) == 1


@pytest.mark.timeout(60)
def test_same_key_id_with_a_wrong_and_the_right_secret(emulator: Emulator):
    out = run([finding(emulator.alice.key_id, MADE_UP_SECRET), finding(emulator.alice.key_id, emulator.alice.secret)])
    assert sorted(f.verification.status for f in out) == ["live", "wrong_secret"]
    sent = emulator.requests_with(emulator.alice.key_id)
    assert len(sent) == 3  # wrong secret twice (one retry), right secret once


@pytest.mark.timeout(60)
def test_temporary_credentials(emulator: Emulator):
    sts = boto3.client(
        "sts",
        aws_access_key_id=emulator.alice.key_id,
        aws_secret_access_key=emulator.alice.secret,
        endpoint_url=emulator.server.endpoint,
    )
    creds = sts.assume_role(RoleArn=emulator.role_arn, RoleSessionName="build-17")["Credentials"]
    out = run(
        [
            finding(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]),
            finding(creds["AccessKeyId"], creds["SecretAccessKey"], path="/srv/other/.env"),
        ]
    )
    assert out[0].verification.status == "live"
    assert out[0].verification.principal_type == "assumed-role"
    assert out[0].verification.arn == f"arn:aws:sts::{MOTO_ACCOUNT}:assumed-role/ci/build-17"
    assert (out[1].verification.status, out[1].verification.reason) == ("skipped", "no-session-token")
    assert len(emulator.requests_with(creds["AccessKeyId"])) == 1


@pytest.mark.timeout(60)
def test_canary_key_is_never_sent(emulator: Emulator):
    findings = [finding(CANARY_KEY, CANARY_SECRET), finding(emulator.alice.key_id, emulator.alice.secret)]
    out = run(findings)
    assert out[0].verification.status == "canary"
    assert out[0].verification.reason == "canary-account"
    assert out[0].verification.account == "534261010715"
    assert out[1].verification.status == "live"
    for r in emulator.proxy.snapshot():
        assert CANARY_KEY not in json.dumps(r.headers) and CANARY_KEY.encode() not in r.body


@pytest.mark.timeout(60)
def test_canary_only_scan_makes_no_request(emulator: Emulator):
    findings = [
        finding(CANARY_KEY, CANARY_SECRET),
        finding(emulator.alice.key_id, emulator.alice.secret, profile="prod-backup"),  # a planted honey token
        finding(MADE_UP_KEY, MADE_UP_SECRET, profile="ci", profile_kind="canary"),
        finding("AKIAQQQQRRRRSSSSTTT3", MADE_UP_SECRET),
    ]
    out = run(findings, canary_profiles=("prod-backup",), canary_key_ids=("AKIAQQQQRRRRSSSSTTT3",))
    assert [(f.verification.status, f.verification.reason) for f in out] == [
        ("canary", "canary-account"),
        ("canary", "canary-profile"),
        ("canary", "honeytoken-profile"),
        ("canary", "canary-key-id"),
    ]
    assert emulator.proxy.snapshot() == []


@pytest.mark.timeout(60)
def test_configured_canary_account_and_deny_list(emulator: Emulator):
    (canary,) = run([finding(emulator.alice.key_id, emulator.alice.secret)], canary_accounts=(MOTO_ACCOUNT,))
    (denied,) = run([finding(emulator.alice.key_id, emulator.alice.secret)], deny_accounts=(MOTO_ACCOUNT,))
    (other,) = run([finding(emulator.alice.key_id, emulator.alice.secret)], allow_accounts=("111122223333",))
    assert (canary.verification.status, canary.verification.reason) == ("canary", "canary-account")
    assert (denied.verification.status, denied.verification.reason) == ("skipped", "account-denied")
    assert (other.verification.status, other.verification.reason) == ("skipped", "account-not-allowed")
    assert emulator.proxy.snapshot() == []


@pytest.mark.timeout(60)
def test_old_format_key_account_from_get_access_key_info(emulator: Emulator, monkeypatch: pytest.MonkeyPatch):
    assert keyid.decode_account(OLD_FORMAT_KEY) is None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", emulator.agent.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", emulator.agent.secret)
    # moto answers its own account for a key it does not know; make that account a canary here
    (out,) = run([finding(OLD_FORMAT_KEY, MADE_UP_SECRET)], canary_accounts=(MOTO_ACCOUNT,))
    assert (out.verification.status, out.verification.account) == ("canary", MOTO_ACCOUNT)
    assert out.account_id == MOTO_ACCOUNT
    sent = emulator.proxy.snapshot()
    assert len(sent) == 1 and b"GetAccessKeyInfo" in sent[0].body
    assert emulator.agent.key_id in sent[0].headers["Authorization"]
    assert not emulator.requests_with(OLD_FORMAT_KEY)  # never signed with the found key

    (out,) = run([finding(OLD_FORMAT_KEY, MADE_UP_SECRET)])
    assert (out.verification.status, out.verification.account) == ("invalid", MOTO_ACCOUNT)


def _sent_actions(emulator: Emulator) -> list[bytes]:
    return [r.body.split(b"&")[0] for r in emulator.proxy.snapshot()]


@pytest.mark.timeout(60)
def test_old_format_key_without_agent_identity_is_skipped_unless_opted_in(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no credentials anywhere, and no probing off loopback
    (out,) = run([finding(OLD_FORMAT_KEY, MADE_UP_SECRET)])  # the default configuration
    assert (out.verification.status, out.verification.reason) == ("skipped", "account-unknown")
    (out,) = run([finding(OLD_FORMAT_KEY, MADE_UP_SECRET)], allow_accounts=(MOTO_ACCOUNT,), unknown_account="verify")
    assert (out.verification.status, out.verification.reason) == ("skipped", "account-unknown")
    assert emulator.proxy.snapshot() == []

    (out,) = run([finding(OLD_FORMAT_KEY, MADE_UP_SECRET)], unknown_account="verify")
    assert out.verification.status == "invalid"
    assert _sent_actions(emulator) == [b"Action=GetCallerIdentity"]
    assert len(emulator.requests_with(OLD_FORMAT_KEY)) == 1


@pytest.mark.timeout(60)
def test_old_format_key_whose_account_lookup_is_denied_is_not_sent(emulator: Emulator, monkeypatch: pytest.MonkeyPatch):
    # keysweep's own identity may not call GetAccessKeyInfo (alice has sts:AssumeRole only)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", emulator.alice.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", emulator.alice.secret)
    findings = [finding(OLD_FORMAT_KEY, MADE_UP_SECRET), finding(emulator.alice.key_id, emulator.alice.secret)]
    old, new = run(findings)
    assert (old.verification.status, old.verification.reason, old.account_id) == ("skipped", "account-unknown", None)
    assert new.verification.status == "live"  # a new-format id in the same run is still verified
    assert sorted(_sent_actions(emulator)) == [b"Action=GetAccessKeyInfo", b"Action=GetCallerIdentity"]
    assert not emulator.requests_with(OLD_FORMAT_KEY)


@pytest.mark.timeout(60)
def test_stray_profile_and_session_token_do_not_influence(emulator: Emulator, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_PROFILE", "missing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "stray-session-token-from-the-agent-environment")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", emulator.agent.key_id)
    (out,) = run([finding(emulator.alice.key_id, emulator.alice.secret)])
    assert out.verification.status == "live"
    assert out.verification.arn.endswith(":user/alice")
    for r in emulator.proxy.snapshot():
        assert "X-Amz-Security-Token" not in r.headers
        assert emulator.agent.key_id not in r.headers["Authorization"]


@pytest.mark.timeout(60)
def test_cache_second_run_makes_no_call_and_holds_no_secret(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG, logger="keysweep")
    findings = [
        finding(emulator.alice.key_id, emulator.alice.secret),
        finding(emulator.alice.key_id, MADE_UP_SECRET),
        finding(MADE_UP_KEY, MADE_UP_SECRET),
    ]
    first = run(findings, state_dir=tmp_path)
    calls = len(emulator.proxy.snapshot())
    assert calls == 4
    second = run(findings, state_dir=tmp_path)
    assert len(emulator.proxy.snapshot()) == calls
    assert [f.verification.status for f in second] == [f.verification.status for f in first]
    assert [f.verification.status for f in second] == ["live", "wrong_secret", "invalid"]
    assert all(f.verification.cached for f in second)
    assert second[0].verification.arn == first[0].verification.arn

    cache = tmp_path / CACHE_FILE
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    text = cache.read_text()
    everything = text + caplog.text + json.dumps([f.to_dict() for f in first + second]) + repr(first + second)
    for secret in (emulator.alice.secret, MADE_UP_SECRET):
        assert secret not in everything
    assert emulator.alice.key_id not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == [CACHE_FILE]  # no temp file left behind


@pytest.mark.timeout(60)
def test_cache_answers_are_scoped_to_the_endpoint(emulator: Emulator, tmp_path: Path, monkeypatch):
    run([finding(MADE_UP_KEY, MADE_UP_SECRET)], state_dir=tmp_path)
    with recording_proxy(emulator.server.endpoint) as other:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", other.endpoint)
        (out,) = run([finding(MADE_UP_KEY, MADE_UP_SECRET)], state_dir=tmp_path)
        assert not out.verification.cached
        assert len(other.snapshot()) == 1


@pytest.mark.timeout(60)
def test_global_endpoint_setting_is_honoured(emulator: Emulator, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_STS")
    with recording_proxy(emulator.server.endpoint) as other:
        monkeypatch.setenv("AWS_ENDPOINT_URL", other.endpoint)
        (out,) = run([finding(emulator.alice.key_id, emulator.alice.secret)])
        assert out.verification.status == "live"
        assert len(other.snapshot()) == 1
    assert emulator.proxy.snapshot() == []


@pytest.mark.timeout(60)
def test_old_format_key_cached_answer_keeps_its_account(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", emulator.agent.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", emulator.agent.secret)
    (first,) = run([finding(OLD_FORMAT_KEY, MADE_UP_SECRET)], state_dir=tmp_path)
    assert (first.verification.status, first.verification.account) == ("invalid", MOTO_ACCOUNT)
    calls = len(emulator.proxy.snapshot())
    assert calls == 2  # GetAccessKeyInfo, then GetCallerIdentity

    (second,) = run([finding(OLD_FORMAT_KEY, MADE_UP_SECRET)], state_dir=tmp_path)
    assert (second.verification.status, second.verification.account, second.verification.cached) == (
        "invalid",
        MOTO_ACCOUNT,
        True,
    )
    assert second.account_id == MOTO_ACCOUNT
    # the configuration changed since: the cached account is a canary account now
    (third,) = run([finding(OLD_FORMAT_KEY, MADE_UP_SECRET)], state_dir=tmp_path, canary_accounts=(MOTO_ACCOUNT,))
    assert third.verification.status == "canary"
    assert len(emulator.proxy.snapshot()) == calls


@pytest.mark.timeout(60)
def test_a_stray_profile_only_stops_the_account_look_up(emulator: Emulator, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_PROFILE", "missing")  # keysweep's own identity cannot be built …
    keys = [finding(OLD_FORMAT_KEY, MADE_UP_SECRET), finding("AKIAJ2ZZZZQQQQRRRRST", MADE_UP_SECRET)]
    assert [f.verification.reason for f in run(keys)] == ["account-unknown"] * 2
    assert emulator.proxy.snapshot() == []
    out = run(keys, unknown_account="verify")
    assert [f.verification.status for f in out] == ["invalid", "invalid"]  # … verification itself is unaffected
    assert all(f.verification.account is None for f in out)
    assert len(emulator.proxy.snapshot()) == 2


@pytest.mark.timeout(60)
def test_a_copy_of_a_honey_token_elsewhere_is_never_sent(emulator: Emulator, tmp_path: Path):
    decoy = finding(emulator.alice.key_id, emulator.alice.secret, profile="prod-backup")
    copy = finding(emulator.alice.key_id, emulator.alice.secret, path="/var/backups/home.env")
    out = run([copy, decoy], state_dir=tmp_path, canary_profiles=("prod-backup",))
    assert [(f.verification.status, f.verification.reason) for f in out] == [("canary", "canary-profile")] * 2
    # later runs see only the copy (a watch scan of the backup file; a new process with the same state)
    (later,) = run([copy], state_dir=tmp_path, canary_profiles=("prod-backup",))
    assert later.verification.status == "canary"
    assert emulator.proxy.snapshot() == []
