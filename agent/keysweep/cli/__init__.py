"""The command line: the only place that prints or exits.

Each sub-module registers its subcommands with ``register(subparsers)`` and returns an exit code from the
handler it sets as ``func``; errors raised as :class:`keysweep.errors.KeysweepError` become a one-line message
on stderr and the exception's exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from keysweep import __version__
from keysweep.errors import ExitCode, KeysweepError

# one module per group of subcommands; each owns its parser and handlers
_COMMAND_MODULES = (
    "keysweep.cli.scan",
    "keysweep.cli.rules",
    "keysweep.cli.agent",
    "keysweep.cli.collect",
    "keysweep.cli.report",
    "keysweep.cli.audit",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keysweep",
        description="Find long-lived AWS access keys on this host, prove which are live, and say what should replace them.",
    )
    parser.add_argument("--version", action="version", version=f"keysweep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    try:
        return int(args.func(args))
    except KeysweepError as exc:
        print(f"keysweep: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("keysweep: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


def run() -> None:
    sys.exit(main())
