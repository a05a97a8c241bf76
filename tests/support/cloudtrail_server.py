"""A small real HTTP server speaking CloudTrail's JSON protocol for ``LookupEvents`` only (moto does not
implement it). Events are held per access key id and served a few per page with ``NextToken``; every request is
recorded (time, signing key id, attributes) so tests can check pacing and what was asked. A script of error codes
(e.g. ``ThrottlingException``) is answered first, one per request."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.support.loopback import LoopbackServer, QuietHandler

TARGET = "CloudTrail_20131101.LookupEvents"


@dataclass
class Request:
    at: float
    signer: str  # the access key id in the Authorization header
    attributes: list[dict[str, str]]
    start: float | None
    region: str


@dataclass
class CloudTrailServer:
    page_size: int = 2
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by AccessKeyId
    errors: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    endpoint: str = ""

    def add_event(
        self,
        key_id: str,
        *,
        ip: str,
        user_agent: str,
        at: float,
        source: str = "s3.amazonaws.com",
        name: str = "ListBuckets",
        region: str = "us-east-1",
    ) -> None:
        detail = {
            "eventVersion": "1.08",
            "userIdentity": {"type": "IAMUser", "accessKeyId": key_id},
            "eventTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
            "eventSource": source,
            "eventName": name,
            "awsRegion": region,
            "sourceIPAddress": ip,
            "userAgent": user_agent,
        }
        self.events.setdefault(key_id, []).append(
            {
                "EventId": f"e{sum(len(v) for v in self.events.values())}",
                "EventName": name,
                "EventTime": at,
                "EventSource": source,
                "AccessKeyId": key_id,
                "ReadOnly": "true",
                "CloudTrailEvent": json.dumps(detail),
            }
        )

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.errors:
            code = self.errors.pop(0)
            return 400, {"__type": code, "message": "scripted"}
        attrs = body.get("LookupAttributes") or []
        key = next((a["AttributeValue"] for a in attrs if a.get("AttributeKey") == "AccessKeyId"), None)
        start = body.get("StartTime")
        events = sorted(self.events.get(key or "", []), key=lambda e: -e["EventTime"])  # newest first, as AWS
        if start is not None:
            events = [e for e in events if e["EventTime"] >= float(start)]
        offset = int(body.get("NextToken") or 0)
        page = events[offset : offset + self.page_size]
        out: dict[str, Any] = {"Events": page}
        if offset + self.page_size < len(events):
            out["NextToken"] = str(offset + self.page_size)
        return 200, out

    def handler(self) -> type[QuietHandler]:
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                raw = self.read_body()
                auth = self.headers.get("Authorization", "")
                signer = auth.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in auth else ""
                region = auth.split("Credential=", 1)[1].split("/")[2] if "Credential=" in auth else ""
                if not str(self.headers.get("X-Amz-Target", "")).endswith(TARGET):
                    status, out = 400, {"__type": "UnknownOperationException", "message": "LookupEvents only"}
                else:
                    body = json.loads(raw or b"{}")
                    server.requests.append(
                        Request(
                            time.monotonic(), signer, body.get("LookupAttributes") or [], body.get("StartTime"), region
                        )
                    )
                    status, out = server._answer(body)
                self.reply(status, json.dumps(out).encode(), "application/x-amz-json-1.1")

        return Handler


@contextmanager
def cloudtrail_server(page_size: int = 2) -> Iterator[CloudTrailServer]:
    server = CloudTrailServer(page_size=page_size)
    with LoopbackServer(server.handler()) as httpd:
        server.endpoint = httpd.endpoint
        yield server
