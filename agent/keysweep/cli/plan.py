"""`keysweep plan`: the ordered removal steps of every key in the fleet store (and every key the audit lists)."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import socket
import sys
from typing import Any, TextIO

from keysweep import timeutil
from keysweep.central.audit import AuditOptions, AuditResult, account_targets, open_account, run_audit
from keysweep.central.deactivate import check_key_ids
from keysweep.central.key_states import KEY_STATES, KeyState
from keysweep.central.plan import STEPS, Plan, PlanOptions, build_plan, observed_states
from keysweep.central.records import FindingRecord, HostRecord
from keysweep.cli import common
from keysweep.cli.audit import NO_CREDENTIALS
from keysweep.cli.common import add_iam_accounts, output_stream
from keysweep.cli.report import open_existing_store
from keysweep.cloud.trail import MAX_DAYS, KeyUsage
from keysweep.errors import ConfigError, ExitCode
from keysweep.textsafe import dump_json, safe_text

FORMATS = ("table", "json", "html")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "plan",
        help="the ordered steps that remove each key, and where each key stands",
        description="For every key in the fleet store and every key the audit lists: replace -> deploy -> "
        "confirm-unused -> deactivate -> delete-key -> delete-user, each with its state and commands. A step is "
        "offered only once the steps before it are done. IAM facts come from an audit of the owning accounts "
        "(keysweep's own credentials, or the accounts named as for `keysweep audit`). Exit 1 while a key is not "
        "deleted (a step is left).",
    )
    p.add_argument("--db", required=True, metavar="PATH", help="fleet store (path or dynamodb://TABLE)")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
    p.add_argument(
        "--quiet-days",
        type=int,
        default=14,
        metavar="N",
        help="a key is unused once N days pass with no use but keysweep's verification (default %(default)s)",
    )
    p.add_argument(
        "--inactive-days",
        type=int,
        default=30,
        metavar="N",
        help="a key is deleted only after N days inactive (default %(default)s)",
    )
    p.add_argument("--no-iam", action="store_true", help="do not read IAM: plan from the store alone")
    p.add_argument(
        "--trail",
        action="store_true",
        help="also look up each audited key's CloudTrail events (as `keysweep trail`): a use other than "
        "keysweep's within the quiet period holds confirm-unused, and replace lists the source "
        "addresses",
    )
    p.add_argument(
        "--trail-days",
        type=int,
        metavar="N",
        help="with --trail: look back N days (default: the quiet period; LookupEvents keeps 90)",
    )
    p.add_argument(
        "--trail-region",
        action="extend",
        nargs="+",
        default=[],
        metavar="R",
        help="with --trail: regions whose CloudTrail to read (default: every enabled region)",
    )
    p.add_argument(
        "--mark",
        nargs=2,
        metavar=("KEY_ID", "STATE"),
        help=f"record that a person took KEY_ID to STATE ({', '.join(KEY_STATES[1:])}), as the caller "
        "ARN of keysweep's credentials, now; then print the plan",
    )
    p.add_argument("--note", metavar="TEXT", help="with --mark: a note kept with the record (a ticket, a change id)")
    add_iam_accounts(p, session_name="keysweep-plan")
    p.set_defaults(func=run)


def _audit(args: argparse.Namespace, findings: list[FindingRecord]) -> AuditResult | None:
    from keysweep.aws import has_credentials

    named = bool(args.account or args.assume_role_arn or args.organization)
    if named and args.no_iam:
        raise ConfigError("--no-iam reads no account: leave out --account, --assume-role-arn and --organization")
    if not named:
        account_targets(role_name=args.role_name)  # --role-name alone is as wrong here as in `keysweep audit`
    if args.no_iam or not (named or has_credentials()):
        return None
    if not has_credentials():
        raise ConfigError(NO_CREDENTIALS.replace("audit:", "plan:", 1))
    targets, organization = common.iam_targets(args)
    return run_audit(
        targets,
        AuditOptions(),
        findings=findings,
        session_name=args.session_name,
        external_id=args.external_id,
        organization=organization,
    )


def _trail(
    args: argparse.Namespace, days: int, plan: Plan, hosts: list[HostRecord], audit: AuditResult | None
) -> tuple[dict[str, KeyUsage], list[str]]:
    """Each audited key's CloudTrail usage (keysweep trail's lookups, pacing and address resolution), by key id,
    and a note per account or region that could not be read."""
    from keysweep.cloud import trail
    from keysweep.cloud.addresses import Fleet
    from keysweep.cloud.session import base_session, resolve_accounts

    if audit is None:
        raise ConfigError("--trail needs IAM facts: leave out --no-iam, and run with credentials that may read IAM")
    audited = {a.account_id for a in audit.accounts if not a.error}
    usages = [
        KeyUsage(k.key_id, k.user or "", k.account_id or "", k.iam_status or "Active")
        for k in plan.keys
        if k.account_id in audited and k.iam_status in ("Active", "Inactive")
    ]
    accounts, skips = resolve_accounts(
        base_session(), accounts=args.account, organization=args.organization, role_name=args.role_name
    )
    accounts = [a for a in accounts if a.account in {u.account for u in usages}]
    found, more = trail.account_regions(accounts, args.trail_region)
    targets: dict[str, list[Any]] = {}
    for t in found:
        targets.setdefault(t.account, []).append(t)
    start, end = trail.window(days, now=plan.options.current_time)
    trail.lookup_all(usages, targets, start, end)
    trail.resolve_all(usages, targets, Fleet.from_hosts(h.host for h in hosts))
    skips += more + [s for ts in targets.values() for t in ts for s in t.skips]
    notes = [f"CloudTrail not read: {s.service} in {s.account} {s.region}: {s.reason}" for s in skips]
    # where part of an account could not be read, "no use" is not known: those keys count only a use seen
    partial = {s.account for s in skips}
    return {u.key_id: u for u in usages if u.account not in partial or u.sources}, notes


def _who() -> str:
    """The caller ARN of keysweep's credentials; without any, the local user (said to be unverified)."""
    from keysweep.aws import has_credentials

    if has_credentials():
        return open_account(account_targets()[0]).caller_arn
    return f"local user {getpass.getuser()}@{socket.gethostname()} (no AWS identity)"


def _observer(audit: AuditResult | None) -> str:
    arn = next((a.caller_arn for a in audit.accounts if a.caller_arn), None) if audit else None
    return f"keysweep plan as {arn}" if arn else "keysweep plan (store only)"


def _mark(args: argparse.Namespace) -> KeyState:
    key_id, state = args.mark
    try:
        check_key_ids([key_id])
    except ConfigError:
        raise ConfigError(f"--mark {key_id[:24]!r}: not a long-term access key id (AKIA…)") from None
    if state not in KEY_STATES[1:]:
        raise ConfigError(f"--mark {key_id} {state}: the state is one of {', '.join(KEY_STATES[1:])}")
    now = timeutil.now_iso("milliseconds")
    return KeyState(key_id, state, _who(), now, "mark", args.note)


def run(args: argparse.Namespace) -> ExitCode:
    for name in ("quiet_days", "inactive_days"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be 0 or more")
    if args.trail_days is not None and not 1 <= args.trail_days <= MAX_DAYS:
        raise ConfigError(
            f"--trail-days {args.trail_days}: from 1 to {MAX_DAYS} (CloudTrail LookupEvents keeps {MAX_DAYS} days)"
        )
    if (args.trail_days is not None or args.trail_region) and not args.trail:
        raise ConfigError("--trail-days and --trail-region go with --trail")
    if args.trail and args.assume_role_arn:
        raise ConfigError(
            "--trail reads CloudTrail with keysweep's credentials or through --role-name "
            "(--account, --organization), not --assume-role-arn"
        )
    mark = _mark(args) if args.mark else None
    if args.note and not mark:
        raise ConfigError("--note goes with --mark")
    store = open_existing_store(args.db)
    try:
        if mark is not None and not store.record_key_state(mark):
            print(f"keysweep: {mark.key_id} already has a record of {mark.state}; kept the first one", file=sys.stderr)
        findings = list(store.iter_findings())
        hosts = list(store.iter_hosts())
        audit = _audit(args, findings)
        options = PlanOptions(quiet_days=args.quiet_days, inactive_days=args.inactive_days)
        states = list(store.iter_key_states())
        plan = build_plan(findings, hosts, audit, options, states)
        usage: dict[str, KeyUsage] | None = None
        if args.trail:
            days = args.trail_days if args.trail_days is not None else max(1, min(args.quiet_days, MAX_DAYS))
            usage, trail_notes = _trail(args, days, plan, hosts, audit)
            plan = build_plan(findings, hosts, audit, options, states, usage, days)
            plan = dataclasses.replace(plan, notes=plan.notes + tuple(trail_notes))
        seen = observed_states(plan, _observer(audit), timeutil.iso(options.current_time, "milliseconds"))
        if seen:
            for state in seen:
                store.record_key_state(state)
            plan = dataclasses.replace(
                build_plan(findings, hosts, audit, options, list(store.iter_key_states()), usage, plan.trail_days),
                notes=plan.notes,
            )
    finally:
        store.close()
    with output_stream(args.output) as stream:
        if args.format == "json":
            dump_json(plan.to_dict(), stream)
        elif args.format == "html":
            from keysweep.central.plan_html import render_plan_html

            stream.write(render_plan_html(plan))
        else:
            render_table(plan, stream)
    if audit is not None and audit.failed_accounts:
        return ExitCode.RUNTIME
    return ExitCode.FINDINGS if any(k.next_step is not None for k in plan.keys) else ExitCode.CLEAN


def render_table(plan: Plan, out: TextIO) -> None:
    d = plan.to_dict()
    states = ", ".join(f"{n} {s}" for s, n in d["states"].items())
    out.write(f"keysweep plan: {len(plan.keys)} key(s): {states}\n")
    out.write(
        f"steps: {' -> '.join(STEPS)}; quiet period {plan.options.quiet_days} days, delete after "
        f"{plan.options.inactive_days} days inactive\n"
    )
    for note in plan.notes:
        out.write(f"note: {safe_text(note)}\n")
    for key in plan.keys:
        owner = f"{key.user} in {key.account_id}" if key.user else f"account {key.account_id or 'unknown'}"
        out.write(
            f"\n{safe_text(key.key_id)}  ({safe_text(owner)}; IAM {safe_text(key.iam_status or 'unknown')})"
            f"  state: {key.state}\n"
        )
        for host, place in key.locations:
            out.write(f"  at {safe_text(host)}: {safe_text(place)}\n")
        for h in key.history:
            note = f" ({h.note})" if h.note else ""
            out.write(f"  {h.state} at {h.at}: {h.source} by {safe_text(h.actor)}{safe_text(note)}\n")
        for step in key.steps:
            out.write(f"  [{step.state:>10}] {step.name}: {safe_text(step.reason)}\n")
            for command in step.commands:
                out.write(f"               $ {safe_text(command)}\n")
    if not plan.keys:
        out.write("\nNo long-term keys in the store or the audit.\n")
