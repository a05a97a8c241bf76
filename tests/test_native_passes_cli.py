"""`keysweep scan --format json` says in its summary which native passes ran: the Hyperscan gate
(`detection_gate`) and the inflater of gzip files and zip members (`inflate`, ISA-L or zlib); a scan where neither
Hyperscan nor ISA-L can be imported (a platform without their wheels) reports exactly the same findings."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.support.hosttree import build_host_tree, cli_env, finding_identity

hyperscan = pytest.importorskip("hyperscan")
isal = pytest.importorskip("isal")

# python -m keysweep, with `import hyperscan` and `import isal` failing as they do where no wheel is installed
WITHOUT_NATIVE = (
    "import runpy, sys; sys.modules['hyperscan'] = sys.modules['isal'] = None; "
    "runpy.run_module('keysweep', run_name='__main__')"
)


def scan(tree: Path, *, native: bool) -> dict:
    launcher = ["-m", "keysweep"] if native else ["-c", WITHOUT_NATIVE]
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


def test_the_summary_names_the_native_passes_and_findings_are_the_same_without_them(tmp_path: Path) -> None:
    tree = build_host_tree(tmp_path / "host", seed=3, filler=200)
    native, plain = scan(tree.root, native=True), scan(tree.root, native=False)
    assert native["summary"]["detection_gate"] == f"hyperscan {hyperscan.__version__}"
    assert native["summary"]["inflate"] == f"isal {isal.__version__}"
    assert plain["summary"]["detection_gate"] == "none"
    assert plain["summary"]["inflate"] == f"zlib {zlib.ZLIB_RUNTIME_VERSION}"
    # the tree's gzip log, zip, tar.gz and nested zip were all read, by each inflater
    assert native["summary"]["archives_scanned"] == plain["summary"]["archives_scanned"] >= 4
    assert native["findings"] == plain["findings"]  # every field, fingerprints included (fixed key)
    assert {finding_identity(tree.root, f) for f in native["findings"]} == tree.expected()
