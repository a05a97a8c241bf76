"""The account audit as a scheduled AWS Lambda function (an EventBridge rule invokes it; serverless mode).

Handler: ``keysweep.central.lambda_audit.handler``. Environment:

- ``KEYSWEEP_TABLE``: the fleet table; its findings are correlated with the audit (keys on hosts, keysweep's own
  verifications not counted as use). Empty: the audit runs without the fleet.
- ``KEYSWEEP_AUDIT_ROLE_NAME``: the role to assume in each other account, with ``KEYSWEEP_AUDIT_ORGANIZATION=true``
  (every active account of the organisation) and/or ``KEYSWEEP_AUDIT_ACCOUNTS`` (account ids, comma-separated).
  Without it, the function's own account is audited.
- ``KEYSWEEP_AUDIT_SECURITYHUB=true``: every audit item is imported into Security Hub in the function's account
  and region; items an earlier audit imported and this one no longer finds are archived.

It returns (and logs) a summary: item counts by check, the accounts audited and those that failed with their
error, and the Security Hub counts. No key secret exists here; item texts are not logged. When no account at all
could be audited the function fails, so the invocation counts as an error and its alarm fires.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

from keysweep.central.audit import (
    AccountTarget,
    AuditError,
    AuditOptions,
    AuditResult,
    account_targets,
    open_account,
    run_audit,
)
from keysweep.central.organization import Organization, read_organization
from keysweep.central.securityhub import ExportResult, export_audit
from keysweep.central.store import open_store
from keysweep.errors import ConfigError

TABLE_ENV = "KEYSWEEP_TABLE"
ROLE_NAME_ENV = "KEYSWEEP_AUDIT_ROLE_NAME"
ACCOUNTS_ENV = "KEYSWEEP_AUDIT_ACCOUNTS"
ORGANIZATION_ENV = "KEYSWEEP_AUDIT_ORGANIZATION"
SECURITYHUB_ENV = "KEYSWEEP_AUDIT_SECURITYHUB"
SESSION_NAME = "keysweep-scheduled-audit"

log = logging.getLogger("keysweep.lambda_audit")


def _flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "false"):
        return False
    if value == "true":
        return True
    raise ConfigError(f"{name}: true or false, got {value!r}")


def _targets() -> tuple[list[AccountTarget], Organization | None]:
    role_name = os.environ.get(ROLE_NAME_ENV, "").strip() or None
    accounts = [a.strip() for a in os.environ.get(ACCOUNTS_ENV, "").split(",") if a.strip()]
    organization = own = None
    if _flag(ORGANIZATION_ENV):
        organization = read_organization()
        own = open_account(AccountTarget(), session_name=SESSION_NAME).account_id
    elif role_name and not accounts:
        raise ConfigError(f"{ROLE_NAME_ENV} needs {ORGANIZATION_ENV}=true or {ACCOUNTS_ENV}")
    return account_targets(
        accounts=accounts, role_name=role_name, organization=organization, own_account=own
    ), organization


def summary(result: AuditResult, export: ExportResult | None) -> dict[str, Any]:
    """What one scheduled audit found, small and JSON-able (no item text)."""
    return {
        "accounts": len(result.accounts),
        "audited_accounts": sorted(a.account_id for a in result.accounts if not a.error),
        "failed_accounts": [{"account_id": a.account_id, "error": a.error} for a in result.failed_accounts],
        "items": len(result.items),
        "checks": dict(sorted(Counter(i.check for i in result.items).items())),
        "host_keys": len(result.host_keys),
        "securityhub": None
        if export is None
        else {"imported": export.imported, "archived": export.archived, "failed": len(export.failed)},
    }


def handler(event: dict[str, Any] | None = None, context: Any = None) -> dict[str, Any]:
    logging.getLogger("keysweep").setLevel(os.environ.get("KEYSWEEP_LOG_LEVEL", "INFO").upper())
    securityhub = _flag(SECURITYHUB_ENV)
    targets, organization = _targets()
    table = os.environ.get(TABLE_ENV, "").strip()
    store = open_store(f"dynamodb://{table}", create=False) if table else None
    try:
        findings = list(store.iter_findings()) if store else None
    finally:
        if store:
            store.close()
    result = run_audit(targets, AuditOptions(), findings=findings, session_name=SESSION_NAME, organization=organization)
    for failed in result.failed_accounts:
        log.error("account %s not audited: %s", failed.account_id, failed.error)
    if len(result.failed_accounts) == len(result.accounts):
        raise AuditError(f"no account could be audited ({len(result.accounts)} tried)")
    export = export_audit(result) if securityhub else None
    if export and export.failed:
        log.error(
            "Security Hub refused %d finding(s): %s",
            len(export.failed),
            sorted({f.get("ErrorCode", "?") for f in export.failed}),
        )
    out = summary(result, export)
    log.info("audit: %s", out)
    return out
