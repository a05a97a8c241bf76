"""`keysweep status --check`: the container health check tells a running, on-time agent from a dead or stuck one."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

import pytest
from keysweep.status import write_status

from tests.support.cli import run_keysweep


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def _check(state_dir, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_keysweep("status", "--check", "--state-dir", str(state_dir), *extra)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    ("pid", "next_in", "state", "healthy", "why"),
    [
        ("self", 600, "idle", True, ""),
        ("self", -7200, "sweeping", True, ""),  # a long sweep is not a stuck agent
        ("self", -7200, "idle", False, "due at"),
        ("dead", 600, "idle", False, "not running"),
    ],
)
def test_health_check(tmp_path, pid, next_in, state, healthy, why):
    status = {
        "pid": os.getpid() if pid == "self" else _dead_pid(),
        "state": state,
        "next_sweep_at": _iso(time.time() + next_in),
        "updated_at": _iso(time.time()),
    }
    write_status(tmp_path, status)
    result = _check(tmp_path)
    assert result.returncode == (0 if healthy else 1), result.stderr
    assert why in result.stderr


def test_no_status_is_unhealthy(tmp_path):
    result = _check(tmp_path)
    assert result.returncode == 1
    assert "no status" in result.stderr


def test_overdue_grace_is_configurable(tmp_path):
    write_status(tmp_path, {"pid": os.getpid(), "state": "idle", "next_sweep_at": _iso(time.time() - 600)})
    assert _check(tmp_path, "--max-overdue", "300").returncode == 1
    assert _check(tmp_path, "--max-overdue", "900").returncode == 0
