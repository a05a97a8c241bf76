"""The CLI imports only what the command it runs needs."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from keysweep.cli import build_parser
build_parser({command!r})
print(",".join(sorted(m for m in ("boto3", "botocore", "keysweep.central.store") if m in sys.modules)))
"""


@pytest.mark.parametrize("command", ["scan", "rules"])
def test_local_commands_do_not_import_aws_sdk_or_central_side(command):
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(command=command)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "keysweep", "--help"], capture_output=True, text=True, check=True)
    for command in ("scan", "rules", "agent", "config", "status", "collect", "report", "audit"):
        assert command in out.stdout


SCAN_PROBE = """
import sys
from keysweep.cli import main
code = main(["scan", {path!r}, "--format", "json", "--output", {out!r}])
print(code, ",".join(sorted(m for m in ("boto3", "keysweep.central.store") if m in sys.modules)))
"""


def test_a_scan_without_aws_calls_does_not_load_boto3(tmp_path):
    """A local scan (no --verify, no queue) never builds a client, so it does not pay boto3's start-up."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.env").write_text("nothing here\n")
    probe = SCAN_PROBE.format(path=str(tmp_path / "tree"), out=str(tmp_path / "out.json"))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "KEYSWEEP_FINGERPRINT_KEY": "keysweep-tests-fingerprint-key-0001",
    }
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split("\n")[0].strip() == "0"
