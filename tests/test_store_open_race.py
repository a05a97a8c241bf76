"""Several collectors creating the same new SQLite store at once all open it (none fails with "locked")."""

from __future__ import annotations

import multiprocessing as mp

import pytest
from keysweep.central.store_sqlite import SQLiteStore


def _open(path: str, results: mp.Queue) -> None:  # type: ignore[type-arg]
    try:
        SQLiteStore(path).close()
        results.put("ok")
    except Exception as exc:  # reported to the parent, which asserts on it
        results.put(repr(exc))


@pytest.mark.timeout(120)
def test_concurrent_creation_of_one_store(tmp_path):
    ctx = mp.get_context("spawn")
    failures = []
    for round_ in range(12):
        path = str(tmp_path / f"fleet-{round_}.db")
        results = ctx.Queue()
        procs = [ctx.Process(target=_open, args=(path, results)) for _ in range(6)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        failures += [o for o in outcomes if o != "ok"]
    assert failures == []
