"""Shared fixtures: a moto server over real HTTP and an environment that points boto3 at it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support.moto_server import MotoServer, running_moto

# The tests never reach real AWS, whatever the developer's shell holds.
for _name in list(os.environ):
    if _name.startswith("AWS_") or _name.startswith("KEYSWEEP_"):
        del os.environ[_name]
# ...nor the link-local instance metadata address (SDK credential look-ups, host context detection)
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

# Property tests check behaviour, not speed: on a loaded 2-core CI machine hypothesis' 200 ms deadline and its
# too-slow health check fail examples that are merely slow (speed goals live in bench/).
settings.register_profile("keysweep", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("keysweep")


@pytest.fixture(scope="session")
def moto_server_session() -> Iterator[MotoServer]:
    with running_moto() as server:
        yield server


@pytest.fixture
def moto_server(moto_server_session: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A clean moto server (auth off) with boto3 pointed at it through the standard AWS_ENDPOINT_URL."""
    moto_server_session.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server_session.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return moto_server_session


@pytest.fixture
def emulator(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto with the verification tests' IAM users, auth on, and STS reached through a recording proxy."""
    from tests.support.verify_findings import sts_emulator

    with sts_emulator(moto_server, monkeypatch) as emu:
        yield emu


@pytest.fixture
def shared_tree() -> Iterator[Path]:
    """A tree outside pytest's private tmp dir (0700), so an unprivileged user (setpriv nobody) can reach it."""
    d = Path(tempfile.mkdtemp(prefix="keysweep-shared-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        for p in [d, *d.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        shutil.rmtree(d)
