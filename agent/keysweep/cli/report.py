"""`keysweep report`: the fleet view from the central store, and the optional Security Hub export."""

from __future__ import annotations

import argparse
import io
import os
import sys
from datetime import timedelta
from pathlib import Path

from keysweep.atomicfile import report_output
from keysweep.central.fleet_report import FORMATS, ReportFilter, load_report, render_report
from keysweep.central.records import STATUS_URGENCY
from keysweep.central.securityhub import ExportResult, export_report
from keysweep.central.store import DEFAULT_DB, Store, open_store
from keysweep.errors import ConfigError, ExitCode
from keysweep.textsafe import safe_text


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "report",
        help="the fleet report from the central store (table, JSON, CSV, self-contained HTML)",
        description="The table: one line per key, most urgent first (status, key id, owner, hosts, age, "
        "replacement), then the hosts' coverage and the totals; --details adds each key in full. JSON, CSV and HTML "
        "carry every fact. Exit 0 when the report was written.",
    )
    p.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="PATH",
        help="the store: a SQLite path or dynamodb://TABLE (default %(default)s)",
    )
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument(
        "--details",
        action="store_true",
        help="table format: after the table, each key in full: its places, owner ARN, and the suggested "
        "replacement with its steps and whole commands to paste",
    )
    p.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY_ID",
        help="only this key (repeat for more); its hosts' coverage",
    )
    p.add_argument(
        "--status",
        action="append",
        default=[],
        choices=(*STATUS_URGENCY,),
        help="only keys of this status (repeat for more)",
    )
    p.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="HOST",
        help="only keys found on this host (host id or name; repeat for more) and its coverage",
    )
    p.add_argument("--output", metavar="FILE", help="write to FILE (default: standard output)")
    p.add_argument(
        "--silent-after",
        type=float,
        default=24.0,
        metavar="HOURS",
        help="a host with no heartbeat for this long counts as silent (default %(default)s)",
    )
    p.add_argument(
        "--securityhub",
        action="store_true",
        help="also export live keys to AWS Security Hub (ASFF, BatchImportFindings)",
    )
    p.add_argument("--securityhub-region", metavar="REGION", help="Security Hub region (default: the SDK's)")
    p.set_defaults(func=run)


def open_existing_store(db: str) -> Store:
    """The store to read: a SQLite file that does not exist is a usage error saying how to fill one (and is never
    created); a DynamoDB table that does not exist is the store's own error."""
    if not db.startswith("dynamodb://"):
        path = db.removeprefix("sqlite://")
        if path and not os.path.exists(path):
            raise ConfigError(
                f"--db {db}: no such store; run `keysweep collect --queue-url URL --db {db}` first "
                "to fill it from the agents' queue"
            )
    return open_store(db, create=False)


def run(args: argparse.Namespace) -> ExitCode:
    if args.silent_after <= 0:
        raise ConfigError(f"--silent-after {args.silent_after}: must be more than 0 hours")
    if args.details and args.format != "table":
        raise ConfigError(f"--details is for --format table; --format {args.format} already carries every detail")
    store = open_existing_store(args.db)
    try:
        report = load_report(
            store,
            silent_after=timedelta(hours=args.silent_after),
            only=ReportFilter(frozenset(args.key), frozenset(args.status), frozenset(args.host)),
        )
    finally:
        store.close()
    if args.output:
        try:
            with report_output(Path(args.output), mode=0o640) as raw:  # the whole report or nothing
                text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
                render_report(report, args.format, text, details=args.details)
                text.flush()
                text.detach()
        except OSError as exc:
            raise ConfigError(f"--output {args.output}: {exc.strerror or exc}") from None
        print(f"keysweep: wrote {args.format} report of {len(report.keys)} key(s) to {args.output}", file=sys.stderr)
    else:
        render_report(report, args.format, sys.stdout, details=args.details)
    if args.securityhub and not print_export(export_report(report, region=args.securityhub_region)):
        return ExitCode.RUNTIME
    return ExitCode.CLEAN


def print_export(result: ExportResult) -> bool:
    """The Security Hub export's counts and refusals on stderr; False when a finding was refused."""
    print(
        f"keysweep: Security Hub: {result.imported} imported, {result.archived} archived, {len(result.failed)} refused",
        file=sys.stderr,
    )
    for failed in result.failed:
        print(safe_text(f"  refused {failed['Id']}: {failed['ErrorCode']} {failed['ErrorMessage']}"), file=sys.stderr)
    return not result.failed
