"""Security Hub export: ASFF shape, batches of at most 100, FailedFindings, against moto's server over HTTP."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
from keysweep import aws
from keysweep.central.fleet_report import load_report
from keysweep.central.securityhub import MAX_BATCH, exportable, import_findings, to_asff
from keysweep.central.store import open_store
from keysweep.cli import main

from tests.support.fleet import DEAD_KEY, LIVE_KEY, NOW, OLD_KEY, SECRET_SHAPE, build_store
from tests.support.recording_proxy import recording_proxy

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
SEVERITY_LABELS = {"INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"}


def assert_asff(f: dict) -> None:
    """The ASFF rules BatchImportFindings enforces (required attributes, formats and limits from the ASFF syntax)."""
    for name in (
        "SchemaVersion",
        "Id",
        "ProductArn",
        "GeneratorId",
        "AwsAccountId",
        "Types",
        "CreatedAt",
        "UpdatedAt",
        "Severity",
        "Title",
        "Description",
        "Resources",
    ):
        assert name in f, name
    assert f["SchemaVersion"] == "2018-10-08"
    assert 1 <= len(f["Id"]) <= 512 and len(f["GeneratorId"]) <= 512
    assert re.fullmatch(r"arn:aws:securityhub:[a-z0-9-]+:\d{12}:product/\d{12}/default", f["ProductArn"])
    assert re.fullmatch(r"\d{12}", f["AwsAccountId"])
    assert 1 <= len(f["Types"]) <= 50
    assert all(re.fullmatch(r"[^/]+(/[^/]+){1,2}", t) for t in f["Types"])
    for name in ("CreatedAt", "UpdatedAt", "FirstObservedAt", "LastObservedAt"):
        assert ISO.match(f[name]), (name, f[name])
    assert f["Severity"]["Label"] in SEVERITY_LABELS
    assert len(f["Title"]) <= 256 and len(f["Description"]) <= 1024
    assert len(f["Remediation"]["Recommendation"]["Text"]) <= 512
    assert 1 <= len(f["Resources"]) <= 32
    for r in f["Resources"]:
        assert r["Type"] and r["Id"] and len(r["Id"]) <= 512 and r["Partition"] == "aws"
    assert len(f["ProductFields"]) <= 50 and all(isinstance(v, str) for v in f["ProductFields"].values())
    assert f["RecordState"] in ("ACTIVE", "ARCHIVED")


@pytest.fixture
def report(tmp_path: Path):
    store = open_store(str(build_store(tmp_path / "fleet.db")), create=False)
    try:
        store.record_deactivation(OLD_KEY, "arn:aws:sts::123456789012:assumed-role/Sec/alice", "2026-11-28T11:00:00Z")
        return load_report(store, now=NOW)
    finally:
        store.close()


def test_asff_shape(report):
    keys = {k.key_id: k for k in report.keys}
    live = to_asff(keys[LIVE_KEY], account_id="123456789012", region="eu-west-1", now=NOW)
    assert_asff(live)
    assert live["RecordState"] == "ACTIVE" and live["Severity"]["Label"] == "CRITICAL"
    access = live["Resources"][0]
    assert access["Type"] == "AwsIamAccessKey"
    assert access["Details"]["AwsIamAccessKey"] == {
        "AccessKeyId": LIVE_KEY,
        "Status": "Active",
        "AccountId": "534261010715",
        "PrincipalType": "IAMUser",
        "PrincipalName": "deploy",
    }
    assert [r["Details"]["Other"]["hostname"] for r in live["Resources"][1:]] == ["web-1", "web-2"]
    assert "web-2:/srv/app/.env" in live["Description"]
    assert live["Remediation"]["Recommendation"]["Text"] == "Replace the key with an instance profile"
    gone = to_asff(keys[OLD_KEY], account_id="123456789012", region="eu-west-1", now=NOW)
    assert_asff(gone)
    assert gone["RecordState"] == "ARCHIVED" and gone["ProductFields"]["keysweep/deactivated_by"].endswith("alice")
    # invalid keys close their finding; unverified or canary keys are never exported
    assert {k.key_id for k in exportable(report.keys)} == {LIVE_KEY, OLD_KEY, DEAD_KEY}
    for f in (live, gone):
        assert not SECRET_SHAPE.search(str(f))


def test_many_places_stay_within_resource_limits(report):
    from dataclasses import replace

    key = next(k for k in report.keys if k.key_id == LIVE_KEY)
    crowded = replace(
        key, locations=tuple(replace(key.locations[0], host_id=f"h{i}", hostname="h" * 2000) for i in range(80))
    )
    f = to_asff(crowded, account_id="123456789012", region="us-east-1", now=NOW)
    assert_asff(f)
    assert len(f["Resources"]) == 32


@pytest.mark.timeout(120)
def test_export_through_the_cli_to_moto(moto_server, tmp_path, capsys):
    db = build_store(tmp_path / "fleet.db")
    code = main(["report", "--db", str(db), "--format", "json", "--output", str(tmp_path / "r.json"), "--securityhub"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Security Hub: 2 imported, 1 archived, 0 refused" in err
    hub = aws.make_client("securityhub")
    found = hub.get_findings()["Findings"]
    assert sorted(f["Title"] for f in found) == sorted(
        [
            f"Live long-lived AWS access key {LIVE_KEY} on 2 host(s)",
            f"Live long-lived AWS access key {OLD_KEY} on 2 host(s)",
            f"Former long-lived AWS access key {DEAD_KEY} on 1 host(s)",
        ]
    )
    by_title = {f["Title"]: f for f in found}
    dead = by_title[f"Former long-lived AWS access key {DEAD_KEY} on 1 host(s)"]
    assert dead["RecordState"] == "ARCHIVED" and dead["AwsAccountId"] == "123456789012"
    # a second export updates the same findings rather than adding new ones
    assert (
        main(["report", "--db", str(db), "--format", "csv", "--output", str(tmp_path / "r.csv"), "--securityhub"]) == 0
    )
    assert len(hub.get_findings()["Findings"]) == 3


@pytest.mark.timeout(120)
def test_batches_of_100_and_refused_findings(moto_server, report):
    with recording_proxy(moto_server.endpoint) as proxy:
        hub = aws.make_client("securityhub", endpoint_url=proxy.endpoint)
        result, sizes = _import_250(hub, report), [r.body.count(b'"SchemaVersion"') for r in proxy.snapshot()]
    assert sizes == [100, 100, 50]  # BatchImportFindings takes at most 100 findings per call
    assert result.imported == 249 and result.archived == 0
    assert [f["Id"] for f in result.failed] == ["keysweep/test-150"]
    assert result.failed[0]["ErrorCode"] and "Resources" in result.failed[0]["ErrorMessage"]
    ids = set()
    for page in aws.make_client("securityhub").get_paginator("get_findings").paginate():
        ids.update(f["Id"] for f in page["Findings"])
    assert len(ids) == 249 and "keysweep/test-150" not in ids
    assert MAX_BATCH == 100


def _import_250(hub, report):
    template = to_asff(
        report.keys[0],
        account_id="123456789012",
        region="us-east-1",
        now=datetime.fromisoformat("2026-11-28T12:00:00+00:00"),
    )
    findings = [dict(template, Id=f"keysweep/test-{i:03d}") for i in range(250)]
    findings[150] = dict(findings[150], Resources=[])  # refused by Security Hub
    return import_findings(hub, findings)
