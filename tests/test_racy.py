"""Racily clean files: a file read within a timestamp tick of its last change could be rewritten in place (same
size) in that same tick without its markers changing, so the state never records it as unchanged: it is read
again by the next sweep (no row that matches, no digest for its directory), until it is read when older than the
margin. Real files, real SQLite; the sweep is run right after a write and retried until it ended within the
margin of that write (so the file was read within it, wherever in the sweep that was)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from keysweep.scan import ScanOptions, ScanResult, run_scan
from keysweep.scan_types import RACY_MARGIN_NS, UNMATCHED_SIZE, settled
from keysweep.sources.file_engine import LISTING_BATCH_FILES
from keysweep.state import STATE_FILE, StateStore

from tests.support.hosttree import make_detector
from tests.support.settle import settle
from tests.test_state_digest import filler

Run = Callable[[StateStore], ScanResult]


def _tree(root: Path) -> Path:
    """``root/app`` holding four clean files old enough to be recorded as unchanged."""
    app = root / "app"
    app.mkdir(parents=True)
    for i in range(4):
        (app / f"f{i}.txt").write_text(filler(200 + i))
    settle()
    return app


def _runner(root: Path, **opts: object) -> Run:
    detector = make_detector()
    options = ScanOptions(paths=(str(root),), sources=("files",), **{"workers": 1, **opts})  # type: ignore[arg-type]
    return lambda store: run_scan(options, detector, file_cache=store)


def _sweep(state: Path, run: Run) -> ScanResult:
    with StateStore(state, digest="d") as store:
        return run(store)


def _first_sweep_right_after_writing(path: Path, body: str, state: Path, run: Run) -> ScanResult:
    """A first sweep into a new state right after writing ``path``, retried until it ended within the racy margin
    of the write (a busy machine can stall a sweep past it)."""
    for _ in range(50):
        shutil.rmtree(state, ignore_errors=True)
        with StateStore(state, digest="d") as store:
            path.write_text(body)
            result = run(store)
            if time.time_ns() - path.stat().st_ctime_ns < RACY_MARGIN_NS:
                return result
    raise AssertionError("no sweep ended within the racy margin of a write in 50 tries")


def _rows(state: Path) -> dict[str, tuple[int, int, int]]:
    db = sqlite3.connect(state / STATE_FILE)
    try:
        rows = db.execute("SELECT name, size, mtime_ns, ctime_ns FROM files").fetchall()
    finally:
        db.close()
    return {os.fsdecode(name): (size, mtime, ctime) for name, size, mtime, ctime in rows}


def _digest(state: Path, directory: Path) -> bytes | None:
    db = sqlite3.connect(state / STATE_FILE)
    try:
        [(digest,)] = db.execute("SELECT digest FROM dirs WHERE path = ?", (os.fsencode(directory),)).fetchall()
    finally:
        db.close()
    return digest  # type: ignore[no-any-return]


@pytest.mark.timeout(120)
def test_a_file_read_in_the_tick_of_its_change_is_read_again_and_its_directory_gets_no_digest(tmp_path: Path) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    app = _tree(root)
    racy = app / "racy.txt"
    run = _runner(root)

    first = _first_sweep_right_after_writing(racy, filler(300), state, run)
    assert first.stats.files_scanned == 5 and first.stats.files_cached == 0
    rows = _rows(state)
    assert rows["racy.txt"][0] == UNMATCHED_SIZE  # recorded so that no stat matches it
    assert all(rows[f"f{i}.txt"][0] == 200 + i for i in range(4))  # the settled files with their real markers
    assert _digest(state, app) is None  # one racy file: no digest for its directory

    settle()
    second = _sweep(state, run)  # the racy file, unchanged, is read again; the others come from their rows
    assert second.stats.files_scanned == 1 and second.stats.files_cached == 4
    st = racy.stat()
    assert _rows(state)["racy.txt"] == (st.st_size, st.st_mtime_ns, st.st_ctime_ns)  # read settled: recorded
    assert _digest(state, app) is not None

    third = _sweep(state, run)  # older than the margin: taken from the state as before
    assert third.stats.files_scanned == 0 and third.stats.files_cached == 5


@pytest.mark.timeout(120)
def test_a_racy_file_looked_up_file_by_file_gets_no_row(tmp_path: Path) -> None:
    """With ``--follow-symlinks`` the walk goes file by file and this process stores the rows: a file changed
    since the scan began (less the margin) is not stored, so it is read again."""
    root, state = tmp_path / "tree", tmp_path / "state"
    app = _tree(root)
    racy = app / "racy.txt"
    run = _runner(root, follow_symlinks=True)

    first = _first_sweep_right_after_writing(racy, filler(300), state, run)
    assert first.stats.files_scanned == 5
    assert sorted(_rows(state)) == [f"f{i}.txt" for i in range(4)]

    settle()
    second = _sweep(state, run)
    assert second.stats.files_scanned == 1 and second.stats.files_cached == 4
    assert _sweep(state, run).stats.files_cached == 5


def _rewriting_detector(target: Path, body: bytes, log: Path) -> Any:
    """A detector that, scanning a buffer holding ``REWRITE-NEXT``, rewrites ``target`` in place as it was (its ctime
    becomes now), and scanning ``target`` (``JUST-REWRITTEN``) writes to ``log`` that ctime and the time it got
    there (and in which process): the time it was opened is before that."""
    from keysweep.detect import Detector

    class _Rewriting(Detector):
        def may_hold(self, buf: bytes) -> bool:
            return b"REWRITE-NEXT" in buf or b"JUST-REWRITTEN" in buf or super().may_hold(buf)

        def scan(self, buf: bytes, **kw: Any) -> Any:
            if b"REWRITE-NEXT" in buf:
                target.write_bytes(body)
            elif b"JUST-REWRITTEN" in buf:
                log.write_text(f"{target.stat().st_ctime_ns} {time.time_ns()} {os.getpid()}")
            return super().scan(buf, **kw)

    base = make_detector()
    return _Rewriting(base.ruleset, base.fingerprinter)


@pytest.mark.timeout(300)
def test_a_worker_records_a_racy_file_so_that_it_is_read_again(tmp_path: Path) -> None:
    """Rows sent back by worker processes: a file its worker opened right after it was changed (by the detector,
    while reading the file listed before it in the same directory) gets a row no stat matches."""
    root, state, log = tmp_path / "tree", tmp_path / "state", tmp_path / "log"
    n = 0
    for i in range(110):  # more than two tasks: workers read them
        d = root / f"d{i:03d}"
        d.mkdir(parents=True)
        for j in range(10):
            (d / f"f{j}.txt").write_text(filler(150 + 7 * j))
            n += 1
    assert n > 2 * LISTING_BATCH_FILES
    pair = root / "pair"
    pair.mkdir()
    for name in ("a.txt", "b.txt"):
        (pair / name).write_text(filler(300))
    first_name, second_name = os.listdir(pair)  # the order the walk lists them in
    target = pair / second_name
    body = ("JUST-REWRITTEN\n" + filler(300)).encode()
    (pair / first_name).write_text("REWRITE-NEXT\n" + filler(300))
    target.write_bytes(body)
    n += 2
    settle()
    options = ScanOptions(paths=(str(root),), sources=("files",), workers=2)
    detector = _rewriting_detector(target, body, log)
    for _ in range(10):
        shutil.rmtree(state, ignore_errors=True)
        first = _sweep(state, lambda store: run_scan(options, detector, file_cache=store))
        changed, reached, pid = map(int, log.read_text().split())
        assert pid != os.getpid()  # read by a worker process
        if reached - changed < RACY_MARGIN_NS:  # opened within the margin of its change: racy
            break
    else:
        raise AssertionError("the worker never reached the file within the racy margin of its change in 10 tries")
    assert first.stats.files_scanned == n
    rows = _rows(state)
    assert rows[second_name][0] == UNMATCHED_SIZE and rows[first_name][0] == 313
    assert _digest(state, pair) is None and _digest(state, root / "d000") is not None

    settle()
    second = _sweep(state, _runner(root, workers=2))
    assert second.stats.files_scanned == 1 and second.stats.files_cached == n - 1


def test_settled_needs_a_ctime_older_than_the_read_by_more_than_the_margin(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    st = f.stat()
    ctime = st.st_ctime_ns
    assert not settled(st, ctime)  # changed as it was read
    assert not settled(st, ctime + RACY_MARGIN_NS)  # a next change may still be stamped with the same time
    if ctime % 1_000_000_000:
        assert settled(st, ctime + RACY_MARGIN_NS + 1)
    assert RACY_MARGIN_NS >= 20_000_000

    # a filesystem keeping whole seconds (FAT: two) stamps a change up to 2 s after it with the same ctime
    whole = os.stat_result((0o100644, 1, 2, 1, 0, 0, 10, 0, 0, 0), {"st_ctime_ns": 5_000_000_000})
    assert not settled(whole, 5_000_000_000 + 2 * RACY_MARGIN_NS)
    assert not settled(whole, 7_000_000_000 + RACY_MARGIN_NS)
    assert settled(whole, 7_000_000_000 + RACY_MARGIN_NS + 1)
