"""One message body in, one outcome out: validate, classify, and apply to the store.

Shared by the long-polling collector and the Lambda function. Outcomes: ``ok`` (applied; ``changed`` says whether
the store changed — a duplicate does not), ``malformed`` (not JSON, not schema-valid, bad times) and
``unknown-version`` (a schema version this collector does not know). Rejections carry a short reason that never
quotes the body. Store failures are raised as :class:`keysweep.errors.StoreError` so the caller leaves the
message on the queue.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keysweep.central.records import utc_iso
from keysweep.central.store import Store
from keysweep.central.validate import Validator, depth_error, message_validator, parse_message

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = frozenset({1})
MAX_BODY_BYTES = 1024 * 1024  # SQS's own limit: anything larger did not come from an agent


class Outcome(enum.StrEnum):
    OK = "ok"
    MALFORMED = "malformed"
    UNKNOWN_VERSION = "unknown-version"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    kind: str | None = None  # finding | heartbeat, once known
    changed: bool = False
    reason: str | None = None  # why it was rejected; never holds message content


def _times(message: Mapping[str, Any]) -> list[str]:
    values = [message["sent_at"]]
    finding = message.get("finding") or {}
    values += [finding[k] for k in ("first_seen", "last_seen") if k in finding]
    verification = finding.get("verification") or {}
    if verification.get("checked_at"):
        values.append(verification["checked_at"])
    sweep = message.get("sweep") or {}
    values += [sweep[k] for k in ("started_at", "finished_at") if k in sweep]
    return values


class MessageHandler:
    def __init__(self, store: Store, validator: Validator | None = None) -> None:
        self.store = store
        self.validator = validator or message_validator()

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
            for value in _times(message):
                utc_iso(value)
        except (ValueError, TypeError):
            return Result(Outcome.MALFORMED, reason="a time field is not ISO-8601"), None
        return Result(Outcome.OK, kind=message["type"]), message

    def handle(self, body: str | bytes) -> Result:
        result, message = self.classify(body)
        if message is None:
            return result
        if message["type"] == "finding":
            changed = self.store.upsert_finding(message)
        else:
            changed = self.store.record_heartbeat(message)
        return Result(Outcome.OK, kind=message["type"], changed=changed)
