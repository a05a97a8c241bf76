"""Docker helpers for the image and distribution tests: is an engine there, run a container, read its logs."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
NO_ENGINE = (
    "no Docker engine answers (root: scripts/docker-engine.sh starts one; `make image-test` does it and "
    "runs these tests)"
)


def engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        out = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def docker(
    *args: str,
    check: bool = True,
    timeout: float = 300,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and out.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)}: exit {out.returncode}\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
        )
    return out


def image_exists(image: str) -> bool:
    return docker("image", "inspect", image, check=False).returncode == 0


@contextmanager
def container(*run_args: str) -> Iterator[str]:
    """A detached container (``docker run -d NAME-less ARGS``), removed afterwards whatever happened."""
    name = f"keysweep-test-{uuid.uuid4().hex[:10]}"
    docker("run", "-d", "--name", name, *run_args)
    try:
        yield name
    finally:
        docker("rm", "-f", "-v", name, check=False)


def logs(name: str) -> str:
    out = docker("logs", name, check=False)
    return out.stdout + out.stderr


def json_events(name: str) -> list[dict]:
    events = []
    for line in logs(name).splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return events


def health(name: str) -> str:
    return docker("inspect", "--format", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", name).stdout.strip()


def wait_for(what: str, condition: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f} s\n{describe()}")
