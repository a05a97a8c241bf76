"""Directory digests in the incremental state, through the real CLI (``keysweep scan --state-dir``, ``keysweep agent
--once``) and the agent's pipeline: an unchanged directory is answered whole, and every kind of change is still
read on the next sweep — a file rewritten in place (same size, new mtime; same mtime, new ctime), replaced by a
rename, created deep below unchanged directories, deleted; a changed exclude or ignore rule; names that are not
UTF-8."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from keysweep.state import STATE_FILE

from tests.support.settle import settle
from tests.test_state_dir import agent_config, events, keysweep

KEY_ID = "AKIAXYZDQCEN4B6JSJQI"
SECRET = "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"
KEY_ID_2 = "AKIASP2TPHJSQH3FJRUX"
SECRET_2 = "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"


def creds(key_id: str = KEY_ID, secret: str = SECRET) -> str:
    return f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\n"


def filler(n: int) -> str:
    """Text of exactly ``n`` bytes without a key."""
    return ("nothing to see here\n" * (n // 20 + 1))[:n]


def make_tree(root: Path) -> int:
    """Nested directories of clean files (one with a key pair); returns the number of files."""
    count = 0
    for sub in ("etc/app", "srv/www/static/js", "srv/www/static/css", "home/u/.config/tool", "opt/lib/deep/er/still"):
        d = root / sub
        d.mkdir(parents=True)
        for i in range(6):
            (d / f"f{i}.txt").write_text(filler(200 + i))
            count += 1
    (root / "etc/app/deploy.env").write_text(creds())
    return count + 1


def scan(root: Path, state: Path, *extra: str | Path) -> dict[str, Any]:
    proc = keysweep("scan", root, "--state-dir", state, "--format", "json", *extra)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def keys(report: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((f["key_id"], f["location"]["path"]) for f in report["findings"])


def same_times_as(path: Path, old: os.stat_result) -> None:
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))


@pytest.mark.timeout(300)
def test_scan_state_dir_rereads_exactly_what_changed(tmp_path: Path) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    n = make_tree(root)
    first = scan(root, state)
    assert first["summary"]["files_scanned"] == n
    again = scan(root, state)
    assert again["summary"]["files_scanned"] == 0 and again["summary"]["files_cached"] == n
    assert keys(again) == keys(first) == [(KEY_ID, str(root / "etc/app/deploy.env"))]
    db = sqlite3.connect(state / STATE_FILE)
    recorded = dict(db.execute("SELECT path, files FROM dirs WHERE digest IS NOT NULL").fetchall())
    db.close()
    # every directory of clean files is answered whole; the one holding a key is looked at file by file
    assert os.fsencode(root / "srv/www/static/js") in recorded and os.fsencode(root / "etc/app") not in recorded

    # same size, new mtime: rewritten in place
    target = root / "srv/www/static/js/f3.txt"
    size = target.stat().st_size
    body = creds(KEY_ID_2, SECRET_2)
    target.write_text(body + filler(size - len(body)))
    assert target.stat().st_size == size
    r = scan(root, state)
    assert r["summary"]["files_scanned"] == 1 and r["summary"]["files_cached"] == n - 1
    assert (KEY_ID_2, str(target)) in keys(r)

    # same size and mtime, new ctime: rewritten, then its times put back
    target = root / "opt/lib/deep/er/still/f2.txt"
    old = target.stat()
    body = creds(KEY_ID_2, SECRET_2)
    target.write_text(body + filler(old.st_size - len(body)))
    same_times_as(target, old)
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    r = scan(root, state)
    assert r["summary"]["files_scanned"] == 1
    assert (KEY_ID_2, str(target)) in keys(r)

    # replaced by a rename (another inode with the same size and times)
    target = root / "home/u/.config/tool/f4.txt"
    old = target.stat()
    body = creds(KEY_ID_2, SECRET_2)
    fresh = target.with_name(".f4.tmp")
    fresh.write_text(body + filler(old.st_size - len(body)))
    same_times_as(fresh, old)
    os.rename(fresh, target)
    r = scan(root, state)
    assert r["summary"]["files_scanned"] == 1
    assert (KEY_ID_2, str(target)) in keys(r)

    # a new file deep below directories whose own listings did not change
    new = root / "opt/lib/deep/er/still/new.env"
    new.write_text(creds(KEY_ID_2, SECRET_2))
    r = scan(root, state)
    assert r["summary"]["files_scanned"] == 1 and r["summary"]["files_cached"] == n
    assert (KEY_ID_2, str(new)) in keys(r)

    # deleted: the key file and a clean file; nothing is read, the key's finding is gone
    (root / "etc/app/deploy.env").unlink()
    (root / "srv/www/static/css/f0.txt").unlink()
    r = scan(root, state)
    assert r["summary"]["files_scanned"] == 0 and r["summary"]["files_cached"] == n - 1
    assert (KEY_ID, str(root / "etc/app/deploy.env")) not in keys(r)


@pytest.mark.timeout(300)
def test_excludes_and_limits_are_counted_the_same_on_every_sweep(tmp_path: Path) -> None:
    """Files left by an exclude or a size cap are counted on a re-sweep as on the first; a changed exclude hands
    on the files it no longer excludes, even in a directory answered whole before."""
    root, state = tmp_path / "tree", tmp_path / "state"
    n = make_tree(root)
    (root / "srv/www/static/js/app.log").write_text(creds(KEY_ID_2, SECRET_2))
    (root / "srv/www/static/css/big.txt").write_text(filler(5000))
    opts = ("--exclude", "*.log", "--max-file-size", "4096")
    first = scan(root, state, *opts)
    again = scan(root, state, *opts)
    assert first["summary"]["skipped"] == again["summary"]["skipped"] == {"excluded": 1, "too-large": 1}
    assert again["summary"]["files_scanned"] == 0 and again["summary"]["files_cached"] == n
    # the exclude dropped: the log is read (its directory's other files are not)
    r = scan(root, state, "--max-file-size", "4096")
    assert r["summary"]["files_scanned"] == 1 and r["summary"]["files_cached"] == n
    assert (KEY_ID_2, str(root / "srv/www/static/js/app.log")) in keys(r)


@pytest.mark.timeout(300)
def test_a_changed_ignore_rule_rereads_everything(tmp_path: Path) -> None:
    root, state, rules = tmp_path / "tree", tmp_path / "state", tmp_path / "rules"
    n = make_tree(root)
    rules.mkdir()
    cfg = agent_config(tmp_path, root, scan={"roots": [str(root)], "sources": ["files"], "rules_dirs": [str(rules)]})
    scan(root, state, "--config", cfg)
    assert scan(root, state, "--config", cfg)["summary"]["files_cached"] == n
    (rules / "local.yaml").write_text("ignore:\n  paths:\n    - '**/etc/app/**'\n")
    r = scan(root, state, "--config", cfg)
    assert r["summary"]["files_cached"] == 0 and r["findings"] == []  # no finding served from the old state
    assert r["summary"]["skipped"]["ignored-path"] == 7


@pytest.mark.timeout(300)
def test_non_utf8_names_are_answered_whole_and_reread_when_changed(tmp_path: Path) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    d = os.path.join(os.fsencode(root), b"dir\xff", b"sub\xfe")
    os.makedirs(d)
    names = [b"a\xff.txt", b"b\xc3\x28.txt", "名前.txt".encode(), b"line\nbreak.txt"]
    for name in names:
        with open(os.path.join(d, name), "wb") as fh:
            fh.write(filler(300).encode())
    scan(root, state)
    again = scan(root, state)
    assert again["summary"]["files_cached"] == 4 and again["summary"]["files_scanned"] == 0
    db = sqlite3.connect(state / STATE_FILE)
    assert (d,) in db.execute("SELECT path FROM dirs WHERE digest IS NOT NULL").fetchall()  # the exact bytes
    db.close()
    target = os.path.join(d, b"a\xff.txt")
    with open(target, "r+b") as fh:
        fh.write(creds().encode())
    r = scan(root, state)
    assert r["summary"]["files_scanned"] == 1
    [f] = r["findings"]
    assert f["location"]["path"] == str(root) + "/dir\\xff/sub\\xfe/a\\xff.txt"


@pytest.mark.timeout(300)
def test_agent_once_sweeps_and_the_watcher_share_the_digests(tmp_path: Path) -> None:
    from keysweep.config import from_mapping
    from keysweep.sweep import Pipeline

    root = tmp_path / "tree"
    n = make_tree(root)
    cfg = agent_config(tmp_path, root)

    def once() -> dict[str, Any]:
        proc = keysweep("agent", "--once", "--config", cfg)
        assert proc.returncode in (0, 1), proc.stderr.decode()
        [finished] = [e for e in events(proc) if e["event"] == "sweep.finished"]
        return finished

    assert once()["files_scanned"] == n
    second = once()
    assert second["files_scanned"] == 0 and second["files_cached"] == n
    deep = root / "opt/lib/deep/er/still/f5.txt"
    deep.write_text(creds(KEY_ID_2, SECRET_2))
    third = once()
    assert third["files_scanned"] == 1 and third["findings"] == 2

    # the watcher reads a changed file; the next sweep finds it in the state and reads nothing (a file read in the
    # tick of its change would be read again: tests/test_racy.py)
    target = root / "srv/www/static/css/f1.txt"
    target.write_text(creds(KEY_ID_2, SECRET_2) + "# changed\n")
    settle()
    pipeline = Pipeline(
        from_mapping(
            {
                "state_dir": str(tmp_path / "state"),
                "context": {"imds_timeout": "200ms", "imds_endpoint": "http://127.0.0.1:9"},
                "scan": {"roots": [str(root)], "sources": ["files"]},
            }
        )
    )
    try:
        watched = pipeline.scan_paths([str(target)], should_stop=lambda: False)
        assert watched.stats["files_scanned"] == 1
        sweep = pipeline.sweep(should_stop=lambda: False, full_reread_every=100)
        assert sweep.stats["files_scanned"] == 0 and sweep.stats["files_cached"] == n
        assert {(f.key_id, f.location.path) for f in sweep.findings} >= {(KEY_ID_2, str(target)), (KEY_ID_2, str(deep))}
    finally:
        pipeline.close()


def test_an_older_state_layout_is_rebuilt(tmp_path: Path) -> None:
    """Schema 4 (directory paths repeated in every file row) is dropped and rebuilt, not misread."""
    from keysweep.state import StateStore

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    db = sqlite3.connect(state / STATE_FILE)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE files (dir BLOB NOT NULL, name BLOB NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL,
            size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, sweep_no INTEGER NOT NULL,
            findings TEXT, PRIMARY KEY (dir, name)) WITHOUT ROWID;
        CREATE TABLE dirs (dir BLOB PRIMARY KEY, digest BLOB NOT NULL, files INTEGER NOT NULL,
            excluded INTEGER NOT NULL, sweep_no INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO meta VALUES ('schema', '4'), ('digest', 'd'), ('sweep_no', '3');
        INSERT INTO files VALUES (X'2f78', X'79', 1, 2, 3, 4, 5, 3, NULL);
        INSERT INTO dirs VALUES (X'2f78', X'00', 1, 0, 3);
    """)
    db.commit()
    db.close()
    target = tmp_path / "f.txt"
    target.write_text("x")
    with StateStore(state, digest="d") as store:
        assert store.file_count() == 0 and store.sweep_number == 0
        view = store.listing_view()
        assert view.directory("/x") is None
        view.close()
        store.store(str(target), target.stat(), [])
    with StateStore(state, digest="d") as store:
        assert store.lookup(str(target), target.stat()) == []


@pytest.mark.timeout(300)
def test_worker_processes_feed_the_state(tmp_path: Path) -> None:
    """With workers (more than two batches of files), every file's outcome comes back to the state: the re-scan
    reads nothing and every directory is answered whole except the one with a key."""
    root, state = tmp_path / "tree", tmp_path / "state"
    for i in range(1200):
        d = root / f"d{i % 20}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(filler(100 + i % 400))
    (root / "d3" / "deploy.env").write_text(creds())
    first = scan(root, state, "--workers", "2")
    assert first["summary"]["files_scanned"] == 1201 and len(first["findings"]) == 1
    again = scan(root, state, "--workers", "2")
    assert again["summary"]["files_scanned"] == 0 and again["summary"]["files_cached"] == 1201
    assert keys(again) == keys(first)
    db = sqlite3.connect(state / STATE_FILE)
    assert db.execute("SELECT COUNT(*) FROM dirs WHERE digest IS NOT NULL").fetchone() == (19,)
    assert db.execute("SELECT COUNT(*) FROM files").fetchone() == (1201,)
    db.close()


def test_huge_directories_and_followed_symlinks_go_file_by_file(tmp_path: Path) -> None:
    """A directory over LISTING_MAX entries is not held in memory to be digested, and a followed symlink's target
    is not in its directory's digest: both are looked up file by file, and a change is still read."""
    from keysweep.detect import Detector
    from keysweep.fingerprint import Fingerprinter
    from keysweep.ruleset import load_ruleset
    from keysweep.scan import ScanOptions, run_scan
    from keysweep.sources.filesystem import LISTING_MAX
    from keysweep.state import StateStore

    root, state = tmp_path / "tree", tmp_path / "state"
    huge, linked, outside = root / "huge", root / "linked", tmp_path / "outside"
    for d in (huge, linked, outside):
        d.mkdir(parents=True)
    for i in range(LISTING_MAX + 1):
        (huge / f"f{i}").write_bytes(b"x")
    (outside / "target.txt").write_text(filler(300))
    (linked / "link.txt").symlink_to(outside / "target.txt")
    detector = Detector(load_ruleset(), Fingerprinter(b"k" * 32))
    settle()

    def run(**opts: Any) -> Any:
        with StateStore(state, digest="d") as store:
            return run_scan(ScanOptions(paths=(str(root),), sources=("files",), **opts), detector, file_cache=store)

    assert run().stats.files_scanned == LISTING_MAX + 1
    assert run().stats.files_cached == LISTING_MAX + 1
    db = sqlite3.connect(state / STATE_FILE)
    assert db.execute("SELECT COUNT(*) FROM dirs WHERE digest IS NOT NULL").fetchone() == (0,)
    db.close()
    (huge / "f7").write_text(creds())
    settle()
    r = run()
    assert r.stats.files_scanned == 1 and [f.key_id for f in r.findings] == [KEY_ID]

    assert run(follow_symlinks=True).stats.files_scanned == 1  # the link's target, read once
    assert run(follow_symlinks=True).stats.files_scanned == 0
    target = outside / "target.txt"
    body = creds(KEY_ID_2, SECRET_2)
    target.write_text(body + filler(300 - len(body)))
    r = run(follow_symlinks=True)
    assert r.stats.files_scanned == 1 and KEY_ID_2 in {f.key_id for f in r.findings}
