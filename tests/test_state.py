"""Incremental file state: unchanged files are not read again, rule changes invalidate, crashes lose nothing,
and the state directory never holds a secret."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from keysweep.detect import Detector
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Finding, Location
from keysweep.ruleset import load_ruleset
from keysweep.scan import ScanOptions, run_scan
from keysweep.state import STATE_FILE, StateStore, cache_digest, finding_from_state, finding_to_state

from tests.support.settle import settle

KEY_ID = "AKIAXYZDQCEN4B6JSJQI"  # decodes to an account, not a documentation example
SECRET = "Zk3pQ8vR2mN7tY4wX9cB6dF1gH5jK0lM3nP8qR2s"
KEY_ID_2 = "AKIASP2TPHJSQH3FJRUX"
SECRET_2 = "Qw7eR4tY1uI8oP5aS2dF9gH6jK3lZ0xC7vB4nM1q"


def _creds(key_id: str = KEY_ID, secret: str = SECRET) -> str:
    return f"export AWS_ACCESS_KEY_ID={key_id}\nexport AWS_SECRET_ACCESS_KEY={secret}\n"


@pytest.fixture
def detector() -> Detector:
    return Detector(load_ruleset(), Fingerprinter(b"k" * 32))


def _tree(root: Path, n: int = 30) -> None:
    for i in range(n):
        d = root / f"d{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"nothing to see {i}\n" * 50)
    (root / "d1" / "deploy.sh").write_text(_creds())
    settle()  # old enough to be recorded as unchanged


def _scan(root: Path, detector: Detector, store: StateStore):
    return run_scan(ScanOptions(paths=(str(root),), sources=("files",)), detector, file_cache=store)


def test_finding_round_trips_without_secret(detector: Detector) -> None:
    [f] = detector.scan(_creds().encode(), location=Location(kind="file", path="/x/deploy.sh"))
    assert f.secret is not None
    d = finding_to_state(f)
    assert SECRET not in repr(d) and "secret" not in d and "session_token" not in d
    back = finding_from_state(d)
    assert back == f.without_secret()
    assert back.secret is None and back.has_secret


def test_unchanged_files_are_not_read_again(tmp_path: Path, detector: Detector) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    _tree(root)
    with StateStore(state, digest="d1") as store:
        first = _scan(root, detector, store)
    assert first.stats.files_scanned == 31
    assert [f.key_id for f in first.findings] == [KEY_ID]

    with StateStore(state, digest="d1") as store:  # a new process: the state is on disk
        second = _scan(root, detector, store)
        assert store.counters.hits == 31 and store.counters.misses == 0
    assert second.stats.files_scanned == 0
    assert second.stats.bytes_scanned == 0
    [f] = second.findings  # the finding comes from the state, without its secret
    assert f.key_id == KEY_ID and f.has_secret and f.secret is None
    assert f.fingerprint == first.findings[0].fingerprint

    # change one file: only that file is read
    target = root / "d2" / "f2.txt"
    target.write_text(_creds(KEY_ID_2, SECRET_2))
    with StateStore(state, digest="d1") as store:
        third = _scan(root, detector, store)
    assert third.stats.files_scanned == 1
    assert third.stats.bytes_scanned == target.stat().st_size
    assert sorted(f.key_id for f in third.findings) == sorted([KEY_ID, KEY_ID_2])


def test_same_size_rewrite_is_noticed(tmp_path: Path, detector: Detector) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    root.mkdir()
    f = root / "a.env"
    f.write_text(_creds())
    with StateStore(state, digest="d1") as store:
        assert len(_scan(root, detector, store).findings) == 1
    # same size and a restored mtime: ctime still moves
    st = f.stat()
    f.write_text(_creds(KEY_ID_2, SECRET_2))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    with StateStore(state, digest="d1") as store:
        res = _scan(root, detector, store)
    assert [x.key_id for x in res.findings] == [KEY_ID_2]


def test_digest_change_invalidates(tmp_path: Path, detector: Detector) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    _tree(root, 10)
    with StateStore(state, digest=cache_digest("rules-v1")) as store:
        _scan(root, detector, store)
        assert not store.invalidated
    with StateStore(state, digest=cache_digest("rules-v2")) as store:
        assert store.invalidated and store.file_count() == 0
        assert _scan(root, detector, store).stats.files_scanned == 11


def test_rules_change_invalidates_through_the_digest(tmp_path: Path) -> None:
    root, state, extra = tmp_path / "tree", tmp_path / "state", tmp_path / "rules"
    (root / "vendored").mkdir(parents=True)
    (root / "vendored" / "fixture.env").write_text(_creds())
    extra.mkdir()
    fp = Fingerprinter(b"k" * 32)
    base = Detector(load_ruleset(), fp)
    with StateStore(state, digest=cache_digest(base.ruleset.digest)) as store:
        assert len(_scan(root, base, store).findings) == 1
    (extra / "local.yaml").write_text("ignore:\n  paths:\n    - '**/vendored/**'\n")
    changed = Detector(load_ruleset([extra]), fp)
    assert changed.ruleset.digest != base.ruleset.digest
    with StateStore(state, digest=cache_digest(changed.ruleset.digest)) as store:
        assert store.invalidated
        res = _scan(root, changed, store)
    assert res.findings == []  # the cached finding is not served under the new rules


def test_full_reread_every_n_sweeps_and_resume(tmp_path: Path, detector: Detector) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    _tree(root, 9)
    with StateStore(state, digest="d") as store:
        plan = store.begin_sweep(full_reread_every=3)
        assert plan.full  # the first sweep reads everything
        assert _scan(root, detector, store).stats.files_scanned == 10
        store.finish_sweep(plan, completed=True)
        for _ in range(2):
            plan = store.begin_sweep(full_reread_every=3)
            assert not plan.full
            assert _scan(root, detector, store).stats.files_scanned == 0
            store.finish_sweep(plan, completed=True)
        plan = store.begin_sweep(full_reread_every=3)
        assert plan.full
        # the full sweep is interrupted after reading one directory
        assert _scan(root / "d0", detector, store).stats.files_scanned == 2
        # no finish_sweep: the process died
    with StateStore(state, digest="d") as store:
        assert store.interrupted()
        plan = store.begin_sweep(full_reread_every=3)
        assert plan.full and plan.resumed
        # the resumed full sweep reads only what it had not read yet
        assert _scan(root, detector, store).stats.files_scanned == 8
        store.finish_sweep(plan, completed=True)
        assert not store.interrupted()


def test_full_sweep_forgets_deleted_files(tmp_path: Path, detector: Detector) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    _tree(root, 4)
    with StateStore(state, digest="d") as store:
        plan = store.begin_sweep(full_reread_every=1)
        _scan(root, detector, store)
        store.finish_sweep(plan, completed=True)
        assert store.file_count() == 5
        (root / "d1" / "deploy.sh").unlink()
        plan = store.begin_sweep(full_reread_every=1)
        _scan(root, detector, store)
        assert store.finish_sweep(plan, completed=True) == 1
        assert store.file_count() == 4


def test_reverify_due_forces_a_read(tmp_path: Path, detector: Detector) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    _tree(root, 3)
    due: set[str] = set()
    with StateStore(state, digest="d", needs_reverify=lambda f: f.fingerprint in due) as store:
        first = _scan(root, detector, store)
        assert _scan(root, detector, store).stats.files_scanned == 0
        due.add(first.findings[0].fingerprint)
        again = _scan(root, detector, store)
        assert again.stats.files_scanned == 1  # only the file holding that key
        assert store.counters.reverify == 1
        assert again.findings[0].secret is not None  # the fresh read brings the secret back for verification


def test_state_never_holds_a_secret(tmp_path: Path, detector: Detector) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    _tree(root, 5)
    (root / "other.txt").write_text(_creds(KEY_ID_2, SECRET_2))
    with StateStore(state, digest="d") as store:
        _scan(root, detector, store)
        _scan(root, detector, store)
    blobs = b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file())
    assert KEY_ID.encode() in blobs  # the key id is kept (it names the key), the secrets are not
    for secret in (SECRET, SECRET_2):
        assert secret.encode() not in blobs
        assert secret[:20].encode() not in blobs


def test_state_file_is_private_and_wal(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s", digest="d"):
        pass
    path = tmp_path / "s" / STATE_FILE
    assert path.stat().st_mode & 0o077 == 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.timeout(120)
def test_kill_during_writes_keeps_committed_state(tmp_path: Path) -> None:
    """A process killed with SIGKILL mid-batch: what was committed survives, the rest is simply read again."""
    state = tmp_path / "state"
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from keysweep.state import StateStore
        store = StateStore({str(state)!r}, digest="d", commit_every=100, commit_interval=3600)
        st = os.stat({str(tmp_path)!r})
        for i in range(250):
            store.store(f"/f{{i}}", st, [])
        print("stored", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "stored"
    proc.kill()
    proc.wait(timeout=10)
    with StateStore(state, digest="d") as store:
        assert store.file_count() == 200  # two committed batches; the last 50 are re-read later
        st = os.stat(tmp_path)
        assert store.lookup("/f0", st) == []
        assert store.lookup("/f249", st) is None


def test_lookup_with_findings_returns_plain_findings(tmp_path: Path) -> None:
    f = Finding(rule="aws-access-key-id", key_id=KEY_ID, location=Location(kind="file", path="/a"), fingerprint="fp")
    with StateStore(tmp_path / "s", digest="d") as store:
        st = os.stat(tmp_path)
        store.store("/a", st, [f])
        assert store.lookup("/a", st) == [f]


@pytest.mark.timeout(120)
def test_manual_scan_uses_the_same_state(tmp_path: Path) -> None:
    root, state = tmp_path / "tree", tmp_path / "state"
    _tree(root, 6)

    def scan() -> dict:
        res = subprocess.run(
            [sys.executable, "-m", "keysweep", "scan", "--state-dir", str(state), "--format", "json", str(root)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 1, res.stderr
        return json.loads(res.stdout)

    first = scan()
    assert first["summary"]["files_scanned"] == 7
    second = scan()
    assert second["summary"]["files_scanned"] == 0 and second["summary"]["files_cached"] == 7
    assert [f["key_id"] for f in second["findings"]] == [KEY_ID]
    assert second["findings"][0]["has_secret"] is True
    blobs = b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file())
    assert SECRET.encode() not in blobs


@pytest.mark.timeout(120)
def test_expired_verification_makes_the_file_be_read_again(tmp_path: Path, moto_server: object) -> None:
    """The state has no secret: when a cached finding's verification expires, only a fresh read can re-verify it."""
    from keysweep.aws import make_client
    from keysweep.config import from_mapping
    from keysweep.sweep import Pipeline

    iam = make_client("iam")
    iam.create_user(UserName="deployer")
    key = iam.create_access_key(UserName="deployer")["AccessKey"]
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "deploy.sh").write_text(_creds(key["AccessKeyId"], key["SecretAccessKey"]))
    (tree / "other.txt").write_text("nothing\n")
    settle()  # old enough to be recorded as unchanged
    cfg = from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "scan": {"roots": [str(tree)], "sources": ["files"]},
            "verify": {"enabled": True, "cache_ttl_live": "1s", "same_key_spacing": 0},
        }
    )
    pipeline = Pipeline(cfg)
    try:

        def sweep():
            return pipeline.sweep(should_stop=lambda: False, full_reread_every=100)

        first = sweep()
        assert [f.verification.status for f in first.findings] == ["live"]
        calls = pipeline.verifier.calls
        second = sweep()  # unchanged and verification still cached: nothing read, no STS call
        assert second.stats["files_scanned"] == 0 and second.cache["reverify"] == 0
        assert [f.verification.status for f in second.findings] == ["live"]
        assert second.findings[0].verification.cached
        assert pipeline.verifier.calls == calls
        time.sleep(1.2)
        third = sweep()  # the cached verification expired: the file is read again and verified again
        assert third.cache["reverify"] == 1 and third.stats["files_scanned"] == 1
        assert [f.verification.status for f in third.findings] == ["live"]
        assert pipeline.verifier.calls > calls
    finally:
        pipeline.close()
    assert key["SecretAccessKey"].encode() not in b"".join(
        p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file()
    )
