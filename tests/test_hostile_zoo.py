"""A hostile tree: nothing hangs, nothing crashes, every skip is counted with its reason."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from keysweep.models import Finding
from keysweep.scan import ScanOptions, run_scan

from tests.support.hosttree import Keys, cli_env, make_detector
from tests.support.settle import settle

KEY, SECRET = "AKIAXYZDQCEN4B6JSJQI", "Zq3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"
DEEP_KEY = "AKIASP2TPHJSQH3FJRUX"
PAIR = f"AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY={SECRET}\n"
REPO = Path(__file__).resolve().parent.parent


WEIRD = b"bad-\xff\xfe-name"  # not UTF-8
DEEP_LEVELS = 300


def _zoo_dirs(root: Path) -> None:
    """The zoo's directories (a watcher sees files only in directories it already watches)."""
    (root / "filler").mkdir(parents=True)
    os.mkdir(os.fsencode(root) + b"/" + WEIRD)
    os.makedirs(os.fsencode(root / "deep") + b"/d" * DEEP_LEVELS)


def _zoo_files(root: Path) -> dict[str, object]:
    """The zoo's files; returns facts the tests check against."""
    (root / "ok.env").write_text(PAIR)
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
    with open(os.fsencode(root) + b"/" + WEIRD + b"/k\xe9y.env", "wb") as fh:
        fh.write(PAIR.encode())
    with open(os.fsencode(root / "deep") + b"/d" * DEEP_LEVELS + b"/bottom.env", "wb") as fh:
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


def _build_zoo(root: Path) -> dict[str, object]:
    _zoo_dirs(root)
    return _zoo_files(root)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, object]]]:
    root = tmp_path_factory.mktemp("zoo") / "zoo"
    facts = _build_zoo(root)
    yield root, facts


def _as(user: str | None, cmd: list[str]) -> list[str]:
    return cmd if user is None else ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]


def _cli(*args: str, user: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = _as(user, [sys.executable, "-m", "keysweep", "scan", *args])
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=timeout)


@dataclass
class Run:
    """What one run of keysweep in some mode reported about the zoo."""

    rc: int
    stderr: str
    found: set[tuple[str, str]]  # (key id, path)
    skipped: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    files_cached: int = 0


def _scan_run(*args: str, user: str | None = None) -> Run:
    proc = _cli(*args, "--format", "json", user=user)
    doc = json.loads(proc.stdout) if proc.stdout.strip() else {"findings": [], "summary": {}}
    s = doc["summary"]
    return Run(
        proc.returncode,
        proc.stderr,
        {(f["key_id"], f["location"]["path"]) for f in doc["findings"]},
        Counter(s.get("skipped", {})),
        Counter(s.get("errors", {})),
        s.get("files_cached", 0),
    )


def _agent_config(tmp: Path, roots: list[str], **sections: object) -> Path:
    cfg = {
        "state_dir": str(tmp / "state"),
        "scan": {"roots": roots, "sources": ["files"], "workers": 2},
        "schedule": {"interval": "1h", "splay": 0},
        "watch": {"enabled": False},
        "context": {"imds_endpoint": "http://127.0.0.1:9", "imds_timeout": "200ms", "ecs_timeout": "200ms"},
        **sections,
    }
    path = tmp / "agent.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    path.chmod(0o644)
    return path


def _agent_events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _from_events(rc: int, stderr: str, events: list[dict[str, Any]], done: str) -> Run:
    run = Run(rc, stderr, {(e["key_id"], e["location"]["path"]) for e in events if e["event"] == "finding"})
    for e in events:
        if e["event"] == done:
            run.skipped.update(e.get("skipped", {}))
            run.errors.update(e.get("errors", {}))
            run.files_cached += e.get("files_cached", 0)
    return run


def _agent_once(root: Path, tmp: Path, user: str | None = None) -> Run:
    cfg = _agent_config(tmp, [str(root)])
    cmd = _as(user, [sys.executable, "-m", "keysweep", "agent", "--config", str(cfg), "--once"])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=150)
    return _from_events(proc.returncode, proc.stderr, _agent_events(proc.stdout), "sweep.finished")


def _watched(
    root: Path,
    tmp: Path,
    make_dirs: Callable[[], object],
    make_files: Callable[[], object],
    done: Callable[[Run], bool],
    user: str | None = None,
) -> Run:
    """The resident agent watching ``root`` (which must exist) while a tree is made in it: its directories,
    then, once they are watched, its files; every file is scanned from its event until ``done``."""
    empty = tmp / "empty"
    empty.mkdir(mode=0o755)
    cfg = _agent_config(
        tmp,
        [str(empty)],
        watch={"enabled": True, "homes": False, "system_paths": False, "paths": [str(root)], "debounce": "200ms"},
    )
    cmd = _as(user, [sys.executable, "-m", "keysweep", "agent", "--config", str(cfg)])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO)
    lines: list[str] = []
    errs: list[str] = []  # drained as it comes: a full stderr pipe would stall the agent
    readers = [
        threading.Thread(target=lambda out=out, pipe=pipe: out.extend(pipe), daemon=True)  # type: ignore[misc]
        for out, pipe in ((lines, proc.stdout), (errs, proc.stderr))
    ]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any('"watch.started"' in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, ("the agent did not start watching", errs)
            time.sleep(0.1)
        make_dirs()
        time.sleep(5)  # the recursive watch reaches the new directories (a deep tree takes a while on a busy host)
        make_files()
        deadline = time.monotonic() + 90
        while not done(run := _from_events(0, "", _agent_events("".join(lines)), "watch.scanned")):
            assert proc.poll() is None and time.monotonic() < deadline, (run, lines[-5:])
            time.sleep(0.2)
        time.sleep(1)  # the last events' scans
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for reader in readers:
            reader.join(5)
    err = "".join(errs)
    assert len(err) < 100_000, err[:2000]  # no log flood from a deep tree
    return _from_events(proc.returncode, err, _agent_events("".join(lines)), "watch.scanned")


@contextlib.contextmanager
def _churning(d: Path) -> Iterator[None]:
    """Files and directories that appear and vanish in ``d`` all the time, as in a busy spool or cache."""
    d.mkdir(exist_ok=True)
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            f, sub = d / f"f{i % 20}.tmp", d / f"dir{i % 5}"
            f.write_text("nothing\n")
            sub.mkdir(exist_ok=True)
            (sub / "x.tmp").write_text("nothing\n")
            f.unlink()
            shutil.rmtree(sub, ignore_errors=True)
            i += 1
            stop.wait(0.005)  # busy, not a flood: a flood overflows the kernel's inotify queue and drops events

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        shutil.rmtree(d, ignore_errors=True)


_MODES = [
    pytest.param("scan-1", id="scan-workers-1"),
    pytest.param("scan-2", id="scan-workers-2"),
    pytest.param("scan-state", id="scan-state-dir-twice"),
    pytest.param("agent-once", id="agent-once"),
    pytest.param("watch", id="watch"),
]


def _runs_in(mode: str, root: Path, tmp: Path, user: str | None = None) -> list[Run]:
    """The runs of one mode over an existing tree (the watcher's mode makes its own: see the callers)."""
    if mode.startswith("scan-") and mode != "scan-state":
        return [_scan_run(str(root), "--workers", mode[-1], user=user)]
    if mode == "scan-state":
        runs = [_scan_run(str(root), "--state-dir", str(tmp / "state"), user=user) for _ in range(2)]
        assert runs[1].files_cached > 0  # the second run read unchanged files from the state
        return runs
    assert mode == "agent-once"
    return [_agent_once(root, tmp, user)]


def _finished_cleanly(run: Run) -> None:
    assert run.rc in (0, 1), run.stderr
    assert "Traceback" not in run.stderr, run.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", _MODES)
def test_zoo_through_every_mode(zoo: tuple[Path, dict[str, object]], tmp_path: Path, mode: str) -> None:
    """Every way keysweep reads files meets the zoo, with files and directories vanishing all the while: it
    finishes (exit 0 or 1, no traceback), finds the planted keys, and counts each hostile entry with its reason."""
    root, facts = zoo
    exact = True
    if mode != "watch":
        with _churning(root / "churn"):
            runs = _runs_in(mode, root, tmp_path)
    else:
        root, facts = tmp_path / "watched", {}
        root.mkdir()

        def done(run: Run) -> bool:
            return len(run.found) >= 3 and bool(run.skipped["archive-ratio"] and run.skipped["too-large"])

        with _churning(root / "churn"):
            runs = [_watched(root, tmp_path, lambda: _zoo_dirs(root), lambda: facts.update(_zoo_files(root)), done)]
        exact = False  # a file may be scanned once per burst of its events
    for run in runs:
        _finished_cleanly(run)
        assert (KEY, f"{root}/ok.env") in run.found
        assert (KEY, f"{root}/bad-\\xff\\xfe-name/k\\xe9y.env") in run.found
        assert any(k == DEEP_KEY and p.endswith("/d/bottom.env") for k, p in run.found)
        assert not any(f"{root}/filler" in p for _, p in run.found)
        assert run.errors == {}, run.errors  # what vanished is counted as skipped (vanished), never an error
        expected = {"fifo": 1, "socket": 1, "device": facts["devices"], "symlink": 3, "too-large": 1}
        if not run.files_cached:
            expected["archive-ratio"] = 1  # a rerun from the state does not open the unchanged archive again
        for reason, n in expected.items():
            if exact:
                assert run.skipped[reason] == n, (reason, run.skipped)
            else:
                assert (run.skipped[reason] >= 1) == (n >= 1), (reason, run.skipped)
        assert set(run.skipped) <= {*expected, "vanished", "replaced", "archive-ratio"}, run.skipped


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


def _unreadable_dirs(tree: Path) -> None:
    (tree / "locked").mkdir(mode=0o700)


def _unreadable_files(tree: Path) -> None:
    for name, mode in (("readable.env", 0o644), ("private.env", 0o600), ("locked/inner.env", 0o600)):
        (tree / name).write_text(PAIR)
        (tree / name).chmod(mode)


@pytest.mark.root
@pytest.mark.timeout(180)
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
@pytest.mark.parametrize("mode", _MODES)
def test_unreadable_files_and_directories_as_an_unprivileged_user_in_every_mode(shared_tree: Path, mode: str) -> None:
    """Run as nobody, every mode reports what it may read, counts what it may not (permission-denied, with
    the place), and finishes."""
    tree = shared_tree / "tree"
    tree.mkdir(mode=0o755)
    home = shared_tree / "home"  # nobody's: its state directory and configuration
    home.mkdir(mode=0o755)
    os.chown(home, 65534, 65534)
    if mode != "watch":
        _unreadable_dirs(tree)
        _unreadable_files(tree)
        runs = _runs_in(mode, tree, home, user="nobody")
    else:

        def done(run: Run) -> bool:
            return bool(run.found) and run.errors["permission-denied"] >= 1

        runs = [
            _watched(tree, home, lambda: _unreadable_dirs(tree), lambda: _unreadable_files(tree), done, user="nobody")
        ]
    for run in runs:
        _finished_cleanly(run)
        assert run.found == {(KEY, f"{tree}/readable.env")}
        if mode == "watch":  # the locked directory cannot be watched by nobody: only the private file is seen
            assert run.errors["permission-denied"] >= 1 and set(run.errors) == {"permission-denied"}, run.errors
        else:
            assert run.errors == {"permission-denied": 2}, run.errors
    if mode.startswith("scan-") and mode != "scan-state":
        assert "permission-denied 2" in runs[0].stderr


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


def _poisoned_detector(*, kill: bool):
    """A detector that fails on a buffer holding b"POISON": in a worker process it dies by SIGKILL (as by the
    OOM killer) when ``kill``, else it raises (a bug on one odd file) wherever it runs."""
    import signal

    from keysweep.detect import Detector

    parent = os.getpid()

    class _Poisoned(Detector):
        def may_hold(self, buf: bytes) -> bool:  # a poisoned buffer is scanned, whatever the gate says
            return b"POISON" in buf or super().may_hold(buf)

        def scan(self, buf: bytes, **kw):  # noqa: ANN003, ANN201
            if b"POISON" in buf:
                if not kill:
                    raise ValueError("poisoned")
                if os.getpid() != parent:
                    os.kill(os.getpid(), signal.SIGKILL)
            return super().scan(buf, **kw)

    base = make_detector()
    return _Poisoned(base.ruleset, base.fingerprinter)


def _detector_killed_by_poison():
    return _poisoned_detector(kill=True)


class _MemoryCache:
    """A FileCache in memory: the scan then stats every file and records each one's outcome."""

    def __init__(self) -> None:
        self.stored: dict[str, list[Finding]] = {}

    def lookup(self, path: str, st: os.stat_result) -> list[Finding] | None:
        return None

    def store(self, path: str, st: os.stat_result, findings: list[Finding]) -> None:
        self.stored[path] = findings


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["in-process", "workers", "workers-file-cache"])
def test_a_file_that_makes_the_scan_raise_is_counted_with_its_place_and_the_sweep_goes_on(
    tmp_path: Path, mode: str
) -> None:
    for i in range(300):
        (tmp_path / f"f{i:03d}.env").write_text(PAIR if i % 100 == 0 else "nothing\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "poison-1.txt").write_text("POISON\n")
    (tmp_path / "poison-2.txt").write_text(f"POISON\n{PAIR}")
    settle()  # a file read in the tick of its last change is not recorded
    workers = 1 if mode == "in-process" else 2
    cache = _MemoryCache() if mode == "workers-file-cache" else None
    opts = ScanOptions(paths=(str(tmp_path),), sources=("files",), workers=workers)
    result = run_scan(opts, _poisoned_detector(kill=False), file_cache=cache)
    assert result.stats.errors == {"internal-error": 2}
    assert sorted(d["path"] for d in result.stats.error_details) == [
        f"{tmp_path}/poison-2.txt",
        f"{tmp_path}/sub/poison-1.txt",
    ]
    assert {(d["error"], d["at"].split(":")[0]) for d in result.stats.error_details} == {
        ("ValueError", __name__.rpartition(".")[2] + ".py")
    }
    assert "poisoned" not in json.dumps(result.stats.to_dict())  # the message may quote scanned bytes: not kept
    assert result.stats.files_scanned == 300
    assert sorted(f.location.path for f in result.findings) == [f"{tmp_path}/f{i:03d}.env" for i in (0, 100, 200)]
    if cache is not None:
        assert len(cache.stored) == 300  # every file read is recorded; the failed ones are not


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
@pytest.mark.parametrize("file_cache", [False, True], ids=["no-cache", "file-cache"])
def test_a_worker_killed_mid_scan_loses_only_its_batch_and_no_finding_of_other_files(
    tmp_path: Path, file_cache: bool
) -> None:
    """A worker killed while reading (as the OOM killer would) loses the files of the batch it held: each is
    counted as worker-crashed with its place; a new worker takes over and every other file's key is found."""
    detector = _detector_killed_by_poison()
    ids = Keys(random.Random(14))
    keys = {ids.key_id() for _ in range(400)}
    assert len(keys) == 400
    for i, key in enumerate(sorted(keys)):
        d = tmp_path / f"d{i // 10:02d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i}.env").write_text(f"AWS_ACCESS_KEY_ID={key}\nAWS_SECRET_ACCESS_KEY={SECRET}\n")
    (tmp_path / "d17" / "poison.txt").write_text("POISON\n")
    cache = _MemoryCache() if file_cache else None
    opts = ScanOptions(paths=(str(tmp_path),), sources=("files",), workers=2)
    result = run_scan(opts, detector, file_cache=cache)
    lost = result.stats.errors["worker-crashed"]
    assert 1 <= lost <= 128  # the one batch that held the poison
    lost_places = {d["path"] for d in result.stats.error_details if d["reason"] == "worker-crashed"}
    assert f"{tmp_path}/d17/poison.txt" in lost_places
    assert len(lost_places) == min(lost, 100)  # each lost file named (while few are kept)
    assert result.stats.files_scanned + lost == 401
    found = {f.key_id for f in result.findings}
    assert len(found) + lost - 1 == 400  # every key not in the lost batch is found (the poison file holds none)
    assert not {f.location.path for f in result.findings} & lost_places


@pytest.mark.timeout(60)
def test_a_source_that_fails_is_counted_and_the_other_sources_still_run(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc" / "passwd").write_text("u:x:1000:1000::/home/u:/bin/sh\n")
    aws = host / "home" / "u" / ".aws"
    aws.mkdir(parents=True)
    # a malformed line makes the AWS-files source hand the file to the detector, which raises on it
    (aws / "credentials").write_text(f"[default]\naws_access_key_id = {DEEP_KEY}\nPOISON no equals sign\n")
    (host / "srv").mkdir()
    (host / "srv" / "app.env").write_text(PAIR)
    opts = ScanOptions(roots=("/",), sources=("aws-files", "files"), workers=1, path_prefix=str(host))
    result = run_scan(opts, _poisoned_detector(kill=False))
    assert sum(result.stats.errors.values()) >= 1
    places = {d["path"] for d in result.stats.error_details}
    assert places & {"source:aws-files", "/home/u/.aws/credentials"}, result.stats.error_details
    assert [(f.key_id, f.location.path) for f in result.findings if f.location.kind == "file"] == [
        (KEY, "/srv/app.env")
    ]


_SWAPPER = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
renameat2 = libc.renameat2
renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
AT_FDCWD, RENAME_EXCHANGE = -100, 2
end = time.monotonic() + float(sys.argv[1])
swaps = 0
while time.monotonic() < end and not os.path.exists("stop"):
    if renameat2(AT_FDCWD, b"work", AT_FDCWD, b"link", RENAME_EXCHANGE) != 0:
        sys.exit(f"renameat2: errno {ctypes.get_errno()}")
    swaps += 1
print(swaps)
"""


@pytest.mark.root
@pytest.mark.timeout(300)
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_user_swapping_a_directory_for_a_symlink_never_gets_a_root_only_file_read(shared_tree: Path) -> None:
    """An unprivileged user swaps a directory it owns with a symlink to a root-only directory
    (renameat2 RENAME_EXCHANGE in a loop) while root scans, in every way the scan reads files: the root-only
    key is never reported, and the user's own key is found."""
    private = shared_tree / "private"
    private.mkdir(mode=0o700)
    (private / "secret.env").write_text(f"AWS_ACCESS_KEY_ID={DEEP_KEY}\n")
    attacker = shared_tree / "attacker"
    (attacker / "work").mkdir(parents=True)
    for i in range(40):  # the same names as in the root-only directory, and enough entries to widen the window
        (attacker / "work" / f"f{i:02d}.txt").write_text("nothing\n")
    (attacker / "work" / "secret.env").write_text("nothing here\n")
    (attacker / "mine.env").write_text(PAIR)
    (attacker / "link").symlink_to(private)
    for p in [attacker, *attacker.rglob("*")]:
        os.chown(p, 65534, 65534, follow_symlinks=False)
    swapper = subprocess.Popen(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", _SWAPPER, "120"],
        cwd=attacker,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    modes = [(1, None), (2, None), (2, _MemoryCache())]  # in this process; workers; workers with a file cache
    try:
        leaked, mine = 0, 0
        for n in range(45):
            workers, cache = modes[n % len(modes)]
            opts = ScanOptions(paths=(str(attacker),), sources=("files",), workers=workers)
            result = run_scan(opts, make_detector(), file_cache=cache)
            leaked += sum(f.key_id == DEEP_KEY for f in result.findings)
            mine += sum(f.key_id == KEY for f in result.findings)
            assert swapper.poll() is None, swapper.communicate()
    finally:
        (attacker / "stop").touch()
        out, err = swapper.communicate(timeout=30)
    assert swapper.returncode == 0, err
    assert int(out) > 1000  # the race really ran
    assert leaked == 0
    assert mine == 45
