"""Verification pacing against moto's STS over loopback: keys per second at several rate limits.

    .venv/bin/python bench/verify_rate.py [KEYS]

Prints, per setting, how long verifying KEYS made-up keys took and how many STS calls were made. The configured
rate limit is an upper bound; moto itself answers roughly ten authenticated calls per second on this machine.
"""

from __future__ import annotations

import base64
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
for _name in list(os.environ):
    if _name.startswith("AWS_"):
        del os.environ[_name]

from keysweep.stage_config import VerifyConfig  # noqa: E402
from keysweep.verify import Verifier  # noqa: E402

from tests.support.moto_server import running_moto  # noqa: E402
from tests.support.verify_findings import FINGERPRINTER, finding  # noqa: E402


def made_up_key(i: int) -> str:
    return "AKIAQ" + base64.b32encode(random.Random(i).randbytes(10)).decode()[1:16]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    findings = [finding(made_up_key(i), f"{i:040d}") for i in range(count)]
    with running_moto() as moto:
        moto.reset()
        moto.enable_auth()
        for rate, workers in ((5, 4), (50, 4), (1000, 8)):
            config = VerifyConfig(enabled=True, endpoint=moto.endpoint, rate_limit_per_s=rate, max_concurrency=workers)
            verifier = Verifier(config, state_dir=None, fingerprinter=FINGERPRINTER)
            started = time.perf_counter()
            out = verifier.verify_all(findings)
            took = time.perf_counter() - started
            statuses = sorted({f.verification.status for f in out if f.verification})
            print(
                f"rate_limit_per_s={rate:<5} max_concurrency={workers}: {count} keys in {took:.2f} s "
                f"({count / took:.1f} keys/s), {verifier.calls} STS calls, statuses {statuses}"
            )


if __name__ == "__main__":
    main()
