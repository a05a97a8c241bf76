from __future__ import annotations

import io
import json

import pytest
from keysweep.detect import Detector
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Location, Verification, describe_location
from keysweep.report.formats import FORMATS, render
from keysweep.ruleset import load_ruleset

KID = "ASIAY34FZKBOKMUTVV7A"
SECRET = "Zq3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"
TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ" + "Q" * 150


class Stats:
    def to_dict(self):
        return {"files_scanned": 12, "bytes_scanned": 3456, "skipped": {"fifo": 1}}


@pytest.fixture(scope="module")
def findings():
    d = Detector(load_ruleset(), Fingerprinter(b"formats-test-key"))
    file_f = d.make_finding(
        KID,
        location=Location(kind="file", path="/etc/app.env", line=3),
        secret=SECRET,
        session_token=TOKEN,
        pairing="same-line",
    )
    proc = d.make_finding(
        "AKIAXYZDQCEN4B6JSJQI",
        location=Location(kind="process", pid=42, exe="/usr/bin/app", variable="AWS_ACCESS_KEY_ID"),
        secret=None,
        session_token=None,
        pairing="none",
    )
    member = d.make_finding(
        "AKIASP2TPHJSQH3FJRUX",
        location=Location(kind="archive", path="/opt/a.zip", member="cfg/x.env", line=2),
        secret=SECRET,
        session_token=None,
        pairing="named",
    )
    return [file_f.with_verification(Verification(status="live", account="609629065308")), proc, member]


def _render(findings, fmt, summary=None) -> str:
    out = io.StringIO()
    render(findings, fmt, out, summary=summary)
    return out.getvalue()


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_format_shows_a_secret(findings, fmt):
    text = _render(findings, fmt, Stats())
    assert SECRET not in text and SECRET[4:] not in text and TOKEN[:40] not in text


def test_json_document(findings):
    doc = json.loads(_render(findings, "json", Stats()))
    assert set(doc) == {"findings", "summary"}
    assert doc["findings"] == [f.to_dict() for f in findings]
    first = doc["findings"][0]
    for field in (
        "rule",
        "key_id",
        "has_secret",
        "fingerprint",
        "account_id",
        "location",
        "secret_redacted",
        "verification",
    ):
        assert field in first
    assert first["location"] == {"kind": "file", "path": "/etc/app.env", "line": 3}
    assert first["verification"]["status"] == "live"
    assert doc["findings"][1]["location"]["pid"] == 42
    assert doc["findings"][2]["location"]["member"] == "cfg/x.env"
    s = doc["summary"]
    assert s["files_scanned"] == 12 and s["findings"] == 3 and s["with_secret"] == 2
    assert s["by_location_kind"] == {"file": 1, "process": 1, "archive": 1}
    assert s["by_verification"] == {"live": 1}


def test_json_without_summary_and_empty():
    doc = json.loads(_render([], "json"))
    assert doc["findings"] == [] and doc["summary"]["findings"] == 0


def test_jsonl_one_finding_per_line(findings):
    lines = _render(findings, "jsonl").splitlines()
    assert [json.loads(line) for line in lines] == [f.to_dict() for f in findings]
    assert _render([], "jsonl") == ""


def test_table(findings):
    text = _render(findings, "table")
    assert "KEY ID" in text and "ASIAY34FZKBOKMUTVV7A" in text and "Zq3v…" in text and "+token" in text
    assert "/etc/app.env:3" in text and "/opt/a.zip!cfg/x.env:2" in text and "pid 42 (/usr/bin/app)" in text
    assert "live" in text and "3 finding(s)" in text
    assert "No AWS access keys found" in _render([], "table")


def test_table_escapes_control_characters():
    d = Detector(load_ruleset(), Fingerprinter(b"formats-test-key"))
    f = d.make_finding(
        KID,
        location=Location(kind="file", path="/tmp/\x1b[31mred\udcff", line=1),
        secret=None,
        session_token=None,
        pairing="none",
    )
    text = _render([f], "table")
    assert "\x1b" not in text and "\\x1b[31mred" in text


def test_describe_location():
    assert (
        describe_location(Location(kind="aws-credentials", path="/root/.aws/credentials", profile="p"))
        == "/root/.aws/credentials [p]"
    )
    assert describe_location(Location(kind="file", path="/x", line=2, encoding="base64")) == "/x:2 (base64)"


def test_unknown_format():
    with pytest.raises(ValueError, match="xml"):
        render([], "xml", io.StringIO())
