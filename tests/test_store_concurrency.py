"""Two processes writing the same records of one store at once: no update is lost, nothing is doubled."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from keysweep.central.records import utc_iso
from keysweep.central.store import open_store

from tests.support import messages as M

ROOT = Path(__file__).resolve().parent.parent
SHARED = 30  # findings both writers update
OWN = 8  # findings only one writer sends
ROUNDS = 2  # observations per shared finding per writer
STATUS = ("live", "invalid")  # each writer reports its own status, so every message leaves a mark in the history


def _minute(m: int) -> str:
    return f"2026-11-28T10:{m:02d}:00Z"


def worker(url: str, writer: int, go: str) -> None:
    """Writer 0 reports even minutes, writer 1 odd ones, for the same host and the same shared findings.

    Every shared message adds a run to the verification history, so a lost update shows as a missing entry.
    """
    h = M.host("i-shared", "shared-host")
    store = open_store(url)
    while not os.path.exists(go):
        time.sleep(0.01)
    for r in range(ROUNDS):
        minute = 2 * r + writer
        status = STATUS[writer]
        for i in range(SHARED):
            store.upsert_finding(
                M.finding_message(host_info=h, path=f"/shared/{i}", sent_at=_minute(minute), status=status)
            )
        store.record_heartbeat(M.heartbeat_message(host_info=h, sent_at=_minute(minute)))
    for i in range(OWN):
        store.upsert_finding(M.finding_message(host_info=h, path=f"/own/{writer}/{i}", sent_at=_minute(0)))
    store.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["sqlite", "dynamodb"])
def test_two_writers_lose_nothing(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        url = str(tmp_path / "fleet.db")
    else:
        request.getfixturevalue("moto_server")
        url = f"dynamodb://concurrent-{uuid.uuid4().hex[:8]}"
    open_store(url).close()  # created once, as a deployment would
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from tests.test_store_concurrency import worker; worker({url!r}, {w}, {str(go)!r})",
            ],
            cwd=ROOT,
            env=os.environ.copy(),
        )
        for w in (0, 1)
    ]
    go.touch()
    for p in procs:
        assert p.wait(timeout=220) == 0
    store = open_store(url)
    records = list(store.iter_findings())
    assert len(records) == SHARED + 2 * OWN
    last = 2 * (ROUNDS - 1) + 1
    for rec in records:
        if "/shared/" not in rec.location["path"]:
            continue
        assert rec.first_seen == utc_iso(_minute(0))
        assert rec.last_seen == utc_iso(_minute(last))
        assert rec.status == STATUS[last % 2]
        assert [(e["status"], e["at"]) for e in rec.verification_history] == [
            (STATUS[m % 2], utc_iso(_minute(m))) for m in range(last + 1)
        ]
    [host] = list(store.iter_hosts())
    assert host.last_heartbeat == utc_iso(_minute(last))
    assert host.first_seen == utc_iso(_minute(0))
