"""``keysweep agent``, ``keysweep config check`` and ``keysweep status``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from keysweep.config import DEFAULT_CONFIG_PATH, DEFAULT_STATE_DIR, load_config
from keysweep.errors import ConfigError, ExitCode


def register(sub: Any) -> None:
    p = sub.add_parser(
        "agent",
        help="run the resident agent (periodic sweeps, real-time watch)",
        description="Run the resident agent as its configuration says: sweeps on a schedule, real-time watching of "
        "the configured paths, verification and reporting to SQS, state in the state directory. Runs until "
        "stopped (SIGTERM); with --once, one sweep: exit 0 nothing found, 1 findings, 2 configuration error.",
    )
    p.add_argument("--config", metavar="FILE", help=f"configuration file (default {DEFAULT_CONFIG_PATH})")
    p.add_argument("--once", action="store_true", help="run one sweep and exit (1 when it found keys, else 0)")
    p.set_defaults(func=_agent)

    c = sub.add_parser(
        "config",
        help="agent configuration tools",
        description="Agent configuration tools: `keysweep config check FILE` validates a configuration file.",
    )
    csub = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    check = csub.add_parser(
        "check",
        help="validate an agent configuration file (exit 0 OK, 2 invalid)",
        description="Validate an agent configuration file: every key, the rule directories it names and its "
        "fingerprint key. Every problem is printed with the key it concerns. Exit 0 valid, 2 invalid.",
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=_config_check)
    c.set_defaults(func=lambda args: (c.print_help(sys.stderr), ExitCode.USAGE)[1])

    s = sub.add_parser(
        "status",
        help="show the agent's last sweep, findings, spool and watch coverage",
        description="Show what the agent's state directory says: the last sweep and the next one, findings, the "
        "SQS spool and the real-time watch's coverage. Exit 0; 3 when no sweep has run with this state "
        "directory; with --check, 0 healthy and 1 unhealthy.",
    )
    s.add_argument(
        "--state-dir", metavar="DIR", help=f"state directory (default: from --config, else {DEFAULT_STATE_DIR})"
    )
    s.add_argument("--config", metavar="FILE", help="read the state directory from this configuration")
    s.add_argument("--format", choices=("text", "json"), default="text")
    s.add_argument(
        "--prometheus-file", metavar="PATH", help="also write the status as a Prometheus textfile-collector file"
    )
    s.add_argument(
        "--check",
        action="store_true",
        help="health check: exit 0 when the agent is running and its sweeps are on time, else 1 "
        "(for container HEALTHCHECK and liveness probes)",
    )
    s.add_argument(
        "--max-overdue",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="with --check: how late the next sweep may be before the agent counts as stuck (default %(default)s)",
    )
    s.set_defaults(func=_status)


def _agent(args: argparse.Namespace) -> int:
    from keysweep.agent import run_agent

    return run_agent(args.config, once=args.once)


def _config_check(args: argparse.Namespace) -> int:
    from keysweep.ruleset import load_ruleset

    try:
        cfg = load_config(args.file)
        load_ruleset([Path(d) for d in cfg.scan.rules_dirs])
        cfg.fingerprint_key()
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(line, file=sys.stderr)
        return int(ExitCode.USAGE)
    print(f"{args.file}: OK")
    return int(ExitCode.CLEAN)


def _status(args: argparse.Namespace) -> int:
    from keysweep.status import read_status, render_text, write_prometheus

    state_dir = args.state_dir
    if not state_dir:
        config_path = args.config or (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
        state_dir = load_config(config_path).state_dir if config_path else DEFAULT_STATE_DIR
    status = read_status(state_dir)
    if args.check:
        import time

        from keysweep.status import health_problems

        problems = health_problems(status, now=time.time(), max_overdue=args.max_overdue)
        for problem in problems:
            print(f"keysweep: unhealthy: {problem}", file=sys.stderr)
        if not problems:
            print("keysweep: healthy")
        return int(ExitCode.FINDINGS if problems else ExitCode.CLEAN)
    if status is None:
        print(f"keysweep: no agent status in {state_dir} (no sweep has run with this state directory)", file=sys.stderr)
        return int(ExitCode.RUNTIME)
    if args.prometheus_file:
        write_prometheus(args.prometheus_file, status)
    if args.format == "json":
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        sys.stdout.write(render_text(status))
    return int(ExitCode.CLEAN)
