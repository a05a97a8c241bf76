"""The fleet side of the audit: the keys hosts found, matched with the audited accounts that own them.

Its checks are ``key-on-hosts`` (an audited account's key on hosts, with its owner's use and policies and how to
give the replacement role the same permissions) and ``host-key-unknown-to-audit``; while a host still holds a key,
:func:`hold_for_hosts` holds back every removal of it.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from operator import attrgetter
from typing import Any

from keysweep.central.audit.accounts import AccountClients
from keysweep.central.audit.checks import when
from keysweep.central.audit.iam_reads import KeyOwner, read_key_owner
from keysweep.central.audit.model import AccessKeyInfo, AccountAudit, AuditItem, HostKey, jsonable
from keysweep.central.evidence import keysweep_use, stamp_times, verification_times
from keysweep.central.records import (
    AnyFinding,
    FindingRecord,
    FindingSummary,
    arrival,
    key_word,
    status_rank,
    suggestion_kind,
)
from keysweep.central.store import Store, finding_summaries, key_findings
from keysweep.iam_policies import UserPolicies
from keysweep.permission_copy import copy_to_permission_set, copy_to_role


def place(location: Mapping[str, Any]) -> str:
    """Where on its host a finding is, in one short string: a path (with ``!member`` inside an archive), a
    process and its variable, or the location's kind."""
    if location.get("path"):
        where = str(location["path"])
        if location.get("member"):
            where += "!" + str(location["member"])
        return where
    if location.get("kind") == "process":
        return f"process {location.get('exe') or location.get('pid')} ${location.get('variable') or ''}".strip()
    return str(location.get("kind") or "?")


def gather_host_keys(findings: Iterable[FindingRecord]) -> dict[str, list[FindingRecord]]:
    """IAM users' long-term (AKIA) key ids found on hosts -> their records; temporary (ASIA) keys are in no
    account's key list."""
    by_key: dict[str, list[FindingRecord]] = defaultdict(list)
    for rec in findings:
        if rec.key_id.startswith("AKIA"):
            by_key[rec.key_id].append(rec)
    return by_key


@dataclass(frozen=True)
class KeySighting:
    """What the audit needs of one key's records on the fleet, without the records: its hosts and places, the key's
    word (the most urgent host's, :func:`key_word`), the account the hosts name and the roles their suggestions
    name, each with its hosts."""

    key_id: str
    account_id: str | None
    status: str | None
    word: tuple[int, tuple[str, str]]  # the speaker's (urgency, arrival): to merge two sightings of one key
    hosts: tuple[str, ...]
    locations: tuple[tuple[str, str], ...]
    roles: Mapping[tuple[str, str], frozenset[str]]  # (suggestion kind, role or permission set) -> hosts

    @classmethod
    def of(cls, key_id: str, recs: Sequence[FindingRecord]) -> KeySighting:
        return cls.build(
            key_id,
            recs,
            [suggested_role(suggestion_kind(r.suggestion), (r.suggestion or {}).get("role_name")) for r in recs],
        )

    @classmethod
    def build(cls, key_id: str, recs: Sequence[AnyFinding], suggested: Sequence[tuple[str, str]]) -> KeySighting:
        """From the key's records (or summaries) and, for each, its :func:`suggested_role`."""
        speaker = key_word(recs)  # each host speaks for itself: the most urgent host's word, not the latest date
        roles: dict[tuple[str, str], set[str]] = defaultdict(set)
        for rec, role in zip(recs, suggested):
            roles[role].add(rec.hostname or rec.host_id)
        return cls(
            key_id,
            next((r.account_id for r in recs if r.account_id), None),
            speaker.status,
            (status_rank(speaker.status), arrival(speaker)),
            tuple(sorted({r.hostname or r.host_id for r in recs})),
            tuple(sorted({(r.hostname or r.host_id, place(r.location)) for r in recs})),
            {k: frozenset(v) for k, v in roles.items()},
        )

    def merge(self, other: KeySighting) -> KeySighting:
        """One sighting of the key from two (its records under two fingerprint keys)."""
        first, second = (self, other) if self.word <= other.word else (other, self)
        roles = {
            k: self.roles.get(k, frozenset()) | other.roles.get(k, frozenset()) for k in (*self.roles, *other.roles)
        }
        return KeySighting(
            self.key_id,
            self.account_id or other.account_id,
            first.status,
            first.word,
            tuple(sorted({*self.hosts, *other.hosts})),
            tuple(sorted({*self.locations, *other.locations})),
            roles,
        )


def suggested_role(kind: str | None, role_name: object) -> tuple[str, str]:
    """(suggestion kind, role or permission set) of a suggestion of ``kind`` (None: no suggestion) naming
    ``role_name``; ``ROLE_NAME`` when it names none."""
    kind = kind or "none"
    return kind, "PERMISSION_SET" if kind == "sso" else str(role_name or "ROLE_NAME")


class FleetFindings:
    """The fleet's findings as the audit needs them: each AKIA key's :class:`KeySighting`, every key's verification
    times (:func:`verification_times`) and the other (temporary) key ids. :meth:`read` reads a store in one pass,
    one key's records at a time, so memory is bounded by the largest key, not the store."""

    def __init__(self) -> None:
        self.sightings: dict[str, KeySighting] = {}
        self.verified: dict[str, list[datetime]] = {}
        self.temporary: set[str] = set()

    def add(self, recs: Sequence[FindingRecord]) -> None:
        """Records of one or more keys (every record of each)."""
        for key_id, times in verification_times(recs).items():
            self.verified[key_id] = sorted({*self.verified.get(key_id, ()), *times})
        self.temporary.update(r.key_id for r in recs if not r.key_id.startswith("AKIA"))
        for key_id, key_recs in gather_host_keys(recs).items():
            sighting = KeySighting.of(key_id, key_recs)
            known = self.sightings.get(key_id)
            self.sightings[key_id] = known.merge(sighting) if known else sighting

    def add_summaries(self, rows: Sequence[tuple[FindingSummary, str | None, Sequence[str]]]) -> None:
        """Summaries of one or more keys (every finding of each), each with the role its suggestion names and its
        :func:`signed_stamps`: the same as :meth:`add` of their records."""
        for key_id, times in stamp_times((s.key_id, stamps) for s, _, stamps in rows).items():
            self.verified[key_id] = sorted({*self.verified.get(key_id, ()), *times})
        self.temporary.update(s.key_id for s, _, _ in rows if not s.key_id.startswith("AKIA"))
        by_key: dict[str, list[tuple[FindingSummary, str | None, Sequence[str]]]] = defaultdict(list)
        for row in rows:
            if row[0].key_id.startswith("AKIA"):
                by_key[row[0].key_id].append(row)
        for key_id, key_rows in by_key.items():
            sighting = KeySighting.build(
                key_id,
                [s for s, _, _ in key_rows],
                [suggested_role(s.suggestion_kind, role) for s, role, _ in key_rows],
            )
            known = self.sightings.get(key_id)
            self.sightings[key_id] = known.merge(sighting) if known else sighting

    @classmethod
    def of_records(cls, records: Iterable[FindingRecord]) -> FleetFindings:
        fleet = cls()
        fleet.add(list(records))
        return fleet

    @classmethod
    def read(cls, store: Store) -> FleetFindings:
        """A store's findings, key by key (a backend without key-level reads is read whole); a store that keeps
        what correlation reads in columns (SQLite: ``iter_signed_summaries``) is read without decoding a record."""
        signed = getattr(store, "iter_signed_summaries", None)
        if signed is not None:
            fleet = cls()
            for _, rows in groupby(signed(), key=lambda row: row[0].fingerprint):
                fleet.add_summaries(list(rows))
            return fleet
        if getattr(store, "iter_key_findings", None) is None:
            return cls.of_records(store.iter_findings())
        fleet = cls()
        for fingerprint, _ in groupby(finding_summaries(store), key=attrgetter("fingerprint")):
            fleet.add(list(key_findings(store, fingerprint)))
        return fleet

    def hosts_by_key(self) -> dict[str, list[str]]:
        return {key_id: list(s.hosts) for key_id, s in self.sightings.items()}


def _sighting(key_id: str, recs: Sequence[FindingRecord] | KeySighting) -> KeySighting:
    return recs if isinstance(recs, KeySighting) else KeySighting.of(key_id, recs)


def host_key_unknown_to_audit(
    key_id: str, recs: Sequence[FindingRecord] | KeySighting, audited: Sequence[str]
) -> tuple[HostKey, AuditItem]:
    """A key on hosts that no audited account holds."""
    sighting = _sighting(key_id, recs)
    hosts, locations, account = sighting.hosts, sighting.locations, sighting.account_id
    hk = HostKey(key_id, account, hosts, locations, sighting.status, known=False)
    where = f"account {account}" if account else "an account keysweep could not name"
    return hk, AuditItem(
        check="host-key-unknown-to-audit",
        account_id=account or "unknown",
        key_id=key_id,
        summary=f"{key_id} is on {len(hosts)} host(s) ({', '.join(hosts[:5])}) but belongs to {where}, "
        f"which this audit did not cover (audited: {', '.join(audited) or 'none'}).",
        action="Audit that account too (--account/--role-name), or find who issued the key: a third "
        "party's key on your hosts is still your exposure.",
        commands=(f"aws sts get-access-key-info --access-key-id {key_id}",),
        details={
            "hosts": list(hosts),
            "locations": [f"{h}:{p}" for h, p in locations],
            "fleet_status": sighting.status,
        },
    )


def key_on_hosts(
    info: AccessKeyInfo,
    recs: Sequence[FindingRecord] | KeySighting,
    owner: KeyOwner | None,
    verified: Sequence[datetime] = (),
) -> tuple[HostKey, AuditItem]:
    """An audited account's key on hosts; ``owner`` is what its account's IAM said of it (None: not asked)."""
    sighting = _sighting(info.key_id, recs)
    hosts, locations = sighting.hosts, sighting.locations
    owner = owner or KeyOwner(info.user)
    user, policies, last_used = owner.user, owner.policies, owner.last_used
    hk = HostKey(
        info.key_id,
        info.account_id,
        hosts,
        locations,
        sighting.status,
        known=True,
        user=user,
        iam_status=info.status,
        last_used=last_used,
        last_used_service=owner.service,
        last_used_region=owner.region,
        policies=policies,
        error=owner.error,
    )
    own = keysweep_use(last_used, owner.service, verified)
    used = (
        "only by keysweep's verification"
        if own
        else f"{when(last_used)} ({owner.service} in {owner.region})"
        if last_used
        else "never"
    )
    return hk, AuditItem(
        check="key-on-hosts",
        account_id=info.account_id,
        user=user,
        key_id=info.key_id,
        arn=f"arn:aws:iam::{info.account_id}:user/{user}",
        summary=f"{user}'s {info.status.lower()} key {info.key_id} is on {len(hosts)} host(s) "
        f"({', '.join(hosts[:5])}); last used {used}"
        + f"; permissions: {policies.summary() if policies else owner.error or 'unknown'}.",
        action=(
            "Replace it on each host with the role `keysweep report` suggests; deactivate it only once "
            "no host reports it and it has gone unused for the quiet period."
            if info.status == "Active"
            else "The key is inactive: remove it from every host; delete it once no host reports it."
        ),
        commands=(),
        details={
            **hk.to_dict(),
            "keysweep_verification_use": jsonable(own),
            "replacement": replacement_copies(sighting, policies, user, info.account_id),
        },
    )


def correlate(
    findings: Iterable[FindingRecord] | FleetFindings,
    accounts: Sequence[AccountAudit],
    clients: Mapping[str, AccountClients],
    verified: Mapping[str, Sequence[datetime]] | None = None,
) -> tuple[list[HostKey], list[AuditItem]]:
    """Each key found on hosts, with its owner's view from the audited account that holds it.

    Nothing is offered for deletion while a host still holds the key: an active key is replaced on every host
    first, an inactive one removed from them; the commands come once no host reports it."""
    fleet = findings if isinstance(findings, FleetFindings) else FleetFindings.of_records(findings)
    known = {k.key_id: k for a in accounts for k in a.keys}
    audited = sorted(a.account_id for a in accounts if not a.error)
    host_keys: list[HostKey] = []
    items: list[AuditItem] = []
    for key_id, recs in sorted(fleet.sightings.items()):
        info = known.get(key_id)
        if info is None:
            hk, item = host_key_unknown_to_audit(key_id, recs, audited)
        else:
            acct_clients = clients.get(info.account_id)
            owner = read_key_owner(acct_clients.iam, key_id, info.user) if acct_clients is not None else None
            hk, item = key_on_hosts(info, recs, owner, (verified or {}).get(key_id, ()))
        host_keys.append(hk)
        items.append(item)
    return host_keys, items


def replacement_copies(
    recs: Sequence[FindingRecord] | KeySighting, policies: UserPolicies | None, user: str, account: str
) -> list[dict[str, Any]]:
    """For each role the hosts' suggestions name (or permission set), what gives it ``user``'s exact permissions.

    The same code as the agent's suggestions (``permission_copy``), with the policies the audit read centrally —
    the boundary and inline documents included — so hosts whose agent could not read IAM get them too."""
    by_role = _sighting(recs.key_id if isinstance(recs, KeySighting) else recs[0].key_id, recs).roles
    out: list[dict[str, Any]] = []
    for (kind, role), hosts in sorted(by_role.items()):
        entry: dict[str, Any] = {"suggestion_kind": kind, "role_name": role, "hosts": sorted(hosts)}
        if kind == "sso":
            ps = copy_to_permission_set(policies, account=account, user_ref=user)
            entry.update(commands=list(ps.commands), steps=list(ps.steps), terraform=ps.terraform or None)
        else:
            entry.update(copy_to_role(policies, role, user_ref=user, user=user, new_role=False).to_dict())
            if role == "ROLE_NAME":
                entry["steps"].insert(
                    0,
                    "ROLE_NAME: the role the host's suggestion names (its existing instance "
                    "profile, task, service-account or execution role).",
                )
        out.append(entry)
    return out


# checks whose commands deactivate or delete a key, or delete its user
REMOVING_CHECKS = frozenset(
    {"never-used-key", "unused-key", "old-key", "inactive-key", "console-user-with-keys", "user-without-credentials"}
)


def hold_for_hosts(items: Sequence[AuditItem], host_keys: Sequence[HostKey]) -> list[AuditItem]:
    """The items with every removal of a key that hosts still hold (or of its user) held back: no commands,
    the reason in the action, the hosts in ``details.held_by_hosts``."""
    by_key = {hk.key_id: hk for hk in host_keys if hk.known}
    by_user: dict[tuple[str | None, str | None], HostKey] = {
        (hk.account_id, hk.user): hk for hk in by_key.values() if hk.user
    }
    out: list[AuditItem] = []
    for item in items:
        hk = by_key.get(item.key_id or "") or (
            by_user.get((item.account_id, item.user)) if item.check == "user-without-credentials" else None
        )
        if hk is None or item.check not in REMOVING_CHECKS:
            out.append(item)
            continue
        out.append(
            dataclasses.replace(
                item,
                action=f"Held: key {hk.key_id} is still on {len(hk.hosts)} host(s) ({', '.join(hk.hosts[:5])}). "
                f"Replace it there first (see key-on-hosts); only then: {item.action}",
                commands=(),
                details={**item.details, "held_by_hosts": list(hk.hosts)},
            )
        )
    return out
