"""``keysweep collect``: drain the agents' SQS queue into the fleet store, or show host coverage."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import stat
import sys
import threading
from datetime import timedelta
from typing import Any

from keysweep.central.store import DEFAULT_DB
from keysweep.errors import ConfigError, ExitCode


def register(sub: Any) -> None:
    p = sub.add_parser(
        "collect",
        help="collect the agents' reports from SQS into the fleet store (or show host coverage)",
        description="Long-polls the queue, validates each message against the message schema and upserts it into "
        "the store; messages are deleted only after the store committed them. Malformed messages are "
        "left for the queue's redrive policy (dead-letter queue). With --from-file, messages come from "
        "a file of JSON lines instead; exit 1 when a line was skipped (malformed, not UTF-8, too long, "
        "unknown version, rejected), 3 when the store failed (the summary names the line to resume "
        "from).",
    )
    p.add_argument(
        "--queue-url", metavar="URL", help="the agents' SQS queue (required unless --from-file or --coverage)"
    )
    p.add_argument(
        "--from-file",
        metavar="FILE",
        help="apply messages from FILE instead of the queue (JSON lines: message bodies or SQS messages "
        "with their Body and Attributes; - reads standard input), through the same validation and "
        "sender binding; for backfill and for replaying a dead-letter queue or an archive",
    )
    p.add_argument(
        "--sender",
        metavar="SENDER_ID",
        help="with --from-file: bind every line to this SQS SenderId (default: the SenderId of each "
        "line's SQS message; a bare body has none and is rejected)",
    )
    p.add_argument(
        "--no-sender-binding",
        action="store_true",
        help="with --from-file: apply the lines without any sender binding (you vouch for the file; the "
        "records keep no sender and their times are clamped to now)",
    )
    p.add_argument(
        "--db",
        metavar="PATH",
        default=DEFAULT_DB,
        help=f"store: a SQLite file or dynamodb://TABLE[?region=R] (default ./{DEFAULT_DB})",
    )
    p.add_argument("--once", action="store_true", help="drain what is in the queue, then exit")
    p.add_argument("--wait-seconds", type=int, default=20, metavar="N", help="long-poll wait, 0-20 (default 20)")
    p.add_argument("--max-messages", type=int, default=10, metavar="N", help="messages per receive, 1-10 (default 10)")
    p.add_argument(
        "--visibility-timeout",
        type=int,
        default=120,
        metavar="S",
        help="seconds a received message stays hidden; extended while it is processed (default 120)",
    )
    p.add_argument(
        "--region",
        metavar="REGION",
        help="region of the queue (default: the one in the queue URL, else AWS_REGION / the profile's)",
    )
    p.add_argument(
        "--senders",
        metavar="FILE",
        help="sender map (YAML): which SQS sender may speak for which host ids (default: an EC2 instance "
        "profile speaks for its own instance; any other sender owns the host ids it sends first)",
    )
    p.add_argument(
        "--coverage",
        action="store_true",
        help="print host coverage from the store's heartbeats and exit (1 when a host is silent)",
    )
    p.add_argument(
        "--silent-after",
        type=float,
        default=24.0,
        metavar="HOURS",
        help="with --coverage: a host is silent after this many hours without a heartbeat (default 24)",
    )
    p.add_argument("--format", choices=("table", "json"), default="table", help="with --coverage: output format")
    p.add_argument("-v", "--verbose", action="store_true", help="log every message's outcome")
    p.set_defaults(func=_collect)


def _collect(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.coverage:
        return _coverage(args)
    if args.from_file is not None:
        return _from_file(args)
    if args.sender or args.no_sender_binding:
        raise ConfigError("collect: --sender and --no-sender-binding are for --from-file")
    if not args.queue_url:
        raise ConfigError("collect: --queue-url is required (or use --from-file or --coverage)")

    from keysweep.aws import resolve_region
    from keysweep.central.collector import Collector, CollectorConfig
    from keysweep.central.senders import SenderMap
    from keysweep.central.store import open_store

    try:
        config = CollectorConfig(
            queue_url=args.queue_url,
            wait_seconds=args.wait_seconds,
            max_messages=args.max_messages,
            visibility_timeout=args.visibility_timeout,
            once=args.once,
            region=args.region,
            senders=SenderMap.load(args.senders) if args.senders else SenderMap(),
        )
    except ValueError as exc:
        raise ConfigError(f"collect: {exc}") from None
    # checked before the store is opened, so a missing region creates nothing
    config = dataclasses.replace(config, region=resolve_region(args.region, args.queue_url, what="collect --queue-url"))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    store = open_store(args.db)
    try:
        stats = Collector(config, store, should_stop=stop.is_set).run()
    finally:
        store.close()
    print("collect: " + " ".join(f"{k}={v}" for k, v in stats.to_dict().items()), file=sys.stderr)
    return int(ExitCode.RUNTIME if stats.store_errors or stats.internal_errors else ExitCode.CLEAN)


def _from_file(args: argparse.Namespace) -> int:
    from keysweep.central.handler import MessageHandler
    from keysweep.central.replay import BATCH_LINES, Attribution, Replayer, read_lines
    from keysweep.central.senders import SenderMap
    from keysweep.central.store import open_store

    if args.queue_url:
        raise ConfigError("collect: --from-file and --queue-url are exclusive (one source of messages)")
    if args.sender and args.no_sender_binding:
        raise ConfigError("collect: --sender and --no-sender-binding are exclusive")
    attribution = (
        Attribution.SENDER if args.sender else Attribution.NONE if args.no_sender_binding else Attribution.ENVELOPE
    )
    senders = SenderMap.load(args.senders) if args.senders else SenderMap()
    name = "standard input" if args.from_file == "-" else args.from_file
    try:
        stream = sys.stdin.buffer if args.from_file == "-" else open(args.from_file, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"collect --from-file {args.from_file}: {exc.strerror or exc}") from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        store = open_store(args.db)
        try:
            # a regular file is applied in batches; a pipe line by line, so a live one is never held back
            regular = stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
            replayer = Replayer(
                MessageHandler(store, senders=senders),
                attribution=attribution,
                sender=args.sender,
                should_stop=stop.is_set,
                batch_lines=BATCH_LINES if regular else 1,
            )
            stats = replayer.run(read_lines(stream))
        except OSError as exc:
            raise ConfigError(f"collect --from-file {args.from_file}: {exc.strerror or exc}") from None
        finally:
            store.close()
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if stats.no_sender:
        print(
            f"keysweep: {stats.no_sender} line(s) of {name} carried no SenderId: give --sender SENDER_ID (the "
            "agent role's) or --no-sender-binding to apply bare message bodies",
            file=sys.stderr,
        )
    if stats.stopped_at_line is not None:
        why = "the store failed" if stats.store_errors else "stopped"
        print(
            f"keysweep: {why} at line {stats.stopped_at_line} of {name}: it and the lines after it were not "
            "applied; run the same command again (lines applied twice change nothing)",
            file=sys.stderr,
        )
    print(
        "collect: " + " ".join(f"{k}={v}" for k, v in stats.to_dict().items() if k != "stopped_at_line"),
        file=sys.stderr,
    )
    if stats.stopped_at_line is not None:
        return int(ExitCode.RUNTIME if stats.store_errors else ExitCode.INTERRUPTED)
    if stats.internal_errors:
        return int(ExitCode.RUNTIME)
    return int(ExitCode.FINDINGS if stats.skipped else ExitCode.CLEAN)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _coverage(args: argparse.Namespace) -> int:
    from keysweep.central.coverage import host_coverage
    from keysweep.cli.report import open_existing_store

    store = open_existing_store(args.db)  # a missing store: exit 2, "run keysweep collect … first"
    try:
        cov = host_coverage(store.iter_hosts(), silent_after=timedelta(hours=args.silent_after))
    finally:
        store.close()
    from keysweep.textable import table_lines
    from keysweep.textsafe import dumps_json, shorten

    if args.format == "json":
        print(dumps_json(cov.to_dict(), indent=2, sort_keys=True))
    else:  # host values are the hosts' own text, safe and cut to fit 100 columns (an EC2 instance id whole; JSON has all)
        header = ("STATE", "HOST", "HOST ID", "KIND", "AGENT", "LAST HEARTBEAT", "AGO")
        rows = [
            (
                shorten(h.state, 12),
                shorten(h.hostname, 15),
                shorten(h.host_id, 19),
                shorten(h.kind, 11),
                shorten(h.agent_version or "-", 8),
                f"{h.last_heartbeat[:16]}Z" if h.last_heartbeat else "-",
                _ago(h.silent_for_s),
            )
            for h in cov.hosts
        ]
        for line in table_lines([header, *rows]):
            print(line)
        states = ", ".join(f"{n} {s}" for s, n in sorted(cov.by_state.items()))
        print(f"\n{len(cov.hosts)} host(s): {states or 'none'}")
    return int(ExitCode.FINDINGS if cov.silent else ExitCode.CLEAN)
