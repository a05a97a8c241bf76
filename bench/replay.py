"""``keysweep collect --from-file`` at fleet scale: a fleet's genuine messages (bench/fleet.py's generator) written
as a dead-letter-queue dump (one SQS message per line, with the instance's ``SenderId`` and the queue's
``SentTimestamp``), then replayed into a new SQLite store by a child process: lines per second, CPU, peak RSS.
The same file is then replayed again (every line a duplicate).

    python bench/replay.py                      # 10k findings (1,000 hosts x 10 places) + 1,000 heartbeats
    python bench/replay.py --findings 100000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import SENT_MS, Fleet  # noqa: E402
from measure import timed_child  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--findings", type=int, default=10000)
    parser.add_argument("--places", type=int, default=10)
    parser.add_argument("--keys", type=int, default=30)
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()
    fleet = Fleet(max(1, args.findings // args.places), args.places, args.keys)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        dump, db = Path(tmp) / "dlq.jsonl", Path(tmp) / "fleet.db"
        lines = 0
        with dump.open("w", encoding="utf-8") as out:
            for sender, body in fleet.bodies():
                out.write(
                    json.dumps(
                        {
                            "MessageId": f"m-{lines}",
                            "Body": body,
                            "Attributes": {"SenderId": sender, "SentTimestamp": str(SENT_MS)},
                        }
                    )
                    + "\n"
                )
                lines += 1
        results["lines"] = lines
        results["file_bytes"] = dump.stat().st_size
        cmd = [sys.executable, "-m", "keysweep", "collect", "--from-file", str(dump), "--db", str(db)]
        for run in ("first", "again"):
            r = timed_child(cmd)
            r["lines_per_s"] = round(lines / r["wall_s"]) if r["wall_s"] else None
            results[run] = r
            print(
                f"{run:>5}: {lines} lines in {r['wall_s']} s wall ({r['lines_per_s']} lines/s), {r['cpu_s']} s CPU, "
                f"{r['peak_rss_mb']} MB peak RSS, exit {r['exit']}" + (f" {r.get('error')}" if r["exit"] else ""),
                flush=True,
            )
        results["store_bytes"] = db.stat().st_size
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
