"""`keysweep scan --format json` says in its summary whether the Hyperscan gate ran (`detection_gate`), and a scan
where Hyperscan cannot be imported (a platform without its wheel) reports exactly the same findings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.hosttree import build_host_tree, cli_env, finding_identity

hyperscan = pytest.importorskip("hyperscan")

# python -m keysweep, with `import hyperscan` failing as it does where no wheel is installed
WITHOUT_HYPERSCAN = (
    "import runpy, sys; sys.modules['hyperscan'] = None; runpy.run_module('keysweep', run_name='__main__')"
)


def scan(tree: Path, *, gate: bool) -> dict:
    launcher = ["-m", "keysweep"] if gate else ["-c", WITHOUT_HYPERSCAN]
    out = subprocess.run(
        [sys.executable, *launcher, "scan", "--workers", "2", "--format", "json", str(tree)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert out.returncode == 1, out.stderr
    report: dict = json.loads(out.stdout)
    report["findings"].sort(key=lambda f: json.dumps(f, sort_keys=True))
    return report


def test_the_summary_names_the_gate_and_findings_are_the_same_without_it(tmp_path: Path) -> None:
    tree = build_host_tree(tmp_path / "host", seed=3, filler=200)
    with_gate, without = scan(tree.root, gate=True), scan(tree.root, gate=False)
    assert with_gate["summary"]["detection_gate"] == f"hyperscan {hyperscan.__version__}"
    assert without["summary"]["detection_gate"] == "none"
    assert with_gate["findings"] == without["findings"]  # every field, fingerprints included (fixed key)
    assert {finding_identity(tree.root, f) for f in with_gate["findings"]} == tree.expected()
