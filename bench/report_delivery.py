"""Reporting costs: host context detection, spool writes, and delivery of a sweep's findings to SQS.

Measures (SQS is moto's server on loopback, so the delivery rate is bounded by the emulator, not by SQS):
  * detect_context with no metadata service (a TCP blackhole) and with an IMDSv2 server on loopback;
  * durable spool writes per second (each file fsynced; one directory fsync per batch);
  * a first report of N new findings (spool + SendMessageBatch), and the next sweep of the same findings (only the
    heartbeat is sent: the ratio shows what the sent-state saves).
Usage: ``python bench/report_delivery.py [--findings 1000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=1000)
    args = parser.parse_args()
    for name in list(os.environ):
        if name.startswith("AWS_"):
            del os.environ[name]

    from keysweep.context import detect_context
    from keysweep.fingerprint import Fingerprinter
    from keysweep.models import HostContext, Verification
    from keysweep.report.spool import Spool
    from keysweep.report.sqs import Reporter
    from keysweep.stage_config import ContextConfig, ReportConfig

    from tests.support.metadata_server import blackhole_endpoint, imds_server
    from tests.support.moto_server import running_moto
    from tests.support.planted import planted_findings

    with blackhole_endpoint() as hole:
        t = time.perf_counter()
        ctx = detect_context(ContextConfig(imds_endpoint=hole), environ={})
        print(
            f"detect_context, no metadata service (default 0.8 s timeout): {time.perf_counter() - t:.2f} s ({ctx.kind})"
        )
    with imds_server() as imds:
        t = time.perf_counter()
        ctx = detect_context(ContextConfig(imds_endpoint=imds.endpoint), environ={})
        print(f"detect_context, IMDSv2 on loopback: {(time.perf_counter() - t) * 1000:.1f} ms ({ctx.kind})")

    with tempfile.TemporaryDirectory() as d:
        spool = Spool(Path(d) / "spool")
        items = [(json.dumps({"message_id": f"m{i}", "pad": " " * 3000}), "finding", f"m{i}") for i in range(500)]
        t = time.perf_counter()
        spool.put_many(items)
        print(f"spool writes (3 KB, fsynced): {500 / (time.perf_counter() - t):.0f} messages/s")

    fp = Fingerprinter(b"b" * 32)
    live = Verification(
        status="live", account="123456789012", arn="arn:aws:iam::123456789012:user/u", principal_type="iam-user"
    )
    findings, _ = planted_findings(args.findings, fingerprinter=fp, verification=live)
    with running_moto() as moto, tempfile.TemporaryDirectory() as d:
        os.environ.update(
            AWS_ENDPOINT_URL=moto.endpoint,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
        )
        from keysweep.aws import make_client

        url = make_client("sqs").create_queue(QueueName="bench")["QueueUrl"]
        host = HostContext(kind="ec2", hostname="bench", host_id="i-0bench", instance_id="i-0bench")
        reporter = Reporter(ReportConfig(queue_url=url), Path(d), host, fingerprinter=fp)
        t = time.perf_counter()
        first = reporter.report(findings)
        t_first = time.perf_counter() - t
        t = time.perf_counter()
        again = reporter.report(findings)
        t_again = time.perf_counter() - t
    n = args.findings
    print(
        f"first report of {n} new findings to moto SQS: {t_first:.2f} s ({n / t_first:.0f} findings/s), "
        f"sent {first.sent}, pending {first.pending}"
    )
    print(
        f"next sweep, same findings: {t_again:.3f} s, sent {again.sent} (heartbeat), unchanged {again.unchanged}; "
        f"{t_first / t_again:.0f}x cheaper"
    )


if __name__ == "__main__":
    main()
