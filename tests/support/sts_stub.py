"""A scripted STS endpoint over real HTTP: answers each request with the next canned reply and counts requests.

Used where moto cannot produce an answer (root keys, expired tokens, throttling, 5xx, a proxy's HTML page).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tests.support.loopback import LoopbackServer, QuietHandler

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


class StsStub(LoopbackServer):
    """Answers replies[i] to the i-th request (the last reply repeats) and records every request's headers."""

    def __init__(self, replies: Sequence[Reply]) -> None:
        if not replies:
            raise ValueError("at least one reply")
        self.replies = list(replies)
        self.requests: list[dict[str, str]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each request
        self._lock = threading.Lock()
        stub = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                self.read_body()
                with stub._lock:
                    stub.requests.append(dict(self.headers))
                    stub.arrivals.append(time.monotonic())
                    reply = stub.replies[min(len(stub.requests) - 1, len(stub.replies) - 1)]
                if reply.delay:
                    time.sleep(reply.delay)
                self.reply(reply.status, reply.body.encode(), reply.content_type)

        super().__init__(Handler, quiet_errors=True)  # a client that gave up on a delayed reply: expected

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)


def running_stub(*replies: Reply) -> StsStub:
    """Use as ``with running_stub(...) as stub``: it serves for the length of the block."""
    return StsStub(replies)
