"""Keys planted in files → the real Detector → the Verifier against moto; every output format carries the result."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from pathlib import Path

import pytest
from keysweep.models import Location
from keysweep.report.formats import render
from keysweep.stage_config import VerifyConfig
from keysweep.verify import Verifier

from tests.support.sts_stub import Reply, running_stub
from tests.support.verify_findings import (
    CANARY_KEY,
    CANARY_SECRET,
    DETECTOR,
    FAST,
    FINGERPRINTER,
    MADE_UP_KEY,
    MADE_UP_SECRET,
    MOTO_ACCOUNT,
    Emulator,
    plant,
)


def detect(paths: list[Path]):
    findings = []
    for p in paths:
        findings += DETECTOR.scan(p.read_bytes(), location=Location(kind="file", path=str(p)))
    return findings


@pytest.mark.timeout(90)
def test_planted_keys_verified_end_to_end(emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="keysweep")
    with running_stub(Reply(500, "")) as evil:
        findings = detect(plant(tmp_path / "tree", emulator, evil.endpoint))
        by_key = {(f.key_id, Path(f.location.path).name): f for f in findings}
        assert set(by_key) >= {
            (emulator.alice.key_id, ".env"),
            (MADE_UP_KEY, "settings.py"),
            (emulator.alice.key_id, "old.ini"),
            (CANARY_KEY, "canary.cfg"),
        }
        assert all(f.has_secret for f in findings)
        state = tmp_path / "state"
        verified = Verifier(FAST, state_dir=state, fingerprinter=FINGERPRINTER).verify_all(findings)
        assert evil.count == 0  # endpoints named in scanned files never apply

    status = {(f.key_id, Path(f.location.path).name): f.verification for f in verified}
    assert status[(emulator.alice.key_id, ".env")].status == "live"
    assert status[(emulator.alice.key_id, ".env")].arn == f"arn:aws:iam::{MOTO_ACCOUNT}:user/alice"
    assert status[(MADE_UP_KEY, "settings.py")].status == "invalid"
    assert status[(emulator.alice.key_id, "old.ini")].status == "wrong_secret"
    assert status[(CANARY_KEY, "canary.cfg")].status == "canary"
    assert not any(CANARY_KEY in a for a in emulator.proxy.authorization_headers())

    outputs = {}
    for fmt in ("json", "jsonl", "table", "sarif"):
        stream = io.StringIO()
        render(verified, fmt, stream)
        outputs[fmt] = stream.getvalue()
    doc = json.loads(outputs["json"])
    records = doc["findings"] if isinstance(doc, dict) else doc
    assert {r["verification"]["status"] for r in records} == {"live", "invalid", "wrong_secret", "canary"}
    live = next(r for r in records if r["verification"]["status"] == "live")
    assert live["verification"]["account"] == MOTO_ACCOUNT and live["verification"]["arn"].endswith(":user/alice")
    jsonl = [json.loads(line) for line in outputs["jsonl"].splitlines() if line.strip()]
    assert "live" in {r["verification"]["status"] for r in jsonl if r.get("verification")}
    assert "live" in outputs["table"] and "wrong_secret" in outputs["table"]
    assert "verification: live" in outputs["sarif"]

    everything = "".join(outputs.values()) + caplog.text + (state / "verify-cache.json").read_text()
    for secret in (emulator.alice.secret, MADE_UP_SECRET, CANARY_SECRET):
        assert secret not in everything


@pytest.mark.timeout(60)
def test_verification_off_still_reports_every_finding(emulator: Emulator, tmp_path: Path):
    with running_stub(Reply(500, "")) as evil:
        findings = detect(plant(tmp_path, emulator, evil.endpoint))
    config = dataclasses.replace(FAST, enabled=False)
    out = Verifier(config, state_dir=None, fingerprinter=FINGERPRINTER).verify_all(findings)
    assert len(out) == len(findings)
    assert {f.verification.status for f in out} == {"skipped", "canary"}
    assert emulator.proxy.snapshot() == []
    assert VerifyConfig().enabled is False
