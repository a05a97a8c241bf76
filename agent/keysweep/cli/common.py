"""What several commands share: one definition of each option group, the stop flag, and a few printers."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from keysweep.errors import ConfigError
from keysweep.models import Finding
from keysweep.report.formats import FORMATS

if TYPE_CHECKING:
    from keysweep.central.audit import AccountTarget
    from keysweep.central.organization import Organization
    from keysweep.sweep import Pipeline

__all__ = [
    "FORMATS",
    "StopFlag",
    "add_cloud_accounts",
    "add_iam_accounts",
    "add_pipeline_options",
    "counts",
    "iam_targets",
    "organization",
    "output_stream",
    "print_delivery",
    "verify_findings",
]


def add_pipeline_options(
    p: argparse.ArgumentParser, *, queue_help: str = "also send the findings to this SQS queue"
) -> None:
    """--format, --verify, --queue-url, --state-dir: the output side of the scan pipeline (scan, cloud)."""
    p.add_argument("--format", choices=FORMATS, help="output format (default: table on a terminal, json otherwise)")
    p.add_argument("--verify", action="store_true", help="prove which keys are live with sts:GetCallerIdentity")
    p.add_argument("--queue-url", metavar="URL", help=queue_help)
    p.add_argument(
        "--state-dir", metavar="DIR", help="state directory (fingerprint key, verification cache, report spool)"
    )


def add_cloud_accounts(
    p: argparse.ArgumentParser, *, region_help: str = "regions to read (default: every region enabled for each account)"
) -> None:
    """--account/--organization, --role-name, --region: the accounts and regions a control-plane read covers
    (cloud, trail)."""
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--account",
        action="extend",
        nargs="+",
        default=[],
        metavar="ID",
        help="accounts to read, through --role-name in each (default: the caller's own account)",
    )
    who.add_argument(
        "--organization",
        action="store_true",
        help="every active account of the organisation (organizations:ListAccounts), through --role-name",
    )
    p.add_argument("--role-name", metavar="NAME", help="the role to assume in each account (--account, --organization)")
    p.add_argument("--region", action="extend", nargs="+", default=[], metavar="R", help=region_help)


def add_iam_accounts(p: argparse.ArgumentParser, *, session_name: str, organization_note: str = "") -> None:
    """The accounts whose IAM is read (audit, plan): own account, --account with --role-name, the organisation,
    or explicit role ARNs."""
    who = p.add_argument_group("accounts (default: the account of keysweep's own credentials)")
    who.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="ID",
        help="account to read by assuming --role-name in it (repeatable)",
    )
    who.add_argument("--role-name", metavar="NAME", help="role assumed in each --account (or member account)")
    who.add_argument(
        "--organization",
        action="store_true",
        help="every active account of the organization (organizations:ListAccounts), assuming "
        "--role-name in each member account" + organization_note,
    )
    who.add_argument(
        "--assume-role-arn",
        action="append",
        default=[],
        metavar="ARN",
        help="a role to assume, one per account (repeatable)",
    )
    who.add_argument("--external-id", metavar="ID", help="ExternalId for AssumeRole")
    who.add_argument("--session-name", default=session_name, help="RoleSessionName (default %(default)s)")


@contextlib.contextmanager
def output_stream(path: str | None) -> Iterator[TextIO]:
    """--output FILE, else standard output."""
    if not path:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8") as stream:
        yield stream


def organization() -> Organization:
    """--organization: the organisation's accounts and OUs, or a usage error saying whose credentials it needs."""
    from keysweep.central.organization import OrganizationError, read_organization

    try:
        return read_organization()
    except OrganizationError as exc:
        raise ConfigError(
            f"--organization: {exc} (run with the management account's or a delegated administrator's credentials)"
        ) from None


def iam_targets(args: argparse.Namespace) -> tuple[list[AccountTarget], Organization | None]:
    """The accounts :func:`add_iam_accounts`' options name, and with --organization the organisation read."""
    from keysweep.central.audit import AccountTarget, account_targets, open_account

    org = own = None
    if args.organization:
        org = organization()
        own = open_account(AccountTarget()).account_id
    targets = account_targets(
        accounts=args.account,
        role_name=args.role_name,
        role_arns=args.assume_role_arn,
        organization=org,
        own_account=own,
    )
    return targets, org


def counts(c: Mapping[str, int]) -> str:
    """``live 2, unknown 1``: largest first, then by name."""
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


class StopFlag:
    """Set by Ctrl-C (SIGINT) or SIGTERM: the run ends early and still reports what it found."""

    def __init__(self) -> None:
        self.stopped = False

    def __call__(self) -> bool:
        return self.stopped

    def _handle(self, signum: int, frame: object) -> None:
        if self.stopped:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stopped = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        saved = [(sig, signal.signal(sig, self._handle)) for sig in (signal.SIGINT, signal.SIGTERM)]
        try:
            yield
        finally:
            for sig, handler in saved:
                signal.signal(sig, handler)


def verify_findings(pipeline: Pipeline, findings: Sequence[Finding]) -> list[Finding]:
    """--verify: the pipeline's verifier over the findings; Ctrl-C leaves the keys not yet checked ``unknown``
    (interrupted). The counts go to stderr."""
    stopping = StopFlag()
    with stopping.installed():
        verified = pipeline.verify(findings, should_stop=stopping)
    by_status = Counter(f.verification.status for f in verified if f.verification is not None)
    if by_status:
        print(f"keysweep: verification: {counts(by_status)} ({pipeline.verifier.calls} STS calls)", file=sys.stderr)
    return verified


def print_delivery(sent: int, pending: int, errors: Sequence[str], spool_home: Path) -> None:
    """--queue-url: what was sent, and what waits in the spool for a later run."""
    if pending:
        print(
            f"keysweep: queue: {sent} messages sent; {pending} wait in {spool_home / 'spool'} "
            f"(a later run with --state-dir {spool_home} delivers them)",
            file=sys.stderr,
        )
    else:
        print(f"keysweep: queue: {sent} messages sent", file=sys.stderr)
    for error in dict.fromkeys(errors):
        print(f"keysweep: queue: {error}", file=sys.stderr)
