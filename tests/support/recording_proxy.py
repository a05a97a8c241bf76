"""A small reverse proxy that forwards every request to an upstream HTTP server and records what it saw.

Placed between keysweep and moto (through AWS_ENDPOINT_URL_STS), it lets a test assert what keysweep sent:
which key ids appeared in Authorization headers, the User-Agent, and how many requests there were.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request arrived


Rewrite = Callable[[Recorded, bytes], bytes]  # (request, upstream response body) -> body sent back


class RecordingProxy:
    def __init__(self, upstream: str, rewrite: Rewrite | None = None) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self._upstream_host = parsed.hostname or "127.0.0.1"
        self._upstream_port = parsed.port or 80
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()}
                seen = Recorded(self.command, self.path, headers, body, time.monotonic())
                with proxy._lock:
                    proxy.requests.append(seen)
                conn = http.client.HTTPConnection(proxy._upstream_host, proxy._upstream_port, timeout=30)
                try:
                    # the Host header is part of the SigV4 signature: pass it through unchanged
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in headers.items():
                        if k.lower() not in _HOP_BY_HOP:
                            conn.putheader(k, v)
                    conn.endheaders(body or None)
                    resp = conn.getresponse()
                    data = resp.read()
                    if rewrite is not None:
                        data = rewrite(seen, data)
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward  # noqa: N815 - http.server naming

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"

    def snapshot(self) -> list[Recorded]:
        with self._lock:
            return list(self.requests)

    def authorization_headers(self) -> list[str]:
        return [r.headers.get("Authorization", "") for r in self.snapshot()]

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def recording_proxy(upstream: str, rewrite: Rewrite | None = None) -> Iterator[RecordingProxy]:
    """``rewrite`` lets a test add to an upstream answer what the emulator does not implement."""
    proxy = RecordingProxy(upstream, rewrite)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
