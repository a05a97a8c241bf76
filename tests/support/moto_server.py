"""Runs moto's server mode on a loopback port: the real HTTP AWS emulator the tests talk to."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return
            except OSError:
                if self._proc.poll() is not None:
                    raise RuntimeError("moto server exited at start") from None
                time.sleep(0.1)
        raise RuntimeError("moto server did not start within 30 s")

    def stop(self) -> None:
        if self._proc:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def _post(self, path: str, body: bytes = b"", content_type: str = "text/plain") -> None:
        req = urllib.request.Request(
            f"{self.endpoint}{path}", data=body, method="POST", headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(req, timeout=10):
            pass

    def reset(self) -> None:
        """Forget every resource and turn authentication off (any key works, as moto's default)."""
        self._post("/moto-api/reset")
        self._post("/moto-api/reset-auth", str(10**9).encode())

    def enable_auth(self, unauthenticated_actions: int = 0) -> None:
        """Turn authentication on: from now on only real keys of the emulator's IAM users authenticate."""
        self._post("/moto-api/reset-auth", str(unauthenticated_actions).encode())


@contextmanager
def running_moto() -> Iterator[MotoServer]:
    server = MotoServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
