"""A small reverse proxy that forwards every request to an upstream HTTP server and records what it saw.

Placed between keysweep and moto (through AWS_ENDPOINT_URL_STS), it lets a test assert what keysweep sent:
which key ids appeared in Authorization headers, the User-Agent, and how many requests there were.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.support.loopback import LoopbackServer, QuietHandler, pass_back, send_on


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request arrived


Rewrite = Callable[[Recorded, bytes], bytes]  # (request, upstream response body) -> body sent back


class RecordingProxy(LoopbackServer):
    def __init__(self, upstream: str, rewrite: Rewrite | None = None) -> None:
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(QuietHandler):
            def _forward(self) -> None:
                body = self.read_body()
                seen = Recorded(self.command, self.path, dict(self.headers.items()), body, time.monotonic())
                with proxy._lock:
                    proxy.requests.append(seen)
                answer = send_on(self, upstream, body, timeout=30)
                pass_back(self, answer, None if rewrite is None else rewrite(seen, answer.data))

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward  # noqa: N815 - http.server naming

        super().__init__(Handler)

    def snapshot(self) -> list[Recorded]:
        with self._lock:
            return list(self.requests)

    def authorization_headers(self) -> list[str]:
        return [r.headers.get("Authorization", "") for r in self.snapshot()]


def recording_proxy(upstream: str, rewrite: Rewrite | None = None) -> RecordingProxy:
    """Use as ``with recording_proxy(...) as proxy``. ``rewrite`` lets a test add to an upstream answer what the
    emulator does not implement."""
    return RecordingProxy(upstream, rewrite)
