"""The command line: the only place that prints or exits.

Each sub-module registers its subcommands with ``register(subparsers)`` and returns an exit code from the
handler it sets as ``func``; errors raised as :class:`keysweep.errors.KeysweepError` become a one-line message
on stderr and the exception's exit code. Any other exception is exit 3 with one line naming it (the traceback
with ``--debug``) and a ``fatal-error`` event in the agent's JSON log.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from keysweep import __version__
from keysweep.errors import ExitCode, KeysweepError, describe
from keysweep.textsafe import safe_text

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
    "export": "keysweep.cli.export",
    "audit": "keysweep.cli.audit",
    "iac": "keysweep.cli.iac",
    "cloud": "keysweep.cli.cloud",
    "trail": "keysweep.cli.trail",
    "plan": "keysweep.cli.plan",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with a known ``command``, only that command's module is imported and registered."""
    parser = argparse.ArgumentParser(
        prog="keysweep",
        description="Find long-lived AWS access keys on this host, prove which are live, and say what should replace them.",
    )
    parser.add_argument("--version", action="version", version=f"keysweep {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an unexpected error, also print its traceback")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in _COMMAND_MODULES:
        names = [_COMMAND_MODULES[command]]
    else:
        names = list(dict.fromkeys(_COMMAND_MODULES.values()))
    for name in names:
        importlib.import_module(name).register(sub)
    return parser


class _StderrFormatter(logging.Formatter):
    """Warnings of the one-shot commands on stderr: ``keysweep: state.corrupt: file=…, reason=…``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            text = f"{record.msg}: " + ", ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        else:
            text = record.getMessage()
        return "keysweep: " + safe_text(text)


def _stderr_logging() -> None:
    """Warnings of a command that sets up no logging of its own (the agent's JSON log, collect's) go to stderr
    in our format: the last-resort handler, so any real configuration still takes over."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_StderrFormatter())
    logging.lastResort = handler


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in arguments if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(arguments)
    if not getattr(args, "func", None):
        _command_required(parser)
        return ExitCode.USAGE
    _stderr_logging()
    try:
        return int(args.func(args))
    except KeysweepError as exc:
        _log_fatal(exc, int(exc.exit_code))
        print(f"keysweep: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("keysweep: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - a bug or an unforeseen condition: exit 3, never 1 ("findings")
        return _fatal(exc, debug=args.debug)


def _log_fatal(exc: Exception, exit_code: int) -> str:
    """The error as one line; when a log other than stderr is set up (the agent's JSON log on stdout), also logged
    there as ``fatal-error``."""
    error = describe(exc)
    if any(getattr(h, "stream", None) not in (None, sys.stderr) for h in logging.getLogger().handlers):
        logging.getLogger("keysweep").critical(
            "fatal-error", extra={"fields": {"error_type": type(exc).__name__, "error": error, "exit_code": exit_code}}
        )
    return error


def _fatal(exc: Exception, *, debug: bool) -> int:
    """One line naming the error (the traceback only with --debug); a JSON log (the agent's) gets the event."""
    error = _log_fatal(exc, int(ExitCode.RUNTIME))
    print(
        f"keysweep: internal error: {error}" + ("" if debug else " (run with --debug for the traceback)"),
        file=sys.stderr,
    )
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    return int(ExitCode.RUNTIME)


def _command_required(parser: argparse.ArgumentParser) -> None:
    """Bare ``keysweep``: say that a command is needed, then the help that lists them."""
    print(
        "keysweep: error: a command is required (one of the commands below; "
        "`keysweep COMMAND --help` for its options)\n",
        file=sys.stderr,
    )
    parser.print_help(sys.stderr)


def run() -> None:
    sys.exit(main())
