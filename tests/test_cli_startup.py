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
code = main(["scan", {path!r}, "--format", "json", "--output", {out!r}, *{extra!r}])
print(code, ",".join(sorted(m for m in {modules!r} if m in sys.modules)))
"""
# what a local scan of paths without state, verification or queue has no use for: the AWS SDK, the central side,
# SQLite (the file state, the verification cache), urllib's HTTP stack (the metadata services), the stages that
# verify and report, and psutil (process environments)
NOT_FOR_A_LOCAL_SCAN = (
    "boto3",
    "botocore",
    "keysweep.central.store",
    "sqlite3",
    "http.client",
    "urllib.request",
    "keysweep.verify",
    "keysweep.report.sqs",
    "keysweep.context",
    "keysweep.state",
    "psutil",
)


def _scan_probe(tmp_path, *extra: str, modules=NOT_FOR_A_LOCAL_SCAN) -> tuple[int, set[str]]:
    tree = tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    (tree / "a.env").write_text("nothing here\n")
    probe = SCAN_PROBE.format(path=str(tree), out=str(tmp_path / "out.json"), extra=list(extra), modules=modules)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "KEYSWEEP_FINGERPRINT_KEY": "keysweep-tests-fingerprint-key-0001",
    }
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    code, _, loaded = out.stdout.split("\n")[0].partition(" ")
    return int(code), set(filter(None, loaded.strip().split(",")))


def test_a_scan_without_aws_calls_does_not_load_boto3(tmp_path):
    """A local scan (no --verify, no queue) never builds a client, so it does not pay boto3's start-up; nor, keeping
    no state, SQLite; nor, asking no metadata service, urllib's HTTP stack: each costs start-up CPU of every scan."""
    assert _scan_probe(tmp_path) == (0, set())


def test_a_scan_with_state_still_loads_the_state(tmp_path):
    """The stages a local scan leaves out are imported where they are used: --state-dir opens the file state."""
    code, loaded = _scan_probe(tmp_path, "--state-dir", str(tmp_path / "state"))
    assert code == 0
    assert {"keysweep.state", "sqlite3"} <= loaded
    assert not loaded & {"boto3", "keysweep.report.sqs", "http.client"}
