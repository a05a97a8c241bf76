"""`--include-examples` keeps what is hidden by default and says why each such finding would have been hidden
(`example: {reason}`) in every format; other findings keep exactly their fields."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from keysweep import keyid
from keysweep.detect import Detector
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Location
from keysweep.report.message import conform
from keysweep.ruleset import load_ruleset

from tests.support.cli import run_keysweep
from tests.support.hosttree import cli_env

REAL, REAL2 = "AKIAXYZDQCEN4B6JSJQI", "AKIASP2TPHJSQH3FJRUX"
SECRET = "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"
DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _tree(root: Path) -> dict[str, str]:
    """Files and the reason each one's key is hidden by default (None: reported anyway)."""
    files = {
        "app/.env": (f"AWS_ACCESS_KEY_ID={REAL}\nAWS_SECRET_ACCESS_KEY={SECRET}\n", None),
        "docs/readme.md": ("key AKIAIOSFODNN7EXAMPLE\n", "documentation key id"),
        "docs/placeholder.txt": ("key AKIAREDACTEDQ2W3E4RT\n", "placeholder key id (contains REDACTED)"),
        "venv/lib/python3.11/site-packages/moto/core/models.py": (
            f"key = '{REAL2}'\n",
            "ignored path **/site-packages/moto/**",
        ),
    }
    for rel, (text, _why) in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return {rel: why for rel, (_text, why) in files.items()}


def _scan(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_keysweep("scan", str(root), "--workers", "1", *args, env=cli_env())


@pytest.mark.timeout(120)
def test_every_format_says_why_a_kept_example_would_have_been_hidden(tmp_path: Path) -> None:
    reasons = _tree(tmp_path)
    hidden = json.loads(_scan(tmp_path, "--format", "json").stdout)["findings"]
    assert [(d["key_id"], "example" in d) for d in hidden] == [(REAL, False)]

    kept = json.loads(_scan(tmp_path, "--format", "json", "--include-examples").stdout)["findings"]
    by_file = {d["location"]["path"][len(str(tmp_path)) + 1 :]: d for d in kept}
    assert set(by_file) == set(reasons)
    for rel, why in reasons.items():
        if why is None:
            assert "example" not in by_file[rel]  # a real key keeps exactly the fields it had
        else:
            assert by_file[rel]["example"].startswith(why), (rel, by_file[rel]["example"])

    table = _scan(tmp_path, "--format", "table", "--include-examples").stdout
    assert "(example: documentation key id)" in table
    assert "(example: ignored path **/site-packages/moto/**)" in table

    sarif = json.loads(_scan(tmp_path, "--format", "sarif", "--include-examples").stdout)
    results = {r["properties"]["key_id"]: r for r in sarif["runs"][0]["results"]}
    assert "example: documentation key id" in results["AKIAIOSFODNN7EXAMPLE"]["message"]["text"]
    assert results["AKIAIOSFODNN7EXAMPLE"]["properties"]["example"] == "documentation key id"
    assert "example" not in results[REAL]["properties"] and "example" not in results[REAL]["message"]["text"]


def test_reasons_from_the_detector() -> None:
    detector = Detector(load_ruleset(), Fingerprinter(b"k"), include_examples=True)
    text = f"aws_access_key_id = {REAL}\naws_secret_access_key = {DOC_SECRET}\n"
    [f] = detector.scan(text.encode(), location=Location(kind="file", path="/srv/app/.env"))
    assert f.has_secret and f.example == "documentation secret"
    [g] = detector.scan(f"id = AKIAAB{'C' * 14}\n".encode(), location=Location(kind="file", path="/x"))
    assert g.example == "placeholder key id (at most three distinct characters)"
    assert detector.example_reason("AKIAIOSFODNN7EXAMPLE", DOC_SECRET, "/srv/node_modules/aws-sdk/x.js") == (
        "documentation key id; documentation secret; ignored path **/node_modules/aws-sdk/**"
    )
    assert detector.example_reason(REAL, SECRET, "/srv/app/.env") is None
    # a kept example is still a valid message for the collector
    assert conform({"finding": g.to_dict()})["finding"]["example"] == g.example


@pytest.mark.parametrize(
    ("key_id", "reason"),
    [
        ("AKIAIOSFODNN7EXAMPLE", "key id ends in EXAMPLE"),
        ("AKIA2222222222222222", "placeholder key id (at most three distinct characters)"),
        ("AKIAXYZQXXXXDQCEN4B6", "placeholder key id (contains XXXX)"),
        ("AKIAXYZQ777777DQCEN4", "placeholder key id (a run of one character)"),
        ("AKIAXYZQABCDEFGHN4B6", "placeholder key id (consecutive alphabet characters)"),
        (REAL, None),
    ],
)
def test_each_structural_reason(key_id: str, reason: str | None) -> None:
    assert keyid.example_reason(key_id) == reason
    assert keyid.is_example_key(key_id) is (reason is not None)
