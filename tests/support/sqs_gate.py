"""A loopback HTTP proxy in front of the SQS emulator that can hold chosen actions.

Everything is forwarded unchanged, except requests for a held action (``X-Amz-Target`` such as
``AmazonSQS.DeleteMessageBatch``): those are counted and kept waiting, never answered, until the gate is closed.
It lets a test stop a collector at a precise point of its real protocol — after it committed to the store and
asked SQS to delete — without touching the collector's code.
"""

from __future__ import annotations

import threading

from tests.support.loopback import LoopbackServer, QuietHandler, pass_back, send_on


class SQSGate(LoopbackServer):
    def __init__(self, upstream: str, hold: set[str]) -> None:
        self.hold = hold
        self.held = threading.Event()
        self._closing = threading.Event()
        gate = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.read_body()
                target = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
                if target in gate.hold:
                    gate.held.set()
                    gate._closing.wait()
                    self.send_error(503)
                    return
                pass_back(self, send_on(self, upstream, body))

        super().__init__(Handler)

    def stop(self) -> None:
        self._closing.set()
        super().stop()


def sqs_gate(upstream: str, hold: set[str]) -> SQSGate:
    """Use as ``with sqs_gate(...) as gate``: it serves for the length of the block."""
    return SQSGate(upstream, hold)
