"""The account-level audit: the long-lived key clean-up that needs no agent.

From the IAM credential report, ``ListAccessKeys`` and ``GetAccountSummary`` of each audited account it lists
root access keys, active keys never used or unused for too long, inactive keys, users left with no credential,
console users (humans who belong in IAM Identity Center) and keys older than the rotation age — each with the
action to take and the exact command. With a fleet store it adds what the hosts found: each key's last use,
service and region, its owner's policies, and the keys no audited account knows.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from keysweep import aws
from keysweep.central.credential_report import (
    CredentialReport,
    CredentialReportError,
    CredentialReportRow,
    KeyColumns,
    fetch_credential_report,
)
from keysweep.central.evidence import keysweep_use, verification_times
from keysweep.central.iam_credentials import OtherCredentials, other_credentials
from keysweep.central.organization import Organization
from keysweep.central.records import FindingRecord, key_word
from keysweep.errors import ConfigError, KeysweepError
from keysweep.iam_policies import UserPolicies, read_user_policies
from keysweep.permission_copy import copy_to_permission_set, copy_to_role

SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")

# check name -> (severity, one-line meaning); the order is the order of the output
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
        return self.now or datetime.now(UTC)


@dataclass(frozen=True)
class AccountTarget:
    """One account to audit: the caller's own (``role_arn`` None) or one reached by assuming a role."""

    role_arn: str | None = None

    @property
    def account_id(self) -> str | None:
        parts = (self.role_arn or "").split(":")
        return parts[4] if len(parts) > 5 else None


def account_targets(
    *, accounts: Sequence[str] = (), role_name: str | None = None, role_arns: Sequence[str] = (),
    partition: str = "aws", organization: Organization | None = None, own_account: str | None = None,
) -> list[AccountTarget]:
    """``--account`` with ``--role-name`` (a role of that name in each account) and/or explicit role ARNs; with
    ``organization``, every active account of it (its own account, ``own_account``, with keysweep's credentials)."""
    if organization is not None:
        if not role_name:
            raise ConfigError("--organization needs --role-name (the role to assume in each member account)")
        accounts = [a for a in sorted(organization.accounts) if a != own_account] + list(accounts)
        own = [AccountTarget()] if own_account in organization.accounts else []
        return own + account_targets(accounts=accounts, role_name=role_name, role_arns=role_arns,
                                     partition=partition) if accounts or role_arns else own
    for acct in accounts:
        if not (len(acct) == 12 and acct.isdigit()):
            raise ConfigError(f"--account {acct!r}: an account id is 12 digits")
    if accounts and not role_name:
        raise ConfigError("--account needs --role-name (the role to assume in each account)")
    if role_name and not accounts:
        raise ConfigError("--role-name needs at least one --account")
    for arn in role_arns:
        if not arn.startswith("arn:") or ":role/" not in arn:
            raise ConfigError(f"--assume-role-arn {arn!r}: not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    arns = [f"arn:{partition}:iam::{a}:role/{role_name}" for a in accounts] + list(role_arns)
    if not arns:
        return [AccountTarget()]
    return [AccountTarget(a) for a in dict.fromkeys(arns)]


@dataclass
class AccountClients:
    account_id: str
    caller_arn: str
    iam: Any
    sts: Any


def open_account(target: AccountTarget, *, session_name: str = "keysweep-audit",
                 external_id: str | None = None) -> AccountClients:
    """IAM and STS clients for ``target``: keysweep's own credentials, or a role assumed with them."""
    sts = aws.make_client("sts", region="us-east-1")
    try:
        if target.role_arn is None:
            ident = sts.get_caller_identity()
            return AccountClients(ident["Account"], ident["Arn"], aws.make_client("iam", region="us-east-1"), sts)
        kwargs: dict[str, Any] = {"RoleArn": target.role_arn, "RoleSessionName": session_name}
        if external_id:
            kwargs["ExternalId"] = external_id
        creds = sts.assume_role(**kwargs)["Credentials"]
        signing = {
            "access_key_id": creds["AccessKeyId"],
            "secret_access_key": creds["SecretAccessKey"],
            "session_token": creds["SessionToken"],
        }
        role_sts = aws.isolated_client("sts", **signing)
        ident = role_sts.get_caller_identity()
        return AccountClients(ident["Account"], ident["Arn"], aws.isolated_client("iam", **signing), role_sts)
    except ClientError as exc:
        raise AuditError(f"{target.role_arn or 'own credentials'}: {_code(exc)}") from None
    except BotoCoreError as exc:
        raise AuditError(f"{target.role_arn or 'own credentials'}: {type(exc).__name__}") from None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "error")


@dataclass(frozen=True)
class AccessKeyInfo:
    account_id: str
    user: str
    key_id: str
    status: str  # Active | Inactive
    created: datetime | None
    slot: int | None  # access_key_N of the credential report


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
            "details": _jsonable(self.details),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


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
            "report_generated_at": _jsonable(self.report_generated_at),
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
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["policies"] = self.policies.to_dict() if self.policies else None
        d["locations"] = [{"host": h, "place": p} for h, p in self.locations]
        return _jsonable(d)


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


# ---------------------------------------------------------------------------------------------------- commands

def _cmd_deactivate(user: str, key_id: str) -> str:
    return f"aws iam update-access-key --user-name {user} --access-key-id {key_id} --status Inactive"


def _cmd_delete_key(user: str, key_id: str) -> str:
    return f"aws iam delete-access-key --user-name {user} --access-key-id {key_id}"


def _key_ref(row: CredentialReportRow, key: KeyColumns, ids: Mapping[tuple[str, int], str]) -> str:
    return ids.get((row.user, key.slot)) or f"<access key {key.slot} of {row.user}>"


def _days(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds() // 86400))


def _delete_user_commands(
    user: str, keys: Sequence[str], policies: UserPolicies | None, others: OtherCredentials | None = None
) -> list[str]:
    cmds = [_cmd_delete_key(user, k) for k in keys]
    if others is not None:
        cmds += others.delete_commands(user)
    if policies is not None:
        cmds += [f"aws iam detach-user-policy --user-name {user} --policy-arn {a}" for a in policies.attached]
        for name in policies.inline:  # an inline policy exists nowhere else: save it before deleting it
            cmds.append(f"aws iam get-user-policy --user-name {user} --policy-name {name} --query PolicyDocument "
                        f"--output json > {inline_backup_file(user, name)}")
            cmds.append(f"aws iam delete-user-policy --user-name {user} --policy-name {name}")
        cmds += [f"aws iam remove-user-from-group --user-name {user} --group-name {g}" for g in policies.groups]
    cmds.append(f"aws iam delete-user --user-name {user}")
    return cmds


def inline_backup_file(user: str, policy: str) -> str:
    """Where the delete commands save an inline policy first (IAM names hold no shell metacharacters)."""
    return f"keysweep-backup-{user}-{policy}.json"


def _in_grace(key: KeyColumns, now: datetime, options: AuditOptions) -> bool:
    created = key.last_rotated
    return isinstance(created, datetime) and now - created < timedelta(days=options.new_key_grace_days)


# ---------------------------------------------------------------------------------------------------- evaluation

def evaluate_report(
    report: CredentialReport,
    *,
    account_id: str,
    options: AuditOptions,
    key_ids: Mapping[tuple[str, int], str] | None = None,
    root_keys_present: bool = False,
    policies: Mapping[str, UserPolicies] | None = None,
    others: Mapping[str, OtherCredentials] | None = None,
    own_use: Mapping[str, datetime] | None = None,
) -> list[AuditItem]:
    """The audit items for one account, from its credential report and the key ids of ListAccessKeys.

    ``key_ids`` maps (user, report slot) to the key id; ``policies`` the users about to be deleted to their
    policies (so the delete commands detach them first), ``others`` to their other credentials (a user holding
    an active one is not "without credentials"; inactive ones are deleted first); ``own_use`` key ids whose last use
    in IAM was keysweep's own verification to that verification's time (see :func:`keysweep_uses`).
    """
    ids = key_ids or {}
    now = options.current_time
    items: list[AuditItem] = []

    root = report.root
    root_active = [k for k in root.keys if k.is_active] if root else []
    if root_keys_present or root_active:
        details: dict[str, Any] = {"account_access_keys_present": root_keys_present}
        if root:
            details["keys"] = [
                {"slot": k.slot, "active": k.active, "created": k.last_rotated, "last_used": k.last_used_date,
                 "last_used_service": k.last_used_service, "last_used_region": k.last_used_region}
                for k in root.keys if k.exists or k.is_active
            ]
        items.append(AuditItem(
            check="root-access-key", account_id=account_id, user="<root_account>",
            arn=root.arn if root else f"arn:aws:iam::{account_id}:root",
            summary="The root user has access keys: anyone holding them controls the whole account.",
            action="Delete the root user's access keys (sign in as root, Security credentials, Access keys). "
                   "Nothing should run as root; move any use to a role first.",
            commands=("aws iam list-access-keys   # signed as the root user",
                      "aws iam delete-access-key --access-key-id <ROOT_KEY_ID>   # signed as the root user"),
            details=details,
        ))

    unused_limit = timedelta(days=options.unused_days)
    rotation_limit = timedelta(days=options.rotation_days)
    for row in report.users:
        active = row.active_keys()
        for key in row.existing_keys():
            key_id = _key_ref(row, key, ids)
            base = {"slot": key.slot, "created": key.last_rotated}
            if not key.is_active:
                items.append(AuditItem(
                    check="inactive-key", account_id=account_id, user=row.user, arn=row.arn, key_id=key_id,
                    summary=f"{row.user}: inactive key {key_id} (last used {_when(key.last_used_date)}).",
                    action="Delete it: an inactive key only waits to be turned back on.",
                    commands=(_cmd_delete_key(row.user, key_id),),
                    details={**base, "last_used": key.last_used_date},
                ))
                continue
            own = (own_use or {}).get(key_id)
            never_used = key.never_used or own is not None
            if never_used and _in_grace(key, now, options):
                continue  # counted by keys_in_grace: too new to call unused
            if never_used:
                note = (" AWS tracks key use since 2015-04-22; this key is older, so it may have been used before."
                        if key.use_may_predate_tracking else "")
                if own is not None:
                    note += (f" Its only recorded use ({_when(key.last_used_date, exact=True)}, sts) is keysweep's own "
                             f"verification of {_when(own, exact=True)}, which is not use.")
                items.append(AuditItem(
                    check="never-used-key", account_id=account_id, user=row.user, arn=row.arn, key_id=key_id,
                    summary=f"{row.user}: active key {key_id} was never used "
                            f"(created {_when(key.last_rotated)}).{note}",
                    action="Deactivate it now and delete it after a quiet week: nothing depends on it.",
                    commands=(_cmd_deactivate(row.user, key_id), _cmd_delete_key(row.user, key_id)),
                    details={**base, "use_may_predate_tracking": key.use_may_predate_tracking,
                             "keysweep_verification_use": own},
                ))
                continue
            assert isinstance(key.last_used_date, datetime)
            idle = now - key.last_used_date
            if idle > unused_limit:
                items.append(AuditItem(
                    check="unused-key", account_id=account_id, user=row.user, arn=row.arn, key_id=key_id,
                    summary=f"{row.user}: active key {key_id} not used for {_days(idle)} days "
                            f"(last {key.last_used_service} in {key.last_used_region}).",
                    action=f"Deactivate it (unused for more than {options.unused_days} days), delete it after a "
                           "quiet week.",
                    commands=(_cmd_deactivate(row.user, key_id), _cmd_delete_key(row.user, key_id)),
                    details={**base, "last_used": key.last_used_date, "idle_days": _days(idle),
                             "last_used_service": key.last_used_service, "last_used_region": key.last_used_region},
                ))
                continue
            if isinstance(key.last_rotated, datetime) and now - key.last_rotated > rotation_limit:
                age = _days(now - key.last_rotated)
                items.append(AuditItem(
                    check="old-key", account_id=account_id, user=row.user, arn=row.arn, key_id=key_id,
                    summary=f"{row.user}: active key {key_id} is {age} days old "
                            f"(rotation age {options.rotation_days}); last used {_when(key.last_used_date)}.",
                    action="Replace it with a role (instance profile, task role, IRSA, Identity Center); where a "
                           "key must stay, rotate it: create the new key, switch every consumer, then deactivate "
                           "and delete the old one.",
                    commands=(f"aws iam create-access-key --user-name {row.user}",
                              _cmd_deactivate(row.user, key_id), _cmd_delete_key(row.user, key_id)),
                    details={**base, "age_days": age, "last_used": key.last_used_date},
                ))
        if row.has_password:
            if active:
                refs = [_key_ref(row, k, ids) for k in active]
                items.append(AuditItem(
                    check="console-user-with-keys", account_id=account_id, user=row.user, arn=row.arn,
                    key_id=refs[0] if len(refs) == 1 else None,
                    summary=f"{row.user}: a console user (password, MFA {_flag(row.mfa_active)}) with active "
                            f"keys {', '.join(refs)}.",
                    action="A human: give them IAM Identity Center (SSO) access and `aws sso login` for the CLI, "
                           "then deactivate and delete the keys and the console password.",
                    commands=tuple([_cmd_deactivate(row.user, r) for r in refs]
                                   + [f"aws iam delete-login-profile --user-name {row.user}"]),
                    details={"mfa_active": row.mfa_active, "password_last_used": row.password_last_used,
                             "keys": refs},
                ))
            else:
                items.append(AuditItem(
                    check="console-user", account_id=account_id, user=row.user, arn=row.arn,
                    summary=f"{row.user}: a console user (password last used {_when(row.password_last_used)}, "
                            f"MFA {_flag(row.mfa_active)}).",
                    action="A human: move them to IAM Identity Center (SSO), then remove the IAM user's password.",
                    commands=(f"aws iam delete-login-profile --user-name {row.user}",),
                    details={"mfa_active": row.mfa_active, "password_last_used": row.password_last_used},
                ))
        elif not active and not any(c.active is True for c in row.certs):
            other = (others or {}).get(row.user)
            if other is not None and other.active:
                continue  # an active signing certificate, SSH key or service-specific credential is still used
            leftover = [_key_ref(row, k, ids) for k in row.existing_keys()]
            action = ("Delete the user: its inactive keys, other credentials, MFA devices, policies (inline ones "
                      "saved to a file first) and group memberships go first, as the commands do.")
            if other is None or other.unlisted:
                unknown = ", ".join(other.unlisted) if other else "not listed"
                action += (f" Its other credentials could not all be listed ({unknown}): check them before "
                           "deleting (list-signing-certificates, list-ssh-public-keys, "
                           "list-service-specific-credentials).")
            items.append(AuditItem(
                check="user-without-credentials", account_id=account_id, user=row.user, arn=row.arn,
                summary=f"{row.user}: no active key, console password or other credential "
                        f"(created {_when(row.user_creation_time)}).",
                action=action,
                commands=tuple(_delete_user_commands(row.user, leftover, (policies or {}).get(row.user), other)),
                details={"inactive_keys": leftover,
                         "inline_policy_backups": [inline_backup_file(row.user, n)
                                                   for n in ((policies or {}).get(row.user) or UserPolicies(row.user)).inline],
                         **(other.to_dict() if other else {})},
            ))
    return items


def _when(value: Any, *, exact: bool = False) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ" if exact else "%Y-%m-%d")
    return "never" if str(value) in ("N/A", "no_information") else str(value)


def _flag(value: Any) -> str:
    return "on" if value is True else "off" if value is False else str(value)


def keys_in_shorter_window(report: CredentialReport, options: AuditOptions) -> int:
    """Active keys idle longer than the recommended window but not yet past the unused window."""
    now = options.current_time
    lo, hi = timedelta(days=options.recommended_unused_days), timedelta(days=options.unused_days)
    return sum(
        1 for row in report.users for k in row.active_keys()
        if isinstance(k.last_used_date, datetime) and lo < now - k.last_used_date <= hi
    )


def keys_in_grace(report: CredentialReport, options: AuditOptions) -> int:
    """Active keys never used yet but younger than the grace period: not judged this time."""
    now = options.current_time
    return sum(1 for row in report.users for k in row.active_keys()
               if k.never_used and _in_grace(k, now, options))


def grace_note(count: int, options: AuditOptions) -> str | None:
    if not count:
        return None
    return (f"{count} active key(s) created within the last {options.new_key_grace_days} day(s) have not been used "
            "yet: too new to call unused, they are judged once the grace period is over (--new-key-grace-days).")


def window_note(more: int, options: AuditOptions) -> str | None:
    """The shorter-window recommendation, with how many more keys it would catch."""
    if options.recommended_unused_days >= options.unused_days:
        return None
    return (
        f"Unused keys are judged against {options.unused_days} days (the CIS benchmark's limit). A shorter window "
        f"such as {options.recommended_unused_days} days finds stale keys sooner: {more} more active key(s) are "
        f"unused for more than {options.recommended_unused_days} days (--unused-days "
        f"{options.recommended_unused_days})."
    )


# ---------------------------------------------------------------------------------------------------- one account

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
        metas.sort(key=lambda m: (m.get("CreateDate") or datetime.min.replace(tzinfo=UTC)))
        free = {k.slot: k for k in slots}
        for meta in metas:
            created = meta.get("CreateDate")
            slot = next((s for s, k in free.items() if isinstance(k.last_rotated, datetime)
                         and created and abs((k.last_rotated - created).total_seconds()) < 2), None)
            if slot is None and free:
                slot = min(free)  # same order as the report when times do not match to the second
            if slot is not None:
                free.pop(slot)
            out.append(AccessKeyInfo(account_id, row.user, meta["AccessKeyId"], meta.get("Status", "Unknown"),
                                     created, slot))
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


def audit_account(
    clients: AccountClients, options: AuditOptions, verified: Mapping[str, Sequence[datetime]] | None = None
) -> tuple[AccountAudit, CredentialReport]:
    iam = clients.iam
    try:
        report = fetch_credential_report(iam, max_wait=options.report_max_wait)
        summary = iam.get_account_summary().get("SummaryMap", {})
        root_present = bool(summary.get("AccountAccessKeysPresent"))
        keys = list_user_keys(iam, clients.account_id, report)
        doomed = [r.user for r in report.users if not r.active_keys() and not r.has_password]
        policies = {u: read_user_policies(iam, u, details=False) for u in doomed}
        others = {u: other_credentials(iam, u) for u in doomed}
        own_use = keysweep_uses(iam, keys, verified or {})
    except ClientError as exc:
        raise AuditError(f"account {clients.account_id}: {_code(exc)}") from None
    except BotoCoreError as exc:
        raise AuditError(f"account {clients.account_id}: {type(exc).__name__}") from None
    items = evaluate_report(
        report, account_id=clients.account_id, options=options,
        key_ids={(k.user, k.slot): k.key_id for k in keys if k.slot is not None},
        root_keys_present=root_present, policies=policies, others=others, own_use=own_use,
    )
    notes = [n for n in (grace_note(keys_in_grace(report, options), options),) if n]
    if report.root is None:
        notes.append("The credential report has no <root_account> row; root keys were judged from "
                     "GetAccountSummary alone.")
    if report.missing_columns:
        notes.append(f"The credential report lacks the columns {', '.join(report.missing_columns)}.")
    return AccountAudit(
        account_id=clients.account_id, caller_arn=clients.caller_arn, items=tuple(items), keys=tuple(keys),
        root_keys_present=root_present, report_generated_at=report.generated_at, users=len(report.users),
        notes=tuple(notes),
    ), report


# ---------------------------------------------------------------------------------------------------- fleet

def _place(location: Mapping[str, Any]) -> str:
    if location.get("path"):
        where = str(location["path"])
        if location.get("member"):
            where += "!" + str(location["member"])
        return where
    if location.get("kind") == "process":
        return f"process {location.get('exe') or location.get('pid')} ${location.get('variable') or ''}".strip()
    return str(location.get("kind") or "?")


def _gather_host_keys(findings: Iterable[FindingRecord]) -> dict[str, list[FindingRecord]]:
    by_key: dict[str, list[FindingRecord]] = defaultdict(list)
    for rec in findings:
        # the audit knows IAM users' long-term keys; temporary (ASIA) keys on hosts are not in any account's list
        if rec.key_id.startswith("AKIA"):
            by_key[rec.key_id].append(rec)
    return by_key


def correlate(
    findings: Iterable[FindingRecord],
    accounts: Sequence[AccountAudit],
    clients: Mapping[str, AccountClients],
    verified: Mapping[str, Sequence[datetime]] | None = None,
) -> tuple[list[HostKey], list[AuditItem]]:
    """Each key found on hosts, with its owner's view from the audited account that holds it.

    Nothing is offered for deletion while a host still holds the key: an active key is replaced on every host
    first, an inactive one removed from them; the commands come once no host reports it."""
    known = {k.key_id: k for a in accounts for k in a.keys}
    audited = sorted(a.account_id for a in accounts if not a.error)
    host_keys: list[HostKey] = []
    items: list[AuditItem] = []
    for key_id, recs in sorted(_gather_host_keys(findings).items()):
        hosts = tuple(sorted({r.hostname or r.host_id for r in recs}))
        locations = tuple(sorted({(r.hostname or r.host_id, _place(r.location)) for r in recs}))
        newest = key_word(recs)  # each host speaks for itself: the most urgent host's word, not the latest date
        account = next((r.account_id for r in recs if r.account_id), None)
        info = known.get(key_id)
        if info is None:
            hk = HostKey(key_id, account, hosts, locations, newest.status, known=False)
            host_keys.append(hk)
            where = f"account {account}" if account else "an account keysweep could not name"
            items.append(AuditItem(
                check="host-key-unknown-to-audit", account_id=account or "unknown", key_id=key_id,
                summary=f"{key_id} is on {len(hosts)} host(s) ({', '.join(hosts[:5])}) but belongs to {where}, "
                        f"which this audit did not cover (audited: {', '.join(audited) or 'none'}).",
                action="Audit that account too (--account/--role-name), or find who issued the key: a third "
                       "party's key on your hosts is still your exposure.",
                commands=(f"aws sts get-access-key-info --access-key-id {key_id}",),
                details={"hosts": list(hosts), "locations": [f"{h}:{p}" for h, p in locations],
                         "fleet_status": newest.status},
            ))
            continue
        acct_clients = clients.get(info.account_id)
        last_used = service = region = error = None
        policies = None
        user = info.user
        if acct_clients is not None:
            try:
                resp = acct_clients.iam.get_access_key_last_used(AccessKeyId=key_id)
                user = resp.get("UserName") or user
                used = resp.get("AccessKeyLastUsed", {})
                last_used = used.get("LastUsedDate")
                service, region = used.get("ServiceName"), used.get("Region")
                policies = read_user_policies(acct_clients.iam, user)
            except ClientError as exc:
                error = _code(exc)
        hk = HostKey(key_id, info.account_id, hosts, locations, newest.status, known=True, user=user,
                     iam_status=info.status, last_used=last_used, last_used_service=service,
                     last_used_region=region, policies=policies, error=error)
        host_keys.append(hk)
        active = info.status == "Active"
        own = keysweep_use(last_used, service, (verified or {}).get(key_id, ()))
        used = ("only by keysweep's verification" if own else
                f"{_when(last_used)} ({service} in {region})" if last_used else "never")
        items.append(AuditItem(
            check="key-on-hosts", account_id=info.account_id, user=user, key_id=key_id,
            arn=f"arn:aws:iam::{info.account_id}:user/{user}",
            summary=f"{user}'s {info.status.lower()} key {key_id} is on {len(hosts)} host(s) "
                    f"({', '.join(hosts[:5])}); last used {used}"
                    + f"; permissions: {policies.summary() if policies else error or 'unknown'}.",
            action=("Replace it on each host with the role `keysweep report` suggests; deactivate it only once "
                    "no host reports it and it has gone unused for the quiet period."
                    if active else "The key is inactive: remove it from every host; delete it once no host "
                    "reports it."),
            commands=(),
            details={**hk.to_dict(), "keysweep_verification_use": _jsonable(own),
                     "replacement": replacement_copies(recs, policies, user, info.account_id)},
        ))
    return host_keys, items


def replacement_copies(
    recs: Sequence[FindingRecord], policies: UserPolicies | None, user: str, account: str
) -> list[dict[str, Any]]:
    """For each role the hosts' suggestions name (or permission set), what gives it ``user``'s exact permissions.

    The same code as the agent's suggestions (``permission_copy``), with the policies the audit read centrally —
    the boundary and inline documents included — so hosts whose agent could not read IAM get them too."""
    by_role: dict[tuple[str, str], set[str]] = defaultdict(set)
    for rec in recs:
        suggestion = rec.suggestion or {}
        kind = str(suggestion.get("kind") or "none")
        role = str(suggestion.get("role_name") or "ROLE_NAME")
        by_role[(kind, "PERMISSION_SET" if kind == "sso" else role)].add(rec.hostname or rec.host_id)
    out: list[dict[str, Any]] = []
    for (kind, role), hosts in sorted(by_role.items()):
        entry: dict[str, Any] = {"suggestion_kind": kind, "role_name": role, "hosts": sorted(hosts)}
        if kind == "sso":
            ps = copy_to_permission_set(policies, account=account, user_ref=user)
            entry.update(commands=list(ps.commands), steps=list(ps.steps), terraform=ps.terraform or None)
        else:
            entry.update(copy_to_role(policies, role, user_ref=user, user=user, new_role=False).to_dict())
            if role == "ROLE_NAME":
                entry["steps"].insert(0, "ROLE_NAME: the role the host's suggestion names (its existing instance "
                                         "profile, task, service-account or execution role).")
        out.append(entry)
    return out


# checks whose commands deactivate or delete a key, or delete its user
_REMOVING_CHECKS = frozenset({"never-used-key", "unused-key", "old-key", "inactive-key", "console-user-with-keys",
                              "user-without-credentials"})


def hold_for_hosts(items: Sequence[AuditItem], host_keys: Sequence[HostKey]) -> list[AuditItem]:
    """The items with every removal of a key that hosts still hold (or of its user) held back: no commands,
    the reason in the action, the hosts in ``details.held_by_hosts``."""
    by_key = {hk.key_id: hk for hk in host_keys if hk.known}
    by_user = {(hk.account_id, hk.user): hk for hk in by_key.values() if hk.user}
    out: list[AuditItem] = []
    for item in items:
        hk = by_key.get(item.key_id or "") or (by_user.get((item.account_id, item.user))
                                               if item.check == "user-without-credentials" else None)
        if hk is None or item.check not in _REMOVING_CHECKS:
            out.append(item)
            continue
        out.append(dataclasses.replace(
            item,
            action=f"Held: key {hk.key_id} is still on {len(hk.hosts)} host(s) ({', '.join(hk.hosts[:5])}). "
                   f"Replace it there first (see key-on-hosts); only then: {item.action}",
            commands=(),
            details={**item.details, "held_by_hosts": list(hk.hosts)},
        ))
    return out


# ---------------------------------------------------------------------------------------------------- entry point

def run_audit(
    targets: Sequence[AccountTarget],
    options: AuditOptions,
    *,
    findings: Iterable[FindingRecord] | None = None,
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
    records = list(findings) if findings is not None else None
    verified = verification_times(records) if records else {}
    for target in targets:
        try:
            acct = open_account(target, session_name=session_name, external_id=external_id)
            audit, report = audit_account(acct, options, verified)
        except (AuditError, CredentialReportError) as exc:
            audits.append(AccountAudit(account_id=target.account_id or "unknown", caller_arn=None, items=(),
                                       keys=(), root_keys_present=False, error=str(exc)))
            continue
        clients[acct.account_id] = acct
        audits.append(audit)
        more += keys_in_shorter_window(report, options)
    note = window_note(more, options)
    if note:
        notes.append(note)
    host_keys: list[HostKey] = []
    host_items: list[AuditItem] = []
    if records is not None:
        host_keys, host_items = correlate(records, audits, clients, verified)
        audits = [dataclasses.replace(a, items=tuple(hold_for_hosts(a.items, host_keys))) for a in audits]
        temporary = {r.key_id for r in records if not r.key_id.startswith("AKIA")}
        if temporary:
            notes.append(f"{len(temporary)} temporary or other non-IAM-user key id(s) found on hosts were not "
                         "correlated: only IAM users' long-term (AKIA) keys belong to an account's key list.")
    return AuditResult(tuple(audits), options, tuple(host_keys), tuple(host_items), tuple(notes),
                       organization=organization, exempt_roles=tuple(exempt_roles))
