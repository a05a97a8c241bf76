"""Where ``keysweep cloud`` and ``keysweep trail`` read: accounts (own, named, or the organisation's, each through
an assumed role) and their regions, with one client per service.

Throttling backs off in botocore's standard retry mode (exponential backoff with jitter), given more attempts
than keysweep's quick host-side calls; what still fails is classified by :func:`error_reason` and reported as a
skip for that service, account and region, never as the end of the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from keysweep.aws import client_config
from keysweep.errors import ConfigError, KeysweepError
from keysweep.retry import error_code, http_status

SESSION_NAME = "keysweep-cloud"
# control-plane list calls are cheap but an organisation-wide run makes many: let the SDK back off longer
_CONFIG = client_config(connect_timeout=5.0, read_timeout=30.0, max_attempts=8)
T = TypeVar("T")
_GONE = ("NotFound", "NotFoundException", "ResourceNotFoundException", "ClientException")  # deleted since listed
_CLIENT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Skip:
    """Something not read, and why (an error code and the call, never a secret)."""

    account: str
    region: str
    service: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"account": self.account, "region": self.region, "service": self.service, "reason": self.reason}


def error_reason(exc: Exception, operation: str | None = None) -> str:
    """A short reason for a failed call: the AWS error code and the operation, or the client error's class."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code == "error" or code.isdigit():  # an error body the client could not parse: its HTTP status
            code = f"HTTP {http_status(exc) or '?'}"
        return f"{code} ({exc.operation_name})"
    name = type(exc).__name__
    return f"{name} ({operation})" if operation else name


# an answer that is not the protocol's (an HTML error page from a proxy) is a failed call like any other
AWS_ERRORS = (ClientError, BotoCoreError, ResponseParserError)


@dataclass
class Target:
    """One account and region, with clients made from that account's session."""

    account: str
    region: str
    session: boto3.session.Session
    skips: list[Skip] = field(default_factory=list)
    _clients: dict[str, Any] = field(default_factory=dict)
    _refused: set[str] = field(default_factory=set)

    def client(self, service: str, *, config: Config | None = None) -> Any:
        """This account-region's client for ``service`` (with ``config``: its own one, e.g. fewer retries)."""
        key = service if config is None else f"{service}#{id(config)}"
        with _CLIENT_LOCK:  # creating clients from one boto3 session is not thread-safe; using them is
            if key not in self._clients:
                self._clients[key] = self.session.client(service, region_name=self.region, config=config or _CONFIG)
            return self._clients[key]

    def skip(self, service: str, reason: str) -> None:
        s = Skip(self.account, self.region, service, reason)
        if s not in self.skips:
            self.skips.append(s)

    def attempt(self, service: str, call: Callable[..., T], **kwargs: Any) -> T | None:
        """``call(**kwargs)`` for one resource, or None: a resource gone since it was listed is passed over; any
        other failure is a skip, and that operation is not tried again in this account-region (a role without
        ``ec2:DescribeInstanceAttribute`` costs one refused call, not one per instance)."""
        name = getattr(call, "__name__", repr(call))
        if name in self._refused:
            return None
        try:
            return call(**kwargs)
        except AWS_ERRORS as exc:
            gone = isinstance(exc, ClientError) and error_code(exc).endswith(_GONE)
            if not gone:
                self._refused.add(name)
                self.skip(service, error_reason(exc))
            return None


def paginate(client: Any, operation: str, key: str, **kwargs: Any) -> Any:
    """Every element of ``key`` over all pages of ``operation``."""
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page.get(key) or ()


@dataclass(frozen=True)
class Account:
    account: str
    session: boto3.session.Session


def base_session() -> boto3.session.Session:
    return boto3.session.Session()


def caller_account(session: boto3.session.Session) -> str:
    try:
        return str(session.client("sts", config=_CONFIG).get_caller_identity()["Account"])
    except AWS_ERRORS as exc:
        raise KeysweepError(f"cannot tell which AWS account keysweep runs in: {error_reason(exc)}") from None


def organization_accounts(session: boto3.session.Session) -> list[str]:
    """The organisation's active accounts (``organizations:ListAccounts``, from the management account or a
    delegated administrator)."""
    try:
        org = session.client("organizations", config=_CONFIG)
        return [a["Id"] for a in paginate(org, "list_accounts", "Accounts") if a.get("Status", "ACTIVE") == "ACTIVE"]
    except AWS_ERRORS as exc:
        raise KeysweepError(f"--organization: cannot list the organisation's accounts: {error_reason(exc)}") from None


def assume(session: boto3.session.Session, account: str, role_name: str) -> boto3.session.Session:
    sts = session.client("sts", config=_CONFIG)
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{role_name}", RoleSessionName=SESSION_NAME)[
        "Credentials"
    ]
    return boto3.session.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=session.region_name,
    )


def resolve_accounts(
    session: boto3.session.Session,
    *,
    accounts: Sequence[str] = (),
    organization: bool = False,
    role_name: str | None = None,
) -> tuple[list[Account], list[Skip]]:
    """The accounts to read and the ones that could not be entered.

    Without ``accounts`` or ``organization``: the caller's own account. Otherwise each account through the role
    ``role_name`` (the caller's own account with its own credentials).
    """
    for a in accounts:
        if not (len(a) == 12 and a.isdigit()):
            raise ConfigError(f"--account {a!r}: an account id is 12 digits")
    if (accounts or organization) and not role_name:
        raise ConfigError("--role-name: needed with --account and --organization (the role to assume in each account)")
    own = caller_account(session)
    if not accounts and not organization:
        return [Account(own, session)], []
    wanted = list(dict.fromkeys(organization_accounts(session) if organization else accounts))
    out: list[Account] = []
    skips: list[Skip] = []
    for account in wanted:
        if account == own:
            out.append(Account(own, session))
            continue
        try:
            out.append(Account(account, assume(session, account, str(role_name))))
        except AWS_ERRORS as exc:
            skips.append(Skip(account, "-", "sts", error_reason(exc)))
    return out, skips


def enabled_regions(session: boto3.session.Session, default_region: str | None = None) -> list[str]:
    """The regions enabled for the account (``ec2:DescribeRegions`` lists only those by default)."""
    region = default_region or session.region_name or "us-east-1"
    ec2 = session.client("ec2", region_name=region, config=_CONFIG)
    return sorted(r["RegionName"] for r in ec2.describe_regions()["Regions"])


def account_regions(accounts: Sequence[Account], regions: Sequence[str]) -> tuple[list[Target], list[Skip]]:
    """Every (account, region) to read: ``regions``, or each account's enabled ones; an account whose regions
    cannot be listed is a skip."""
    targets: list[Target] = []
    skips: list[Skip] = []
    for account in accounts:
        try:
            names = list(dict.fromkeys(regions)) or enabled_regions(account.session)
        except AWS_ERRORS as exc:
            skips.append(Skip(account.account, "-", "ec2", error_reason(exc)))
            continue
        targets += [Target(account.account, r, account.session) for r in names]
    return targets, skips
