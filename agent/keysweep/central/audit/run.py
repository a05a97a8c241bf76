"""One audit run: each account read and judged (a failing account is recorded and the others go on), then the
fleet's findings correlated and the removals of keys that hosts still hold held back."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from keysweep.central.audit.accounts import AccountClients, AccountTarget, open_account
from keysweep.central.audit.checks import (
    evaluate_report,
    grace_note,
    keys_in_grace,
    keys_in_shorter_window,
    window_note,
)
from keysweep.central.audit.correlation import FleetFindings, correlate, hold_for_hosts
from keysweep.central.audit.iam_reads import read_account
from keysweep.central.audit.model import AccountAudit, AuditError, AuditItem, AuditOptions, AuditResult, HostKey
from keysweep.central.credential_report import CredentialReport, CredentialReportError
from keysweep.central.organization import Organization
from keysweep.central.records import FindingRecord


def audit_account(
    clients: AccountClients, options: AuditOptions, verified: Mapping[str, Sequence[datetime]] | None = None
) -> tuple[AccountAudit, CredentialReport]:
    reads = read_account(clients, options, verified)
    report = reads.report
    items = evaluate_report(
        report,
        account_id=clients.account_id,
        options=options,
        key_ids=reads.key_ids,
        root_keys_present=reads.root_keys_present,
        policies=reads.policies,
        others=reads.others,
        own_use=reads.own_use,
    )
    notes = [n for n in (grace_note(keys_in_grace(report, options), options),) if n]
    if report.root is None:
        notes.append(
            "The credential report has no <root_account> row; root keys were judged from GetAccountSummary alone."
        )
    if report.missing_columns:
        notes.append(f"The credential report lacks the columns {', '.join(report.missing_columns)}.")
    return AccountAudit(
        account_id=clients.account_id,
        caller_arn=clients.caller_arn,
        items=tuple(items),
        keys=reads.keys,
        root_keys_present=reads.root_keys_present,
        report_generated_at=report.generated_at,
        users=len(report.users),
        notes=tuple(notes),
    ), report


def run_audit(
    targets: Sequence[AccountTarget],
    options: AuditOptions,
    *,
    findings: Iterable[FindingRecord] | FleetFindings | None = None,
    session_name: str = "keysweep-audit",
    external_id: str | None = None,
    organization: Organization | None = None,
    exempt_roles: Sequence[str] = (),
) -> AuditResult:
    """Audit every target; an account that fails is recorded with its error and the others go on."""
    audits: list[AccountAudit] = []
    clients: dict[str, AccountClients] = {}
    notes: list[str] = []
    more = 0
    fleet = (
        None
        if findings is None
        else findings
        if isinstance(findings, FleetFindings)
        else FleetFindings.of_records(findings)
    )
    verified = fleet.verified if fleet else {}
    for target in targets:
        try:
            acct = open_account(target, session_name=session_name, external_id=external_id)
            audit, report = audit_account(acct, options, verified)
        except (AuditError, CredentialReportError) as exc:
            audits.append(
                AccountAudit(
                    account_id=target.account_id or "unknown",
                    caller_arn=None,
                    items=(),
                    keys=(),
                    root_keys_present=False,
                    error=str(exc),
                )
            )
            continue
        clients[acct.account_id] = acct
        audits.append(audit)
        more += keys_in_shorter_window(report, options)
    note = window_note(more, options)
    if note:
        notes.append(note)
    host_keys: list[HostKey] = []
    host_items: list[AuditItem] = []
    if fleet is not None:
        host_keys, host_items = correlate(fleet, audits, clients, verified)
        audits = [dataclasses.replace(a, items=tuple(hold_for_hosts(a.items, host_keys))) for a in audits]
        if fleet.temporary:
            notes.append(
                f"{len(fleet.temporary)} temporary or other non-IAM-user key id(s) found on hosts were not "
                "correlated: only IAM users' long-term (AKIA) keys belong to an account's key list."
            )
    return AuditResult(
        tuple(audits),
        options,
        tuple(host_keys),
        tuple(host_items),
        tuple(notes),
        organization=organization,
        exempt_roles=tuple(exempt_roles),
    )
