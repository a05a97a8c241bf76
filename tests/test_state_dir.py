"""The state directory against a hostile host, through the real CLI: names that are not UTF-8 on every channel,
damaged state files moved aside and rebuilt, foreign or planted state refused, unexpected errors exit 3."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from keysweep.aws import make_client
from keysweep.detect import Detector
from keysweep.fingerprint import Fingerprinter
from keysweep.ruleset import load_ruleset
from keysweep.state import STATE_FILE, StateStore

from tests.support.moto_server import MotoServer

KEY_ID = "AKIAXYZDQCEN4B6JSJQI"  # decodes to an account, not a documentation example
SECRET = "Zk3pQ8vR2mN7tY4wX9cB6dF1gH5jK0lM3nP8qR2s"
CREDS = f"AWS_ACCESS_KEY_ID={KEY_ID}\nAWS_SECRET_ACCESS_KEY={SECRET}\n"
NO_IMDS = {"imds_endpoint": "http://127.0.0.1:9", "imds_timeout": "200ms", "ecs_timeout": "200ms"}
ROOT = os.geteuid() == 0 and shutil.which("setpriv") is not None


def keysweep(
    *args: str | Path, env: dict[Any, Any] | None = None, user: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    cmd: list[str | bytes | Path] = [sys.executable, "-m", "keysweep", *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
    full_env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", **(env or {})}
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=full_env)


def events(proc: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    """The agent's JSON log: every stdout line is one JSON object."""
    return [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]


def agent_config(tmp_path: Path, tree: Path, **sections: Any) -> Path:
    cfg: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "scan": {"roots": [str(tree)], "sources": ["files"]},
        "watch": {"enabled": False},
        "context": NO_IMDS,
        **sections,
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def strict_utf8(text: str) -> None:
    """What a strict reader (the collector, jq, Go) needs: no lone surrogate anywhere."""
    text.encode("utf-8")
    assert "\\udc" not in text.lower()


# --- names and environment values that are not UTF-8 --------------------------------------------------------


def test_state_round_trips_the_exact_bytes_of_any_name(tmp_path: Path) -> None:
    detector = Detector(load_ruleset(), Fingerprinter(b"k" * 32))
    names = [b"plain.txt", b"bad\xff.env", b"\xc3\x28latin", b"new\nline", "名前".encode()]
    directory = tmp_path / os.fsdecode(b"dir\xfe")
    directory.mkdir()
    paths = []
    for name in names:
        p = os.path.join(os.fsencode(directory), name)
        Path(os.fsdecode(p)).write_text("x")
        paths.append(os.fsdecode(p))
    with StateStore(tmp_path / "state", digest="d") as store:
        for p in paths:
            store.store(p, os.stat(p), [])
    with StateStore(tmp_path / "state", digest="d") as store:
        assert all(store.lookup(p, os.stat(p)) == [] for p in paths)  # every name found again
    rows = (
        sqlite3.connect(tmp_path / "state" / STATE_FILE)
        .execute("SELECT dirs.path, files.name FROM files JOIN dirs ON dirs.id = files.dir")
        .fetchall()
    )
    assert sorted(rows) == sorted((os.fsencode(directory), n) for n in names)
    assert all(isinstance(d, bytes) and isinstance(n, bytes) for d, n in rows)
    assert detector  # the detector is not involved: the state is keyed by path alone


def test_a_text_path_state_of_an_older_version_is_rebuilt(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    db = sqlite3.connect(state / STATE_FILE)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE files (dir TEXT NOT NULL, name TEXT NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL,
            size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, sweep_no INTEGER NOT NULL,
            findings TEXT, PRIMARY KEY (dir, name)) WITHOUT ROWID;
        INSERT INTO meta VALUES ('schema', '2'), ('digest', 'd'), ('sweep_no', '7');
        INSERT INTO files VALUES ('/x', 'y', 1, 2, 3, 4, 5, 7, NULL);
    """)
    db.commit()
    db.close()
    with StateStore(state, digest="d") as store:
        assert store.file_count() == 0 and store.sweep_number == 0
        target = tmp_path / os.fsdecode(b"\xff")
        target.write_text("x")
        store.store(str(target), target.stat(), [])
    assert sqlite3.connect(state / STATE_FILE).execute("SELECT typeof(name) FROM files").fetchone() == ("blob",)


@pytest.fixture
def hostile_tree(tmp_path: Path) -> Path:
    """A key in a file whose directory and name are not UTF-8, and a plain file beside it."""
    tree = tmp_path / "tree"
    bad_dir = os.path.join(os.fsencode(tree), b"dir\xff")
    os.makedirs(bad_dir)
    with open(os.path.join(bad_dir, b"key\xfe.env"), "w") as fh:
        fh.write(CREDS)
    (tree / "plain.txt").write_text("nothing\n")
    return tree


def plant_live_key(tree: Path) -> str:
    """Replace the planted key with one moto's IAM made (verified live); returns its secret."""
    iam = make_client("iam")
    iam.create_user(UserName="deployer")
    key = iam.create_access_key(UserName="deployer")["AccessKey"]
    path = os.path.join(os.fsencode(tree), b"dir\xff", b"key\xfe.env")
    with open(path, "w") as fh:
        fh.write(f"AWS_ACCESS_KEY_ID={key['AccessKeyId']}\nAWS_SECRET_ACCESS_KEY={key['SecretAccessKey']}\n")
    return str(key["SecretAccessKey"])


def _drain(queue_url: str) -> list[str]:
    sqs = make_client("sqs")
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        if not got.get("Messages"):
            return bodies
        bodies += [m["Body"] for m in got["Messages"]]
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got["Messages"])],
        )


@pytest.mark.timeout(240)
def test_agent_with_non_utf8_names_and_environment_writes_every_channel(
    tmp_path: Path, hostile_tree: Path, moto_server: MotoServer
) -> None:
    queue_url = make_client("sqs").create_queue(QueueName="findings")["QueueUrl"]
    secret = plant_live_key(hostile_tree)
    prom = tmp_path / "keysweep.prom"
    config = agent_config(
        tmp_path,
        hostile_tree,
        report={"queue_url": queue_url, "flush_timeout": "5s"},
        verify={"enabled": True, "same_key_spacing": 0},
        status={"prometheus_file": str(prom)},
    )
    # the agent's own environment: Kubernetes names that are not UTF-8 reach the host context of every message
    env = {b"KUBERNETES_SERVICE_HOST": b"10.0.0.1", b"POD_NAME": b"pod\xff1", b"POD_NAMESPACE": b"ns\xfe"}
    first = keysweep("agent", "--config", config, "--once", env=env)
    assert first.returncode == 1, first.stderr  # findings
    second = keysweep("agent", "--config", config, "--once", env=env)
    assert second.returncode == 1, second.stderr

    # JSON log: parseable, strict UTF-8, the path with \xNN
    for proc in (first, second):
        strict_utf8(proc.stdout.decode("utf-8"))
        evs = events(proc)
        assert not [e for e in evs if e["level"] in ("error", "critical")], evs
    finding = next(e for e in events(first) if e["event"] == "finding")
    assert finding["location"]["path"] == f"{hostile_tree}/dir\\xff/key\\xfe.env"
    finished = [e for e in events(second) if e["event"] == "sweep.finished"][-1]
    assert finished["files_cached"] == 2 and finished["files_scanned"] == 0  # the state found both names again

    state = tmp_path / "state"
    rows = sqlite3.connect(state / STATE_FILE).execute("SELECT name FROM files").fetchall()
    assert (b"key\xfe.env",) in rows
    for name in ("status.json", "sent-state.json", "verify-cache.json"):
        text = (state / name).read_text(encoding="utf-8")
        strict_utf8(text)
        json.loads(text)
    status = json.loads((state / "status.json").read_text())
    assert status["findings"] == 1 and status["last_sweep"]["files_cached"] == 2
    strict_utf8(prom.read_text(encoding="utf-8"))

    bodies = _drain(queue_url)
    for body in bodies:
        strict_utf8(body)
    docs = [json.loads(b) for b in bodies]
    [message] = [d for d in docs if d["type"] == "finding"]  # sent once: the second run found it in sent-state
    assert message["finding"]["location"]["path"] == f"{hostile_tree}/dir\\xff/key\\xfe.env"
    assert message["host"]["pod"] == "pod\\xff1"
    assert message["host"]["namespace"] == "ns\\xfe"
    assert message["finding"]["verification"]["status"] == "live"
    for text in (first.stdout, second.stdout, *(p.read_bytes() for p in state.rglob("*") if p.is_file())):
        assert secret.encode() not in text


@pytest.mark.timeout(240)
def test_agent_spool_keeps_non_utf8_values_readable_when_the_queue_is_down(tmp_path: Path, hostile_tree: Path) -> None:
    config = agent_config(
        tmp_path,
        hostile_tree,
        report={"queue_url": "http://127.0.0.1:9/123456789012/q", "region": "us-east-1", "flush_timeout": "300ms"},
    )
    env = {
        b"KUBERNETES_SERVICE_HOST": b"10.0.0.1",
        b"POD_NAME": b"pod\xff1",
        b"AWS_ACCESS_KEY_ID": b"testing",
        b"AWS_SECRET_ACCESS_KEY": b"testing",
    }
    proc = keysweep("agent", "--config", config, "--once", env=env)
    assert proc.returncode == 1, proc.stderr
    spooled = sorted((tmp_path / "state" / "spool").glob("*.msg"))
    assert len(spooled) == 2  # the finding and the heartbeat wait for the queue
    for path in spooled:
        body = path.read_text(encoding="ascii")
        strict_utf8(json.loads(body) and body)
        assert "pod\\\\xff1" in body


def test_scan_with_state_dir_twice_on_non_utf8_names(tmp_path: Path, hostile_tree: Path) -> None:
    state = tmp_path / "state"
    runs = [keysweep("scan", hostile_tree, "--state-dir", state, "--format", "json") for _ in range(2)]
    for proc in runs:
        assert proc.returncode == 1, proc.stderr
        doc = json.loads(proc.stdout)
        [f] = doc["findings"]
        assert f["location"]["path"] == f"{hostile_tree}/dir\\xff/key\\xfe.env"
    assert json.loads(runs[1].stdout)["summary"]["files_cached"] == 2
    assert b"2 unchanged files from the state" in runs[1].stderr


@pytest.mark.timeout(240)
def test_agent_reports_a_process_with_non_utf8_executable_and_environment(
    tmp_path: Path, moto_server: MotoServer
) -> None:
    queue_url = make_client("sqs").create_queue(QueueName="findings")["QueueUrl"]
    bindir = os.path.join(os.fsencode(tmp_path), b"bin\xff")
    os.mkdir(bindir)
    exe = os.path.join(bindir, b"sle\xfep")
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    env = {b"DEPLOY_KEY_ID\xff": KEY_ID.encode(), b"AWS_SECRET_ACCESS_KEY": SECRET.encode(), b"NOTE": b"caf\xe9 \xff"}
    child = subprocess.Popen([exe, "120"], env=env)
    try:
        (tmp_path / "tree").mkdir()
        config = agent_config(
            tmp_path,
            tmp_path / "tree",
            report={"queue_url": queue_url, "flush_timeout": "5s"},
            scan={"roots": [str(tmp_path / "tree")], "sources": ["processes"]},
        )
        runs = [keysweep("agent", "--config", config, "--once") for _ in range(2)]
    finally:
        child.kill()
        child.wait()
    for proc in runs:
        assert proc.returncode == 1, proc.stderr
        strict_utf8(proc.stdout.decode("utf-8"))
    [logged] = [e for e in events(runs[0]) if e["event"] == "finding" and e["location"].get("pid") == child.pid]
    assert logged["location"]["exe"] == f"{tmp_path}/bin\\xff/sle\\xfep"
    assert logged["location"]["variable"] == "DEPLOY_KEY_ID\\xff" and logged["has_secret"]
    state = tmp_path / "state"
    for path in state.rglob("*.json"):
        strict_utf8(path.read_text(encoding="utf-8"))
    bodies = _drain(queue_url)
    for body in bodies:
        strict_utf8(body)
    mine = [json.loads(b)["finding"] for b in bodies if f'"pid":{child.pid}' in b]
    assert [f["location"]["exe"] for f in mine] == [f"{tmp_path}/bin\\xff/sle\\xfep"]  # sent once
    blob = b"".join(
        [
            *runs[0].stdout.splitlines(),
            *runs[1].stdout.splitlines(),
            *(b.encode() for b in bodies),
            *(p.read_bytes() for p in state.rglob("*") if p.is_file()),
        ]
    )
    assert SECRET.encode() not in blob


# --- damaged state files ------------------------------------------------------------------------------------


def _sqlite_prefix(path: Path) -> None:
    """The first 20 KB of a real database: a truncated state file."""
    src = path.with_suffix(".whole")
    db = sqlite3.connect(src)
    db.execute("CREATE TABLE t (a TEXT)")
    db.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 200)
    db.commit()
    db.close()
    path.write_bytes(src.read_bytes()[:20_000])
    src.unlink()


def _damage(path: Path, how: str) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if how == "truncated":
        if path.name == STATE_FILE:
            _sqlite_prefix(path)
        else:
            path.write_bytes(b'{"format": 1, "entr')
    elif how == "garbage":
        path.write_bytes(os.urandom(3000))
    elif how == "wrong-types":
        path.write_text(
            json.dumps(
                {
                    "format": 1,
                    "entries": {"f" * 32: ["live", "yesterday", None, {}]},
                    "last_sweep": [1, 2],
                    "errors": "none",
                }
            )
        )
    elif how == "directory":
        path.mkdir()
        (path / "inside").write_text("x")
    elif how == "fifo":
        os.mkfifo(path, 0o600)
    if path.is_file():
        path.chmod(0o600)


CASES = [
    (STATE_FILE, "truncated"),
    (STATE_FILE, "garbage"),
    (STATE_FILE, "directory"),
    ("sent-state.json", "wrong-types"),
    ("sent-state.json", "truncated"),
    ("sent-state.json", "directory"),
    ("verify-cache.json", "wrong-types"),
    ("verify-cache.json", "garbage"),
    ("fingerprint.key", "truncated"),
    ("fingerprint.key", "directory"),
    ("status.json", "wrong-types"),
    ("status.json", "directory"),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("name", "how"), CASES, ids=[f"{n}-{h}" for n, h in CASES])
def test_agent_moves_a_bad_state_file_aside_and_keeps_sweeping(
    tmp_path: Path, hostile_tree: Path, moto_server: MotoServer, name: str, how: str
) -> None:
    queue_url = make_client("sqs").create_queue(QueueName="findings")["QueueUrl"]
    plant_live_key(hostile_tree)
    config = agent_config(
        tmp_path,
        hostile_tree,
        report={"queue_url": queue_url, "flush_timeout": "5s"},
        verify={"enabled": True, "same_key_spacing": 0},
    )
    state = tmp_path / "state"
    assert keysweep("agent", "--config", config, "--once").returncode == 1
    assert (state / name).exists()
    _damage(state / name, how)

    proc = keysweep("agent", "--config", config, "--once")
    assert proc.returncode == 1, proc.stderr  # the sweep ran and found the key
    assert proc.stderr == b""
    [event] = [e for e in events(proc) if e["event"] == "state.corrupt"]  # logged once
    assert event["file"] == str(state / name) and event["action"] == "rebuilt"
    [aside] = (state / "corrupt").iterdir()
    assert aside.name.startswith(Path(name).name + ".") and event["moved_to"] == str(aside)
    if aside.is_file():
        assert stat.S_IMODE(aside.stat().st_mode) == 0o600
    assert any(e["event"] == "sweep.finished" and e["findings"] == 1 for e in events(proc))

    again = keysweep("agent", "--config", config, "--once")
    assert again.returncode == 1, again.stderr
    assert not [e for e in events(again) if e["event"] == "state.corrupt" or e["level"] == "critical"]
    assert len(list((state / "corrupt").iterdir())) == 1


@pytest.mark.parametrize(
    ("name", "how"),
    [
        (STATE_FILE, "truncated"),
        (STATE_FILE, "garbage"),
        (STATE_FILE, "directory"),
        ("fingerprint.key", "truncated"),
        ("fingerprint.key", "garbage"),
        ("fingerprint.key", "directory"),
        (STATE_FILE, "fifo"),
        ("fingerprint.key", "fifo"),
    ],
)
def test_scan_moves_a_bad_state_file_aside_and_rebuilds_it(
    tmp_path: Path, hostile_tree: Path, name: str, how: str
) -> None:
    state = tmp_path / "state"
    assert keysweep("scan", hostile_tree, "--state-dir", state).returncode == 1
    _damage(state / name, how)
    proc = keysweep("scan", hostile_tree, "--state-dir", state, "--format", "json")
    assert proc.returncode == 1, proc.stderr
    assert len(json.loads(proc.stdout)["findings"]) == 1
    assert proc.stderr.count(b"keysweep: state.corrupt: file=" + os.fsencode(state / name)) == 1
    assert len(list((state / "corrupt").iterdir())) == 1
    again = keysweep("scan", hostile_tree, "--state-dir", state, "--format", "json")
    assert again.returncode == 1 and b"state.corrupt" not in again.stderr
    if name == STATE_FILE:
        assert json.loads(again.stdout)["summary"]["files_cached"] == 2  # rebuilt and used


def test_a_database_damaged_while_open_is_rebuilt_when_reopened(
    tmp_path: Path, hostile_tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from keysweep.config import from_mapping
    from keysweep.sweep import Pipeline

    cfg = from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "scan": {"roots": [str(hostile_tree)], "sources": ["files"], "workers": 1},
            "context": NO_IMDS,
        },
        source="test",
    )
    pipeline = Pipeline(cfg)
    try:
        assert len(pipeline.sweep(should_stop=lambda: False, full_reread_every=100).findings) == 1
        pipeline.state.close()
        (tmp_path / "state" / STATE_FILE).write_bytes(os.urandom(8192))  # another writer, a bad disk
        pipeline.reopen_state()
        assert [r.fields["file"] for r in caplog.records if r.msg == "state.corrupt"] == [  # type: ignore[attr-defined]
            str(tmp_path / "state" / STATE_FILE)
        ]
        again = pipeline.sweep(should_stop=lambda: False, full_reread_every=100)
        assert len(again.findings) == 1 and again.stats["files_scanned"] == 2  # rebuilt: everything read again
    finally:
        pipeline.close()


@pytest.mark.timeout(120)
def test_a_bad_spool_message_is_set_aside_and_the_others_are_sent(
    tmp_path: Path, hostile_tree: Path, moto_server: MotoServer
) -> None:
    queue_url = make_client("sqs").create_queue(QueueName="findings")["QueueUrl"]
    config = agent_config(tmp_path, hostile_tree, report={"queue_url": queue_url, "flush_timeout": "5s"})
    spool = tmp_path / "state" / "spool"
    spool.mkdir(parents=True, mode=0o700)
    (tmp_path / "state").chmod(0o700)
    (spool / "00000000000000000001-f-1-1-bad.msg").write_bytes(b'{"message_id": 7, "x": [')
    (spool / "00000000000000000002-f-1-2-link.msg").symlink_to("/etc/shadow")
    (spool / "00000000000000000003-f-1-3-dir.msg").mkdir()
    proc = keysweep("agent", "--config", config, "--once")
    assert proc.returncode == 1, proc.stderr
    assert sorted(e["file"] for e in events(proc) if e["event"] == "state.corrupt") == [
        str(spool / name)
        for name in (
            "00000000000000000001-f-1-1-bad.msg",
            "00000000000000000002-f-1-2-link.msg",
            "00000000000000000003-f-1-3-dir.msg",
        )
    ]
    assert len(_drain(queue_url)) == 2  # the finding and the heartbeat
    assert list(spool.glob("*.msg")) == []


# --- unexpected errors --------------------------------------------------------------------------------------


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    paths: list[Path] = []
    yield paths
    for p in paths:
        subprocess.run(["chattr", "-i", str(p)], check=False)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chattr") is None, reason="needs root and chattr")
def test_an_unexpected_error_exits_3_with_one_line_and_a_log_event(
    tmp_path: Path, hostile_tree: Path, immutable: list[Path]
) -> None:
    config = agent_config(tmp_path, hostile_tree)
    assert keysweep("agent", "--config", config, "--once").returncode == 1
    db = tmp_path / "state" / STATE_FILE
    subprocess.run(["chattr", "+i", str(db)], check=True)  # not even root may write it: EPERM, nobody's fault
    immutable.append(db)

    proc = keysweep("agent", "--config", config, "--once")
    assert proc.returncode == 3
    lines = proc.stderr.decode().splitlines()
    assert lines == [
        "keysweep: internal error: PermissionError: [Errno 1] Operation not permitted: "
        f"'{db}' (run with --debug for the traceback)"
    ]
    [fatal] = [e for e in events(proc) if e["event"] == "fatal-error"]
    assert fatal["error_type"] == "PermissionError" and fatal["exit_code"] == 3 and fatal["level"] == "critical"
    assert not (tmp_path / "state" / "corrupt").exists()  # not the file's fault: nothing moved aside

    debug = keysweep("--debug", "scan", hostile_tree, "--state-dir", tmp_path / "state")
    assert debug.returncode == 3
    assert b"Traceback (most recent call last)" in debug.stderr and b"PermissionError" in debug.stderr


def test_error_descriptions_never_carry_a_secret() -> None:
    from keysweep.errors import describe

    text = describe(ValueError(f"bad line: aws_secret_access_key = {SECRET} and a token {'Ab1/' * 40}"))
    assert SECRET not in text and "Ab1/Ab1/" not in text
    assert text == "ValueError: bad line: aws_secret_access_key = [redacted] and a token [redacted]"


# --- trust in the state directory ---------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["group-writable", "world-writable", "symlink"])
def test_an_untrusted_state_directory_is_refused(tmp_path: Path, hostile_tree: Path, problem: str) -> None:
    state = tmp_path / "state"
    if problem == "symlink":
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        state.symlink_to(real)
    else:
        state.mkdir()
        state.chmod(0o770 if problem == "group-writable" else 0o1777)
        if problem == "group-writable":
            os.chown(state, -1, 65534)  # a group of other users (group root's write is accepted: see statedir)
    config = agent_config(tmp_path, hostile_tree)
    org_key = {"KEYSWEEP_FINGERPRINT_KEY": "an-organisation-key-0123"}  # no key file: only the check stops it
    for cmd, env in (
        (["scan", hostile_tree, "--state-dir", state], None),
        (["agent", "--config", config, "--once"], None),
        (["scan", hostile_tree, "--config", config, "--verify"], org_key),
    ):
        proc = keysweep(*cmd, env=env)
        assert proc.returncode == 2, proc.stderr
        [line] = proc.stderr.decode().splitlines()
        assert line.startswith(f"keysweep: error: state dir {state} ") and "refusing to use it" in line
    assert list(state.iterdir()) == []  # nothing written into it


@pytest.mark.parametrize("planted", [STATE_FILE, "spool", "sent-state.json", "status.json"])
def test_a_symlink_in_the_state_directory_is_moved_aside_never_followed(
    tmp_path: Path, hostile_tree: Path, moto_server: MotoServer, planted: str
) -> None:
    queue_url = make_client("sqs").create_queue(QueueName="findings")["QueueUrl"]
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep")
    victim.chmod(0o755)
    (victim / "precious").chmod(0o644)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / planted).symlink_to(victim if planted == "spool" else victim / "precious")
    config = agent_config(tmp_path, hostile_tree, report={"queue_url": queue_url, "flush_timeout": "5s"})
    proc = keysweep("agent", "--config", config, "--once")
    assert proc.returncode == 1, proc.stderr
    assert [e["file"] for e in events(proc) if e["event"] == "state.corrupt"] == [str(state / planted)]
    assert (victim / "precious").read_text() == "keep"
    assert sorted(p.name for p in victim.iterdir()) == ["precious"]  # nothing written through the link
    assert stat.S_IMODE((victim / "precious").stat().st_mode) == 0o644  # never chmodded through it
    assert stat.S_IMODE(victim.stat().st_mode) == 0o755
    assert not (state / planted).is_symlink()


def test_group_root_may_write_the_state_directory(tmp_path: Path, hostile_tree: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, -1, 0)
    state.chmod(0o770)  # the container image's layout: owner keysweep, group root with write
    proc = keysweep("scan", hostile_tree, "--state-dir", state)
    assert proc.returncode == 1, proc.stderr
    assert (state / STATE_FILE).exists()


def test_files_are_created_0600_and_directories_0700(
    tmp_path: Path, hostile_tree: Path, moto_server: MotoServer
) -> None:
    queue_url = make_client("sqs").create_queue(QueueName="findings")["QueueUrl"]
    config = agent_config(
        tmp_path,
        hostile_tree,
        report={"queue_url": queue_url, "flush_timeout": "5s"},
        verify={"enabled": True, "same_key_spacing": 0},
    )
    old = os.umask(0)
    try:
        assert keysweep("agent", "--config", config, "--once").returncode == 1
    finally:
        os.umask(old)
    state = tmp_path / "state"
    for p in [state, *state.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))


# --- as an unprivileged user (root runs the agent, nobody attacks) ------------------------------------------


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A directory every user can reach (pytest's own are root's, mode 0700), with a key planted in it."""
    d = Path(tempfile.mkdtemp(prefix="keysweep-shared-", dir="/tmp"))
    d.chmod(0o755)
    (d / "tree").mkdir(mode=0o755)
    (d / "tree" / "deploy.sh").write_text(CREDS)
    (d / "tree" / "deploy.sh").chmod(0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(not ROOT, reason="needs root and setpriv")
@pytest.mark.parametrize("planted", ["directory", "symlink"])
def test_a_state_directory_planted_by_another_user_is_refused(shared: Path, hostile_tree: Path, planted: str) -> None:
    shared.chmod(0o1777)  # like /tmp: anyone may create entries
    state = shared / "state"
    root_only = shared / "root-only"
    root_only.mkdir(mode=0o700)
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    cmd = ["mkdir", "-m", "0700", str(state)] if planted == "directory" else ["ln", "-s", str(root_only), str(state)]
    made = subprocess.run([*as_nobody, *cmd], capture_output=True)
    assert made.returncode == 0, made.stderr
    for args in (
        ["scan", hostile_tree, "--state-dir", state],
        ["agent", "--config", agent_config(shared, hostile_tree), "--once"],
    ):
        proc = keysweep(*args)
        assert proc.returncode == 2, proc.stderr
        [line] = proc.stderr.decode().splitlines()
        if planted == "directory":
            assert f"state dir {state} is owned by uid {state.stat().st_uid}, not by the running user" in line
        else:
            assert f"state dir {state} is a symlink; refusing to use it" in line
    assert list(root_only.iterdir()) == []  # nothing created through the link
    if planted == "directory":
        assert list(state.iterdir()) == []


@pytest.mark.skipif(not ROOT, reason="needs root and setpriv")
def test_a_planted_fingerprint_key_is_refused(tmp_path: Path, hostile_tree: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "fingerprint.key").write_bytes(b"k" * 32)
    os.chown(state / "fingerprint.key", 65534, 65534)
    (state / "fingerprint.key").chmod(0o600)
    proc = keysweep("scan", hostile_tree, "--state-dir", state)
    assert proc.returncode == 2
    assert b"fingerprint.key: owned by uid 65534" in proc.stderr and b"refusing to use it" in proc.stderr


@pytest.mark.skipif(not ROOT, reason="needs root and setpriv")
def test_a_read_only_scan_needs_no_state_directory(shared: Path) -> None:
    home = shared / "home"
    home.mkdir(mode=0o755)  # root's: nobody cannot write here
    tree = shared / "tree"
    proc = keysweep("scan", tree, "--format", "json", user="nobody", env={"HOME": str(home), "XDG_STATE_HOME": ""})
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["findings"]) == 1 and doc["summary"]["fingerprint_key"] == "per-run"
    assert b"keysweep: fingerprint_key: per-run" in proc.stderr
    assert list(home.iterdir()) == []
    # each run has its own key: the same key is not matched across runs
    again = json.loads(keysweep("scan", tree, "--format", "json", user="nobody", env={"HOME": str(home)}).stdout)
    assert again["findings"][0]["fingerprint"] != doc["findings"][0]["fingerprint"]


# --- the scan's own state and its output file ---------------------------------------------------------------


def test_scan_never_reports_its_own_state_directory(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "deploy.sh").write_text(CREDS)
    counts = []
    for _ in range(3):
        proc = keysweep("scan", tree, "--state-dir", tree / ".keysweep", "--format", "json")
        assert proc.returncode == 1, proc.stderr
        doc = json.loads(proc.stdout)
        counts.append(len(doc["findings"]))
        assert all(".keysweep" not in f["location"]["path"] for f in doc["findings"])
    assert counts == [1, 1, 1]
    # relative paths too
    rel = subprocess.run(
        [sys.executable, "-m", "keysweep", "scan", "tree", "--state-dir", "tree/.keysweep", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert rel.returncode == 1 and len(json.loads(rel.stdout)["findings"]) == 1


def test_output_replaces_a_symlink_and_never_keeps_a_wider_mode(tmp_path: Path, hostile_tree: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep")
    target.chmod(0o644)
    link = tmp_path / "report.json"
    link.symlink_to(target)
    proc = keysweep("scan", hostile_tree, "--output", link)
    assert proc.returncode == 1, proc.stderr
    assert target.read_text() == "keep" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert not link.is_symlink() and stat.S_IMODE(link.stat().st_mode) == 0o600
    assert len(json.loads(link.read_text())["findings"]) == 1

    wide = tmp_path / "wide.json"
    wide.write_text("old")
    wide.chmod(0o666)
    assert keysweep("scan", hostile_tree, "--output", wide).returncode == 1
    assert stat.S_IMODE(wide.stat().st_mode) == 0o600 and json.loads(wide.read_text())["findings"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left

    missing = keysweep("scan", hostile_tree, "--output", tmp_path / "no" / "such" / "dir.json")
    assert missing.returncode == 2 and b"--output" in missing.stderr


def test_status_never_reads_through_a_link(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"pid": 1, "findings": 4242, "state": "idle"}))
    (state / "status.json").symlink_to(elsewhere)
    proc = keysweep("status", "--state-dir", state, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"errors": {"status_file_unreadable": 1}}
    assert (state / "status.json").is_symlink()  # a viewer reports it and moves nothing


def test_corrupt_keeps_only_the_newest_files(tmp_path: Path) -> None:
    from keysweep import statedir

    state = statedir.prepare(tmp_path / "state")
    for i in range(statedir.CORRUPT_KEEP + 5):
        bad = state / "sent-state.json"
        bad.write_text(f"garbage {i}")
        assert statedir.load_json(state, bad, dict) is None
    kept = sorted(p.read_text() for p in (state / "corrupt").iterdir())
    assert len(kept) == statedir.CORRUPT_KEEP
    assert "garbage 0" not in kept and f"garbage {statedir.CORRUPT_KEEP + 4}" in kept
