"""Incremental state with worker processes: the files of a directory go to a worker as one listing, the worker
decides against its own read-only view of the state which are unchanged (the directory's digest, else each file's
stored markers) and reads the others; the rows it sends back are what the main process stores. Real SQLite, real
forked workers, real files."""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from keysweep.scan import ScanOptions, ScanResult, run_scan
from keysweep.sources.file_engine import LISTING_BATCH_FILES, digest_seed, listing_digest
from keysweep.state import STATE_FILE, StateStore

from tests.support.hosttree import Keys, make_detector
from tests.support.settle import settle
from tests.test_hostile_zoo import _poisoned_detector
from tests.test_state_digest import KEY_ID, KEY_ID_2, SECRET, SECRET_2, creds, filler, same_times_as


def scan(root: Path, state: Path, detector: Any = None, **store_args: Any) -> ScanResult:
    opts = ScanOptions(paths=(str(root),), sources=("files",), workers=2)
    with StateStore(state, digest="d", **store_args) as store:
        return run_scan(opts, detector or make_detector(), file_cache=store)


def clean_tree(root: Path, dirs: int = 110, files: int = 10) -> int:
    """``dirs`` directories of ``files`` clean files each (more than two batches: the workers read them)."""
    for i in range(dirs):
        d = root / f"d{i:02d}"
        d.mkdir(parents=True)
        for j in range(files):
            (d / f"f{j}.txt").write_text(filler(150 + 7 * j))
    assert dirs * files > 2 * LISTING_BATCH_FILES
    return dirs * files


@pytest.mark.timeout(120)
def test_workers_store_each_file_as_opened_and_reread_exactly_what_changed(tmp_path: Path) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    n = clean_tree(root)
    (root / "d03" / "deploy.env").write_text(creds())
    n += 1
    settle()
    first = scan(root, state)
    assert first.stats.files_scanned == n and first.stats.files_cached == 0
    assert [f.key_id for f in first.findings] == [KEY_ID]

    # the rows the workers sent back hold each file's markers (those of what was opened) and the sweep
    db = sqlite3.connect(state / STATE_FILE)
    rows = db.execute(
        "SELECT dirs.path, files.name, dev, ino, size, mtime_ns, ctime_ns, findings FROM files JOIN dirs ON dirs.id = "
        "files.dir"
    ).fetchall()
    digests = db.execute("SELECT COUNT(*) FROM dirs WHERE digest IS NOT NULL").fetchone()[0]
    db.close()
    assert len(rows) == n
    for d, name, *markers, findings in rows:
        st = os.lstat(os.path.join(os.fsdecode(d), os.fsdecode(name)))
        assert markers == [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        assert (findings is not None) == (os.fsdecode(name) == "deploy.env")
        assert SECRET not in (findings or "")  # the state never holds a secret
    assert digests == 109  # every directory without a finding, not the one with the key

    again = scan(root, state)
    assert again.stats.files_scanned == 0 and again.stats.files_cached == n
    assert [f.key_id for f in again.findings] == [KEY_ID]

    # in place, same size, new mtime
    t1 = root / "d07" / "f3.txt"
    size = t1.stat().st_size
    t1.write_text(creds(KEY_ID_2, SECRET_2) + filler(size - len(creds(KEY_ID_2, SECRET_2))))
    assert t1.stat().st_size == size
    # in place, same size and mtime (put back), new ctime
    t2 = root / "d12" / "f5.txt"
    old = t2.stat()
    t2.write_text(creds(KEY_ID_2, SECRET_2) + filler(old.st_size - len(creds(KEY_ID_2, SECRET_2))))
    same_times_as(t2, old)
    # replaced by a rename: another inode, same size and times
    t3 = root / "d20" / "f1.txt"
    old = t3.stat()
    fresh = t3.with_name(".new")
    fresh.write_text(creds(KEY_ID_2, SECRET_2) + filler(old.st_size - len(creds(KEY_ID_2, SECRET_2))))
    same_times_as(fresh, old)
    os.rename(fresh, t3)
    # and one file touched in each of 80 more directories: the changed directories fill more than two tasks, so
    # workers look at them file by file (the main process found their digests stale)
    for i in range(30, 110):
        touched = root / f"d{i:02d}" / "f0.txt"
        st = touched.stat()
        os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert 83 * 10 > LISTING_BATCH_FILES
    settle()
    r = scan(root, state)
    assert r.stats.files_scanned == 3 + 80 and r.stats.files_cached == n - 3 - 80
    assert {(f.key_id, f.location.path) for f in r.findings} == {
        (KEY_ID, str(root / "d03" / "deploy.env")),
        (KEY_ID_2, str(t1)),
        (KEY_ID_2, str(t2)),
        (KEY_ID_2, str(t3)),
    }
    assert scan(root, state).stats.files_scanned == 0


@pytest.mark.timeout(120)
def test_a_worker_killed_with_a_state_loses_only_its_batch_which_is_read_on_the_next_sweep(tmp_path: Path) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    n = 2 * LISTING_BATCH_FILES + 100  # three tasks or more: workers read them
    ids = Keys(random.Random(7))
    keys = sorted({ids.key_id() for _ in range(n)})
    assert len(keys) == n
    for i, key in enumerate(keys):
        d = root / f"d{i // 10:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.env").write_text(f"AWS_ACCESS_KEY_ID={key}\nAWS_SECRET_ACCESS_KEY={SECRET}\n")
    (root / "d017" / "poison.txt").write_text("POISON\n")
    settle()
    first = scan(root, state, _poisoned_detector(kill=True))
    lost = first.stats.errors["worker-crashed"]
    assert 1 <= lost <= LISTING_BATCH_FILES + 11  # the one batch (whole directories) that held the poison
    lost_places = {d["path"] for d in first.stats.error_details if d["reason"] == "worker-crashed"}
    assert len(lost_places) == min(lost, 100)  # each lost file named (while few are kept)
    assert str(root / "d017" / "poison.txt") in lost_places or lost > 100
    assert first.stats.files_scanned + lost == n + 1
    assert len({f.key_id for f in first.findings}) == n - (lost - 1)

    # what the dead worker held was never stored: read next time, everything else comes from the state
    second = scan(root, state)
    assert second.stats.files_scanned == lost and second.stats.files_cached == n + 1 - lost
    assert {f.key_id for f in second.findings} == set(keys)
    third = scan(root, state)
    assert third.stats.files_scanned == 0 and {f.key_id for f in third.findings} == set(keys)


@pytest.mark.timeout(120)
def test_a_stored_secret_to_verify_again_is_read_again_by_the_main_process(tmp_path: Path) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    n = clean_tree(root) + 1
    key_file = root / "d05" / "app.env"
    key_file.write_text(creds())
    settle()
    assert scan(root, state).stats.files_scanned == n
    kept = scan(root, state, needs_reverify=lambda f: False)
    assert kept.stats.files_scanned == 0 and kept.stats.files_cached == n
    [f] = kept.findings
    assert f.key_id == KEY_ID and f.has_secret and f.secret is None  # from the state: the secret is not kept
    again = scan(root, state, needs_reverify=lambda f: True)
    assert again.stats.files_scanned == 1 and again.stats.files_cached == n - 1
    [f] = again.findings
    assert f.key_id == KEY_ID and f.secret is not None and f.secret.reveal() == SECRET


@pytest.mark.timeout(120)
def test_a_full_reread_sweep_ignores_digests_and_rows_from_before_it(tmp_path: Path) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    n = clean_tree(root)
    settle()
    opts = ScanOptions(paths=(str(root),), sources=("files",), workers=2)
    detector = make_detector()

    def sweep(every: int) -> tuple[bool, int, int]:
        with StateStore(state, digest="d") as store:
            plan = store.begin_sweep(every)
            r = run_scan(opts, detector, file_cache=store)
            store.finish_sweep(plan, completed=True)
            return plan.full, r.stats.files_scanned, r.stats.files_cached

    assert sweep(100) == (True, n, 0)
    assert sweep(100) == (False, 0, n)
    assert sweep(1) == (True, n, 0)
    assert sweep(100) == (False, 0, n)


@pytest.mark.timeout(120)
def test_a_directory_digest_answers_for_its_own_path_only(tmp_path: Path) -> None:
    """A clean directory renamed keeps its files' names, inodes, sizes and times, but not what its path means:
    under an ignored path its files are left as ignored, elsewhere they are read and stored under the new path."""
    root, state = tmp_path / "tree", tmp_path / "state"
    pkg = root / "lib" / "site-packages" / "mymod"
    pkg.mkdir(parents=True)
    for j in range(5):
        (pkg / f"m{j}.py").write_text(filler(300 + j))
    settle()
    assert scan(root, state).stats.files_scanned == 5
    assert scan(root, state).stats.files_cached == 5

    moto = pkg.with_name("moto")  # rules/ignore.yaml: **/site-packages/moto/**
    os.rename(pkg, moto)
    r = scan(root, state)
    assert r.stats.files_cached == 0 and r.stats.files_scanned == 0 and r.stats.skipped["ignored-path"] == 5

    other = pkg.with_name("other")
    os.rename(moto, other)
    r = scan(root, state)
    assert r.stats.files_cached == 0 and r.stats.files_scanned == 5
    assert scan(root, state).stats.files_cached == 5


@pytest.mark.timeout(120)
def test_more_digests_than_a_sweep_holds_are_asked_directory_by_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    n = clean_tree(root)
    settle()
    assert scan(root, state).stats.files_scanned == n
    forks: list[int] = []
    os.register_at_fork(after_in_parent=lambda: forks.append(1))
    assert scan(root, state).stats.files_cached == n and not forks  # an unchanged tree forks no worker
    monkeypatch.setattr("keysweep.state._DIGESTS_MAX", 10)  # 110 directories with a digest: too many to hold
    assert scan(root, state).stats.files_cached == n and not forks  # each looked up here, one query each
    target = root / "d42" / "f3.txt"
    old = target.stat()
    body = creds()
    target.write_text(body + filler(old.st_size - len(body)))
    same_times_as(target, old)  # same size and mtime: only the ctime tells
    r = scan(root, state)
    assert r.stats.files_scanned == 1 and r.stats.files_cached == n - 1
    assert [(f.key_id, f.location.path) for f in r.findings] == [(KEY_ID, str(target))]


def test_a_listing_digest_is_exact_for_any_path_names_and_numbers() -> None:
    seed = digest_seed(ScanOptions(paths=("/",)))
    marks = [1, 2**64 - 1, 3, -(10**18), 5]  # an inode number beyond a signed 64-bit integer, a time before 1970
    d = listing_digest(seed, "/srv/a", ["x"], marks)
    assert d == listing_digest(seed, "/srv/a", ["x"], list(marks))
    assert d != listing_digest(seed, "/srv/b", ["x"], marks)
    assert d != listing_digest(seed, "/srv/a", ["x"], [1, 2**64 - 2, 3, -(10**18), 5])
    two = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    assert listing_digest(seed, "/srv/a", ["ab", "c"], two) != listing_digest(seed, "/srv/a", ["a", "bc"], two)
    assert listing_digest(seed, "/srv/a", ["x"], [1, 2, 3, 4, 5]) != listing_digest(seed, "/srv/ax", [], [])
