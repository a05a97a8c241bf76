"""The agent as a real process on a real tree: watched and periodic detection, verification against moto's STS,
delivery to moto's SQS, SIGHUP reloads (broken and good), SIGTERM, and kill -9 in the middle of a sweep."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import isal
import pytest
import yaml
from keysweep.aws import make_client

from tests.support.moto_server import MotoServer

try:
    import hyperscan
except ImportError:  # no wheel for this machine (the test extra installs it on x86-64 only)
    hyperscan = None

LOOPBACK_IMDS = {"imds_endpoint": "http://127.0.0.1:9", "imds_timeout": "200ms", "ecs_timeout": "200ms"}


class AgentProcess:
    """``python -m keysweep agent`` with its JSON log lines collected as they come."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keysweep", "agent", "--config", str(config), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self.events.append(json.loads(line))  # every stdout line is one JSON object
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20.0, *, after: int = 0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events[after:]:
                    if pred(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
                    raise AssertionError(f"no matching log event; got {[e['event'] for e in self.events]} {err}")
                self._cond.wait(min(left, 0.2))

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def named(self, event: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e["event"] == event]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return rc


@pytest.fixture
def agents() -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(config: Path, *extra: str) -> AgentProcess:
        a = AgentProcess(config, *extra)
        started.append(a)
        return a

    yield start
    for a in started:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait(timeout=10)


def _write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _base_config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "scan": {"roots": [str(tmp_path / "tree")], "sources": ["files"]},
        "schedule": {"interval": "2s", "splay": 0},
        "watch": {"enabled": False},
        "resources": {"nice": 19},
        "context": LOOPBACK_IMDS,
    }
    cfg.update(sections)
    return cfg


def _creds(key_id: str, secret: str) -> str:
    return f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\n"


def _moto_key(user: str) -> tuple[str, str]:
    iam = make_client("iam")
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def _paced_tree(tree: Path) -> None:
    """2400 files of 40 KB of log text: under a 1 % CPU budget a sweep of it takes several seconds (the
    capitals matter: text without the bytes keys and their encodings start with costs the detector next to
    nothing)."""
    for d in range(40):
        sub = tree / f"dir{d:02d}"
        sub.mkdir(parents=True)
        for f in range(60):
            line = f"2025-11-01T00:{d:02d}:{f:02d}Z INFO Fetched Object {f} from Bucket {d} for Account Queue\n"
            (sub / f"file{f}.log").write_bytes(line.encode().ljust(80, b".") * 512)


def _wait_committed(state_db: Path, n: int, timeout: float = 120) -> int:
    """Files the state has committed, once at least ``n`` (the sweep is under way)."""
    committed = 0
    deadline = time.monotonic() + timeout
    while committed < n and time.monotonic() < deadline:
        time.sleep(0.2)
        if state_db.exists():
            with sqlite3.connect(f"file:{state_db}?mode=ro", uri=True) as db:
                committed = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    return committed


def _state_blob(state: Path) -> bytes:
    return b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file())


@pytest.mark.timeout(180)
def test_watched_and_swept_keys_are_verified_and_delivered(
    tmp_path: Path, moto_server: MotoServer, agents: Callable[..., AgentProcess]
) -> None:
    sqs = make_client("sqs")
    queue_url = sqs.create_queue(QueueName="keysweep-findings")["QueueUrl"]
    watched_id, watched_secret = _moto_key("alice")
    swept_id, swept_secret = _moto_key("bob")

    tree = tmp_path / "tree"
    (tree / "app" / "conf").mkdir(parents=True)
    (tree / "srv").mkdir()
    for i in range(20):
        (tree / "srv" / f"data{i}.txt").write_text("nothing here\n" * 20)
    prom = tmp_path / "keysweep.prom"
    config = _write_config(
        tmp_path / "agent.yaml",
        _base_config(
            tmp_path,
            watch={
                "enabled": True,
                "homes": False,
                "system_paths": False,
                "paths": [str(tree / "app")],
                "debounce": "200ms",
            },
            verify={"enabled": True, "same_key_spacing": 0},
            report={"queue_url": queue_url, "flush_timeout": "5s"},
            status={"prometheus_file": str(prom)},
        ),
    )
    agent = agents(config)
    agent.wait_for(lambda e: e["event"] == "sweep.finished")

    mark = agent.mark()
    (tree / "app" / "conf" / "app.env").write_text(_creds(watched_id, watched_secret))
    hit = agent.wait_for(lambda e: e["event"] == "finding" and e["key_id"] == watched_id, timeout=10, after=mark)
    assert hit["source"] == "watch"  # found by the watcher, not by waiting for a sweep
    assert hit["verification"] == "live"
    assert hit["location"]["path"] == str(tree / "app" / "conf" / "app.env")

    (tree / "srv" / "deploy.sh").write_text(_creds(swept_id, swept_secret))
    swept = agent.wait_for(lambda e: e["event"] == "finding" and e["key_id"] == swept_id, timeout=30)
    assert swept["source"] == "sweep" and swept["verification"] == "live"
    # the next sweeps answer unchanged files from the state
    later = agent.wait_for(lambda e: e["event"] == "sweep.finished" and e["files_cached"] >= 22, timeout=30)
    assert later["files_scanned"] == 0
    assert later["findings_by_status"] == {"live": 2}

    assert agent.stop(signal.SIGTERM) == 0
    stopped = agent.named("agent.stopped")[-1]
    assert stopped["spool_depth"] == 0  # flushed

    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        if not got.get("Messages"):
            break
        bodies += [m["Body"] for m in got["Messages"]]
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got["Messages"])],
        )
    docs = [json.loads(b) for b in bodies]
    findings = [d["finding"] for d in docs if d.get("type") == "finding"]
    assert sorted(f["key_id"] for f in findings) == sorted([watched_id, swept_id])  # one message each
    assert {f["verification"]["status"] for f in findings} == {"live"}
    assert any(d.get("type") == "heartbeat" for d in docs)

    # no secret on any channel: log lines, stderr, SQS bodies, state directory, status, prometheus file
    assert agent.proc.stderr is not None
    outputs = "".join(agent.lines) + agent.proc.stderr.read() + "".join(bodies) + prom.read_text()
    blob = _state_blob(tmp_path / "state")
    for secret in (watched_secret, swept_secret):
        assert secret not in outputs
        assert secret.encode() not in blob

    status = subprocess.run(
        [sys.executable, "-m", "keysweep", "status", "--state-dir", str(tmp_path / "state"), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["state"] == "stopped"
    assert st["findings_by_status"] == {"live": 2}
    assert st["spool_depth"] == 0
    assert st["watch"]["watched"][0]["path"] == str(tree / "app")
    assert st["last_sweep"]["files_cached"] >= 22
    assert 'keysweep_findings{status="live"} 2.0' in prom.read_text()
    prom2 = tmp_path / "again.prom"
    text = subprocess.run(
        [
            sys.executable,
            "-m",
            "keysweep",
            "status",
            "--state-dir",
            str(tmp_path / "state"),
            "--prometheus-file",
            str(prom2),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert text.returncode == 0, text.stderr
    assert "findings:         2 (live 2)" in text.stdout
    assert "spool depth:      0" in text.stdout
    assert "1 paths watched" in text.stdout
    assert "keysweep_spool_depth 0.0" in prom2.read_text()
    assert 'keysweep_findings{status="live"} 2.0' in prom2.read_text()


@pytest.mark.timeout(180)
def test_sighup_reloads_and_survives_a_broken_config(tmp_path: Path, agents: Callable[..., AgentProcess]) -> None:
    tree = tmp_path / "tree"
    (tree / "vendored").mkdir(parents=True)
    (tree / "etc").mkdir()
    (tree / "vendored" / "fixture.env").write_text(
        _creds("AKIAQWERTYUIOPASDFGH", "Zk3pQ8vR2mN7tY4wX9cB6dF1gH5jK0lM3nP8qR2s")
    )
    (tree / "etc" / "plain.conf").write_text("nothing\n")
    good = _base_config(tmp_path)
    config = _write_config(tmp_path / "agent.yaml", good)
    agent = agents(config)
    first = agent.wait_for(lambda e: e["event"] == "sweep.finished")
    assert first["findings"] == 1
    # the native passes this host runs, as the scan's summary names them (the test extra installs both)
    assert first["detection_gate"] == (f"hyperscan {hyperscan.__version__}" if hyperscan else "none")
    assert first["inflate"] == f"isal {isal.__version__}"

    config.write_text("scan:\n  max_file_size: enormous\n  rootz: [/]\n")
    mark = agent.mark()
    agent.proc.send_signal(signal.SIGHUP)
    failed = agent.wait_for(lambda e: e["event"] == "config.reload_failed", after=mark)
    assert "scan.max_file_size" in failed["error"] and "'enormous'" in failed["error"]
    assert "did you mean 'roots'" in failed["error"]
    # still alive and sweeping on the old configuration
    again = agent.wait_for(lambda e: e["event"] == "sweep.finished", after=mark)
    assert again["findings"] == 1 and again["files_scanned"] == 0
    assert agent.proc.poll() is None

    # a rules change: an extra rules directory that ignores the vendored tree
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "local.yaml").write_text("ignore:\n  paths:\n    - '**/vendored/**'\n")
    good["scan"]["rules_dirs"] = [str(rules)]
    _write_config(config, good)
    mark = agent.mark()
    agent.proc.send_signal(signal.SIGHUP)
    reloaded = agent.wait_for(lambda e: e["event"] == "config.reloaded", after=mark)
    assert reloaded["state_invalidated"] is True
    agent.wait_for(lambda e: e["event"] == "state.invalidated", after=mark)
    after = agent.wait_for(lambda e: e["event"] == "sweep.finished", after=mark)
    assert after["files_scanned"] == 1  # everything re-read under the new rules (the vendored file is ignored)
    assert after["files_cached"] == 0
    assert after["findings"] == 0
    assert after["skipped"].get("ignored-path") == 1
    assert agent.stop(signal.SIGTERM) == 0


@pytest.mark.timeout(240)
def test_kill_9_mid_sweep_then_restart_resumes(tmp_path: Path, agents: Callable[..., AgentProcess]) -> None:
    tree = tmp_path / "tree"
    keys = ["AKIAQWERTYUIOPASDFGH", "AKIAZXCVBNMQWERTYUIO", "AKIAPLMOKNIJBUHVYGCT"]
    _paced_tree(tree)
    for i, k in enumerate(keys):
        (tree / f"dir{i * 15:02d}" / "secrets.env").write_text(_creds(k, f"Zk3pQ8vR2mN7tY4wX9cB6dF1gH5jK0lM3nP8qR2{i}"))
    total = 40 * 60 + 3
    slow = _base_config(
        tmp_path, schedule={"interval": "1h", "splay": 0}, resources={"max_cpu_percent": 1}
    )  # paced: the sweep takes a while
    config = _write_config(tmp_path / "slow.yaml", slow)
    state_db = tmp_path / "state" / "state.sqlite"

    agent = agents(config)
    agent.wait_for(lambda e: e["event"] == "sweep.started")
    committed = _wait_committed(state_db, 50)
    assert not agent.named("sweep.finished"), "the paced sweep finished before it could be killed"
    assert 50 <= committed < total
    assert agent.stop(signal.SIGKILL) == -signal.SIGKILL

    fast = _write_config(tmp_path / "fast.yaml", _base_config(tmp_path))
    resumed = agents(fast, "--once")
    assert resumed.stop(0, timeout=120) == 1  # exits by itself: keys found
    start = resumed.named("sweep.started")[-1]
    assert start["resumed"] is True and start["full_reread"] is True
    done = resumed.named("sweep.finished")[-1]
    assert done["files_cached"] >= committed  # what was read before the kill is not read again
    assert done["files_scanned"] + done["files_cached"] == total
    assert done["findings"] == 3  # nothing lost
    assert {e["key_id"] for e in resumed.named("finding")} == set(keys)

    again = agents(fast, "--once")
    assert again.stop(0, timeout=120) == 1
    last = again.named("sweep.finished")[-1]
    assert last["files_scanned"] == 0 and last["files_cached"] == total and last["findings"] == 3


@pytest.mark.timeout(120)
def test_sigterm_mid_sweep_exits_cleanly_and_next_start_resumes(
    tmp_path: Path, agents: Callable[..., AgentProcess]
) -> None:
    tree = tmp_path / "tree"
    _paced_tree(tree)
    config = _write_config(
        tmp_path / "agent.yaml",
        _base_config(tmp_path, schedule={"interval": "1h", "splay": 0}, resources={"max_cpu_percent": 1}),
    )
    agent = agents(config)
    agent.wait_for(lambda e: e["event"] == "sweep.started")
    _wait_committed(tmp_path / "state" / "state.sqlite", 50)
    assert not agent.named("sweep.finished"), "the paced sweep finished before it could be stopped"
    assert agent.stop(signal.SIGTERM) == 0
    done = agent.named("sweep.finished")[-1]
    assert done["interrupted"] is True
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["state"] == "stopped" and status["last_sweep"]["interrupted"] is True

    nxt = agents(config)
    start = nxt.wait_for(lambda e: e["event"] == "sweep.started", timeout=30)
    assert start["resumed"] is True  # an interrupted sweep is taken up at once, not after the interval
    assert nxt.stop(signal.SIGTERM) == 0
    assert os.path.exists(tmp_path / "state" / "state.sqlite")


@pytest.mark.timeout(120)
def test_state_dir_inside_the_swept_tree_is_never_read(tmp_path: Path, agents: Callable[..., AgentProcess]) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.txt").write_text("nothing\n")
    cfg = _base_config(tmp_path)
    cfg["scan"]["roots"] = [str(tmp_path)]  # the state directory lives under the root
    config = _write_config(tmp_path / "agent.yaml", cfg)
    for expected_scanned in (2, 0):  # a.txt and agent.yaml; then nothing changed outside the state
        run = agents(config, "--once")
        assert run.stop(0, timeout=60) == 0
        done = run.named("sweep.finished")[-1]
        assert done["files_scanned"] == expected_scanned
        assert done["skipped"].get("excluded") == 1


@pytest.mark.timeout(60)
def test_priority_is_lowered_and_cpu_budget_paces() -> None:
    script = (
        "import os, time, psutil\n"
        "from keysweep.governance import CpuPacer, apply_priority\n"
        "r = apply_priority(19, True)\n"
        "p = CpuPacer(10, period=0.02)\n"
        "end = time.process_time() + 0.3\n"
        "while time.process_time() < end:\n"
        "    sum(range(1000)); p.tick()\n"
        "print(r.nice, r.ionice, os.nice(0), int(psutil.Process().ionice().ioclass), p.slept > 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    nice, ionice, actual_nice, ioclass, paced = out.stdout.split()
    assert nice == actual_nice == "19"
    assert ionice == "idle" and ioclass == "3"  # IOPRIO_CLASS_IDLE
    assert paced == "True"  # 0.3 s of CPU under a 10 % budget made the pacer sleep
