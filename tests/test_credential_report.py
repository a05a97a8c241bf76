"""Credential report: parsing every column and special value, and the generate/fetch state machine over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from keysweep import aws
from keysweep.central.credential_report import (
    COLUMNS,
    CredentialReportError,
    Marker,
    fetch_credential_report,
    parse_credential_report,
)

from tests.support.iam_report_server import running_iam_report_server

DATA = Path(__file__).parent / "data"


def _by_user(report):
    return {r.user: r for r in report.rows}


def test_sample_has_the_real_column_set():
    header = (DATA / "credential-report-sample.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == COLUMNS


def test_parses_root_row_and_special_values():
    report = parse_credential_report((DATA / "credential-report-sample.csv").read_bytes())
    assert report.missing_columns == ()
    rows = _by_user(report)
    root = report.root
    assert root is not None and root.is_root and root.account_id == "123456789012"
    assert root.password_enabled is Marker.NOT_SUPPORTED
    assert root.password_last_changed is Marker.NOT_SUPPORTED
    assert root.password_last_used == datetime(2026, 6, 14, 14, 56, 5, tzinfo=UTC)
    assert root.keys[0].is_active and root.keys[0].last_used_service == "s3"
    assert root.keys[1].active is False and root.keys[1].last_rotated is Marker.NOT_APPLICABLE
    assert "<root_account>" not in [u.user for u in report.users]

    alice = rows["alice"]
    assert alice.has_password and alice.mfa_active is True
    assert alice.keys[0].last_used_region == "eu-west-1"
    assert alice.keys[1].exists and not alice.keys[1].is_active  # an inactive key is still there
    assert alice.arn == "arn:aws:iam::123456789012:user/alice"

    bot = rows["deploy-bot"]
    assert bot.keys[0].is_active and bot.keys[0].never_used
    assert bot.keys[0].last_used_region is Marker.NOT_APPLICABLE
    assert bot.password_last_used is Marker.NOT_APPLICABLE
    assert not bot.keys[0].use_may_predate_tracking

    assert rows["olduser"].keys[0].use_may_predate_tracking
    assert rows["olduser"].certs[0].active is True
    assert rows["olduser"].certs[0].last_rotated == datetime(2014, 1, 2, tzinfo=UTC)

    erin = rows["erin"]
    assert erin.password_last_used is Marker.NO_INFORMATION
    assert erin.password_next_rotation == datetime(2027, 1, 30, 10, tzinfo=UTC)
    assert erin.existing_keys() == []

    assert rows["ghost"].existing_keys() == [] and not rows["ghost"].has_password
    assert [k.slot for k in rows["retired"].existing_keys()] == [1, 2]
    assert rows["retired"].active_keys() == []


def test_uppercase_header_and_booleans_and_z_times():
    report = parse_credential_report((DATA / "credential-report-uppercase.csv").read_text())
    assert report.missing_columns == ()
    root = report.root
    assert root is not None and root.password_last_used is Marker.NO_INFORMATION and root.mfa_active is False
    svc = _by_user(report)["svc"]
    assert svc.keys[0].active is True and svc.keys[1].active is True
    assert svc.keys[0].last_used_date == datetime(2026, 11, 20, tzinfo=UTC)
    assert svc.keys[0].last_used_region is Marker.NOT_SUPPORTED
    assert svc.user_creation_time == datetime(2020, 2, 2, 2, 2, 2, tzinfo=UTC)


def test_unknown_columns_are_kept_and_missing_ones_named():
    report = parse_credential_report("USER,Arn,access_key_1_active,new_column\nbob,arn:aws:iam::1:user/bob,true,x\n")
    row = report.rows[0]
    assert row.keys[0].is_active and row.extra == {"new_column": "x"}
    assert "password_enabled" in report.missing_columns
    assert row.password_enabled is Marker.NOT_APPLICABLE


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("name,arn\nx,y\n", "'user'"),
        ("user,arn,password_enabled\nbob,arn:x,maybe\n", "not a boolean"),
        ("user,arn,user_creation_time\nbob,arn:x,yesterday\n", "not a time"),
        ("user,arn\nbob\n", "line 2"),
    ],
)
def test_bad_reports_raise_a_named_error(text, fragment):
    with pytest.raises(CredentialReportError, match=fragment):
        parse_credential_report(text)


def _client(endpoint: str):
    return aws.isolated_client("iam", access_key_id="AKIDTEST", secret_access_key="x", endpoint_url=endpoint)


CSV = (DATA / "credential-report-sample.csv").read_text()


@pytest.mark.timeout(30)
def test_waits_through_started_and_inprogress_with_backoff():
    sleeps: list[float] = []
    with running_iam_report_server(["STARTED", "INPROGRESS", "INPROGRESS", "COMPLETE"], [("content", CSV)]) as srv:
        report = fetch_credential_report(_client(srv.endpoint), first_delay=1, max_delay=3, sleep=sleeps.append)
    assert sleeps == [1, 2, 3]
    assert report.root is not None and len(report.users) == 7
    assert report.generated_at == datetime(2026, 11, 28, 10, tzinfo=UTC)


@pytest.mark.timeout(30)
def test_expired_and_not_present_regenerate_in_progress_waits():
    sleeps: list[float] = []
    script = [("error", "ReportExpired", 410), ("error", "ReportInProgress", 404), ("content", CSV)]
    with running_iam_report_server(["COMPLETE", "STARTED", "COMPLETE"], script) as srv:
        fetch_credential_report(_client(srv.endpoint), sleep=sleeps.append)
        calls = srv.calls
    assert calls == [
        "GenerateCredentialReport",
        "GetCredentialReport",
        "GenerateCredentialReport",
        "GenerateCredentialReport",
        "GetCredentialReport",
        "GetCredentialReport",
    ]
    assert len(sleeps) == 2


@pytest.mark.timeout(30)
def test_waiting_is_bounded():
    sleeps: list[float] = []
    with running_iam_report_server(["INPROGRESS"] * 50, []) as srv:
        with pytest.raises(CredentialReportError, match="not ready"):
            fetch_credential_report(_client(srv.endpoint), max_wait=20, first_delay=1, max_delay=8, sleep=sleeps.append)
    assert sum(sleeps) <= 20


@pytest.mark.timeout(30)
def test_report_that_never_appears_is_an_error_not_a_loop():
    script = [("error", "ReportNotPresent", 410)] * 10
    with running_iam_report_server(["COMPLETE"] * 10, script) as srv:
        with pytest.raises(CredentialReportError, match="ReportNotPresent"):
            fetch_credential_report(_client(srv.endpoint), sleep=lambda s: None)


@pytest.mark.timeout(60)
def test_against_moto(moto_server):
    iam = aws.make_client("iam")
    iam.create_user(UserName="console")
    iam.create_login_profile(UserName="console", Password="Sup3r-secret-pass!")
    iam.create_user(UserName="svc")
    key = iam.create_access_key(UserName="svc")["AccessKey"]
    iam.update_access_key(UserName="svc", AccessKeyId=key["AccessKeyId"], Status="Inactive")
    sleeps: list[float] = []
    report = fetch_credential_report(iam, sleep=sleeps.append)
    assert sleeps == [1.0]  # moto answers STARTED once, then COMPLETE
    rows = _by_user(report)
    assert rows["console"].has_password and rows["console"].password_last_used is Marker.NO_INFORMATION
    svc = rows["svc"]
    assert svc.keys[0].exists and svc.keys[0].active is False and svc.keys[0].never_used
    assert not svc.has_password
