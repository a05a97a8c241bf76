"""What the DynamoDB store costs per message, in read and write capacity units, and what its reads cost.

moto answers ``ReturnConsumedCapacity`` with a flat 1.0 per write and 0.5 per read whatever the item's size, so the
units are computed here by AWS's rules from the requests the store really sends (seen through a recording proxy in
front of moto) and the sizes of the items they read and write:

- item size: the UTF-8 bytes of every attribute name plus its value (S: UTF-8 bytes, B: raw bytes, N: about half its
  digits + 1, BOOL/NULL: 1, M/L: 3 + 1 per element + the elements);
- ``PutItem``: ceil(max(new, old item) / 1 KB) WCU, charged even when its condition fails; ``GetItem`` and each
  item of ``BatchGetItem``, strongly consistent: ceil(size / 4 KB) RCU, 1 for a missing item;
- an index write per put that changes the item's index entry: ceil(entry / 1 KB), where the entry is the index
  keys, the table keys and the projected attributes plus 100 bytes; a changed index key costs a delete as well;
- ``Scan`` (strongly consistent): ceil(bytes read / 4 KB) per page; index ``Query`` (eventually consistent): half
  of ceil(entry bytes / 4 KB).

The fleet's messages are genuine (bench/fleet.py's generator: the real detector, suggestion and message builder).
Three rounds: the first report of every finding and heartbeat, a re-report a day later (new times: every record
changes), and the same re-report delivered again (at least once: nothing changes).

    python bench/dynamodb_cost.py                       # 100 hosts x 10 places over 30 keys
    python bench/dynamodb_cost.py --hosts 300 --places 10 --json out.json
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import SENT_MS, Fleet  # noqa: E402
from keysweep.central.handler import MessageHandler, Outcome, queue_origin  # noqa: E402
from keysweep.central.store_dynamodb import INDEX_DEFINITION  # noqa: E402

from tests.support.moto_server import running_moto  # noqa: E402
from tests.support.recording_proxy import RecordingProxy, recording_proxy  # noqa: E402

PROJECTED = set(INDEX_DEFINITION["Projection"]["NonKeyAttributes"])
INDEX_KEYS = ("tpk", "tsk")
DAY_MS = 86_400_000


def value_size(value: dict[str, Any]) -> int:
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "B":
        return len(base64.b64decode(v))
    if kind == "N":
        digits = len(v.lstrip("-").replace(".", "").lstrip("0")) or 1
        return (digits + 1) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(x) + 1 for k, x in v.items())
    if kind == "L":
        return 3 + sum(value_size(x) + 1 for x in v)
    raise ValueError(kind)


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + value_size(v) for name, v in item.items())


def index_entry(item: dict[str, Any]) -> dict[str, Any] | None:
    if not all(k in item for k in INDEX_KEYS):
        return None
    return {k: v for k, v in item.items() if k in ("pk", "sk", *INDEX_KEYS) or k in PROJECTED}


def _key(key: dict[str, Any]) -> tuple[str, str]:
    return key["pk"]["S"], key["sk"]["S"]


class Meter:
    """Replays the recorded requests in order on a model of the table, adding up the units AWS would charge."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.rcu = 0.0
        self.wcu = 0.0
        self.index_wcu = 0.0
        self.calls: Counter[str] = Counter()

    def replay(self, requests: list[Any]) -> None:
        for request in requests:
            op = request.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
            body = json.loads(request.body or b"{}")
            self.calls[op] += 1
            if op == "GetItem":
                item = self.items.get(_key(body["Key"]))
                self.rcu += math.ceil(item_size(item) / 4096) if item else 1
            elif op == "BatchGetItem":
                for spec in body["RequestItems"].values():
                    for key in spec["Keys"]:
                        item = self.items.get(_key(key))
                        self.rcu += math.ceil(item_size(item) / 4096) if item else 1
            elif op == "Query":  # the index, eventually consistent
                values = body["ExpressionAttributeValues"]
                tpk, prefix = values[":p"]["S"], values.get(":b", {}).get("S", "")
                size = sum(
                    item_size(e)
                    for e in map(index_entry, self.items.values())
                    if e and e["tpk"]["S"] == tpk and e["tsk"]["S"].startswith(prefix)
                )
                self.rcu += max(1, math.ceil(size / 4096)) / 2
            elif op == "PutItem":
                new = body["Item"]
                old = self.items.get(_key(new))
                self.wcu += math.ceil(max(item_size(new), item_size(old) if old else 0) / 1024)
                self._index_write(old, new)
                self.items[_key(new)] = new

    def _index_write(self, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        before, after = index_entry(old) if old else None, index_entry(new)
        if before == after:
            return
        if before and (not after or any(before[k] != after[k] for k in INDEX_KEYS)):
            self.index_wcu += math.ceil((item_size(before) + 100) / 1024)  # the old entry deleted
        if after:
            self.index_wcu += math.ceil((item_size(after) + 100) / 1024)

    def reads(self) -> dict[str, float]:
        """What the store's reads of the whole fleet cost, by the table's content now."""
        items = [i for k, i in self.items.items() if k != ("META", "LAYOUT")]
        entries = [e for e in map(index_entry, items) if e]

        def by(kind: str) -> list[dict[str, Any]]:
            return [i for i in items if i.get("type", {}).get("S") == kind]

        def index_read(prefix: str) -> float:
            size = sum(item_size(e) for e in entries if e["tpk"]["S"].startswith(prefix))
            return math.ceil(size / 4096) / 2

        return {
            "table_bytes": sum(map(item_size, items)),
            "full_scan_rcu": math.ceil(sum(map(item_size, items)) / 4096),
            "hosts_via_index_rcu": index_read("host#") + sum(math.ceil(item_size(i) / 4096) for i in by("host")),
            "finding_summaries_via_index_rcu": index_read("finding#"),
            "one_key_full_records_rcu": 0.0,  # filled below
            "findings": len(by("finding")),
            "hosts": len(by("host")),
        }


def run_round(
    proxy: RecordingProxy, meter: Meter, handler: MessageHandler, bodies: list[tuple[str, str]], sent_ms: int
) -> dict[str, Any]:
    start = len(proxy.snapshot())
    outcomes: Counter[str] = Counter()
    began = time.perf_counter()
    for sender, body in bodies:
        result = handler.handle(body, queue_origin({"SenderId": sender, "SentTimestamp": str(sent_ms)}))
        assert result.outcome is Outcome.OK, result.reason
        outcomes["stored" if result.changed else "duplicate"] += 1
    seconds = time.perf_counter() - began
    rcu, wcu, index_wcu, calls = meter.rcu, meter.wcu, meter.index_wcu, meter.calls.copy()
    meter.replay(proxy.snapshot()[start:])
    n = len(bodies)
    return {
        "messages": n,
        **outcomes,
        "seconds_in_moto": round(seconds, 1),
        "rcu_per_message": round((meter.rcu - rcu) / n, 2),
        "wcu_per_message": round((meter.wcu - wcu) / n, 2),
        "index_wcu_per_message": round((meter.index_wcu - index_wcu) / n, 2),
        "calls_per_message": {op: round(c / n, 2) for op, c in sorted((meter.calls - calls).items())},
    }


def later(bodies: list[tuple[str, str]], ms: int) -> list[tuple[str, str]]:
    """The same messages re-sent ``ms`` later: new message ids and times (what a daily re-report sends)."""
    from datetime import UTC, datetime

    at = datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    out = []
    for sender, body in bodies:
        msg = json.loads(body)
        msg["message_id"], msg["sent_at"] = uuid.uuid4().hex, at
        if msg["type"] == "finding":
            msg["finding"]["last_seen"] = at
            if msg["finding"].get("verification"):
                msg["finding"]["verification"]["checked_at"] = at
        else:
            msg["sweep"]["finished_at"] = at
        out.append((sender, json.dumps(msg)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--places", type=int, default=10)
    parser.add_argument("--keys", type=int, default=30)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    from keysweep.central.store import open_store

    fleet = Fleet(args.hosts, args.places, args.keys)
    first = list(fleet.bodies())
    second = later(first, SENT_MS + DAY_MS)
    with running_moto() as moto, recording_proxy(moto.endpoint) as proxy:
        os.environ.update(
            AWS_ENDPOINT_URL=moto.endpoint,
            AWS_ENDPOINT_URL_DYNAMODB=proxy.endpoint,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
        )
        meter = Meter()
        store = open_store(f"dynamodb://bench-{uuid.uuid4().hex[:8]}")
        meter.replay(proxy.snapshot())  # the table's creation and its layout mark
        handler = MessageHandler(store)
        rounds = {
            "first report": run_round(proxy, meter, handler, first, SENT_MS),
            "re-report a day later": run_round(proxy, meter, handler, second, SENT_MS + DAY_MS),
            "the same re-report again": run_round(proxy, meter, handler, second, SENT_MS + DAY_MS),
        }
        reads = meter.reads()
        one_key = fleet.keys[0].fingerprint
        start = len(proxy.snapshot())
        method = getattr(store, "iter_key_findings", None)
        if method is not None:
            list(method(one_key))
            before = meter.rcu
            meter.replay(proxy.snapshot()[start:])
            reads["one_key_full_records_rcu"] = round(meter.rcu - before, 1)
        store.close()
    result = {
        "fleet": {"hosts": args.hosts, "places": args.places, "keys": args.keys, "messages_per_round": len(first)},
        "rounds": rounds,
        "reads": reads,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
