"""An SQS endpoint in front of moto that gives each received message the SenderId a test chooses.

moto answers every ReceiveMessage with one fixed ``SenderId``; a real queue names the principal that sent each
message. The proxy forwards every request to moto unchanged and, in ReceiveMessage answers that carry system
attributes, replaces each message's ``SenderId`` with ``sender_of(body)`` (the test decides, e.g. by the host id a
message claims, who sent it). It speaks the JSON protocol botocore uses for SQS.
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class SenderProxy:
    def __init__(self, upstream: str, sender_of: Callable[[str], str]) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.rewritten = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length", "connection")}
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
                try:
                    conn.request("POST", self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    status, data = resp.status, resp.read()
                    content_type = resp.getheader("Content-Type") or "application/x-amz-json-1.0"
                finally:
                    conn.close()
                if status == 200 and self.headers.get("X-Amz-Target", "").endswith(".ReceiveMessage"):
                    answer = json.loads(data)
                    for message in answer.get("Messages", []):
                        attributes = message.get("Attributes")
                        if attributes is not None and "SenderId" in attributes:
                            attributes["SenderId"] = sender_of(message["Body"])
                            proxy.rewritten += 1
                    data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"


@contextmanager
def sender_proxy(upstream: str, sender_of: Callable[[str], str]) -> Iterator[SenderProxy]:
    proxy = SenderProxy(upstream, sender_of)
    threading.Thread(target=proxy._server.serve_forever, daemon=True).start()
    try:
        yield proxy
    finally:
        proxy._server.shutdown()
        proxy._server.server_close()
