"""Agent speed: first sweep vs re-sweep of an unchanged tree, watch latency, RSS during a sweep, idle CPU.

Targets (issue 5): re-sweep of an unchanged tree at least 20x faster than the first sweep; watch latency (file
written -> finding verified, spooled and sent) under 2 s; agent RSS under 80 MB during a sweep; idle CPU near zero
between sweeps. Every number comes from real ``python -m keysweep agent`` processes; SQS and STS are moto's server
on loopback. Usage: ``python bench/resweep.py [--mb 1024] [--files 20000] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.moto_server import running_moto  # noqa: E402  (the same emulator the tests use)

PLANTED = [
    ("AKIAQWERTYUIOPASDFGH", "Zk3pQ8vR2mN7tY4wX9cB6dF1gH5jK0lM3nP8qR2s"),
    ("AKIAZXCVBNMQWERTYUIO", "Qw7eR4tY1uI8oP5aS2dF9gH6jK3lZ0xC7vB4nM1q"),
]


def generate_tree(root: Path, total_mb: int, files: int, seed: int = 1) -> int:
    """A host-like tree: nested directories of text logs, configs and binary blobs, with a few planted keys."""
    try:  # the scan benchmark's corpus, when present, is the realistic one
        from bench.corpus import generate  # type: ignore[import-not-found]

        return int(generate(root, total_mb=total_mb, files=files, seed=seed))
    except (ImportError, TypeError):
        pass
    rng = random.Random(seed)
    avg = total_mb * 1024 * 1024 // files
    blob = base64.b64encode(rng.randbytes(4 * 1024 * 1024))
    words = b"INFO request served user=%d path=/api/v1/items status=200 latency_ms=12 host=web-3\n"
    written = 0
    dirs = max(1, files // 12)  # about a dozen files per directory, two levels deep
    for i in range(files):
        j = i % dirs
        d = root / f"srv{j % 23}" / f"app{j}"
        d.mkdir(parents=True, exist_ok=True)
        size = max(64, int(rng.expovariate(1 / avg)))
        kind = i % 10
        if kind < 6:
            line = words % i
            body = line * (size // len(line) + 1)
        elif kind < 9:
            start = rng.randrange(0, len(blob) // 2)
            body = blob[start : start + size] * (size // (len(blob) // 2) + 1)
        else:
            body = rng.randbytes(min(size, 1 << 20))
        (d / f"file{i}.{['log', 'conf', 'bin'][min(kind // 4, 2)]}").write_bytes(body[:size])
        written += size
    for n, (key_id, secret) in enumerate(PLANTED):
        (root / f"srv{n}" / "deploy.env").write_text(f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\n")
    return written


def evict(tree: Path) -> None:
    """Drop the tree's pages from the page cache (only this tree's: POSIX_FADV_DONTNEED per file), so the next
    sweep reads from disk as a first sweep on a real host does."""
    os.sync()
    for dirpath, _dirs, names in os.walk(tree):
        for name in names:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _config(path: Path, state: Path, tree: Path, **extra: Any) -> Path:
    cfg: dict[str, Any] = {
        "state_dir": str(state),
        "scan": {"roots": [str(tree)], "sources": ["files"], "workers": 1},
        "schedule": {"interval": "1h", "splay": 0},
        "watch": {"enabled": False},
        "context": {"imds_endpoint": "http://127.0.0.1:9", "imds_timeout": "200ms"},
    }
    cfg.update(extra)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_once(config: Path) -> dict[str, Any]:
    """One ``agent --once``: wall time, the sweep's own duration and stats, and the process's peak RSS."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "keysweep", "agent", "--once", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    out = proc.stdout.read() if proc.stdout else b""
    _, _status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    finished = [json.loads(x) for x in out.splitlines() if b'"sweep.finished"' in x][-1]
    return {
        "wall_s": wall,
        "sweep_s": finished["duration_s"],
        "files_scanned": finished["files_scanned"],
        "files_cached": finished["files_cached"],
        "bytes_scanned": finished["bytes_scanned"],
        "findings": finished["findings"],
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


class Daemon:
    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keysweep", "agent", "--config", str(config)], stdout=subprocess.PIPE, text=True
        )
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.events.append((time.time(), json.loads(line)))
                self._cond.notify_all()

    def wait(self, pred: Any, timeout: float = 120.0, after: int = 0) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ts, e in self.events[after:]:
                    if pred(e):
                        return ts, e
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"agent did not log the expected event (exit code {self.proc.poll()})")
                self._cond.wait(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def watch_latency_and_idle(work: Path, tree: Path, rounds: int, idle_s: float) -> dict[str, Any]:
    with running_moto() as moto:
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": moto.endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            }
        )
        from keysweep.aws import make_client

        queue = make_client("sqs").create_queue(QueueName="bench")["QueueUrl"]
        iam = make_client("iam")
        hot = tree / "hot" / "app"
        hot.mkdir(parents=True, exist_ok=True)
        config = _config(
            work / "daemon.yaml",
            work / "state",
            tree,
            watch={"enabled": True, "homes": False, "system_paths": False, "paths": [str(hot)]},
            verify={"enabled": True, "same_key_spacing": 0},
            report={"queue_url": queue},
        )
        daemon = Daemon(config)
        try:
            # the --once runs swept just now: the daemon keeps their rhythm and only watches until the interval
            daemon.wait(lambda e: e["event"] == "watch.started", timeout=120)
            # idle: nothing to do until the next interval
            p = psutil.Process(daemon.proc.pid)
            time.sleep(1.0)
            c0, t0 = sum(p.cpu_times()[:2]), time.monotonic()
            time.sleep(idle_s)
            idle_pct = 100 * (sum(p.cpu_times()[:2]) - c0) / (time.monotonic() - t0)
            idle_rss = p.memory_info().rss / 1048576
            latencies = []
            for i in range(rounds):
                key = iam.create_access_key(UserName=_user(iam, f"bench{i}"))["AccessKey"]
                mark = len(daemon.events)
                target = hot / f"app{i}.env"
                t_write = time.time()
                target.write_text(
                    f"AWS_ACCESS_KEY_ID={key['AccessKeyId']}\nAWS_SECRET_ACCESS_KEY={key['SecretAccessKey']}\n"
                )
                ts, e = daemon.wait(
                    lambda e, k=key["AccessKeyId"]: e["event"] == "finding" and e["key_id"] == k, after=mark, timeout=30
                )
                latencies.append(ts - t_write)
                assert e["verification"] == "live"
                time.sleep(0.3)
        finally:
            daemon.stop()
    return {
        "watch_latency_median_s": statistics.median(latencies),
        "watch_latency_max_s": max(latencies),
        "idle_cpu_percent": idle_pct,
        "idle_rss_mb": idle_rss,
    }


def _user(iam: Any, name: str) -> str:
    iam.create_user(UserName=name)
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=1024, help="size of the generated tree in MiB")
    ap.add_argument("--files", type=int, default=20000, help="number of files")
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--rounds", type=int, default=10, help="watch latency samples")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement")
    args = ap.parse_args()

    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="keysweep-resweep-"))
    tree = work / "tree"
    try:
        t0 = time.monotonic()
        size = generate_tree(tree, args.mb, args.files) if not tree.exists() else 0
        print(f"tree: {tree} ({size / 1048576:.0f} MiB generated in {time.monotonic() - t0:.1f}s)", flush=True)
        shutil.rmtree(work / "state", ignore_errors=True)
        config = _config(work / "once.yaml", work / "state", tree)
        first = run_once(config)
        again = run_once(config)
        print(f"first sweep:  {first}", flush=True)
        print(f"re-sweep:     {again}", flush=True)
        ratio_sweep = first["sweep_s"] / max(again["sweep_s"], 1e-6)
        ratio_wall = first["wall_s"] / max(again["wall_s"], 1e-6)
        rate = first["bytes_scanned"] / 1048576 / max(first["sweep_s"], 1e-6)
        print(
            f"first sweep {first['sweep_s']:.2f}s ({rate:.0f} MiB/s, {first['files_scanned']} files), "
            f"re-sweep {again['sweep_s']:.3f}s ({again['files_cached']} files from state): "
            f"{ratio_sweep:.1f}x faster (whole process incl. start-up: {ratio_wall:.1f}x) [target >= 20x]"
        )
        evict(tree)
        cold_cfg = _config(work / "cold.yaml", work / "state-cold", tree)
        cold = run_once(cold_cfg)
        cold_again = run_once(cold_cfg)
        print(f"cold first sweep: {cold}", flush=True)
        print(
            f"cold-cache first sweep {cold['sweep_s']:.2f}s "
            f"({cold['bytes_scanned'] / 1048576 / max(cold['sweep_s'], 1e-6):.0f} MiB/s), re-sweep "
            f"{cold_again['sweep_s']:.3f}s: {cold['sweep_s'] / max(cold_again['sweep_s'], 1e-6):.1f}x faster"
        )
        print(
            f"peak RSS: first sweep {max(first['peak_rss_mb'], cold['peak_rss_mb']):.1f} MB, "
            f"re-sweep {again['peak_rss_mb']:.1f} MB "
            f"[target < 80 MB]",
            flush=True,
        )
        live = watch_latency_and_idle(work, tree, args.rounds, args.idle)
        print(
            f"watch latency (write -> verified, spooled and sent to SQS): median "
            f"{live['watch_latency_median_s']:.3f}s, max {live['watch_latency_max_s']:.3f}s [target < 2 s]"
        )
        print(
            f"idle between sweeps: {live['idle_cpu_percent']:.2f}% CPU over {args.idle:.0f}s, "
            f"RSS {live['idle_rss_mb']:.1f} MB [target: near zero]"
        )
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
