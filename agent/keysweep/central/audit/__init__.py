"""The account-level audit: the long-lived key clean-up that needs no agent.

From the IAM credential report, ``ListAccessKeys`` and ``GetAccountSummary`` of each audited account it lists
root access keys, active keys never used or unused for too long, inactive keys, users left with no credential,
console users (humans who belong in IAM Identity Center) and keys older than the rotation age — each with the
action to take and the exact command. With a fleet store it adds what the hosts found: each key's last use,
service and region, its owner's policies, and the keys no audited account knows.

Modules: ``model`` (checks registry, options, items, results), ``accounts`` (targets and their clients),
``iam_reads`` (every IAM read), ``checks`` (one function per credential-report check), ``correlation`` (the keys on
hosts), ``run`` (one audit run). The names below are the package's interface.
"""

from keysweep.central.audit.accounts import AccountClients, AccountTarget, account_targets, open_account
from keysweep.central.audit.checks import evaluate_report, inline_backup_file
from keysweep.central.audit.correlation import correlate, place
from keysweep.central.audit.model import (
    CHECKS,
    SEVERITY_ORDER,
    AccessKeyInfo,
    AccountAudit,
    AuditError,
    AuditItem,
    AuditOptions,
    AuditResult,
    HostKey,
)
from keysweep.central.audit.run import audit_account, run_audit

__all__ = [
    "CHECKS",
    "SEVERITY_ORDER",
    "AccessKeyInfo",
    "AccountAudit",
    "AccountClients",
    "AccountTarget",
    "AuditError",
    "AuditItem",
    "AuditOptions",
    "AuditResult",
    "HostKey",
    "account_targets",
    "audit_account",
    "correlate",
    "evaluate_report",
    "inline_backup_file",
    "open_account",
    "place",
    "run_audit",
]
