"""A loopback HTTP proxy in front of the SQS emulator that can hold chosen actions.

Everything is forwarded unchanged, except requests for a held action (``X-Amz-Target`` such as
``AmazonSQS.DeleteMessageBatch``): those are counted and kept waiting, never answered, until the gate is closed.
It lets a test stop a collector at a precise point of its real protocol — after it committed to the store and
asked SQS to delete — without touching the collector's code.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SQSGate:
    def __init__(self, upstream: str, hold: set[str]) -> None:
        self.upstream = upstream.rstrip("/")
        self.hold = hold
        self.held = threading.Event()
        self._closing = threading.Event()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
                if target in gate.hold:
                    gate.held.set()
                    gate._closing.wait()
                    self.send_error(503)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                req = urllib.request.Request(gate.upstream + self.path, data=body, headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        status, payload, resp_headers = resp.status, resp.read(), resp.headers
                except urllib.error.HTTPError as err:
                    status, payload, resp_headers = err.code, err.read(), err.headers
                self.send_response(status)
                for k, v in resp_headers.items():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def sqs_gate(upstream: str, hold: set[str]) -> Iterator[SQSGate]:
    gate = SQSGate(upstream, hold)
    gate.start()
    try:
        yield gate
    finally:
        gate.close()
