"""What the sender binding costs the collector: messages per second through the message handler into SQLite,
without a sender (applied directly) and with one (bound: first-seen owner claimed, then cached), in one run.

    python bench/collector_binding.py [--messages 400] [--hosts 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keysweep.central.handler import MessageHandler  # noqa: E402
from keysweep.central.records import Origin  # noqa: E402
from keysweep.central.store import open_store  # noqa: E402

from tests.support import messages as M  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--hosts", type=int, default=20)
    args = parser.parse_args()
    bodies = [
        json.dumps(M.finding_message(host_info=M.host(f"build-{i % args.hosts}", "b", "on-premises"), path=f"/p/{i}"))
        for i in range(args.messages)
    ]
    rates = {}
    for label, origin in (("unbound", None), ("bound", Origin("AIDABENCH00000000001", "2026-11-28T12:00:00.000Z"))):
        with tempfile.TemporaryDirectory() as d:
            store = open_store(os.path.join(d, "fleet.db"))
            handler = MessageHandler(store)
            start = time.perf_counter()
            for body in bodies:
                handler.handle(body, origin)
            rates[label] = len(bodies) / (time.perf_counter() - start)
            store.close()
    print(" ".join(f"{k}={v:.0f}/s" for k, v in rates.items()) + f" ratio={rates['bound'] / rates['unbound']:.2f}")


if __name__ == "__main__":
    main()
