"""A small real HTTP server speaking IAM's query protocol for the credential-report calls only.

moto always answers STARTED then COMPLETE and never ReportExpired or ReportInProgress; this server plays a
scripted sequence of answers so the waiting and regenerating paths run over real HTTP.
Each script entry is ("state", "STARTED"|"INPROGRESS"|"COMPLETE") for GenerateCredentialReport, or
("error", code, http_status) / ("content", csv_text) for GetCredentialReport.
"""

from __future__ import annotations

import base64
import urllib.parse

from tests.support.loopback import LoopbackServer, QuietHandler

_NS = "https://iam.amazonaws.com/doc/2010-05-08/"


class IamReportServer(LoopbackServer):
    def __init__(self, generate: list[str], get: list[tuple[str, ...]]) -> None:
        self.generate_script = list(generate)
        self.get_script = list(get)
        self.calls: list[str] = []
        super().__init__(self._handler())

    def _handler(self) -> type[QuietHandler]:
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = self.read_body().decode()
                action = urllib.parse.parse_qs(body).get("Action", [""])[0]
                server.calls.append(action)
                if action == "GenerateCredentialReport" and server.generate_script:
                    state = server.generate_script.pop(0)
                    self._send(
                        200,
                        f'<GenerateCredentialReportResponse xmlns="{_NS}"><GenerateCredentialReportResult>'
                        f"<State>{state}</State></GenerateCredentialReportResult>"
                        "<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>"
                        "</GenerateCredentialReportResponse>",
                    )
                elif action == "GetCredentialReport" and server.get_script:
                    entry = server.get_script.pop(0)
                    if entry[0] == "error":
                        self._send(
                            int(entry[2]),
                            f'<ErrorResponse xmlns="{_NS}"><Error><Type>Sender</Type>'
                            f"<Code>{entry[1]}</Code><Message>scripted</Message></Error>"
                            "<RequestId>r</RequestId></ErrorResponse>",
                        )
                    else:
                        content = base64.b64encode(entry[1].encode()).decode()
                        self._send(
                            200,
                            f'<GetCredentialReportResponse xmlns="{_NS}"><GetCredentialReportResult>'
                            f"<Content>{content}</Content><ReportFormat>text/csv</ReportFormat>"
                            "<GeneratedTime>2026-11-28T10:00:00Z</GeneratedTime></GetCredentialReportResult>"
                            "<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>"
                            "</GetCredentialReportResponse>",
                        )
                else:
                    self._send(
                        400,
                        f'<ErrorResponse xmlns="{_NS}"><Error><Type>Sender</Type>'
                        "<Code>ScriptExhausted</Code><Message>no scripted answer</Message></Error>"
                        "<RequestId>r</RequestId></ErrorResponse>",
                    )

            def _send(self, status: int, xml: str) -> None:
                self.reply(status, xml.encode(), "text/xml")

        return Handler


def running_iam_report_server(generate: list[str], get: list[tuple[str, ...]]) -> IamReportServer:
    """Use as ``with running_iam_report_server(...) as server``: it serves for the length of the block."""
    return IamReportServer(generate, get)
