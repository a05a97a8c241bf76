"""The audit's values: its checks, options, items and results (plain frozen dataclasses, no IAM calls)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from keysweep import timeutil
from keysweep.central.organization import Organization
from keysweep.errors import ConfigError, KeysweepError
from keysweep.iam_policies import UserPolicies

SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")

# check name -> (severity, one-line meaning); the order is the order of the output. Each check is one function:
# ``checks`` for those judged from an account's credential report, ``correlation`` for those about keys on hosts.
CHECKS: dict[str, tuple[str, str]] = {
    "root-access-key": ("critical", "the root user has access keys"),
    "host-key-unknown-to-audit": ("high", "a key found on hosts that no audited account knows"),
    "key-on-hosts": ("high", "an IAM user's key found on hosts"),
    "never-used-key": ("medium", "an active key that was never used"),
    "unused-key": ("medium", "an active key not used for longer than the unused window"),
    "console-user-with-keys": ("medium", "a console (human) user who also has active access keys"),
    "old-key": ("medium", "an active key older than the rotation age"),
    "inactive-key": ("low", "an inactive key that can be deleted"),
    "user-without-credentials": ("low", "a user with no active key and no console password"),
    "console-user": ("info", "a console (human) user who should sign in through IAM Identity Center"),
}


class AuditError(KeysweepError):
    """An account could not be audited (role not assumable, IAM not readable)."""


@dataclass(frozen=True)
class AuditOptions:
    unused_days: int = 90  # CIS AWS Foundations Benchmark
    recommended_unused_days: int = 45
    rotation_days: int = 90
    new_key_grace_days: int = 7  # a never-used key younger than this is not yet judged
    now: datetime | None = None
    report_max_wait: float = 120.0

    def __post_init__(self) -> None:
        for name in ("unused_days", "recommended_unused_days", "rotation_days"):
            if getattr(self, name) < 1:
                raise ConfigError(f"audit option {name}: must be at least 1 day, got {getattr(self, name)}")
        if self.new_key_grace_days < 0:
            raise ConfigError(f"audit option new_key_grace_days: must be 0 or more, got {self.new_key_grace_days}")

    @property
    def current_time(self) -> datetime:
        return self.now or timeutil.now()


@dataclass(frozen=True)
class AccessKeyInfo:
    account_id: str
    user: str
    key_id: str
    status: str  # Active | Inactive
    created: datetime | None
    slot: int | None  # access_key_N of the credential report


def jsonable(value: Any) -> Any:
    """``value`` with its datetimes as UTC ISO strings (``Z``) and its tuples as lists, for JSON."""
    if isinstance(value, datetime):
        return timeutil.iso(value, "auto")
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class AuditItem:
    check: str
    account_id: str
    summary: str
    action: str
    commands: tuple[str, ...]
    user: str | None = None
    arn: str | None = None
    key_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return CHECKS[self.check][0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "account_id": self.account_id,
            "user": self.user,
            "arn": self.arn,
            "key_id": self.key_id,
            "summary": self.summary,
            "action": self.action,
            "commands": list(self.commands),
            "details": jsonable(self.details),
        }


@dataclass(frozen=True)
class AccountAudit:
    account_id: str
    caller_arn: str | None
    items: tuple[AuditItem, ...]
    keys: tuple[AccessKeyInfo, ...]
    root_keys_present: bool
    report_generated_at: datetime | None = None
    users: int = 0
    notes: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "caller_arn": self.caller_arn,
            "users": self.users,
            "root_keys_present": self.root_keys_present,
            "report_generated_at": jsonable(self.report_generated_at),
            "keys": len(self.keys),
            "items": len(self.items),
            "notes": list(self.notes),
            "error": self.error,
        }


@dataclass(frozen=True)
class HostKey:
    """A key as the fleet store knows it, with the audit's view of it when an audited account owns it."""

    key_id: str
    account_id: str | None
    hosts: tuple[str, ...]
    locations: tuple[tuple[str, str], ...]  # (hostname, path or place)
    fleet_status: str | None
    known: bool
    user: str | None = None
    iam_status: str | None = None
    last_used: datetime | None = None
    last_used_service: str | None = None
    last_used_region: str | None = None
    policies: UserPolicies | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["policies"] = self.policies.to_dict() if self.policies else None
        d["locations"] = [{"host": h, "place": p} for h, p in self.locations]
        return jsonable(d)


@dataclass(frozen=True)
class AuditResult:
    accounts: tuple[AccountAudit, ...]
    options: AuditOptions
    host_keys: tuple[HostKey, ...] = ()
    host_key_items: tuple[AuditItem, ...] = ()
    notes: tuple[str, ...] = ()
    organization: Organization | None = None  # with --organization: where the SCPs can go
    exempt_roles: tuple[str, ...] = ()  # break-glass principals the deny-key-creation SCP spares

    @property
    def items(self) -> list[AuditItem]:
        every = [i for a in self.accounts for i in a.items] + list(self.host_key_items)
        order = list(CHECKS)
        return sorted(every, key=lambda i: (order.index(i.check), i.account_id, i.user or "", i.key_id or ""))

    @property
    def failed_accounts(self) -> list[AccountAudit]:
        return [a for a in self.accounts if a.error]
