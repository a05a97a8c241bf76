"""The scheduled audit function, invoked in-process against the emulator: IAM users with keys, the fleet table
filled through the collector's message handler, the organisation's member accounts, and Security Hub."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from keysweep import aws
from keysweep.central import lambda_audit
from keysweep.central.audit import AuditError
from keysweep.central.securityhub import AUDIT_GENERATOR_PREFIX
from keysweep.errors import ConfigError

from tests.support.fleet import store_messages
from tests.support.messages import finding_message, host

UNKNOWN_KEY = "AKIAXYZDQCEN4B6JSJQI"  # a key of another account, found on a host


def _users(iam: Any) -> dict[str, str]:
    """busy-svc's key is on hosts; off-svc holds only an inactive key. Returns the key ids and their secrets."""
    keys = {}
    for user in ("busy-svc", "off-svc"):
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user], keys[f"{user}-secret"] = key["AccessKeyId"], key["SecretAccessKey"]
    iam.update_access_key(UserName="off-svc", AccessKeyId=keys["off-svc"], Status="Inactive")
    return keys


def _fleet_table(name: str, busy_key: str) -> None:
    msgs = [
        finding_message(
            host_info=host("i-0aaaaaaaaaaaaaaa1", "web-1"), key_id=busy_key, path="/home/app/.aws/credentials"
        ),
        finding_message(
            host_info=host("i-0aaaaaaaaaaaaaaa3", "batch-1"), key_id=UNKNOWN_KEY, path="/opt/job/config.ini"
        ),
    ]
    store_messages(f"dynamodb://{name}", *msgs)


def _audit_findings() -> dict[str, dict[str, Any]]:
    hub = aws.make_client("securityhub")
    return {
        f["Id"]: f
        for page in hub.get_paginator("get_findings").paginate()
        for f in page["Findings"]
        if f["GeneratorId"].startswith(AUDIT_GENERATOR_PREFIX)
    }


@pytest.mark.timeout(180)
def test_scheduled_audit_correlates_and_exports(
    moto_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    keys = _users(aws.make_client("iam"))
    _fleet_table("fleet", keys["busy-svc"])
    monkeypatch.setenv(lambda_audit.TABLE_ENV, "fleet")
    monkeypatch.setenv(lambda_audit.SECURITYHUB_ENV, "true")
    caplog.set_level(logging.INFO, logger="keysweep")

    out = lambda_audit.handler({"source": "aws.events", "detail-type": "Scheduled Event"}, None)
    assert json.loads(json.dumps(out)) == out
    assert out["accounts"] == 1 and out["audited_accounts"] == ["123456789012"] and out["failed_accounts"] == []
    assert out["checks"] == {
        "host-key-unknown-to-audit": 1,
        "inactive-key": 1,
        "key-on-hosts": 1,
        "user-without-credentials": 1,
    }
    assert out["items"] == 4 and out["host_keys"] == 2
    assert out["securityhub"] == {"imported": 4, "archived": 0, "failed": 0}
    found = _audit_findings()
    assert {f["ProductFields"]["keysweep/check"] for f in found.values()} == set(out["checks"])
    assert f"keysweep-audit/123456789012/key-on-hosts/{keys['busy-svc']}" in found
    assert all(f["RecordState"] == "ACTIVE" for f in found.values())
    logged = caplog.text
    assert "'inactive-key': 1" in logged
    assert keys["busy-svc-secret"] not in logged and keys["off-svc-secret"] not in logged

    # the next scheduled run, after the inactive key was deleted: its findings are archived, not left open
    iam = aws.make_client("iam")
    iam.delete_access_key(UserName="off-svc", AccessKeyId=keys["off-svc"])
    iam.delete_user(UserName="off-svc")
    again = lambda_audit.handler({}, None)
    assert again["checks"] == {"host-key-unknown-to-audit": 1, "key-on-hosts": 1}
    assert again["securityhub"] == {"imported": 2, "archived": 2, "failed": 0}
    states = {f["ProductFields"]["keysweep/check"]: f["RecordState"] for f in _audit_findings().values()}
    assert states == {
        "host-key-unknown-to-audit": "ACTIVE",
        "key-on-hosts": "ACTIVE",
        "inactive-key": "ARCHIVED",
        "user-without-credentials": "ARCHIVED",
    }


@pytest.mark.timeout(180)
def test_without_fleet_or_security_hub(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _users(aws.make_client("iam"))
    monkeypatch.setenv(lambda_audit.SECURITYHUB_ENV, "false")
    out = lambda_audit.handler({}, None)
    assert out["checks"] == {"inactive-key": 1, "user-without-credentials": 1}
    assert out["host_keys"] == 0 and out["securityhub"] is None
    assert _audit_findings() == {}


@pytest.mark.timeout(180)
def test_organization_accounts_through_the_role(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    org = aws.make_client("organizations")
    management = org.create_organization(FeatureSet="ALL")["Organization"]["MasterAccountId"]
    member = org.create_account(AccountName="dev", Email="dev@example.com")["CreateAccountStatus"]["AccountId"]
    creds = aws.make_client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{member}:role/KeysweepAudit", RoleSessionName="setup"
    )["Credentials"]
    member_iam = aws.isolated_client(
        "iam",
        access_key_id=creds["AccessKeyId"],
        secret_access_key=creds["SecretAccessKey"],
        session_token=creds["SessionToken"],
    )
    _users(member_iam)
    monkeypatch.setenv(lambda_audit.ROLE_NAME_ENV, "KeysweepAudit")
    monkeypatch.setenv(lambda_audit.ORGANIZATION_ENV, "true")
    out = lambda_audit.handler({}, None)
    assert out["audited_accounts"] == sorted([management, member]) and out["failed_accounts"] == []
    assert out["checks"] == {"inactive-key": 1, "user-without-credentials": 1}  # the member's users only


def test_bad_settings_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lambda_audit.SECURITYHUB_ENV, "yes")
    with pytest.raises(ConfigError, match="KEYSWEEP_AUDIT_SECURITYHUB: true or false"):
        lambda_audit.handler({}, None)
    monkeypatch.setenv(lambda_audit.SECURITYHUB_ENV, "false")
    monkeypatch.setenv(lambda_audit.ROLE_NAME_ENV, "KeysweepAudit")
    with pytest.raises(ConfigError, match="KEYSWEEP_AUDIT_ORGANIZATION=true or KEYSWEEP_AUDIT_ACCOUNTS"):
        lambda_audit.handler({}, None)
    monkeypatch.setenv(lambda_audit.ACCOUNTS_ENV, "12345")
    with pytest.raises(ConfigError, match="12 digits"):
        lambda_audit.handler({}, None)


@pytest.mark.timeout(180)
def test_no_account_audited_fails_the_invocation(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lambda_audit.SECURITYHUB_ENV, "true")
    monkeypatch.setenv(lambda_audit.ROLE_NAME_ENV, "KeysweepAudit")
    monkeypatch.setenv(lambda_audit.ACCOUNTS_ENV, "111111111111")
    moto_server.enable_auth()  # the emulator's own user may not assume the role now: the only account fails
    with pytest.raises(AuditError, match="no account could be audited"):
        lambda_audit.handler({}, None)
