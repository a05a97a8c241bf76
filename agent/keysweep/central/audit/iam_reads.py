"""What the audit reads from IAM: an account's credential report, key ids, summary and the policies and other
credentials of the users it may delete; for keys found on hosts, their owner's last use and policies.

Every IAM call of the audit is here; the checks (``checks``) and the correlation (``correlation``) only judge values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from keysweep import timeutil
from keysweep.central.audit.accounts import AccountClients
from keysweep.central.audit.model import AccessKeyInfo, AuditError, AuditOptions
from keysweep.central.credential_report import CredentialReport, fetch_credential_report
from keysweep.central.evidence import keysweep_use
from keysweep.central.iam_credentials import OtherCredentials, other_credentials
from keysweep.iam_policies import UserPolicies, read_user_policies
from keysweep.retry import error_code


@dataclass(frozen=True)
class AccountReads:
    """Everything read from one account that its checks judge."""

    report: CredentialReport
    root_keys_present: bool  # GetAccountSummary's AccountAccessKeysPresent
    keys: tuple[AccessKeyInfo, ...]
    policies: Mapping[str, UserPolicies]  # users about to be deleted -> their policies (lists only)
    others: Mapping[str, OtherCredentials]  # the same users -> their other credentials
    own_use: Mapping[str, datetime]  # key id -> keysweep's verification that was its last use

    @property
    def key_ids(self) -> dict[tuple[str, int], str]:
        """(user, credential report slot) -> key id."""
        return {(k.user, k.slot): k.key_id for k in self.keys if k.slot is not None}


def read_account(
    clients: AccountClients, options: AuditOptions, verified: Mapping[str, Sequence[datetime]] | None = None
) -> AccountReads:
    """Read one account; an IAM error becomes an :class:`AuditError` naming the account and the error code
    (a credential report that cannot be had raises ``CredentialReportError``)."""
    iam = clients.iam
    try:
        report = fetch_credential_report(iam, max_wait=options.report_max_wait)
        summary = iam.get_account_summary().get("SummaryMap", {})
        keys = list_user_keys(iam, clients.account_id, report)
        doomed = [r.user for r in report.users if not r.active_keys() and not r.has_password]
        return AccountReads(
            report=report,
            root_keys_present=bool(summary.get("AccountAccessKeysPresent")),
            keys=tuple(keys),
            policies={u: read_user_policies(iam, u, details=False) for u in doomed},
            others={u: other_credentials(iam, u) for u in doomed},
            own_use=keysweep_uses(iam, keys, verified or {}),
        )
    except ClientError as exc:
        raise AuditError(f"account {clients.account_id}: {error_code(exc)}") from None
    except BotoCoreError as exc:
        raise AuditError(f"account {clients.account_id}: {type(exc).__name__}") from None


def list_user_keys(iam: Any, account_id: str, report: CredentialReport) -> list[AccessKeyInfo]:
    """Key ids of every user the report shows with a key, matched to the report's slot by creation time."""
    out: list[AccessKeyInfo] = []
    for row in report.users:
        slots = row.existing_keys()
        if not slots:
            continue
        metas = []
        for page in iam.get_paginator("list_access_keys").paginate(UserName=row.user):
            metas.extend(page.get("AccessKeyMetadata", []))
        metas.sort(key=lambda m: m.get("CreateDate") or datetime.min.replace(tzinfo=timeutil.UTC))
        free = {k.slot: k for k in slots}
        for meta in metas:
            created = meta.get("CreateDate")
            slot = next(
                (
                    s
                    for s, k in free.items()
                    if isinstance(k.last_rotated, datetime)
                    and created
                    and abs((k.last_rotated - created).total_seconds()) < 2
                ),
                None,
            )
            if slot is None and free:
                slot = min(free)  # same order as the report when times do not match to the second
            if slot is not None:
                free.pop(slot)
            out.append(
                AccessKeyInfo(account_id, row.user, meta["AccessKeyId"], meta.get("Status", "Unknown"), created, slot)
            )
    return out


def keysweep_uses(
    iam: Any, keys: Sequence[AccessKeyInfo], verified: Mapping[str, Sequence[datetime]]
) -> dict[str, datetime]:
    """Key id -> the fleet's verification that was its last use in IAM. Asked of GetAccessKeyLastUsed (the
    credential report may lag and omits the service on some endpoints) only for keys the fleet verified."""
    out: dict[str, datetime] = {}
    for key in keys:
        if key.status != "Active" or not verified.get(key.key_id):
            continue
        used = iam.get_access_key_last_used(AccessKeyId=key.key_id).get("AccessKeyLastUsed", {})
        own = keysweep_use(used.get("LastUsedDate"), used.get("ServiceName"), verified[key.key_id])
        if own is not None:
            out[key.key_id] = own
    return out


@dataclass(frozen=True)
class KeyOwner:
    """A host key's owner as its account's IAM tells it: the user, the key's last use and the user's policies.
    ``error`` is the code of the call that failed (what was read before it is kept)."""

    user: str
    last_used: datetime | None = None
    service: str | None = None
    region: str | None = None
    policies: UserPolicies | None = None
    error: str | None = None


def read_key_owner(iam: Any, key_id: str, user: str) -> KeyOwner:
    """GetAccessKeyLastUsed for ``key_id`` (which names its user), then that user's policies with details."""
    try:
        resp = iam.get_access_key_last_used(AccessKeyId=key_id)
    except ClientError as exc:
        return KeyOwner(user, error=error_code(exc))
    used = resp.get("AccessKeyLastUsed", {})
    owner = KeyOwner(
        resp.get("UserName") or user, used.get("LastUsedDate"), used.get("ServiceName"), used.get("Region")
    )
    try:
        return dataclasses.replace(owner, policies=read_user_policies(iam, owner.user))
    except ClientError as exc:
        return dataclasses.replace(owner, error=error_code(exc))
