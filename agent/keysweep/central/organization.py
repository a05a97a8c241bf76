"""The organisation's shape, read with ``organizations:List*``: which accounts to audit, and where the
deny-key-creation SCP can be attached once accounts are ready for it.

SCPs never apply to the management account, so it is never an SCP target (its keys must be removed by hand,
and it should run nothing). An OU is a target when every account below it, at any depth, is ready; otherwise
each ready account under it is a target of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Set
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from keysweep import aws
from keysweep.errors import KeysweepError
from keysweep.retry import error_code


class OrganizationError(KeysweepError):
    """The organisation could not be read (not a member, or no organizations:List* permission)."""


@dataclass(frozen=True)
class OrgUnit:
    ident: str  # r-xxxx for the root, ou-xxxx-yyyyyyyy for an OU
    name: str
    accounts: tuple[str, ...] = ()
    children: tuple[OrgUnit, ...] = ()

    def all_accounts(self) -> Iterator[str]:
        yield from self.accounts
        for child in self.children:
            yield from child.all_accounts()


@dataclass(frozen=True)
class Organization:
    management_account: str
    accounts: dict[str, str] = field(default_factory=dict)  # active account id -> name
    root: OrgUnit | None = None


@dataclass(frozen=True)
class ScpTarget:
    target_id: str
    kind: str  # ORGANIZATIONAL_UNIT or ACCOUNT
    name: str
    accounts: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"target_id": self.target_id, "type": self.kind, "name": self.name, "accounts": list(self.accounts)}


def read_organization(client: Any = None) -> Organization:
    """The organisation of keysweep's own credentials: its management account, active accounts and OU tree."""
    org = client or aws.make_client("organizations", region="us-east-1")
    try:
        management = org.describe_organization()["Organization"]["MasterAccountId"]
        accounts = {
            a["Id"]: a.get("Name", "")
            for a in _pages(org, "list_accounts", "Accounts")
            if (a.get("State") or a.get("Status")) == "ACTIVE"
        }
        roots = _pages(org, "list_roots", "Roots")
        root = _unit(org, roots[0]["Id"], "Root", set(accounts)) if roots else None
    except ClientError as exc:
        raise OrganizationError(f"organizations: {error_code(exc)}") from None
    except BotoCoreError as exc:
        raise OrganizationError(f"organizations: {type(exc).__name__}") from None
    return Organization(management, accounts, root)


def _pages(client: Any, op: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    return [e for page in client.get_paginator(op).paginate(**kwargs) for e in page.get(key, [])]


def _unit(org: Any, ident: str, name: str, active: Set[str], depth: int = 0) -> OrgUnit:
    accounts = tuple(
        a["Id"] for a in _pages(org, "list_accounts_for_parent", "Accounts", ParentId=ident) if a["Id"] in active
    )
    children = (
        ()
        if depth >= 5
        else tuple(  # AWS allows five levels of OUs below the root
            _unit(org, ou["Id"], ou.get("Name", ou["Id"]), active, depth + 1)
            for ou in _pages(org, "list_organizational_units_for_parent", "OrganizationalUnits", ParentId=ident)
        )
    )
    return OrgUnit(ident, name, accounts, children)


def scp_targets(organization: Organization | None, ready: Set[str]) -> list[ScpTarget]:
    """Where to attach the SCP: the largest OUs whose every account is ready, then the other ready accounts.
    The management account is never a target (SCPs do not apply to it)."""
    usable = set(ready) - ({organization.management_account} if organization else set())
    if organization is None or organization.root is None:
        return [ScpTarget(a, "ACCOUNT", "", (a,)) for a in sorted(usable)]
    targets: list[ScpTarget] = []

    def visit(unit: OrgUnit, is_root: bool) -> None:
        below = list(unit.all_accounts())
        if not is_root and below and all(a in usable for a in below):
            targets.append(ScpTarget(unit.ident, "ORGANIZATIONAL_UNIT", unit.name, tuple(sorted(below))))
            return
        for account in unit.accounts:
            if account in usable:
                targets.append(ScpTarget(account, "ACCOUNT", organization.accounts.get(account, ""), (account,)))
        for child in unit.children:
            visit(child, False)

    visit(organization.root, True)
    return targets
