"""An SQS endpoint in front of moto that gives each received message the SenderId a test chooses.

moto answers every ReceiveMessage with one fixed ``SenderId``; a real queue names the principal that sent each
message. The proxy forwards every request to moto unchanged and, in ReceiveMessage answers that carry system
attributes, replaces each message's ``SenderId`` with ``sender_of(body)`` (the test decides, e.g. by the host id a
message claims, who sent it). It speaks the JSON protocol botocore uses for SQS.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.support.loopback import LoopbackServer, QuietHandler, pass_back, send_on


class SenderProxy(LoopbackServer):
    def __init__(self, upstream: str, sender_of: Callable[[str], str]) -> None:
        self.rewritten = 0
        proxy = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                upstream_answer = send_on(self, upstream, self.read_body())
                data = None
                if upstream_answer.status == 200 and self.headers.get("X-Amz-Target", "").endswith(".ReceiveMessage"):
                    answer = json.loads(upstream_answer.data)
                    for message in answer.get("Messages", []):
                        attributes = message.get("Attributes")
                        if attributes is not None and "SenderId" in attributes:
                            attributes["SenderId"] = sender_of(message["Body"])
                            proxy.rewritten += 1
                    data = json.dumps(answer).encode()
                pass_back(self, upstream_answer, data)

        super().__init__(Handler)


def sender_proxy(upstream: str, sender_of: Callable[[str], str]) -> SenderProxy:
    """Use as ``with sender_proxy(...) as proxy``: it serves for the length of the block."""
    return SenderProxy(upstream, sender_of)
