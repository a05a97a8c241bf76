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
    out = subprocess.run([sys.executable, "-c", PROBE.format(command=command)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "keysweep", "--help"], capture_output=True, text=True, check=True)
    for command in ("scan", "rules", "agent", "config", "status", "collect", "report", "audit"):
        assert command in out.stdout
