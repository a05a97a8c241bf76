"""The shipped Checkov policies flag exactly what `keysweep iac` flags, run by the real Checkov."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from keysweep.iac import scan_iac

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "packaging" / "guardrails"
DATA = Path(__file__).parent / "data" / "iac"
CHECKOV = Path(os.environ.get("KEYSWEEP_CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))


@pytest.fixture(scope="module")
def checkov() -> Path:
    if not CHECKOV.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHECKOV} is missing: `make test` installs Checkov (make checkov)")
        pytest.skip(f"Checkov not installed at {CHECKOV} (make checkov)")
    return CHECKOV


def _failed(checkov: Path, target: Path) -> set[tuple[str, str]]:
    run = subprocess.run(
        [
            str(checkov),
            "-d",
            str(target),
            "--framework",
            "terraform",
            "terraform_json",
            "cloudformation",
            "--external-checks-dir",
            str(POLICIES),
            "--check",
            "CKV2_KEYSWEEP_1,CKV2_KEYSWEEP_2",
            "-o",
            "json",
            "--skip-download",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    assert run.returncode in (0, 1), run.stderr[-2000:]
    doc = json.loads(run.stdout) if run.stdout.strip() else []
    reports = doc if isinstance(doc, list) else [doc]
    return {
        (c["check_id"], c["resource"])
        for r in reports
        if isinstance(r, dict)
        for c in r.get("results", {}).get("failed_checks", [])
    }


def test_checkov_policies_flag_the_same_resources_as_keysweep_iac(checkov: Path) -> None:
    ids = {"access-key": "CKV2_KEYSWEEP_1", "iam-user": "CKV2_KEYSWEEP_2"}
    ours = {(ids[f.kind], f.resource) for f in scan_iac([str(DATA)]).findings}
    assert len(ours) == 8
    assert _failed(checkov, DATA) == ours


def test_checkov_policies_pass_a_tree_of_roles_only(checkov: Path) -> None:
    assert _failed(checkov, DATA / "clean") == set()
