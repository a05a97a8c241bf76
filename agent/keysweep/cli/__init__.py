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

# each subcommand and the module that registers it; only the module a command needs is imported, so
# `keysweep scan` does not pay for boto3 or the central side at start-up
_COMMAND_MODULES = {
    "scan": "keysweep.cli.scan",
    "rules": "keysweep.cli.rules",
    "agent": "keysweep.cli.agent",
    "config": "keysweep.cli.agent",
    "status": "keysweep.cli.agent",
    "collect": "keysweep.cli.collect",
    "report": "keysweep.cli.report",
    "audit": "keysweep.cli.audit",
    "iac": "keysweep.cli.iac",
    "cloud": "keysweep.cli.cloud",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with a known ``command``, only that command's module is imported and registered."""
    parser = argparse.ArgumentParser(
        prog="keysweep",
        description="Find long-lived AWS access keys on this host, prove which are live, and say what should replace them.",
    )
    parser.add_argument("--version", action="version", version=f"keysweep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in _COMMAND_MODULES:
        names = [_COMMAND_MODULES[command]]
    else:
        names = list(dict.fromkeys(_COMMAND_MODULES.values()))
    for name in names:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in arguments if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(arguments)
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
