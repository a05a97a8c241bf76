"""An SQS endpoint in front of moto that answers partial failures the way SQS does: HTTP 200 with ``Failed[]``.

For the first ``fail_batches`` SendMessageBatch calls it forwards all entries but the first to moto and reports
the first one in ``Failed[]`` (SenderFault false, as for a throttled or internally failed entry). Everything
else is forwarded unchanged. It speaks the JSON protocol botocore uses for SQS.
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager


class FaultProxy:
    def __init__(self, upstream: str, *, fail_batches: int = 1) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.fail_batches = fail_batches
        self.batch_calls = 0
        self.failed_ids: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = self.headers.get("X-Amz-Target", "")
                failed: list[dict] = []
                if target.endswith(".SendMessageBatch"):
                    proxy.batch_calls += 1
                    if proxy.batch_calls <= proxy.fail_batches:
                        req = json.loads(body)
                        first, req["Entries"] = req["Entries"][0], req["Entries"][1:]
                        proxy.failed_ids.append(first["Id"])
                        failed.append({"Id": first["Id"], "SenderFault": False, "Code": "InternalError",
                                       "Message": "injected by the test"})
                        body = json.dumps(req).encode()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length", "connection")}
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
                try:
                    if failed and not json.loads(body)["Entries"]:
                        status, data = 200, json.dumps({"Successful": [], "Failed": failed}).encode()
                    else:
                        conn.request("POST", self.path, body=body, headers=headers)
                        resp = conn.getresponse()
                        status, data = resp.status, resp.read()
                        if failed and status == 200:
                            answer = json.loads(data)
                            answer["Failed"] = answer.get("Failed", []) + failed
                            data = json.dumps(answer).encode()
                finally:
                    conn.close()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"


@contextmanager
def fault_proxy(upstream: str, *, fail_batches: int = 1) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream, fail_batches=fail_batches)
    threading.Thread(target=proxy._server.serve_forever, daemon=True).start()
    try:
        yield proxy
    finally:
        proxy._server.shutdown()
        proxy._server.server_close()
