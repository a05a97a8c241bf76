"""What the central store keeps: one record per finding (a key at a place on a host) and one per host, and how a
message updates them.

A host only changes its own records: a finding record is keyed by (host id, finding fingerprint), so a message that
names another host's finding fingerprint creates a record of its own host and never touches the other's. Key-level
facts (status, owner, suggestion) are derived when reading, from each host's own records (:func:`key_facts`).

The merge functions are pure and shared by every store backend, so SQLite and DynamoDB agree on what a message
does. They are idempotent (applying the same message twice gives the same record, and so does the agent sending it
twice) and tolerate out-of-order delivery: descriptive fields follow the newest message — by ``sent_at``, which the
handler has clamped to the queue's ``SentTimestamp`` (:class:`Origin`) plus a small skew, then ``message_id`` —
``first_seen`` is the earliest and ``last_seen`` the latest time reported, and the verification history is kept
in time order with an entry only where the status changes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from keysweep import timeutil

CLOCK_SKEW = timedelta(minutes=5)  # how far a host's times may run ahead of the collector's before they are not trusted


@functools.lru_cache(maxsize=4096)
def utc_iso(value: str) -> str:
    """An ISO-8601 time as fixed-width UTC (``2026-01-02T03:04:05.678Z``) so strings sort in time order.

    Raises ValueError for anything that is not an ISO-8601 time. Remembered: one message's times are read several
    times on their way to the store (checked, clamped, merged into the finding and the host record).
    """
    return timeutil.iso(timeutil.parse(value), "milliseconds")


@dataclass(frozen=True)
class Origin:
    """Who sent a message and when, as the queue (not the message) says: SQS's ``SenderId`` and ``SentTimestamp``.

    ``sender`` is None for a message that did not come through the queue (a store filled directly)."""

    sender: str | None
    sent_at: str  # utc_iso() of the queue's time

    @classmethod
    def of_message(cls, message: Mapping[str, Any]) -> Origin:
        """The origin a message has when only its own word is known (no queue in between)."""
        return cls(None, utc_iso(message["sent_at"]))


def message_version(message: Mapping[str, Any]) -> str:
    """A total order on messages: newer ``sent_at`` wins, ``message_id`` breaks ties deterministically. Through the
    queue, ``sent_at`` is never later than the queue's ``SentTimestamp`` plus a small skew (the handler clamps it),
    so no sender can date a message into the future and pin its records."""
    return f"{utc_iso(message['sent_at'])}|{message['message_id']}"


@dataclass(frozen=True)
class FindingRecord:
    """One key at one place on one host, as the fleet has reported it.

    ``fingerprint`` is key-level (shared by every place the same key is found); ``finding_fingerprint`` names this
    (host, location, key) and is the store's primary key. ``status`` is the current verification status (None when
    the agent did not verify). ``verification_history`` holds ``{"status", "at", "last_at", "arn", "reason"}`` runs
    in time order, one per change of status (``at`` when the status was first seen, ``last_at`` last seen), with the
    STS ``request_id`` of the call at ``at`` and ``last_request_id`` of the one at ``last_at`` when the agent sent them.
    """

    finding_fingerprint: str
    fingerprint: str
    key_id: str
    account_id: str | None
    rule: str
    severity: str
    has_secret: bool
    host_id: str
    hostname: str
    host_kind: str
    first_seen: str
    last_seen: str
    version: str  # message_version() of the message the descriptive fields come from
    key_type: str | None = None
    secret_redacted: str | None = None
    pairing: str | None = None
    agent_version: str | None = None
    host: dict[str, Any] = field(default_factory=dict)
    location: dict[str, Any] = field(default_factory=dict)
    status: str | None = None
    verification: dict[str, Any] | None = None
    verified_at: str | None = None  # when the current status was observed
    verification_history: tuple[dict[str, Any], ...] = ()
    suggestion: dict[str, Any] | None = None
    owner_arn: str | None = None
    deactivated_by: str | None = None
    deactivated_at: str | None = None
    sender: str | None = None  # SQS SenderId of the newest message (None: not received through the queue)
    received_first: str | None = None  # the queue's time of the first message about this place
    example: str | None = None  # why detection would have hidden it (a finding kept by --include-examples)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["verification_history"] = [dict(e) for e in self.verification_history]
        return d

    def fields(self) -> dict[str, Any]:
        """The fields by name, sharing their values with the record (for serialising: never change them)."""
        return {name: getattr(self, name) for name in _FINDING_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FindingRecord:
        values = {k: v for k, v in data.items() if k in _FINDING_NAMES}
        values["verification_history"] = tuple(dict(e) for e in data.get("verification_history") or ())
        return cls(**values)


_FINDING_FIELDS = tuple(f.name for f in dataclasses.fields(FindingRecord))
_FINDING_NAMES = frozenset(_FINDING_FIELDS)


@dataclass(frozen=True)
class FindingSummary:
    """What a fleet view needs of every finding: a :class:`FindingRecord` without its verification details and
    history, host context and suggestion, which a store can give for every finding without decoding them.

    ``suggestion_kind`` is the suggestion's kind (None: the message carried no suggestion); ``suggestion_digest``
    names its whole content, so identical suggestions are known as such without reading them."""

    finding_fingerprint: str
    fingerprint: str
    key_id: str
    key_type: str | None
    account_id: str | None
    owner_arn: str | None
    severity: str
    host_id: str
    hostname: str
    host_kind: str
    location: Mapping[str, Any]
    first_seen: str
    last_seen: str
    status: str | None
    verified_at: str | None
    version: str
    received_first: str | None
    suggestion_kind: str | None = None
    suggestion_digest: str | None = None
    example: str | None = None
    deactivated_by: str | None = None
    deactivated_at: str | None = None

    @classmethod
    def of(cls, rec: FindingRecord) -> FindingSummary:
        return cls(
            rec.finding_fingerprint,
            rec.fingerprint,
            rec.key_id,
            rec.key_type,
            rec.account_id,
            rec.owner_arn,
            rec.severity,
            rec.host_id,
            rec.hostname,
            rec.host_kind,
            rec.location,
            rec.first_seen,
            rec.last_seen,
            rec.status,
            rec.verified_at,
            rec.version,
            rec.received_first,
            suggestion_kind(rec.suggestion),
            suggestion_digest(rec.suggestion),
            rec.example,
            rec.deactivated_by,
            rec.deactivated_at,
        )


def canonical_json(data: Any) -> str:
    """The one JSON text of ``data``: sorted keys, no spaces, unescaped Unicode."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def suggestion_kind(suggestion: Mapping[str, Any] | None) -> str | None:
    return None if suggestion is None else str(suggestion.get("kind") or "")


def suggestion_digest(suggestion: Mapping[str, Any] | None, text: str | None = None) -> str | None:
    """A name for the suggestion's whole content (None without one); ``text``: its canonical JSON, when known."""
    if suggestion is None:
        return None
    return hashlib.blake2b((text or canonical_json(suggestion)).encode(), digest_size=12).hexdigest()


@dataclass(frozen=True)
class HostRecord:
    """One host as the fleet knows it: from its heartbeats (coverage) and the findings it sent.

    ``last_heartbeat`` is None for a host that sent findings but no heartbeat yet. ``last_sweep`` is the newest
    heartbeat's ``sweep`` object (times, stats, counts per source); ``spool`` its spool state.
    """

    host_id: str
    hostname: str
    kind: str
    agent_version: str | None
    first_seen: str
    last_message_at: str
    version: str  # message_version() of the newest message of any type (hostname, kind, host context)
    last_heartbeat: str | None = None
    heartbeat_version: str | None = None
    agent_mode: str | None = None
    host: dict[str, Any] = field(default_factory=dict)
    last_sweep: dict[str, Any] | None = None
    errors: tuple[str, ...] = ()
    spool: dict[str, Any] | None = None
    sender: str | None = None  # SQS SenderId of the newest message

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["errors"] = list(self.errors)
        return d

    def fields(self) -> dict[str, Any]:
        """The fields by name, sharing their values with the record (for serialising: never change them)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["errors"] = tuple(data.get("errors") or ())
        return cls(**values)


def _history_entry(verification: Mapping[str, Any], at: str) -> dict[str, Any]:
    return {
        "status": verification["status"],
        "at": at,
        "last_at": at,
        "arn": verification.get("arn"),
        "reason": verification.get("reason"),
        "request_id": verification.get("request_id"),
        "last_request_id": verification.get("request_id"),
    }


def insert_history(history: Sequence[dict[str, Any]], entry: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """Add one observation to a time-ordered history of runs (``at`` .. ``last_at``), one run per status.

    Idempotent: an observation inside a run of its own status changes nothing. Observations may arrive in any
    order; the result is exact unless a late observation falls strictly inside a run of another status, which is
    then split at its known ends.
    """
    items = [dict(e) for e in history]
    status = entry["status"]
    key = (entry["at"], status)  # (time, status) orders even observations made at the same instant
    pos = 0
    while pos < len(items) and (items[pos]["at"], items[pos]["status"]) <= key:
        pos += 1
    prev = items[pos - 1] if pos > 0 else None
    nxt = items[pos] if pos < len(items) else None
    if prev is not None and key <= (prev["last_at"], prev["status"]):
        if prev["status"] == status:
            return tuple(history)
        # strictly inside a run of another status: split that run at its known ends
        items[pos:pos] = [dict(entry), {**prev, "at": prev["last_at"], "request_id": prev.get("last_request_id")}]
        prev["last_at"] = prev["at"]
        prev["last_request_id"] = prev.get("request_id")
    elif prev is not None and prev["status"] == status:
        prev["last_at"] = entry["at"]
        prev["last_request_id"] = entry.get("request_id")
    elif nxt is not None and nxt["status"] == status:
        nxt["at"] = entry["at"]
        nxt["request_id"] = entry.get("request_id")
    else:
        items.insert(pos, dict(entry))
    return tuple(items)


def merge_finding(
    existing: FindingRecord | None, message: Mapping[str, Any], origin: Origin | None = None
) -> FindingRecord:
    """The record after ``message`` (a validated finding message, of the record's own host) is applied."""
    finding = message["finding"]
    host = message["host"]
    origin = origin or Origin.of_message(message)
    sent = utc_iso(message["sent_at"])
    version = message_version(message)
    first = utc_iso(finding.get("first_seen") or sent)
    last = max(utc_iso(finding.get("last_seen") or sent), first)
    ver = finding.get("verification")
    verified_at = utc_iso(ver.get("checked_at") or sent) if ver else None
    fresh = FindingRecord(
        finding_fingerprint=finding["finding_fingerprint"],
        fingerprint=finding["fingerprint"],
        key_id=finding["key_id"],
        account_id=finding.get("account_id") or (ver or {}).get("account"),
        rule=finding["rule"],
        severity=finding["severity"],
        has_secret=bool(finding["has_secret"]),
        host_id=host["host_id"],
        hostname=host["hostname"],
        host_kind=host["kind"],
        first_seen=first,
        last_seen=last,
        version=version,
        key_type=finding.get("key_type"),
        secret_redacted=finding.get("secret_redacted"),
        pairing=finding.get("pairing"),
        agent_version=message["agent"]["version"],
        host=dict(host),
        location=dict(finding["location"]),
        status=ver["status"] if ver else None,
        verification=dict(ver) if ver else None,
        verified_at=verified_at,
        verification_history=(_history_entry(ver, verified_at),) if ver and verified_at else (),
        suggestion=dict(message["suggestion"]) if message.get("suggestion") else None,
        owner_arn=(ver or {}).get("arn"),
        sender=origin.sender,
        received_first=origin.sent_at,
        example=finding.get("example"),
    )
    if existing is None:
        return fresh
    base = fresh if version > existing.version else existing
    history = existing.verification_history
    verification, status, current_at = existing.verification, existing.status, existing.verified_at
    if ver and verified_at:
        history = insert_history(history, _history_entry(ver, verified_at))
        if current_at is None or (verified_at, version) > (current_at, existing.version):
            verification, status, current_at = dict(ver), ver["status"], verified_at
    return dataclasses.replace(
        base,
        first_seen=min(existing.first_seen, first),
        last_seen=max(existing.last_seen, last),
        verification_history=history,
        verification=verification,
        status=status,
        verified_at=current_at,
        owner_arn=(fresh.owner_arn if version > existing.version else None) or existing.owner_arn or fresh.owner_arn,
        deactivated_by=existing.deactivated_by,
        deactivated_at=existing.deactivated_at,
        received_first=min(filter(None, (existing.received_first, fresh.received_first))),
    )


def merge_host(existing: HostRecord | None, message: Mapping[str, Any], origin: Origin | None = None) -> HostRecord:
    """The host record after any message from it (a finding or a heartbeat) is applied."""
    host = message["host"]
    origin = origin or Origin.of_message(message)
    sent = utc_iso(message["sent_at"])
    version = message_version(message)
    agent = message["agent"]
    is_heartbeat = message["type"] == "heartbeat"
    fresh = HostRecord(
        host_id=host["host_id"],
        hostname=host["hostname"],
        kind=host["kind"],
        agent_version=agent["version"],
        agent_mode=agent.get("mode"),
        first_seen=sent,
        last_message_at=sent,
        version=version,
        host=dict(host),
        last_heartbeat=sent if is_heartbeat else None,
        heartbeat_version=version if is_heartbeat else None,
        last_sweep=dict(message["sweep"]) if is_heartbeat else None,
        errors=tuple(message["sweep"].get("errors") or ()) if is_heartbeat else (),
        spool=dict(message["spool"]) if is_heartbeat and message.get("spool") else None,
        sender=origin.sender,
    )
    if existing is None:
        return fresh
    merged = existing
    if version > existing.version:
        merged = dataclasses.replace(
            merged,
            hostname=fresh.hostname,
            kind=fresh.kind,
            agent_version=fresh.agent_version,
            agent_mode=fresh.agent_mode,
            host=fresh.host,
            version=version,
            sender=fresh.sender,
        )
    if is_heartbeat and (existing.heartbeat_version is None or version > existing.heartbeat_version):
        merged = dataclasses.replace(
            merged,
            last_heartbeat=sent,
            heartbeat_version=version,
            last_sweep=fresh.last_sweep,
            errors=fresh.errors,
            spool=fresh.spool,
        )
    return dataclasses.replace(
        merged, first_seen=min(existing.first_seen, sent), last_message_at=max(existing.last_message_at, sent)
    )


STATUS_URGENCY = ("live", "canary", "unknown", "wrong_secret", "expired", "invalid", "skipped", "unverified")


def status_rank(status: str | None) -> int:
    """Where a verification status stands in urgency (``live`` first; None is ``unverified``)."""
    status = status or "unverified"
    return STATUS_URGENCY.index(status) if status in STATUS_URGENCY else len(STATUS_URGENCY)


AnyFinding = TypeVar("AnyFinding", FindingRecord, FindingSummary)


def arrival(record: FindingRecord | FindingSummary) -> tuple[str, str]:
    """When the collector first heard of this place (the agent's own ``first_seen`` for records that did not come
    through the queue), then the host id: earlier reporters first."""
    return (record.received_first or record.first_seen, record.host_id)


def host_words(records: Sequence[AnyFinding]) -> list[AnyFinding]:
    """Each host's own word on one key: its record with the newest check (a host speaks only for itself)."""
    by_host: dict[str, AnyFinding] = {}
    for rec in records:
        mine = by_host.get(rec.host_id)
        if mine is None or (rec.verified_at or "", rec.version) > (mine.verified_at or "", mine.version):
            by_host[rec.host_id] = rec
    return list(by_host.values())


def key_word(records: Sequence[AnyFinding]) -> AnyFinding:
    """The record whose status is the key's: the most urgent of the hosts' own words, the earliest reporter first.
    One host's report can raise the alarm about a key, never clear another host's ``live``."""
    return min(host_words(records), key=lambda r: (status_rank(r.status), arrival(r)))
