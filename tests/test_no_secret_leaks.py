"""No planted secret or session token appears in any output: every format, --output files, stderr, logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.support.cli import run_keysweep
from tests.support.hosttree import HostTree, build_host_tree, cli_env, scan_paths

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> HostTree:
    return build_host_tree(tmp_path_factory.mktemp("leaks") / "host", seed=11, filler=400)


def _assert_clean(text: str, tree: HostTree, where: str) -> None:
    for secret in tree.secrets:
        # the whole value, and any 16-character stretch of it (no partial leak beyond the redaction's 4)
        assert secret not in text, where
        for i in range(0, len(secret) - 16, 8):
            assert secret[i : i + 16] not in text, where


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fmt", ["table", "json", "jsonl", "sarif"])
def test_no_secret_in_any_format_or_on_stderr(tree: HostTree, fmt: str, tmp_path: Path) -> None:
    out_file = tmp_path / f"report.{fmt}"
    proc = run_keysweep("scan", str(tree.root), "--format", fmt, "--workers", "2", env=cli_env(), cwd=REPO, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.strip()
    _assert_clean(proc.stdout, tree, f"stdout ({fmt})")
    _assert_clean(proc.stderr, tree, "stderr")
    proc2 = run_keysweep(
        "scan", str(tree.root), "--format", fmt, "--output", str(out_file), env=cli_env(), cwd=REPO, timeout=120
    )
    assert proc2.returncode == 1 and proc2.stdout == ""
    assert out_file.stat().st_mode & 0o777 == 0o600
    _assert_clean(out_file.read_text(encoding="utf-8"), tree, f"--output ({fmt})")
    if fmt == "json":
        doc = json.loads(out_file.read_text(encoding="utf-8"))
        redacted = [f["secret_redacted"] for f in doc["findings"] if f["has_secret"]]
        assert redacted and all(r.endswith("…") and len(r) <= 5 for r in redacted)


def test_no_secret_in_logs_reprs_or_stats(tree: HostTree, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    result = scan_paths(tree.root, workers=2)
    assert any(f.secret is not None for f in result.findings)  # the secrets are there, in memory only
    _assert_clean(caplog.text, tree, "logs")
    _assert_clean(repr(result.findings), tree, "repr")
    _assert_clean(json.dumps(result.stats.to_dict()), tree, "stats")
    _assert_clean(json.dumps([f.to_dict() for f in result.findings]), tree, "to_dict")
