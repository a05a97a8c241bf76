"""A hostile tree: nothing hangs, nothing crashes, every skip is counted with its reason."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from keysweep.models import Finding
from keysweep.scan import ScanOptions, run_scan

from tests.support.hosttree import cli_env, make_detector

KEY, SECRET = "AKIAXYZDQCEN4B6JSJQI", "Zq3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"
DEEP_KEY = "AKIASP2TPHJSQH3FJRUX"
PAIR = f"AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY={SECRET}\n"
REPO = Path(__file__).resolve().parent.parent


def _build_zoo(root: Path) -> dict[str, object]:
    """Write the zoo; returns facts the tests check against."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "ok.env").write_text(PAIR)
    (root / "filler").mkdir()
    for i in range(300):  # enough files for the scan to use its worker processes
        (root / "filler" / f"{i}.txt").write_text(f"line {i}\n")
    os.mkfifo(root / "fifo")  # nobody writes to it: a blocking open would hang forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    sock.close()
    devices = 0
    try:
        os.mknod(root / "null-dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        devices = 1
    except (PermissionError, OSError):
        pass
    (root / "loop-a").symlink_to("loop-b")
    (root / "loop-b").symlink_to("loop-a")
    (root / "up").symlink_to("..")
    weird = os.fsencode(root) + b"/bad-\xff\xfe-name"
    os.mkdir(weird)
    with open(weird + b"/k\xe9y.env", "wb") as fh:
        fh.write(PAIR.encode())
    deep = root / "deep"
    d = os.fsencode(deep)
    os.mkdir(d)
    for _ in range(300):
        d += b"/d"
        os.mkdir(d)
    with open(d + b"/bottom.env", "wb") as fh:
        fh.write(f"AWS_ACCESS_KEY_ID={DEEP_KEY}\n".encode())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z, z.open("zeros", "w") as w:
        for _ in range(100):
            w.write(b"\0" * (1 << 20))
    (root / "bomb.zip").write_bytes(buf.getvalue())
    with open(root / "sparse.img", "wb") as fh:
        fh.truncate(1 << 30)
        fh.seek(900 << 20)
        fh.write(PAIR.encode())
    return {"devices": devices}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, object]]]:
    root = tmp_path_factory.mktemp("zoo") / "zoo"
    facts = _build_zoo(root)
    yield root, facts


def _cli(*args: str, user: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "keysweep", "scan", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=timeout)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_zoo_is_scanned_without_hang_or_crash(zoo: tuple[Path, dict[str, object]], workers: str) -> None:
    root, facts = zoo
    proc = _cli(str(root), "--format", "json", "--workers", workers)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    found = {(f["key_id"], f["location"]["path"]) for f in doc["findings"]}
    assert (KEY, f"{root}/ok.env") in found
    assert (KEY, f"{root}/bad-\\xff\\xfe-name/k\\xe9y.env") in found
    assert any(k == DEEP_KEY and p.endswith("/d/bottom.env") for k, p in found)
    s = doc["summary"]
    assert s["skipped"]["fifo"] == 1
    assert s["skipped"]["socket"] == 1
    assert s["skipped"].get("device", 0) == facts["devices"]
    assert s["skipped"]["symlink"] == 3
    assert s["skipped"]["archive-ratio"] == 1
    assert s["skipped"]["too-large"] == 1  # the 1 GiB sparse file, over the default 256 MiB cap
    assert s["errors"] == {}
    assert "fifo 1" in proc.stderr and "archive-ratio 1" in proc.stderr


@pytest.mark.timeout(180)
def test_zoo_with_symlinks_followed_and_a_large_cap(zoo: tuple[Path, dict[str, object]]) -> None:
    root, _ = zoo
    proc = _cli(str(root), "--format", "json", "--follow-symlinks", "--max-file-size", "2GiB")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    s = doc["summary"]
    assert s["skipped"]["symlink-loop"] == 1  # "up" leads back into the tree
    assert s["skipped"]["broken-symlink"] == 2  # loop-a <-> loop-b resolve to nothing
    assert s["skipped"].get("too-large", 0) == 0
    # the sparse file was read by its data extents only
    assert any(f["location"]["path"] == f"{root}/sparse.img" for f in doc["findings"])
    assert s["bytes_scanned"] < 256 << 20


@pytest.fixture
def shared_tree() -> Iterator[Path]:
    """A tree outside pytest's private tmp dir, so an unprivileged user can reach it."""
    d = Path(tempfile.mkdtemp(prefix="keysweep-zoo-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        for p in [d, *d.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        shutil.rmtree(d)


@pytest.mark.root
@pytest.mark.timeout(120)
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_unreadable_files_and_directories_as_an_unprivileged_user(shared_tree: Path) -> None:
    (shared_tree / "readable.env").write_text(PAIR)
    (shared_tree / "readable.env").chmod(0o644)
    (shared_tree / "private.env").write_text(PAIR)
    (shared_tree / "private.env").chmod(0o600)
    (shared_tree / "locked").mkdir()
    (shared_tree / "locked" / "inner.env").write_text(PAIR)
    (shared_tree / "locked").chmod(0o700)
    proc = _cli(str(shared_tree), "--format", "json", user="nobody")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert [f["location"]["path"] for f in doc["findings"]] == [f"{shared_tree}/readable.env"]
    assert doc["summary"]["errors"] == {"permission-denied": 2}
    assert "permission-denied 2" in proc.stderr


class _DeletingCache:
    """A FileCache that never hits and deletes one file when the scan asks about it: the file vanishes
    between the walk and the open."""

    def __init__(self, victim: Path) -> None:
        self.victim = str(victim)

    def lookup(self, path: str, st: os.stat_result) -> list[Finding] | None:
        if path == self.victim:
            os.unlink(path)
        return None

    def store(self, path: str, st: os.stat_result, findings: list[Finding]) -> None:
        pass


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 2])
def test_file_deleted_mid_scan_is_counted(tmp_path: Path, workers: int) -> None:
    (tmp_path / "stays.env").write_text(PAIR)
    victim = tmp_path / "goes.env"
    victim.write_text(PAIR.replace(KEY, DEEP_KEY))
    opts = ScanOptions(paths=(str(tmp_path),), sources=("files",), workers=workers)
    result = run_scan(opts, make_detector(), file_cache=_DeletingCache(victim))
    assert [f.key_id for f in result.findings] == [KEY]
    assert result.stats.skipped["vanished"] == 1
    assert result.stats.files_scanned == 1


def _detector_killed_by_poison():
    """A detector whose worker processes die by SIGKILL (as by the OOM killer) when they read b"POISON"."""
    import signal

    from keysweep.detect import Detector

    parent = os.getpid()

    class _KilledOnPoison(Detector):
        def scan(self, buf: bytes, **kw):  # noqa: ANN003, ANN201
            if b"POISON" in buf and os.getpid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)
            return super().scan(buf, **kw)

    base = make_detector()
    return _KilledOnPoison(base.ruleset, base.fingerprinter)


@pytest.mark.timeout(60)
def test_a_worker_killed_mid_scan_is_counted_and_replaced(tmp_path: Path) -> None:
    """A worker process killed (as the OOM killer would) loses only its batch; the scan finishes."""
    detector = _detector_killed_by_poison()
    (tmp_path / "poison.txt").write_text("POISON\n")
    for i in range(300):
        (tmp_path / f"f{i:03d}.env").write_text(PAIR if i == 299 else "nothing\n")
    opts = ScanOptions(paths=(str(tmp_path),), sources=("files",), workers=2)
    result = run_scan(opts, detector)
    lost = result.stats.errors["worker-crashed"]
    assert 1 <= lost <= 128  # at most the one batch that held the poison
    assert result.stats.files_scanned + lost == 301


@pytest.mark.timeout(60)
def test_a_worker_killed_while_walking_hands_its_unfinished_directories_on(tmp_path: Path) -> None:
    """Workers share the walk; one killed part way through its directories loses only the files it was
    reading: the directories it had not finished are listed by its replacement, none is lost."""
    detector = _detector_killed_by_poison()
    for i in range(40):
        d = tmp_path / f"d{i:02d}"
        (d / "sub").mkdir(parents=True)
        for j in range(9):
            (d / f"f{j}.txt").write_text("nothing\n")
        (d / "sub" / "key.env").write_text(PAIR)
    (tmp_path / "d17" / "poison.txt").write_text("POISON\n")
    result = run_scan(ScanOptions(paths=(str(tmp_path),), sources=("files",), workers=2), detector)
    lost = result.stats.errors["worker-crashed"]
    assert 1 <= lost <= 128
    assert result.stats.files_scanned + lost == 40 * 10 + 1
    assert len(result.findings) >= 40 - lost  # every key file not in the lost group is found
