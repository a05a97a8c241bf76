"""The one base of the tests' scripted HTTP servers and proxies: a quiet handler, a loopback server run in a
thread for the length of a ``with`` block, and forwarding a request to an upstream (the emulator) unchanged.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

# not forwarded either way; Content-Length is set again from the body actually sent
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
}
# set by the proxy's own send_response: passing the upstream's too would repeat them
_OWN_HEADERS = {"server", "date"}


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that logs nothing and has helpers to read the body and send a complete answer."""

    protocol_version = "HTTP/1.1"

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(
        self,
        status: int,
        data: bytes = b"",
        content_type: str | None = "text/plain",
        headers: Iterable[tuple[str, str]] = (),
        reason: str | None = None,
    ) -> None:
        self.send_response(status, reason)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass

    @property
    def owner(self) -> LoopbackServer:
        """The ``LoopbackServer`` this request came to."""
        return self.server.owner  # type: ignore[attr-defined]


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (read timeout) leaves a broken pipe: expected where a test delays answers


_S = TypeVar("_S", bound="LoopbackServer")


class LoopbackServer:
    """Serves ``handler`` on a free port of 127.0.0.1 in a daemon thread between ``start`` and ``stop``, or for the
    length of a ``with`` block."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler], *, quiet_errors: bool = False) -> None:
        server_class = _QuietServer if quiet_errors else http.server.ThreadingHTTPServer
        self._httpd = server_class(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> None:
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self: _S) -> _S:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # end-to-end headers only, ready to send back
    data: bytes

    def header(self, name: str, default: str = "") -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), default)


def forward(
    upstream: str, method: str, path: str, headers: Iterable[tuple[str, str]], body: bytes, timeout: float = 60
) -> Answer:
    """Send a request on to ``upstream`` as it came, the Host header included (it is part of the SigV4 signature)."""
    parsed = urllib.parse.urlsplit(upstream)
    conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                conn.putheader(name, value)
        if body or method in ("POST", "PUT"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        data = resp.read()
        kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP | _OWN_HEADERS]
        return Answer(resp.status, resp.reason, kept, data)
    finally:
        conn.close()


def send_on(handler: QuietHandler, upstream: str, body: bytes, timeout: float = 60) -> Answer:
    """``forward`` the request ``handler`` is answering, with ``body`` (as read, or as the test changed it)."""
    return forward(upstream, handler.command, handler.path, handler.headers.items(), body, timeout)


def pass_back(handler: QuietHandler, answer: Answer, data: bytes | None = None) -> None:
    """Answer the client with the upstream's ``answer`` (its body replaced by ``data`` when given)."""
    handler.reply(answer.status, answer.data if data is None else data, None, answer.headers, answer.reason)
