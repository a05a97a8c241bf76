"""``keysweep export`` at fleet scale: a SQLite store of genuine agent messages (bench/fleet.py's generator and
ingest) exported to moto's S3 by a child process, timed (wall, CPU) with its peak RSS (``wait4``), for a growth
curve of fleet sizes. moto runs in its own process, so the child's RSS is the export's own.

    python bench/export.py                      # 10k and 100k findings (10 places per host, 30 keys)
    python bench/export.py --sizes 1000 10000 --json out.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import Fleet, ingest  # noqa: E402
from measure import timed_child  # noqa: E402

from tests.support.moto_server import running_moto  # noqa: E402

BUCKET = "bench-export"


def exported(s3: Any, prefix: str) -> dict[str, int]:
    """Objects, compressed bytes and rows under ``prefix``."""
    objects = rows = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            objects += 1
            size += obj["Size"]
            rows += gzip.decompress(s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()).count(b"\n")
    return {"objects": objects, "gzip_bytes": size, "rows": rows}


def run_size(findings: int, places: int, keys: int, workdir: Path, s3: Any) -> dict[str, Any]:
    hosts = max(1, findings // places)
    db = workdir / f"fleet-{findings}.db"
    row: dict[str, Any] = {"findings": hosts * places, "hosts": hosts}
    row.update(ingest(Fleet(hosts, places, keys), db))
    row["store_bytes"] = db.stat().st_size
    prefix = f"fleet-{findings}"
    row["export"] = timed_child(
        [sys.executable, "-m", "keysweep", "export", "--db", str(db), "--s3", f"s3://{BUCKET}/{prefix}"]
    )
    row["s3"] = exported(s3, prefix + "/findings/")
    row["findings_per_s"] = round(row["findings"] / row["export"]["wall_s"]) if row["export"]["wall_s"] else None
    for path in workdir.glob(f"fleet-{findings}.db*"):
        path.unlink()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000], help="findings per fleet")
    parser.add_argument("--places", type=int, default=10)
    parser.add_argument("--keys", type=int, default=30)
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()
    rows = []
    with running_moto() as moto, tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        os.environ.update(
            AWS_ENDPOINT_URL=moto.endpoint,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
        )
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        for n in args.sizes:
            row = run_size(n, args.places, args.keys, Path(tmp), s3)
            e = row["export"]
            print(
                f"{row['findings']:>7} findings, {row['hosts']} hosts: export {e['wall_s']} s wall, {e['cpu_s']} s "
                f"CPU, {e['peak_rss_mb']} MB peak RSS, {row['findings_per_s']} findings/s; {row['s3']['rows']} rows "
                f"in {row['s3']['objects']} part(s), {row['s3']['gzip_bytes']} gzip bytes "
                f"({row['s3']['gzip_bytes'] // max(1, row['findings'])} B/finding)"
                + (f" FAILED {e.get('error')}" if e["exit"] else ""),
                flush=True,
            )
            rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
