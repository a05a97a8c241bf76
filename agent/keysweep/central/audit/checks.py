"""The checks judged from an account's credential report: one function per check of :data:`CHECKS`.

Each check takes the facts of what it judges (the account, a user, or one key of a user) and returns its item, or
None when it does not apply. A key gets the first of :data:`KEY_CHECKS` that applies (the most final action: an
inactive key is only deleted, an unused one is not also called old); a user at most one of :data:`USER_CHECKS`.
No IAM call happens here (``iam_reads`` reads, these judge).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from keysweep import timeutil
from keysweep.central.audit.model import AuditItem, AuditOptions
from keysweep.central.credential_report import CredentialReport, CredentialReportRow, KeyColumns
from keysweep.central.iam_credentials import OtherCredentials
from keysweep.iam_policies import UserPolicies


@dataclass(frozen=True)
class AccountFacts:
    """What the checks of one account see besides the report: key ids, and the reads about doomed users."""

    account_id: str
    options: AuditOptions
    now: datetime
    key_ids: Mapping[tuple[str, int], str] = field(default_factory=dict)  # (user, report slot) -> key id
    policies: Mapping[str, UserPolicies] = field(default_factory=dict)
    others: Mapping[str, OtherCredentials] = field(default_factory=dict)
    own_use: Mapping[str, datetime] = field(default_factory=dict)

    def key_ref(self, row: CredentialReportRow, key: KeyColumns) -> str:
        return self.key_ids.get((row.user, key.slot)) or f"<access key {key.slot} of {row.user}>"


@dataclass(frozen=True)
class KeyFacts:
    """One key (a credential report slot) of one user."""

    account: AccountFacts
    row: CredentialReportRow
    key: KeyColumns

    @property
    def key_id(self) -> str:
        return self.account.key_ref(self.row, self.key)

    @property
    def own_use(self) -> datetime | None:
        """keysweep's verification when that was the key's only recorded use."""
        return self.account.own_use.get(self.key_id)

    @property
    def never_used(self) -> bool:
        return self.key.never_used or self.own_use is not None

    def item(
        self, check: str, summary: str, action: str, commands: Sequence[str], details: Mapping[str, Any]
    ) -> AuditItem:
        return AuditItem(
            check=check,
            account_id=self.account.account_id,
            user=self.row.user,
            arn=self.row.arn,
            key_id=self.key_id,
            summary=summary,
            action=action,
            commands=tuple(commands),
            details={"slot": self.key.slot, "created": self.key.last_rotated, **details},
        )


# ---------------------------------------------------------------------------------------------------- commands


def deactivate_command(user: str, key_id: str) -> str:
    return f"aws iam update-access-key --user-name {user} --access-key-id {key_id} --status Inactive"


def delete_key_command(user: str, key_id: str) -> str:
    return f"aws iam delete-access-key --user-name {user} --access-key-id {key_id}"


def inline_backup_file(user: str, policy: str) -> str:
    """Where the delete commands save an inline policy first (IAM names hold no shell metacharacters)."""
    return f"keysweep-backup-{user}-{policy}.json"


def delete_user_commands(
    user: str, keys: Sequence[str], policies: UserPolicies | None, others: OtherCredentials | None = None
) -> list[str]:
    cmds = [delete_key_command(user, k) for k in keys]
    if others is not None:
        cmds += others.delete_commands(user)
    if policies is not None:
        cmds += [f"aws iam detach-user-policy --user-name {user} --policy-arn {a}" for a in policies.attached]
        for name in policies.inline:  # an inline policy exists nowhere else: save it before deleting it
            cmds.append(
                f"aws iam get-user-policy --user-name {user} --policy-name {name} --query PolicyDocument "
                f"--output json > {inline_backup_file(user, name)}"
            )
            cmds.append(f"aws iam delete-user-policy --user-name {user} --policy-name {name}")
        cmds += [f"aws iam remove-user-from-group --user-name {user} --group-name {g}" for g in policies.groups]
    cmds.append(f"aws iam delete-user --user-name {user}")
    return cmds


def when(value: Any, *, exact: bool = False) -> str:
    """A report time as a UTC date (``exact``: to the second); the report's N/A markers as "never"."""
    if isinstance(value, datetime):
        return value.astimezone(timeutil.UTC).strftime("%Y-%m-%d %H:%M:%SZ" if exact else "%Y-%m-%d")
    return "never" if str(value) in ("N/A", "no_information") else str(value)


def _days(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds() // 86400))


def _flag(value: Any) -> str:
    return "on" if value is True else "off" if value is False else str(value)


def in_grace(key: KeyColumns, now: datetime, options: AuditOptions) -> bool:
    created = key.last_rotated
    return isinstance(created, datetime) and now - created < timedelta(days=options.new_key_grace_days)


# ---------------------------------------------------------------------------------------------------- the account


def root_access_key(report: CredentialReport, root_keys_present: bool, account: AccountFacts) -> AuditItem | None:
    root = report.root
    root_active = [k for k in root.keys if k.is_active] if root else []
    if not (root_keys_present or root_active):
        return None
    details: dict[str, Any] = {"account_access_keys_present": root_keys_present}
    if root:
        details["keys"] = [
            {
                "slot": k.slot,
                "active": k.active,
                "created": k.last_rotated,
                "last_used": k.last_used_date,
                "last_used_service": k.last_used_service,
                "last_used_region": k.last_used_region,
            }
            for k in root.keys
            if k.exists or k.is_active
        ]
    return AuditItem(
        check="root-access-key",
        account_id=account.account_id,
        user="<root_account>",
        arn=root.arn if root else f"arn:aws:iam::{account.account_id}:root",
        summary="The root user has access keys: anyone holding them controls the whole account.",
        action="Delete the root user's access keys (sign in as root, Security credentials, Access keys). "
        "Nothing should run as root; move any use to a role first.",
        commands=(
            "aws iam list-access-keys   # signed as the root user",
            "aws iam delete-access-key --access-key-id <ROOT_KEY_ID>   # signed as the root user",
        ),
        details=details,
    )


# ---------------------------------------------------------------------------------------------------- one key


def inactive_key(k: KeyFacts) -> AuditItem | None:
    if k.key.is_active:
        return None
    return k.item(
        "inactive-key",
        summary=f"{k.row.user}: inactive key {k.key_id} (last used {when(k.key.last_used_date)}).",
        action="Delete it: an inactive key only waits to be turned back on.",
        commands=(delete_key_command(k.row.user, k.key_id),),
        details={"last_used": k.key.last_used_date},
    )


def never_used_key(k: KeyFacts) -> AuditItem | None:
    """An active key with no use but keysweep's own verification; one younger than the grace period is not judged
    yet (counted by :func:`keys_in_grace`)."""
    if not k.key.is_active or not k.never_used or in_grace(k.key, k.account.now, k.account.options):
        return None
    note = (
        " AWS tracks key use since 2015-04-22; this key is older, so it may have been used before."
        if k.key.use_may_predate_tracking
        else ""
    )
    if k.own_use is not None:
        note += (
            f" Its only recorded use ({when(k.key.last_used_date, exact=True)}, sts) is keysweep's own "
            f"verification of {when(k.own_use, exact=True)}, which is not use."
        )
    return k.item(
        "never-used-key",
        summary=f"{k.row.user}: active key {k.key_id} was never used (created {when(k.key.last_rotated)}).{note}",
        action="Deactivate it now and delete it after a quiet week: nothing depends on it.",
        commands=(deactivate_command(k.row.user, k.key_id), delete_key_command(k.row.user, k.key_id)),
        details={"use_may_predate_tracking": k.key.use_may_predate_tracking, "keysweep_verification_use": k.own_use},
    )


def unused_key(k: KeyFacts) -> AuditItem | None:
    last_used = k.key.last_used_date
    if not k.key.is_active or k.never_used or not isinstance(last_used, datetime):
        return None
    idle = k.account.now - last_used
    options = k.account.options
    if idle <= timedelta(days=options.unused_days):
        return None
    return k.item(
        "unused-key",
        summary=f"{k.row.user}: active key {k.key_id} not used for {_days(idle)} days "
        f"(last {k.key.last_used_service} in {k.key.last_used_region}).",
        action=f"Deactivate it (unused for more than {options.unused_days} days), delete it after a quiet week.",
        commands=(deactivate_command(k.row.user, k.key_id), delete_key_command(k.row.user, k.key_id)),
        details={
            "last_used": last_used,
            "idle_days": _days(idle),
            "last_used_service": k.key.last_used_service,
            "last_used_region": k.key.last_used_region,
        },
    )


def old_key(k: KeyFacts) -> AuditItem | None:
    created = k.key.last_rotated
    options = k.account.options
    if (
        not k.key.is_active
        or k.never_used
        or not isinstance(created, datetime)
        or k.account.now - created <= timedelta(days=options.rotation_days)
    ):
        return None
    age = _days(k.account.now - created)
    return k.item(
        "old-key",
        summary=f"{k.row.user}: active key {k.key_id} is {age} days old "
        f"(rotation age {options.rotation_days}); last used {when(k.key.last_used_date)}.",
        action="Replace it with a role (instance profile, task role, IRSA, Identity Center); where a key must "
        "stay, rotate it: create the new key, switch every consumer, then deactivate and delete the old one.",
        commands=(
            f"aws iam create-access-key --user-name {k.row.user}",
            deactivate_command(k.row.user, k.key_id),
            delete_key_command(k.row.user, k.key_id),
        ),
        details={"age_days": age, "last_used": k.key.last_used_date},
    )


# in this order, the first that applies: an unused key is deactivated, not also rotated
KEY_CHECKS: tuple[Callable[[KeyFacts], AuditItem | None], ...] = (inactive_key, never_used_key, unused_key, old_key)


# ---------------------------------------------------------------------------------------------------- one user


def console_user_with_keys(row: CredentialReportRow, account: AccountFacts) -> AuditItem | None:
    active = row.active_keys()
    if not row.has_password or not active:
        return None
    refs = [account.key_ref(row, k) for k in active]
    return AuditItem(
        check="console-user-with-keys",
        account_id=account.account_id,
        user=row.user,
        arn=row.arn,
        key_id=refs[0] if len(refs) == 1 else None,
        summary=f"{row.user}: a console user (password, MFA {_flag(row.mfa_active)}) with active keys "
        f"{', '.join(refs)}.",
        action="A human: give them IAM Identity Center (SSO) access and `aws sso login` for the CLI, then "
        "deactivate and delete the keys and the console password.",
        commands=tuple(
            [deactivate_command(row.user, r) for r in refs] + [f"aws iam delete-login-profile --user-name {row.user}"]
        ),
        details={"mfa_active": row.mfa_active, "password_last_used": row.password_last_used, "keys": refs},
    )


def console_user(row: CredentialReportRow, account: AccountFacts) -> AuditItem | None:
    if not row.has_password or row.active_keys():
        return None
    return AuditItem(
        check="console-user",
        account_id=account.account_id,
        user=row.user,
        arn=row.arn,
        summary=f"{row.user}: a console user (password last used {when(row.password_last_used)}, "
        f"MFA {_flag(row.mfa_active)}).",
        action="A human: move them to IAM Identity Center (SSO), then remove the IAM user's password.",
        commands=(f"aws iam delete-login-profile --user-name {row.user}",),
        details={"mfa_active": row.mfa_active, "password_last_used": row.password_last_used},
    )


def user_without_credentials(row: CredentialReportRow, account: AccountFacts) -> AuditItem | None:
    """No active key, password or signing certificate, and no active other credential (SSH key, service-specific
    credential): the user can be deleted, with what ``delete-user`` needs gone first."""
    if row.has_password or row.active_keys() or any(c.active is True for c in row.certs):
        return None
    other = account.others.get(row.user)
    if other is not None and other.active:
        return None  # an active signing certificate, SSH key or service-specific credential is still used
    leftover = [account.key_ref(row, k) for k in row.existing_keys()]
    action = (
        "Delete the user: its inactive keys, other credentials, MFA devices, policies (inline ones saved to a "
        "file first) and group memberships go first, as the commands do."
    )
    if other is None or other.unlisted:
        unknown = ", ".join(other.unlisted) if other else "not listed"
        action += (
            f" Its other credentials could not all be listed ({unknown}): check them before deleting "
            "(list-signing-certificates, list-ssh-public-keys, list-service-specific-credentials)."
        )
    policies = account.policies.get(row.user)
    return AuditItem(
        check="user-without-credentials",
        account_id=account.account_id,
        user=row.user,
        arn=row.arn,
        summary=f"{row.user}: no active key, console password or other credential "
        f"(created {when(row.user_creation_time)}).",
        action=action,
        commands=tuple(delete_user_commands(row.user, leftover, policies, other)),
        details={
            "inactive_keys": leftover,
            "inline_policy_backups": [
                inline_backup_file(row.user, n) for n in (policies or UserPolicies(row.user)).inline
            ],
            **(other.to_dict() if other else {}),
        },
    )


USER_CHECKS: tuple[Callable[[CredentialReportRow, AccountFacts], AuditItem | None], ...] = (
    console_user_with_keys,
    console_user,
    user_without_credentials,
)


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
    in IAM was keysweep's own verification to that verification's time (see ``iam_reads.keysweep_uses``).
    """
    account = AccountFacts(
        account_id, options, options.current_time, key_ids or {}, policies or {}, others or {}, own_use or {}
    )
    items = [i for i in (root_access_key(report, root_keys_present, account),) if i]
    for row in report.users:
        for key in row.existing_keys():
            facts = KeyFacts(account, row, key)
            item = next((i for i in (check(facts) for check in KEY_CHECKS) if i), None)
            if item:
                items.append(item)
        items += [i for i in (check(row, account) for check in USER_CHECKS) if i]
    return items


# ---------------------------------------------------------------------------------------------------- notes


def keys_in_shorter_window(report: CredentialReport, options: AuditOptions) -> int:
    """Active keys idle longer than the recommended window but not yet past the unused window."""
    now = options.current_time
    lo, hi = timedelta(days=options.recommended_unused_days), timedelta(days=options.unused_days)
    return sum(
        1
        for row in report.users
        for k in row.active_keys()
        if isinstance(k.last_used_date, datetime) and lo < now - k.last_used_date <= hi
    )


def keys_in_grace(report: CredentialReport, options: AuditOptions) -> int:
    """Active keys never used yet but younger than the grace period: not judged this time."""
    now = options.current_time
    return sum(1 for row in report.users for k in row.active_keys() if k.never_used and in_grace(k, now, options))


def grace_note(count: int, options: AuditOptions) -> str | None:
    if not count:
        return None
    return (
        f"{count} active key(s) created within the last {options.new_key_grace_days} day(s) have not been used "
        "yet: too new to call unused, they are judged once the grace period is over (--new-key-grace-days)."
    )


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
