"""--output naming a device or pipe (``/dev/null``, ``/dev/stdout``, a FIFO): written to, never replaced.

A report is written to a new file renamed over FILE; over a device node that rename would put a regular file in
its place (as root, over ``/dev/null`` itself). A FIFO stands for any such node: the command writes into it while
a reader takes the report, and it is still a FIFO afterwards.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from keysweep.central.store import open_store

from tests.support.cli import run_keysweep


def _read_all(fifo: Path, got: list[bytes]) -> threading.Thread:
    def read() -> None:
        with open(fifo, "rb") as fh:  # blocks until the command opens the FIFO for writing
            got.append(fh.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["scan", "report"])
def test_a_report_into_a_fifo_leaves_the_fifo_in_place(tmp_path: Path, command: str) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo, 0o600)
    if command == "scan":
        tree = tmp_path / "tree"
        tree.mkdir()
        (tree / "app.env").write_text("AWS_ACCESS_KEY_ID=AKIAXYZDQCEN4B6JSJQI\n")
        args = ["scan", str(tree), "--format", "json"]
    else:
        open_store(str(tmp_path / "fleet.db")).close()
        args = ["report", "--db", str(tmp_path / "fleet.db"), "--format", "json"]
    got: list[bytes] = []
    reader = _read_all(fifo, got)
    run = run_keysweep(*args, "--output", str(fifo), timeout=100)
    reader.join(30)
    assert run.returncode in (0, 1), run.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.fifo")] == []  # no file left beside it
    report = json.loads(got[0])
    if command == "scan":
        assert [f["key_id"] for f in report["findings"]] == ["AKIAXYZDQCEN4B6JSJQI"]
    else:
        assert report["keys"] == []


def test_a_report_to_a_file_still_replaces_it_whole(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    out.write_text("old")
    out.chmod(0o644)
    tree = tmp_path / "tree"
    tree.mkdir()
    run = run_keysweep("scan", str(tree), "--format", "json", "--output", str(out))
    assert run.returncode == 0, run.stderr
    assert json.loads(out.read_text())["findings"] == []
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # a new file, not the old one rewritten
