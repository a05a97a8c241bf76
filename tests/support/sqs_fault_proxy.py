"""An SQS endpoint in front of moto that answers partial failures the way SQS does: HTTP 200 with ``Failed[]``.

For the first ``fail_batches`` SendMessageBatch calls it forwards all entries but the first to moto and reports
the first one in ``Failed[]`` (SenderFault false, as for a throttled or internally failed entry). Everything
else is forwarded unchanged. It speaks the JSON protocol botocore uses for SQS.
"""

from __future__ import annotations

import json

from tests.support.loopback import LoopbackServer, QuietHandler, pass_back, send_on


class FaultProxy(LoopbackServer):
    def __init__(self, upstream: str, *, fail_batches: int = 1) -> None:
        self.fail_batches = fail_batches
        self.batch_calls = 0
        self.failed_ids: list[str] = []
        proxy = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = self.read_body()
                failed: list[dict] = []
                if self.headers.get("X-Amz-Target", "").endswith(".SendMessageBatch"):
                    proxy.batch_calls += 1
                    if proxy.batch_calls <= proxy.fail_batches:
                        req = json.loads(body)
                        first, req["Entries"] = req["Entries"][0], req["Entries"][1:]
                        proxy.failed_ids.append(first["Id"])
                        failed.append(
                            {
                                "Id": first["Id"],
                                "SenderFault": False,
                                "Code": "InternalError",
                                "Message": "injected by the test",
                            }
                        )
                        body = json.dumps(req).encode()
                if failed and not json.loads(body)["Entries"]:
                    answer = json.dumps({"Successful": [], "Failed": failed}).encode()
                    self.reply(200, answer, "application/x-amz-json-1.0")
                    return
                upstream_answer = send_on(self, upstream, body, timeout=30)
                data = None
                if failed and upstream_answer.status == 200:
                    answer = json.loads(upstream_answer.data)
                    answer["Failed"] = answer.get("Failed", []) + failed
                    data = json.dumps(answer).encode()
                pass_back(self, upstream_answer, data)

        super().__init__(Handler)


def fault_proxy(upstream: str, *, fail_batches: int = 1) -> FaultProxy:
    """Use as ``with fault_proxy(...) as proxy``: it serves for the length of the block."""
    return FaultProxy(upstream, fail_batches=fail_batches)
