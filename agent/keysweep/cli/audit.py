"""`keysweep audit`: the account-level long-lived key clean-up, and the explicit `--deactivate`."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from keysweep.central.audit import (
    AccountTarget,
    AuditError,
    AuditOptions,
    open_account,
    run_audit,
)
from keysweep.central.audit.correlation import FleetFindings
from keysweep.central.audit_output import FORMATS, render_audit
from keysweep.central.deactivate import apply_deactivation, check_key_ids, plan_deactivation, read_key_list
from keysweep.central.securityhub import export_audit
from keysweep.cli import common
from keysweep.cli.common import add_iam_accounts, output_stream
from keysweep.cli.report import open_existing_store, print_export
from keysweep.errors import ConfigError, ExitCode

NO_CREDENTIALS = (
    "audit: no AWS credentials found. Give keysweep credentials that may read IAM in the account to audit "
    "(or assume the --account/--assume-role-arn roles): a profile (AWS_PROFILE=NAME, after `aws sso login` for an "
    "SSO profile), AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or an instance profile or "
    "task role where it runs"
)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "audit",
        help="audit IAM accounts for long-lived key clean-up (no agent needed)",
        description="List root keys, unused and never-used keys, inactive keys, users without credentials, console "
        "users and keys past the rotation age, each with the command that fixes it. Exit 1 when there is "
        "something to clean up.",
    )
    add_iam_accounts(
        p, session_name="keysweep-audit", organization_note="; the SCP commands then name the ready OUs and accounts"
    )
    p.add_argument(
        "--unused-days",
        type=int,
        default=90,
        metavar="N",
        help="active keys unused for more than N days are listed (default %(default)s, CIS)",
    )
    p.add_argument(
        "--recommended-unused-days",
        type=int,
        default=45,
        metavar="N",
        help="the shorter window the output recommends (default %(default)s)",
    )
    p.add_argument(
        "--rotation-days",
        type=int,
        default=90,
        metavar="N",
        help="active keys older than N days are listed for replacement (default %(default)s)",
    )
    p.add_argument(
        "--new-key-grace-days",
        type=int,
        default=7,
        metavar="N",
        help="a key never used yet is judged only once it is N days old (default %(default)s)",
    )
    p.add_argument(
        "--report-wait",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="longest wait for the credential report (default %(default)s)",
    )
    p.add_argument("--db", metavar="PATH", help="fleet store (path or dynamodb://TABLE) to correlate with")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
    p.add_argument("--no-scp", action="store_true", help="leave the SCPs out of the output")
    p.add_argument(
        "--securityhub",
        action="store_true",
        help="also export the items to AWS Security Hub (ASFF); items an earlier audit exported and this "
        "one no longer finds are archived",
    )
    p.add_argument("--securityhub-region", metavar="REGION", help="Security Hub region (default: the SDK's)")
    p.add_argument(
        "--exempt-role",
        action="append",
        default=[],
        metavar="ARN",
        help="a break-glass principal the deny-key-creation SCP spares, e.g. "
        "arn:aws:iam::*:role/BreakGlass (repeatable)",
    )
    act = p.add_argument_group("deactivation (explicit; never done by default)")
    act.add_argument(
        "--deactivate",
        nargs="+",
        default=[],
        metavar="KEY_ID",
        help="set these access keys Inactive (after a confirmation)",
    )
    act.add_argument(
        "--deactivate-from",
        metavar="FILE",
        help="key ids to set Inactive: lines, a CSV with key_id, or an audit/report JSON",
    )
    act.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    act.add_argument(
        "--quiet-days",
        type=int,
        default=14,
        metavar="N",
        help="a key used in the last N days (other than by keysweep's verification) is held back (default %(default)s)",
    )
    act.add_argument(
        "--force",
        action="store_true",
        help="deactivate keys held back by evidence of use (on a host of --db, or used recently)",
    )
    p.set_defaults(func=run)


def _need_credentials() -> None:
    """Every target, own account or assumed role, starts from keysweep's own credentials."""
    from keysweep.aws import has_credentials

    if not has_credentials():
        raise ConfigError(NO_CREDENTIALS)


def run(args: argparse.Namespace) -> ExitCode:
    for arn in args.exempt_role:
        if not arn.startswith("arn:") or ":role/" not in arn:
            raise ConfigError(f"--exempt-role {arn!r}: not a role ARN pattern (arn:aws:iam::*:role/NAME)")
    targets, organization = common.iam_targets(args)
    if args.deactivate or args.deactivate_from:
        return _deactivate(args, targets)
    _need_credentials()
    options = AuditOptions(
        unused_days=args.unused_days,
        recommended_unused_days=args.recommended_unused_days,
        rotation_days=args.rotation_days,
        new_key_grace_days=args.new_key_grace_days,
        report_max_wait=args.report_wait,
    )
    store = open_existing_store(args.db) if args.db else None
    try:
        findings = FleetFindings.read(store) if store else None
        result = run_audit(
            targets,
            options,
            findings=findings,
            session_name=args.session_name,
            external_id=args.external_id,
            organization=organization,
            exempt_roles=args.exempt_role,
        )
    finally:
        if store:
            store.close()
    audited = len(result.failed_accounts) < len(result.accounts)  # no SCP advice when no account was audited
    with output_stream(args.output) as stream:
        render_audit(result, args.format, stream, include_scp=audited and not args.no_scp)
    if args.securityhub and audited and not print_export(export_audit(result, region=args.securityhub_region)):
        return ExitCode.RUNTIME
    for acct in result.failed_accounts:
        print(f"keysweep: account {acct.account_id} not audited: {acct.error}", file=sys.stderr)
    if result.failed_accounts:  # an incomplete audit is an error, even when the other accounts had items
        return ExitCode.RUNTIME
    return ExitCode.FINDINGS if result.items else ExitCode.CLEAN


def _deactivate(args: argparse.Namespace, targets: list[AccountTarget]) -> ExitCode:
    key_ids = check_key_ids(args.deactivate)
    if args.deactivate_from:
        key_ids = check_key_ids(key_ids + read_key_list(Path(args.deactivate_from)))
    _need_credentials()
    accounts = []
    for target in targets:
        try:
            accounts.append(open_account(target, session_name=args.session_name, external_id=args.external_id))
        except AuditError as exc:
            print(f"keysweep: {exc}", file=sys.stderr)
    if not accounts:
        return ExitCode.RUNTIME
    if args.quiet_days < 0:
        raise ConfigError(f"--quiet-days {args.quiet_days}: must be 0 or more")
    hosts, verified = _fleet_evidence(args.db)
    plan = plan_deactivation(key_ids, accounts, hosts=hosts, verified=verified, quiet_days=args.quiet_days)
    todo = [p for p in plan if p.user and p.status == "Active" and (args.force or not p.hold)]
    print(f"{len(todo)} of {len(plan)} key(s) will be set Inactive:", file=sys.stderr)
    for item in plan:
        if item.user:
            state = "will deactivate" if item.status == "Active" else f"already {item.status}"
            if item.hold:
                state = f"{'will deactivate despite --force: ' if args.force else 'held: '}{item.hold}"
            print(f"  {item.key_id}  user {item.user}  account {item.account_id}  {state}", file=sys.stderr)
        else:
            print(f"  {item.key_id}  skipped: {item.reason}", file=sys.stderr)
    if todo and not args.yes:
        print(f"Set {len(todo)} key(s) Inactive? Type 'yes' to go on: ", end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        if not answer:
            raise ConfigError("--deactivate needs a confirmation: answer the prompt or add --yes")
        if answer.strip().lower() != "yes":
            print("keysweep: nothing changed", file=sys.stderr)
            return ExitCode.USAGE
    store = open_existing_store(args.db) if args.db else None
    try:
        results = apply_deactivation([p for p in plan if p in todo or p.status != "Active"], accounts, store=store)
    finally:
        if store:
            store.close()
    for r in results:
        extra = f" by {r.actor} at {r.at}" if r.outcome == "deactivated" else f" ({r.error})" if r.error else ""
        print(f"{r.key_id}\t{r.outcome}{extra}")
    failed = [r for r in results if r.outcome in ("failed", "not-found")]
    held = [p for p in plan if p.user and p.status == "Active" and p not in todo]
    for p in held:
        print(f"{p.key_id}\theld ({p.hold}; --force to deactivate anyway)")
    return ExitCode.RUNTIME if failed else ExitCode.FINDINGS if held else ExitCode.CLEAN


def _fleet_evidence(db: str | None) -> tuple[dict[str, list[str]], dict[str, list[datetime]]]:
    """From the fleet store: key id -> hosts holding it, and key id -> the fleet's verification times."""
    if not db:
        return {}, {}
    store = open_existing_store(db)
    try:
        fleet = FleetFindings.read(store)
    finally:
        store.close()
    return fleet.hosts_by_key(), fleet.verified
