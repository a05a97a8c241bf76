"""``keysweep export``: the fleet store to S3 as date-partitioned gzip JSON lines, and the Athena tables over it."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

from keysweep.central.store import DEFAULT_DB
from keysweep.errors import ConfigError, ExitCode


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export the fleet store to S3 (gzip JSON lines, one partition per day) for Athena",
        description="Writes every finding and host of the store under s3://BUCKET/PREFIX/{findings,hosts}/"
        "dt=YYYY-MM-DD/part-NNNN.json.gz (today's UTC date; a second export the same day replaces that "
        "day's partition). --athena-ddl prints the Athena tables and ready queries instead. Exit 0 when "
        "written, 2 on bad options or a missing store, 3 when S3 or the store failed.",
    )
    p.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="PATH",
        help="the store: a SQLite path or dynamodb://TABLE (default %(default)s)",
    )
    p.add_argument("--s3", required=True, metavar="s3://BUCKET/PREFIX", help="where the tables live")
    p.add_argument(
        "--athena-ddl",
        action="store_true",
        help="print the Athena CREATE statements (partition projection) and ready queries; export nothing",
    )
    p.add_argument("--database", default="keysweep", metavar="NAME", help="with --athena-ddl: the Athena database")
    p.add_argument(
        "--silent-after",
        type=float,
        default=24.0,
        metavar="HOURS",
        help="a host with no heartbeat for this long is silent in the hosts table (default %(default)s)",
    )
    p.add_argument("--region", metavar="REGION", help="the bucket's region (default: the SDK's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from keysweep.central.export import S3Location, athena_ddl

    location = S3Location.parse(args.s3)
    if args.athena_ddl:
        if not args.database.replace("_", "").isalnum():
            raise ConfigError(f"--database {args.database}: letters, digits and _ only")
        print(athena_ddl(location, database=args.database.lower()))
        return int(ExitCode.CLEAN)
    if args.silent_after <= 0:
        raise ConfigError(f"--silent-after {args.silent_after}: must be more than 0 hours")

    from keysweep.aws import make_client
    from keysweep.central.export import export_store
    from keysweep.cli.report import open_existing_store

    store = open_existing_store(args.db)
    try:
        result = export_store(
            store, location, make_client("s3", region=args.region), silent_after=timedelta(hours=args.silent_after)
        )
    finally:
        store.close()
    for table, done in result.tables.items():
        print(
            f"export: {table}: {done.rows} row(s) in {len(done.parts)} part(s), {done.bytes} bytes, "
            f"{done.removed} old part(s) removed, {location.url(table, f'dt={result.dt}')}/",
            file=sys.stderr,
        )
    return int(ExitCode.CLEAN)
