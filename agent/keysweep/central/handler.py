"""One message body in, one outcome out: validate, classify, and apply to the store.

Shared by the long-polling collector and the Lambda function. Outcomes: ``ok`` (applied; ``changed`` says whether
the store changed — a duplicate does not), ``malformed`` (not JSON, not schema-valid, bad times),
``unknown-version`` (a schema version this collector does not know) and ``rejected`` (its SQS sender may not speak
for the host it names: :mod:`keysweep.central.senders`). Rejections carry a short reason that never quotes the
body. Store failures are raised as :class:`keysweep.errors.StoreError` so the caller leaves the message on the
queue.

Time is the collector's: a message's times later than the queue's ``SentTimestamp`` plus ``skew`` (5 minutes) are
clamped to the ``SentTimestamp`` and counted; records are ordered by those clamped times, so a host with a wrong
(or lying) clock cannot date a report into the future and pin its records or its coverage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from keysweep import timeutil
from keysweep.central.records import CLOCK_SKEW, Origin, utc_iso
from keysweep.central.senders import SenderMap
from keysweep.central.store import MessageRefused, Store, apply_messages
from keysweep.central.validate import Validator, depth_error, message_validator, parse_message
from keysweep.strenum import StrEnum

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = frozenset({1})
MAX_BODY_BYTES = 1024 * 1024  # SQS's own limit: anything larger did not come from an agent
MAX_CACHED_OWNERS = 100_000


class Outcome(StrEnum):
    OK = "ok"
    MALFORMED = "malformed"
    UNKNOWN_VERSION = "unknown-version"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    kind: str | None = None  # finding | heartbeat, once known
    changed: bool = False
    reason: str | None = None  # why it was rejected; never holds message content
    clamped: int = 0  # times later than the queue's time plus the skew, set to the queue's time


def queue_origin(attributes: Mapping[str, Any] | None) -> Origin:
    """The origin SQS gives a message (``SenderId``, ``SentTimestamp`` system attributes, in a ReceiveMessage
    answer or a Lambda event record). A missing ``SenderId`` gives the empty sender, which every host refuses."""
    attributes = attributes or {}
    try:
        at = timeutil.iso(int(attributes["SentTimestamp"]) / 1000, "milliseconds")
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        at = timeutil.now_iso("milliseconds")
    return Origin(str(attributes.get("SenderId") or ""), at)


def _time_slots(message: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """(object, key) of every time a message carries."""
    yield message, "sent_at"
    finding = message.get("finding") or {}
    yield from ((finding, k) for k in ("first_seen", "last_seen") if k in finding)
    verification = finding.get("verification") or {}
    if verification.get("checked_at"):
        yield verification, "checked_at"
    sweep = message.get("sweep") or {}
    yield from ((sweep, k) for k in ("started_at", "finished_at") if k in sweep)


def clamp_times(message: dict[str, Any], at: str, skew: timedelta = CLOCK_SKEW) -> int:
    """Set every time of ``message`` later than ``at`` + ``skew`` to ``at``; how many were."""
    limit = timeutil.iso(timeutil.parse(at) + skew, "milliseconds")
    clamped = 0
    for parent, key in _time_slots(message):
        if utc_iso(parent[key]) > limit:
            parent[key] = at
            clamped += 1
    return clamped


class MessageHandler:
    def __init__(
        self,
        store: Store,
        validator: Validator | None = None,
        *,
        senders: SenderMap | None = None,
        skew: timedelta = CLOCK_SKEW,
    ) -> None:
        self.store = store
        self.validator = validator or message_validator()
        self.senders = senders or SenderMap()
        self.skew = skew
        # host id -> owner the store confirmed: an owner changes only by a take-over, which a sender the cache knows
        # as the owner never needs and another first-seen sender can never make
        self._owners: dict[str, str] = {}

    def classify(self, body: str | bytes) -> tuple[Result, dict[str, Any] | None]:
        """The outcome a body would have, and the parsed message when it is ok (the store is not touched)."""
        if len(body) > MAX_BODY_BYTES:
            return Result(Outcome.MALFORMED, reason="body larger than 1 MiB"), None
        try:
            message = parse_message(body)
        except (ValueError, RecursionError):
            return Result(Outcome.MALFORMED, reason="body is not strict JSON (or holds a non-finite number)"), None
        if not isinstance(message, dict):
            return Result(Outcome.MALFORMED, reason="body is not a JSON object"), None
        too_deep = depth_error(message)
        if too_deep:
            return Result(Outcome.MALFORMED, reason=too_deep), None
        version = message.get("schema_version")
        if isinstance(version, int) and not isinstance(version, bool) and version not in SUPPORTED_VERSIONS:
            return Result(Outcome.UNKNOWN_VERSION, reason=f"schema_version {version}"), None
        errors = self.validator.errors(message)
        if errors:
            return Result(Outcome.MALFORMED, reason="; ".join(errors[:3])), None
        try:
            for parent, key in _time_slots(message):
                utc_iso(parent[key])
        except (ValueError, TypeError, OverflowError):
            return Result(Outcome.MALFORMED, reason="a time field is not ISO-8601"), None
        return Result(Outcome.OK, kind=message["type"]), message

    def prepare(self, body: str | bytes, origin: Origin | None = None) -> tuple[Result, dict[str, Any] | None]:
        """Classify ``body``, clamp its times and bind its sender: the outcome so far and the message to apply (None
        when it is not to be applied). ``origin`` as for :meth:`handle`."""
        result, message = self.classify(body)
        if message is None:
            return result, None
        kind = message["type"]
        clamped = clamp_times(message, origin.sent_at if origin else timeutil.now_iso("milliseconds"), self.skew)
        reason = self._bind(origin, message["host"]["host_id"]) if origin else None
        if reason:
            return Result(Outcome.REJECTED, kind=kind, reason=reason, clamped=clamped), None
        return Result(Outcome.OK, kind=kind, clamped=clamped), message

    def handle(self, body: str | bytes, origin: Origin | None = None) -> Result:
        """Classify ``body`` and apply it. ``origin``: the queue's word on its sender and time (None: a message
        applied directly, not received from the queue — no sender binding, ordered by its own ``sent_at``, times
        clamped to now)."""
        result, message = self.prepare(body, origin)
        if message is None:
            return result
        if message["type"] == "finding":
            changed = self.store.upsert_finding(message, origin)
        else:
            changed = self.store.record_heartbeat(message, origin)
        return replace(result, changed=changed)

    def handle_batch(self, items: Sequence[tuple[str | bytes, Origin | None]]) -> list[Result | MessageRefused]:
        """:meth:`handle` for each (body, origin), the accepted messages applied to the store together
        (:meth:`Store.apply_messages`: one transaction in SQLite). One entry per item: its result, or the
        :class:`MessageRefused` of a message the store refused. A StoreError is raised for the whole batch."""
        out: list[Result | MessageRefused] = []
        todo: list[tuple[int, Result, dict[str, Any], Origin | None]] = []
        for body, origin in items:
            try:
                result, message = self.prepare(body, origin)
            except MessageRefused as exc:  # binding its host id: the store refused that message
                out.append(exc)
                continue
            if message is not None:
                todo.append((len(out), result, message, origin))
            out.append(result)
        applied = apply_messages(self.store, [(message, origin) for _, _, message, origin in todo]) if todo else []
        for n, (i, result, _, _) in enumerate(todo):
            changed = applied[n]
            out[i] = changed if isinstance(changed, MessageRefused) else replace(result, changed=changed)
        return out

    def _bind(self, origin: Origin, host_id: str) -> str | None:
        """Why the sender may not speak for ``host_id`` (None when it may; a first-seen owner is recorded)."""
        if not origin.sender:
            return "the queue gave no SenderId"
        binding = self.senders.bind(origin.sender, host_id)
        if binding.reason or binding.owner is None:
            return binding.reason
        owner = self._owners.get(host_id)
        if owner != binding.owner and (owner is None or binding.authoritative):
            owner = self.store.claim_host(host_id, binding.owner, take_over=binding.authoritative)
            if len(self._owners) >= MAX_CACHED_OWNERS:
                self._owners.clear()
            self._owners[host_id] = owner
        if owner != binding.owner:
            return f"the host id is owned by sender {owner}, not {binding.owner}"
        return None
