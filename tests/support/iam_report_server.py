"""A small real HTTP server speaking IAM's query protocol for the credential-report calls only.

moto always answers STARTED then COMPLETE and never ReportExpired or ReportInProgress; this server plays a
scripted sequence of answers so the waiting and regenerating paths run over real HTTP.
Each script entry is ("state", "STARTED"|"INPROGRESS"|"COMPLETE") for GenerateCredentialReport, or
("error", code, http_status) / ("content", csv_text) for GetCredentialReport.
"""

from __future__ import annotations

import base64
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_NS = "https://iam.amazonaws.com/doc/2010-05-08/"


class IamReportServer:
    def __init__(self, generate: list[str], get: list[tuple[str, ...]]) -> None:
        self.generate_script = list(generate)
        self.get_script = list(get)
        self.calls: list[str] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                action = urllib.parse.parse_qs(body).get("Action", [""])[0]
                server.calls.append(action)
                if action == "GenerateCredentialReport" and server.generate_script:
                    state = server.generate_script.pop(0)
                    self._send(200, f"<GenerateCredentialReportResponse xmlns=\"{_NS}\"><GenerateCredentialReportResult>"
                               f"<State>{state}</State></GenerateCredentialReportResult>"
                               "<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>"
                               "</GenerateCredentialReportResponse>")
                elif action == "GetCredentialReport" and server.get_script:
                    entry = server.get_script.pop(0)
                    if entry[0] == "error":
                        self._send(int(entry[2]), f"<ErrorResponse xmlns=\"{_NS}\"><Error><Type>Sender</Type>"
                                   f"<Code>{entry[1]}</Code><Message>scripted</Message></Error>"
                                   "<RequestId>r</RequestId></ErrorResponse>")
                    else:
                        content = base64.b64encode(entry[1].encode()).decode()
                        self._send(200, f"<GetCredentialReportResponse xmlns=\"{_NS}\"><GetCredentialReportResult>"
                                   f"<Content>{content}</Content><ReportFormat>text/csv</ReportFormat>"
                                   "<GeneratedTime>2026-11-28T10:00:00Z</GeneratedTime></GetCredentialReportResult>"
                                   "<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>"
                                   "</GetCredentialReportResponse>")
                else:
                    self._send(400, f"<ErrorResponse xmlns=\"{_NS}\"><Error><Type>Sender</Type>"
                               "<Code>ScriptExhausted</Code><Message>no scripted answer</Message></Error>"
                               "<RequestId>r</RequestId></ErrorResponse>")

            def _send(self, status: int, xml: str) -> None:
                data = xml.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@contextmanager
def running_iam_report_server(generate: list[str], get: list[tuple[str, ...]]) -> Iterator[IamReportServer]:
    server = IamReportServer(generate, get)
    thread = threading.Thread(target=server._httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server._httpd.shutdown()
        server._httpd.server_close()
