"""``keysweep trail``: where each IAM user access key is used, from CloudTrail.

Each key gets a verdict — ``in-use-by-fleet-host``, ``in-use-by-compute-without-agent``, ``in-use-outside-aws``,
``used-only-by-keysweep`` or ``unused`` — and its sources (address, user agents, resource, kind, first/last, events).
Exit 0: no key in use, 1: some key in use, 2: usage or configuration error.
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any, TextIO

from keysweep.cli.common import StopFlag, add_cloud_accounts, counts
from keysweep.errors import ConfigError, ExitCode

FORMATS = ("table", "json", "csv")
CSV_COLUMNS = (
    "key_id",
    "user",
    "account",
    "verdict",
    "ip",
    "kind",
    "resource",
    "user_agents",
    "first",
    "last",
    "events",
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "trail",
        help="where each IAM user access key is used, from CloudTrail (LookupEvents or an Athena trail table)",
        description="For every IAM user access key, look up its CloudTrail events, resolve each source address "
        "(an instance or interface of the account, a fleet host, an AWS service, outside AWS) and give the key a "
        "verdict. keysweep's own calls (User-Agent keysweep/) never count as use. Exit status: 0 no key in use, "
        "1 some key in use, 2 usage or configuration error.",
    )
    p.add_argument("--days", type=int, default=90, metavar="N", help="look back N days (LookupEvents: at most 90)")
    add_cloud_accounts(p, region_help="regions whose CloudTrail to read (default: every enabled region)")
    p.add_argument("--db", metavar="PATH", help="fleet store: addresses and instances of hosts running the agent")
    p.add_argument("--format", choices=FORMATS, help="output format (default: table on a terminal, json otherwise)")
    p.add_argument("--athena-workgroup", metavar="W", help="run the lookup as an Athena query over --trail-table")
    p.add_argument("--trail-table", metavar="T", help="the Athena table of an organisation trail in S3")
    p.add_argument("--print-query", action="store_true", help="print the Athena / CloudTrail Lake query and exit")
    p.set_defaults(func=_trail)


def _trail(args: argparse.Namespace) -> int:
    from keysweep.cloud import athena, trail
    from keysweep.cloud.addresses import Fleet
    from keysweep.cloud.session import base_session, resolve_accounts

    _check(args)
    fmt = args.format or ("table" if sys.stdout.isatty() else "json")
    session = base_session()
    accounts, skips = resolve_accounts(
        session, accounts=args.account, organization=args.organization, role_name=args.role_name
    )
    usages, targets, more = trail.keys_and_targets(accounts, args.region)
    skips += more
    start, end = trail.window(args.days, limit=None if args.athena_workgroup else trail.MAX_DAYS)
    if args.print_query:
        print(athena.query(args.trail_table or "cloudtrail_logs", [u.key_id for u in usages], start))
        return int(ExitCode.CLEAN)

    stopping = StopFlag()
    with stopping.installed():
        if args.athena_workgroup:
            client = session.client("athena", region_name=(args.region or [None])[0])
            athena.collect(client, args.athena_workgroup, args.trail_table, usages, start)
        else:
            trail.lookup_all(usages, targets, start, end, stopping)
    trail.resolve_all(usages, targets, _fleet(args.db) if args.db else Fleet())
    skips += [s for account_targets in targets.values() for t in account_targets for s in t.skips]

    _render(usages, fmt, sys.stdout)
    sys.stdout.flush()
    _print_summary(sys.stderr, usages, skips)
    if stopping():
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.FINDINGS if any(u.verdict.startswith("in-use") for u in usages) else ExitCode.CLEAN)


def _check(args: argparse.Namespace) -> None:
    from keysweep.cloud.trail import MAX_DAYS

    if args.days < 1:
        raise ConfigError("--days: at least 1")
    if bool(args.athena_workgroup) != bool(args.trail_table) and not args.print_query:
        raise ConfigError("--athena-workgroup and --trail-table go together")
    if args.role_name and not (args.account or args.organization):
        raise ConfigError("--role-name: only with --account or --organization")
    if args.days > MAX_DAYS and not args.athena_workgroup and not args.print_query:
        raise ConfigError(
            f"--days {args.days}: CloudTrail LookupEvents keeps {MAX_DAYS} days "
            "(use --athena-workgroup and --trail-table for an organisation trail in S3)"
        )


def _fleet(db: str) -> Any:
    from keysweep.central.store import open_store
    from keysweep.cloud.addresses import Fleet

    store = open_store(db, create=False)
    try:
        return Fleet.from_hosts(h.host for h in store.iter_hosts())
    finally:
        store.close()


def _render(usages: list[Any], fmt: str, stream: TextIO) -> None:
    from keysweep.textable import table_lines
    from keysweep.textsafe import csv_cell, dump_json, safe_text

    if fmt == "json":
        dump_json({"keys": [u.to_dict() for u in usages]}, stream)
        stream.write("\n")
        return
    if fmt == "csv":
        w = csv.writer(stream, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for u in usages:
            d = u.to_dict()
            rows = d["sources"] or [{}]
            for s in rows:
                w.writerow(
                    [
                        csv_cell(v)
                        for v in (
                            d["key_id"],
                            d["user"],
                            d["account"],
                            d["verdict"],
                            s.get("ip"),
                            s.get("kind"),
                            s.get("resource"),
                            s.get("user_agents", []),
                            s.get("first"),
                            s.get("last"),
                            s.get("events"),
                        )
                    ]
                )
        return
    if not usages:
        stream.write("No IAM user access keys.\n")
        return
    rows = [("KEY ID", "USER", "ACCOUNT", "VERDICT", "SOURCES")]
    for u in usages:
        sources = (
            "; ".join(
                f"{s.ip} {s.kind} {s.resource or '-'} ({s.events})"
                for s in sorted(u.sources.values(), key=lambda s: -s.events)
            )
            or "-"
        )
        rows.append((u.key_id, safe_text(u.user), u.account, u.verdict, safe_text(sources)))
    for line in table_lines(rows):
        stream.write(line + "\n")


def _print_summary(stream: TextIO, usages: list[Any], skips: list[Any]) -> None:
    from collections import Counter

    verdicts = Counter(u.verdict for u in usages)
    own = sum(u.keysweep_events for u in usages)
    print(
        f"keysweep: {len(usages)} keys: {counts(verdicts) if verdicts else 'none'}; "
        f"{own} events of keysweep's own calls not counted as use",
        file=stream,
    )
    for s in skips:
        print(f"keysweep: skipped: {s.service} in {s.account} {s.region}: {s.reason}", file=stream)
