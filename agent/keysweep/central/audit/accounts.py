"""Which accounts to audit and the IAM/STS clients for each (keysweep's own credentials or an assumed role)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from keysweep import aws
from keysweep.central.audit.model import AuditError
from keysweep.central.organization import Organization
from keysweep.errors import ConfigError
from keysweep.retry import error_code


@dataclass(frozen=True)
class AccountTarget:
    """One account to audit: the caller's own (``role_arn`` None) or one reached by assuming a role."""

    role_arn: str | None = None

    @property
    def account_id(self) -> str | None:
        parts = (self.role_arn or "").split(":")
        return parts[4] if len(parts) > 5 else None


def account_targets(
    *,
    accounts: Sequence[str] = (),
    role_name: str | None = None,
    role_arns: Sequence[str] = (),
    partition: str = "aws",
    organization: Organization | None = None,
    own_account: str | None = None,
) -> list[AccountTarget]:
    """``--account`` with ``--role-name`` (a role of that name in each account) and/or explicit role ARNs; with
    ``organization``, every active account of it (its own account, ``own_account``, with keysweep's credentials)."""
    if organization is not None:
        if not role_name:
            raise ConfigError("--organization needs --role-name (the role to assume in each member account)")
        accounts = [a for a in sorted(organization.accounts) if a != own_account] + list(accounts)
        own = [AccountTarget()] if own_account in organization.accounts else []
        return (
            own + account_targets(accounts=accounts, role_name=role_name, role_arns=role_arns, partition=partition)
            if accounts or role_arns
            else own
        )
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


def open_account(
    target: AccountTarget, *, session_name: str = "keysweep-audit", external_id: str | None = None
) -> AccountClients:
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
        raise AuditError(f"{target.role_arn or 'own credentials'}: {error_code(exc)}") from None
    except BotoCoreError as exc:
        raise AuditError(f"{target.role_arn or 'own credentials'}: {type(exc).__name__}") from None
