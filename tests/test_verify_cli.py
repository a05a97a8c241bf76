"""`keysweep scan --verify` as a user runs it: a real process, moto behind a recording proxy, planted files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from keysweep import __version__

from tests.support.cli import run_keysweep
from tests.support.sts_stub import Reply, running_stub, sts_error
from tests.support.verify_findings import (
    CANARY_KEY,
    CANARY_SECRET,
    MADE_UP_KEY,
    MADE_UP_SECRET,
    MOTO_ACCOUNT,
    Emulator,
    plant,
)


def keysweep(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_keysweep("scan", *args, env={**os.environ, **(env_extra or {})}, timeout=120)


def records(stdout: str) -> list[dict]:
    doc = json.loads(stdout)
    return doc["findings"] if isinstance(doc, dict) else doc


@pytest.mark.timeout(180)
def test_scan_verify_end_to_end_then_cached(emulator: Emulator, tmp_path: Path):
    state = tmp_path / "state"
    with running_stub(Reply(500, "")) as evil:
        tree = plant(tmp_path / "tree", emulator, evil.endpoint)[0].parent
        stray = {"AWS_PROFILE": "missing", "AWS_SESSION_TOKEN": "stray-token-of-the-operator"}

        first = keysweep("--verify", "--format", "json", "--state-dir", str(state), str(tree), env_extra=stray)
        assert first.returncode == 1, first.stderr
        requests_after_first = len(emulator.proxy.snapshot())
        second = keysweep("--verify", "--format", "json", "--state-dir", str(state), str(tree), env_extra=stray)
        assert second.returncode == 1, second.stderr
        assert evil.count == 0

    got = {(r["key_id"], Path(r["location"]["path"]).name): r["verification"] for r in records(first.stdout)}
    assert got[(emulator.alice.key_id, ".env")]["status"] == "live"
    assert got[(emulator.alice.key_id, ".env")]["arn"] == f"arn:aws:iam::{MOTO_ACCOUNT}:user/alice"
    assert got[(emulator.alice.key_id, ".env")]["account"] == MOTO_ACCOUNT
    assert got[(MADE_UP_KEY, "settings.py")]["status"] == "invalid"
    assert got[(emulator.alice.key_id, "old.ini")]["status"] == "wrong_secret"
    assert got[(CANARY_KEY, "canary.cfg")]["status"] == "canary"

    sent = emulator.proxy.snapshot()
    assert requests_after_first == len(sent) > 0  # the second run asked nothing
    assert f"({len(sent)} STS calls)" in first.stderr and "live 1" in first.stderr
    assert "(0 STS calls)" in second.stderr
    for r in sent:
        assert f"keysweep/{__version__}" in r.headers["User-Agent"]
        assert CANARY_KEY not in r.headers.get("Authorization", "")
        assert "X-Amz-Security-Token" not in r.headers

    again = {(r["key_id"], Path(r["location"]["path"]).name): r["verification"] for r in records(second.stdout)}
    assert {k: v["status"] for k, v in again.items()} == {k: v["status"] for k, v in got.items()}
    assert all(v["cached"] for k, v in again.items() if v["status"] != "canary")

    state_text = "".join(p.read_bytes().decode("latin-1") for p in state.rglob("*") if p.is_file())
    everything = first.stdout + first.stderr + second.stdout + second.stderr + state_text
    for secret in (emulator.alice.secret, MADE_UP_SECRET, CANARY_SECRET):
        assert secret not in everything


@pytest.mark.timeout(120)
def test_canary_only_scan_sends_nothing(emulator: Emulator, tmp_path: Path):
    (tmp_path / "decoy.env").write_text(f"AWS_ACCESS_KEY_ID={CANARY_KEY}\nAWS_SECRET_ACCESS_KEY={CANARY_SECRET}\n")
    out = keysweep("--verify", "--format", "jsonl", str(tmp_path / "decoy.env"))
    assert out.returncode == 1, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    statuses = [r["verification"]["status"] for r in lines if r.get("key_id") == CANARY_KEY]
    assert statuses == ["canary"]
    assert emulator.proxy.snapshot() == []


@pytest.mark.timeout(120)
def test_scan_without_verify_sends_nothing(emulator: Emulator, tmp_path: Path):
    (tmp_path / "a.env").write_text(
        f"AWS_ACCESS_KEY_ID={emulator.alice.key_id}\nAWS_SECRET_ACCESS_KEY={emulator.alice.secret}\n"
    )
    out = keysweep("--format", "json", str(tmp_path / "a.env"))
    assert out.returncode == 1, out.stderr
    assert emulator.proxy.snapshot() == []


@pytest.mark.timeout(180)
def test_endpoint_in_a_scanned_process_environment_is_ignored(emulator: Emulator, tmp_path: Path):
    with running_stub(Reply(500, "")) as evil:
        child_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_ENDPOINT_URL_STS": evil.endpoint,
            "AWS_ENDPOINT_URL": evil.endpoint,
            "AWS_ACCESS_KEY_ID": emulator.alice.key_id,
            "AWS_SECRET_ACCESS_KEY": emulator.alice.secret,
        }
        child = subprocess.Popen(["sleep", "120"], env=child_env)
        try:
            out = keysweep("--verify", "--source", "processes", "--format", "json")
        finally:
            child.kill()
            child.wait()
        assert evil.count == 0
    assert out.returncode == 1, out.stderr
    mine = [r for r in records(out.stdout) if r["location"].get("pid") == child.pid]
    assert [r["key_id"] for r in mine] == [emulator.alice.key_id]
    assert mine[0]["verification"]["status"] == "live"
    assert mine[0]["verification"]["arn"].endswith(":user/alice")
    assert emulator.alice.secret not in out.stdout + out.stderr


@pytest.mark.timeout(120)
def test_ctrl_c_during_verification_still_reports_every_finding(tmp_path: Path):
    keys = [f"AKIAQQQQRRRRSSSSTT{c}2" for c in "ABCDEF"]
    tree = tmp_path / "tree"
    tree.mkdir()
    for i, key in enumerate(keys):
        (tree / f"k{i}.env").write_text(f"AWS_ACCESS_KEY_ID={key}\nAWS_SECRET_ACCESS_KEY={MADE_UP_SECRET}\n")
    config = tmp_path / "agent.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nverify:\n  max_concurrency: 1\n  same_key_spacing: 0\n")
    with running_stub(Reply(403, sts_error("InvalidClientTokenId").body, delay=0.4)) as stub:
        env = dict(os.environ, AWS_ENDPOINT_URL_STS=stub.endpoint)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keysweep",
                "scan",
                "--verify",
                "--format",
                "json",
                "--config",
                str(config),
                str(tree),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        while stub.count < 1 and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        asked = stub.count
    assert proc.returncode == 1, stderr
    statuses = {r["key_id"]: r["verification"] for r in records(stdout)}
    assert set(statuses) == set(keys)
    assert asked < len(keys)
    assert {v["reason"] for v in statuses.values() if v["status"] == "unknown"} == {"interrupted"}
