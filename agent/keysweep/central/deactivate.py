"""Setting chosen access keys Inactive, explicitly, and remembering who did it and when.

Never run by default: ``keysweep audit --deactivate`` asks for confirmation first. The owner of each key is found
with ``iam:GetAccessKeyLastUsed`` (its ``UserName``) and confirmed with ``ListAccessKeys`` in the same account, so a
key is only ever changed in the account that holds it. A key is held back (not changed without ``--force``) while
there is evidence that something still uses it: a host of the fleet store still reports it, or IAM shows a use
within the quiet period that was not keysweep's own verification.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from keysweep import keyid, timeutil
from keysweep.central.audit import AccountClients
from keysweep.central.evidence import keysweep_use
from keysweep.central.store import Store
from keysweep.errors import ConfigError
from keysweep.retry import error_code


@dataclass(frozen=True)
class PlannedDeactivation:
    key_id: str
    account_id: str | None
    user: str | None
    status: str | None  # current IAM status: Active | Inactive; None when the key was not found
    reason: str | None = None  # why it cannot be deactivated
    hold: str | None = None  # evidence of use: deactivated only with --force
    last_used: datetime | None = None


@dataclass(frozen=True)
class Deactivation:
    key_id: str
    account_id: str | None
    user: str | None
    outcome: str  # deactivated | already-inactive | not-found | failed
    actor: str | None = None
    at: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_key_ids(key_ids: Iterable[str]) -> list[str]:
    """Distinct, validated long-term key ids (only an IAM user's AKIA key can be set Inactive)."""
    out: list[str] = []
    for raw in key_ids:
        kid = raw.strip()
        if keyid.key_type(kid) != "long-term":
            raise ConfigError(f"--deactivate {kid[:24]!r}: not a long-term access key id (AKIA…)")
        if kid not in out:
            out.append(kid)
    return out


def read_key_list(path: Path) -> list[str]:
    """Key ids from a file: one per line (``#`` comments), a CSV with a ``key_id`` column, or JSON — a list of
    ids, or an audit/report document whose ``items`` or ``keys`` entries carry ``key_id``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--deactivate-from {path}: {exc.__class__.__name__}") from None
    stripped = text.lstrip()
    ids: list[str] = []
    if stripped.startswith(("[", "{")):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--deactivate-from {path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
        entries = doc if isinstance(doc, list) else (doc.get("items") or doc.get("keys") or [])
        for entry in entries:
            value = entry.get("key_id") if isinstance(entry, dict) else entry
            if isinstance(value, str):
                ids.append(value)
    elif stripped.split("\n", 1)[0].split(",").count("key_id") == 1:
        ids = [row["key_id"] for row in csv.DictReader(io.StringIO(stripped)) if row.get("key_id")]
    else:
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                ids.append(line)
    if not ids:
        raise ConfigError(f"--deactivate-from {path}: no key ids in the file")
    return check_key_ids(ids)


def _owner(clients: AccountClients, key_id: str) -> tuple[str, str, dict[str, Any]] | None:
    """(user, status, AccessKeyLastUsed) when ``key_id`` belongs to a user of this account."""
    try:
        resp = clients.iam.get_access_key_last_used(AccessKeyId=key_id)
    except ClientError:
        return None
    user = resp.get("UserName")
    if not user:
        return None
    try:
        for page in clients.iam.get_paginator("list_access_keys").paginate(UserName=user):
            for meta in page.get("AccessKeyMetadata", []):
                if meta["AccessKeyId"] == key_id:
                    return user, meta.get("Status", "Unknown"), resp.get("AccessKeyLastUsed") or {}
    except ClientError:
        return None
    return None


def _hold(
    used: dict[str, Any], hosts: Sequence[str], verified: Sequence[datetime], quiet: timedelta, now: datetime
) -> str | None:
    """Why deactivating now may break something, or None."""
    if hosts:
        return f"still on {len(hosts)} host(s): {', '.join(sorted(hosts)[:5])}; replace it there first"
    last = used.get("LastUsedDate")
    if (
        isinstance(last, datetime)
        and now - last < quiet
        and keysweep_use(last, used.get("ServiceName"), verified) is None
    ):
        ago = max(0, int((now - last).total_seconds() // 60))
        return (
            f"used {ago} minute(s) ago ({used.get('ServiceName')} in {used.get('Region')}), within the "
            f"{quiet.days}-day quiet period"
        )
    return None


def plan_deactivation(
    key_ids: Sequence[str],
    accounts: Sequence[AccountClients],
    *,
    hosts: Mapping[str, Sequence[str]] | None = None,
    verified: Mapping[str, Sequence[datetime]] | None = None,
    quiet_days: int = 14,
    now: datetime | None = None,
) -> list[PlannedDeactivation]:
    """Who owns each key and whether it may be deactivated now. ``hosts``: key id -> hosts the fleet store
    says hold it; ``verified``: key id -> the fleet's verification times (their use is not use)."""
    when = now or timeutil.now()
    plan: list[PlannedDeactivation] = []
    for kid in key_ids:
        decoded = keyid.decode_account(kid)
        # the account the key id names first, then the others
        ordered = sorted(accounts, key=lambda c: c.account_id != decoded)
        found = None
        for clients in ordered:
            owner = _owner(clients, kid)
            if owner:
                user, status, used = owner
                hold = (
                    _hold(
                        used,
                        (hosts or {}).get(kid, ()),
                        (verified or {}).get(kid, ()),
                        timedelta(days=quiet_days),
                        when,
                    )
                    if status == "Active"
                    else None
                )
                found = PlannedDeactivation(
                    kid, clients.account_id, user, status, hold=hold, last_used=used.get("LastUsedDate")
                )
                break
        plan.append(
            found
            or PlannedDeactivation(
                kid,
                decoded,
                None,
                None,
                reason="not found in the audited account(s)"
                + (f"; the key id names account {decoded}" if decoded else ""),
            )
        )
    return plan


def apply_deactivation(
    plan: Sequence[PlannedDeactivation],
    accounts: Sequence[AccountClients],
    *,
    store: Store | None = None,
    now: datetime | None = None,
) -> list[Deactivation]:
    by_account = {c.account_id: c for c in accounts}
    results: list[Deactivation] = []
    for item in plan:
        clients = by_account.get(item.account_id or "")
        if item.user is None or clients is None:
            results.append(Deactivation(item.key_id, item.account_id, None, "not-found", error=item.reason))
            continue
        at = timeutil.iso(now or timeutil.now())
        if item.status == "Inactive":
            results.append(Deactivation(item.key_id, item.account_id, item.user, "already-inactive"))
            continue
        try:
            clients.iam.update_access_key(UserName=item.user, AccessKeyId=item.key_id, Status="Inactive")
        except ClientError as exc:
            code = error_code(exc)
            results.append(Deactivation(item.key_id, item.account_id, item.user, "failed", error=code))
            continue
        except BotoCoreError as exc:
            results.append(Deactivation(item.key_id, item.account_id, item.user, "failed", error=type(exc).__name__))
            continue
        if store is not None:
            store.record_deactivation(item.key_id, clients.caller_arn, at)
        results.append(
            Deactivation(item.key_id, item.account_id, item.user, "deactivated", actor=clients.caller_arn, at=at)
        )
    return results
