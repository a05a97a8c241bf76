"""A scripted STS endpoint over real HTTP: answers each request with the next canned reply and counts requests.

Used where moto cannot produce an answer (root keys, expired tokens, throttling, 5xx, a proxy's HTML page).
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

_ERROR_XML = (
    '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
    "<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
    "<RequestId>0d1c2b3a-0000-4000-8000-000000000000</RequestId></ErrorResponse>"
)

_IDENTITY_XML = (
    '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
    "<GetCallerIdentityResult><Arn>{arn}</Arn><UserId>{user_id}</UserId><Account>{account}</Account>"
    "</GetCallerIdentityResult>"
    "<ResponseMetadata><RequestId>0d1c2b3a-0000-4000-8000-000000000001</RequestId></ResponseMetadata>"
    "</GetCallerIdentityResponse>"
)


@dataclass(frozen=True)
class Reply:
    status: int
    body: str
    content_type: str = "text/xml"
    delay: float = 0.0  # seconds to wait before answering (read timeouts)


def sts_error(code: str, message: str = "error", status: int = 403) -> Reply:
    return Reply(status, _ERROR_XML.format(code=code, message=message))


def identity(account: str, arn: str, user_id: str) -> Reply:
    return Reply(200, _IDENTITY_XML.format(account=account, arn=arn, user_id=user_id))


def html(status: int, text: str = "Access denied by policy") -> Reply:
    return Reply(status, f"<html><head><title>{status}</title></head><body><h1>{text}</h1></body></html>", "text/html")


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (read timeout) leaves a broken pipe: expected here


class StsStub:
    """Answers replies[i] to the i-th request (the last reply repeats) and records every request's headers."""

    def __init__(self, replies: Sequence[Reply]) -> None:
        if not replies:
            raise ValueError("at least one reply")
        self.replies = list(replies)
        self.requests: list[dict[str, str]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each request
        self._lock = threading.Lock()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with stub._lock:
                    stub.requests.append(dict(self.headers))
                    stub.arrivals.append(time.monotonic())
                    reply = stub.replies[min(len(stub.requests) - 1, len(stub.replies) - 1)]
                if reply.delay:
                    time.sleep(reply.delay)
                data = reply.body.encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def running_stub(*replies: Reply) -> Iterator[StsStub]:
    stub = StsStub(replies)
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()
