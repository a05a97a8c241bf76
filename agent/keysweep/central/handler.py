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

    def _checked(self, body: str | bytes, origin: Origin | None) -> tuple[Result, dict[str, Any] | None]:
        """Classify ``body`` and clamp its times: the outcome so far and the message (None when it is not ok)."""
        result, message = self.classify(body)
        if message is None:
            return result, None
        clamped = clamp_times(message, origin.sent_at if origin else timeutil.now_iso("milliseconds"), self.skew)
        return replace(result, clamped=clamped), message

    def _admitted(
        self, result: Result, message: dict[str, Any], origin: Origin | None, claimed: dict[str, str]
    ) -> tuple[Result, dict[str, Any] | None]:
        """Bind a checked message's sender: its outcome and the message to apply (None when it is rejected)."""
        reason = self._bind(origin, message["host"]["host_id"], claimed) if origin else None
        if reason:
            return replace(result, outcome=Outcome.REJECTED, reason=reason), None
        return result, message

    def handle(self, body: str | bytes, origin: Origin | None = None) -> Result:
        """Classify ``body`` and apply it. ``origin``: the queue's word on its sender and time (None: a message
        applied directly, not received from the queue — no sender binding, ordered by its own ``sent_at``, times
        clamped to now)."""
        result, message = self._checked(body, origin)
        if message is None:
            return result
        claimed: dict[str, str] = {}
        with self.store.transaction():  # a new host's claim and its message: one write
            result, message = self._admitted(result, message, origin, claimed)
            if message is not None:
                if message["type"] == "finding":
                    result = replace(result, changed=self.store.upsert_finding(message, origin))
                else:
                    result = replace(result, changed=self.store.record_heartbeat(message, origin))
        self._remember(claimed)
        return result

    def handle_batch(self, items: Sequence[tuple[str | bytes, Origin | None]]) -> list[Result | MessageRefused]:
        """:meth:`handle` for each (body, origin), the accepted messages applied to the store together
        (:meth:`Store.apply_messages`), with the claims of the batch's new hosts, in one :meth:`Store.transaction`
        (SQLite: one commit for the batch). One entry per item: its result, or the :class:`MessageRefused` of a
        message the store refused. A StoreError is raised for the whole batch."""
        checked = [self._checked(body, origin) for body, origin in items]
        out: list[Result | MessageRefused] = [result for result, _ in checked]
        if all(message is None for _, message in checked):
            return out
        todo: list[tuple[int, Result, dict[str, Any], Origin | None]] = []
        claimed: dict[str, str] = {}
        with self.store.transaction():
            for i, ((result, message), (_, origin)) in enumerate(zip(checked, items)):
                if message is None:
                    continue
                try:
                    result, admitted = self._admitted(result, message, origin, claimed)
                except MessageRefused as exc:  # binding its host id: the store refused that message
                    out[i] = exc
                    continue
                out[i] = result
                if admitted is not None:
                    todo.append((i, result, admitted, origin))
            applied = apply_messages(self.store, [(message, origin) for _, _, message, origin in todo]) if todo else []
        self._remember(claimed)
        for n, (i, result, _, _) in enumerate(todo):
            changed = applied[n]
            out[i] = changed if isinstance(changed, MessageRefused) else replace(result, changed=changed)
        return out

    def _bind(self, origin: Origin, host_id: str, claimed: dict[str, str]) -> str | None:
        """Why the sender may not speak for ``host_id`` (None when it may). A first-seen or taken-over owner is
        claimed in the store and noted in ``claimed``, to be remembered once the store's transaction has ended
        (:meth:`_remember`): an owner a rolled-back claim recorded is never trusted."""
        if not origin.sender:
            return "the queue gave no SenderId"
        binding = self.senders.bind(origin.sender, host_id)
        if binding.reason or binding.owner is None:
            return binding.reason
        owner = claimed.get(host_id) or self._owners.get(host_id)
        if owner != binding.owner and (owner is None or binding.authoritative):
            owner = claimed[host_id] = self.store.claim_host(host_id, binding.owner, take_over=binding.authoritative)
        if owner != binding.owner:
            return f"the host id is owned by sender {owner}, not {binding.owner}"
        return None

    def _remember(self, claimed: Mapping[str, str]) -> None:
        """Cache the owners the store confirmed (bounded: cleared when full)."""
        if len(self._owners) + len(claimed) > MAX_CACHED_OWNERS:
            self._owners.clear()
        self._owners.update(claimed)
