"""The central side at fleet scale on one machine: a fleet's messages ingested with the collector's own message
handler into the SQLite store, then ``keysweep report`` in every format (and ``keysweep audit --db``'s correlation)
timed as separate processes, for a growth curve of fleet sizes.

The messages are genuine: each finding is found by the real detector in a generated credentials file, verified
(a fixed answer per key), given the agent's own replacement suggestion for its host and built and encoded by the
agent's ``report.message`` functions; each host also sends one heartbeat. A fleet is HOSTS x PLACES findings over
KEYS distinct keys (each place on each host holds one of them).

    python bench/fleet.py                       # 1k, 10k, 100k findings (10 places per host, 30 keys)
    python bench/fleet.py --quick               # 1k and 10k only
    python bench/fleet.py --sizes 20000 --keys 30 --places 10 --json out.json
    python bench/fleet.py --sizes 100000 --keep /tmp/fleet      # keep the store and the reports
    python bench/fleet.py --store /tmp/fleet/fleet-100000.db    # time the reports of that store again

Per size: ingest messages/s (wall, one process, batches of 10 as the collector receives them) and CPU ms a message
(steadier than the wall rate when other jobs share the machine; on an idle core the rate is about 1000 / ms, less
the time each batch's commit waits for the disk), store bytes per finding (the database file after a checkpoint),
and per report format the child's wall seconds, CPU seconds (user + system) and peak RSS (from GNU time, else
``wait4``), the output's size and, for the table, its line count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keysweep.central.handler import MessageHandler, queue_origin  # noqa: E402
from keysweep.fingerprint import Fingerprinter  # noqa: E402
from keysweep.models import Finding, HostContext, Location, Verification  # noqa: E402
from keysweep.report.message import encode_message, finding_message, heartbeat_message  # noqa: E402
from keysweep.suggest import suggest  # noqa: E402

from tests.support.planted import planted_findings  # noqa: E402

FP = Fingerprinter(b"b" * 32)
FORMATS = ("json", "table", "html", "csv")
SENT = "2026-12-01T10:00:00Z"
SENT_MS = 1764583200000  # SENT as the queue's SentTimestamp
BATCH = 10  # what one SQS receive hands the collector
PLACES = (
    "/home/app/.aws/credentials",
    "/srv/app/.env",
    "/etc/app/config.ini",
    "/opt/deploy/env.sh",
    "/var/lib/ci/settings.json",
    "/root/.aws/credentials",
    "/home/build/.bash_history",
    "/srv/legacy/app.properties",
    "/etc/systemd/system/app.service.d/env.conf",
    "/home/ops/notes.txt",
)


def _verification(i: int) -> Verification | None:
    """A fixed, mixed answer per key: most live, some rotated away already, some never verified."""
    account = f"{100000000000 + i % 4:012d}"
    if i % 5 == 3:
        return Verification(status="invalid", reason="InvalidClientTokenId", checked_at=SENT)
    if i % 7 == 6:
        return None
    return Verification(
        status="live",
        account=account,
        arn=f"arn:aws:iam::{account}:user/svc-{i}",
        principal_type="iam-user",
        user_id=f"AIDA{i:016d}",
        checked_at=SENT,
    )


def _context(h: int) -> HostContext:
    if h % 10 == 9:
        return HostContext(kind="on-premises", hostname=f"build-{h:05d}", host_id=f"machine-{h:08x}")
    instance = f"i-{h:017x}"
    return HostContext(
        kind="ec2",
        hostname=f"ip-10-{h // 250 % 250}-{h % 250}-7",
        host_id=instance,
        instance_id=instance,
        account_id=f"{200000000000 + h % 3:012d}",
        region="eu-west-1",
        availability_zone="eu-west-1a",
        ami_id="ami-0123456789abcdef0",
        instance_profile_arn=None if h % 4 else f"arn:aws:iam::{200000000000 + h % 3:012d}:instance-profile/web",
        private_ip=f"10.{h // 250 % 250}.{h % 250}.7",
    )


class Fleet:
    """The genuine message bodies of a fleet, generated host by host (bounded memory)."""

    def __init__(self, hosts: int, places: int, keys: int) -> None:
        self.hosts, self.places = hosts, places
        found, _ = planted_findings(keys, fingerprinter=FP, path="/tmp/{i}")
        self.keys = [f.with_verification(v) if (v := _verification(i)) else f for i, f in enumerate(found)]

    def key_of(self, host: int, place: int) -> int:
        return zlib.crc32(f"{host}/{place}".encode()) % len(self.keys)

    def bodies(self) -> Iterator[tuple[str, str]]:
        """(the SQS sender, as an instance's role session names it; the body)"""
        for h in range(self.hosts):
            ctx = _context(h)
            suggestions: dict[int, Any] = {}
            sender = f"AROABENCHFLEETROLE01:{ctx.instance_id or 'build'}"
            for p in range(self.places):
                k = self.key_of(h, p)
                base: Finding = self.keys[k]
                where = PLACES[p % len(PLACES)] + (f".{p // len(PLACES)}" if p >= len(PLACES) else "")
                finding = dataclasses.replace(base, location=Location(kind="file", path=where, line=2))
                if k not in suggestions:
                    suggestions[k] = suggest(finding, ctx)
                msg = finding_message(
                    finding,
                    ctx,
                    suggestion=suggestions[k],
                    report_reason="new",
                    finding_fingerprint=FP.finding_fingerprint(ctx.host_id, finding.location, finding.fingerprint),
                )
                msg["sent_at"] = msg["finding"]["last_seen"] = SENT
                yield sender, encode_message(msg, 256 * 1024)
            hb = heartbeat_message(
                ctx,
                stats={"files_scanned": 90000, "bytes_scanned": 10**9},
                findings=[],
                started_at=SENT_MS / 1000 - 300,
                finished_at=SENT_MS / 1000,
                spool={"depth": 0, "bytes": 0, "capacity_bytes": 10485760, "filling": False, "dropped": 0},
            )
            hb["sent_at"] = SENT
            yield sender, encode_message(hb, 256 * 1024)


def ingest(fleet: Fleet, db: Path) -> dict[str, Any]:
    """Generate, then apply every body through the collector's handler; only the applying is timed."""
    from keysweep.central.store import open_store

    bodies = list(fleet.bodies())
    store = open_store(str(db))
    handler = MessageHandler(store)
    batch_apply = getattr(handler, "handle_batch", None)  # the collector's batched path, where there is one
    cpu0, t0 = time.process_time(), time.perf_counter()
    for start in range(0, len(bodies), BATCH):
        items = [
            (body, queue_origin({"SenderId": sender, "SentTimestamp": str(SENT_MS)}))
            for sender, body in bodies[start : start + BATCH]
        ]
        results = batch_apply(items) if batch_apply else [handler.handle(b, o) for b, o in items]
        bad = [r for r in results if r.outcome.value != "ok"]
        if bad:
            raise SystemExit(f"bench: a genuine message was refused: {bad[0].reason}")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    store.close()
    _checkpoint(db)
    return {
        "messages": len(bodies),
        "ingest_s": round(seconds, 2),
        "ingest_cpu_s": round(cpu, 2),
        "ingest_msg_per_s": round(len(bodies) / seconds),
        # steadier than the wall rate on a shared machine; the wall rate also waits for each commit's sync
        "ingest_cpu_ms_per_msg": round(1000 * cpu / len(bodies), 3),
    }


def _checkpoint(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


TIME = shutil.which("time", path="/usr/bin:/bin")  # GNU time: its child is forked from it, not from this bench


def timed_child(cmd: list[str], out: Path | None = None) -> dict[str, Any]:
    """Run ``cmd``; its own wall seconds, CPU seconds and peak RSS (MB). With GNU time the figures are of a process
    forked from ``time`` itself: a child forked from this bench (which holds a fleet's messages) would report this
    bench's resident memory as its own peak. Without it, ``wait4`` (and that caveat)."""
    figures = Path(tempfile.mkstemp(prefix="fleet-time-")[1])
    wrapped = [TIME, "-f", "%e %U %S %M", "-o", str(figures), *cmd] if TIME else cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu, rss_kb = usage.ru_utime + usage.ru_stime, usage.ru_maxrss
    measured = figures.read_text().split() if TIME else []
    figures.unlink()
    if len(measured) >= 4 and measured[-4].replace(".", "").isdigit():
        wall, cpu, rss_kb = float(measured[-4]), float(measured[-3]) + float(measured[-2]), int(measured[-1])
    result = {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "peak_rss_mb": round(rss_kb / 1024),
        "exit": proc.returncode,
    }
    if proc.returncode != 0:
        result["error"] = err.strip()[-300:]
    if out is not None and out.exists():
        result["output_bytes"] = out.stat().st_size
    return result


def reports(db: Path, workdir: Path) -> dict[str, Any]:
    exe = [sys.executable, "-m", "keysweep"]
    results = {}
    for fmt in FORMATS:
        out = workdir / f"report.{fmt}"
        results[fmt] = timed_child([*exe, "report", "--db", str(db), "--format", fmt, "--output", str(out)], out)
        if fmt == "table" and out.exists():
            results[fmt]["lines"] = sum(1 for _ in out.open(encoding="utf-8"))
    return results


def correlation(db: Path) -> dict[str, Any]:
    """``keysweep audit --db``'s correlation step alone (the fleet store's keys against no account's keys), in a
    child process measured like the reports."""
    code = (
        "import sys\n"
        "from keysweep.cli.report import open_existing_store\n"
        "from keysweep.central.audit.correlation import FleetFindings, correlate\n"
        "fleet = FleetFindings.read(open_existing_store(sys.argv[1]))\n"
        "host_keys, items = correlate(fleet, [], {}, fleet.verified)\n"
        "print(len(host_keys), len(items))\n"
    )
    return timed_child([sys.executable, "-c", code, str(db)])


def run_size(findings: int, places: int, keys: int, workdir: Path, keep: bool = False) -> dict[str, Any]:
    hosts = max(1, findings // places)
    db = workdir / f"fleet-{findings}.db"
    fleet = Fleet(hosts, places, keys)
    row: dict[str, Any] = {"findings": hosts * places, "hosts": hosts, "places": places, "keys": keys}
    row.update(ingest(fleet, db))
    size = db.stat().st_size
    row["store_bytes"] = size
    row["bytes_per_finding"] = round(size / row["findings"])
    row["reports"] = reports(db, workdir)
    row["correlation"] = correlation(db)
    if not keep:
        for path in workdir.glob(f"fleet-{findings}.db*"):
            path.unlink()
    return row


def _line(row: dict[str, Any]) -> str:
    parts = [
        f"{row['findings']:>7} findings ({row['hosts']} hosts x {row['places']}, {row['keys']} keys): "
        f"ingest {row['ingest_msg_per_s']} msg/s ({row['ingest_cpu_s']} s CPU for {row['messages']}: "
        f"{row['ingest_cpu_ms_per_msg']} ms a message), store {row['bytes_per_finding']} B/finding"
    ]
    for fmt, r in {**row["reports"], "correlate": row["correlation"]}.items():
        extra = f", {r['lines']} lines" if "lines" in r else ""
        fail = f" FAILED {r.get('error', '')}" if r["exit"] != 0 else ""
        parts.append(
            f"  {fmt:<9} {r['wall_s']:>6.2f} s wall {r['cpu_s']:>6.2f} s CPU {r['peak_rss_mb']:>5} MB{extra}{fail}"
        )
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", help="findings per fleet (default 1000 10000 100000)")
    parser.add_argument("--quick", action="store_true", help="1k and 10k findings only")
    parser.add_argument("--places", type=int, default=10, help="places per host (default %(default)s)")
    parser.add_argument("--keys", type=int, default=30, help="distinct keys in the fleet (default %(default)s)")
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep the stores and reports there")
    parser.add_argument("--store", metavar="DB", help="time the reports and the correlation of this store only")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()
    if args.store:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            result = {"reports": reports(Path(args.store), Path(tmp)), "correlation": correlation(Path(args.store))}
        for fmt, r in {**result["reports"], "correlate": result["correlation"]}.items():
            print(
                f"  {fmt:<9} {r['wall_s']:>6.2f} s wall {r['cpu_s']:>6.2f} s CPU {r['peak_rss_mb']:>5} MB"
                + (f", {r['lines']} lines" if "lines" in r else "")
                + (" FAILED" if r["exit"] else "")
            )
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        return
    sizes = args.sizes or ([1000, 10000] if args.quick else [1000, 10000, 100000])
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = []
        for n in sizes:
            row = run_size(n, args.places, args.keys, workdir, keep=bool(args.keep))
            print(_line(row), flush=True)
            rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
