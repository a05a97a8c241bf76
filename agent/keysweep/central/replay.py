"""Messages from a file into the store (``keysweep collect --from-file``): backfill, and replay of a dead-letter
queue's messages after a fix or of an archive.

Each line is one message, through the same :class:`~keysweep.central.handler.MessageHandler` as a queue message:
size, strict JSON, schema version, schema, times, clamping, sender binding, then the store's idempotent upsert.
A line is either a **message body** or an **SQS message** as ``ReceiveMessage`` returns it (``{"Body": "…",
"Attributes": {"SenderId": …, "SentTimestamp": …}, …}``; a Lambda event record's ``body``/``attributes`` also
work), e.g. ``aws sqs receive-message --attribute-names All … | jq -c '.Messages[]'``.

Who sent a line (:class:`Attribution`): a file has no SQS ``SenderId`` of its own. By default a line is bound to
the ``SenderId`` its SQS envelope carries, exactly as the queue's message would be, and a bare body, which carries
none, is rejected like a queue message without one. ``sender`` binds every line to one given sender instead (an
archive of one agent role's messages); ``bind=False`` applies the lines with no sender binding at all (the operator
vouches for the file: records keep no sender, their times are clamped to now). Validation is never skipped.

Lines longer than the limit are skipped unread, lines that are not UTF-8 or not a valid message are counted and
skipped, each logged by line number and reason, never by content.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

from keysweep.central.handler import MAX_BODY_BYTES, MessageHandler, Outcome, Result, queue_origin
from keysweep.central.records import Origin
from keysweep.central.store import MessageRefused
from keysweep.errors import StoreError

log = logging.getLogger(__name__)

# an envelope holds the body as a JSON string: escaping can make it several times longer than the body itself
MAX_LINE_BYTES = 4 * MAX_BODY_BYTES
MAX_LOGGED_SKIPS = 100  # skipped lines logged one by one; beyond this they are only counted
BATCH_LINES = 100  # lines applied in one store transaction (SQLite), as a collector applies a receive
BATCH_BYTES = 8 * 1024 * 1024  # ... or fewer, so a batch of long lines stays small in memory


@dataclass(frozen=True)
class Line:
    number: int  # 1-based
    data: bytes | None  # without the line ending; None when the line was longer than the limit (not kept)


def read_lines(stream: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[Line]:
    """The lines of ``stream`` (``\\n``-terminated, the last one may lack it; a ``\\r`` before the ``\\n`` is
    dropped), holding at most ``limit`` + 1 bytes at a time: a longer line is read past and given as ``None``."""
    number = 0
    while True:
        chunk = stream.readline(limit + 1)
        if not chunk:
            return
        number += 1
        if chunk.endswith(b"\n"):
            chunk = chunk[:-1]
        elif len(chunk) > limit:
            while chunk and not chunk.endswith(b"\n"):
                chunk = stream.readline(limit + 1)
            yield Line(number, None)
            continue
        yield Line(number, chunk[:-1] if chunk.endswith(b"\r") else chunk)


class Attribution(enum.Enum):
    ENVELOPE = "envelope"  # the SenderId of the line's SQS envelope; a bare body has none and is rejected
    SENDER = "sender"  # every line bound to one given sender
    NONE = "none"  # no sender binding (the operator vouches for the file)


@dataclass
class ReplayStats:
    lines: int = 0
    blank: int = 0
    stored: int = 0  # applied and changed the store
    duplicates: int = 0  # applied, changed nothing
    malformed: int = 0
    not_utf8: int = 0
    too_long: int = 0
    unknown_version: int = 0
    rejected_sender: int = 0
    no_sender: int = 0  # of rejected_sender: lines that carried no SenderId
    clamped_times: int = 0
    refused: int = 0  # valid, but the store refused it for its own content
    internal_errors: int = 0
    store_errors: int = 0
    stopped_at_line: int | None = (
        None  # the store failed (or a stop was asked) here: this line and later ones not applied
    )

    @property
    def skipped(self) -> int:
        return (
            self.malformed
            + self.not_utf8
            + self.too_long
            + self.unknown_version
            + self.rejected_sender
            + self.refused
            + self.internal_errors
        )

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)


def unwrap(text: str) -> tuple[str, Mapping[str, Any] | None]:
    """(body, SQS attributes) of a line: an SQS message's ``Body``/``Attributes`` (or a Lambda record's
    ``body``/``attributes``), else the line itself as the body with no attributes."""
    if not text.lstrip().startswith("{") or ('"Body"' not in text and '"body"' not in text):
        return text, None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return text, None  # the handler says why it is malformed
    if not isinstance(data, dict):
        return text, None
    for body_key, attributes_key in (("Body", "Attributes"), ("body", "attributes")):
        body = data.get(body_key)
        if isinstance(body, str):
            attributes = data.get(attributes_key)
            return body, attributes if isinstance(attributes, dict) else {}
    return text, None


class Replayer:
    def __init__(
        self,
        handler: MessageHandler,
        *,
        attribution: Attribution = Attribution.ENVELOPE,
        sender: str | None = None,
        should_stop: Callable[[], bool] | None = None,
        batch_lines: int = BATCH_LINES,
    ) -> None:
        if (attribution is Attribution.SENDER) != bool(sender):
            raise ValueError("a sender is given exactly when every line is attributed to it")
        self.handler = handler
        self.attribution = attribution
        self.sender = sender
        self.stats = ReplayStats()
        self._should_stop = should_stop or (lambda: False)
        self._batch_lines = max(1, batch_lines)

    def _origin(self, attributes: Mapping[str, Any] | None) -> Origin | None:
        if self.attribution is Attribution.NONE:
            return None
        attributes = dict(attributes or {})
        if self.attribution is Attribution.SENDER:
            attributes["SenderId"] = self.sender
        return queue_origin(attributes)

    def run(self, lines: Iterator[Line]) -> ReplayStats:
        """Apply every line, up to ``batch_lines`` lines in one store transaction where the handler can
        (``handle_batch``; 1 for a live pipe, so that each line is applied as it comes). Stops at the first store
        failure: ``stopped_at_line`` is the first line of the batch that failed, none of which may be taken as
        applied. Raises nothing but interrupts."""
        batch: list[tuple[Line, str, Origin | None]] = []
        size = 0
        for line in lines:
            if self._should_stop():
                self.stats.stopped_at_line = batch[0][0].number if batch else line.number
                batch = []
                break
            self.stats.lines += 1
            prepared = self._prepare(line)
            if prepared is None:
                continue
            batch.append(prepared)
            size += len(prepared[1])
            if len(batch) >= self._batch_lines or size >= BATCH_BYTES:
                if not self._apply_batch(batch):
                    return self.stats
                batch, size = [], 0
        if batch:
            self._apply_batch(batch)
        return self.stats

    def _prepare(self, line: Line) -> tuple[Line, str, Origin | None] | None:
        """(line, body, origin) to apply, or None when the line is blank or skipped already."""
        if line.data is None:
            self._skip(line, "too_long", f"longer than {MAX_LINE_BYTES} bytes")
            return None
        if not line.data.strip():
            self.stats.blank += 1
            return None
        try:
            text = line.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._skip(line, "not_utf8", f"not UTF-8 at byte {exc.start}")
            return None
        body, attributes = unwrap(text)
        return line, body, self._origin(attributes)

    def _apply_batch(self, batch: list[tuple[Line, str, Origin | None]]) -> bool:
        """Apply a batch; False (and ``stopped_at_line``) when the store failed."""
        handle_batch = getattr(self.handler, "handle_batch", None)
        try:
            if handle_batch is not None:
                try:
                    outcomes = handle_batch([(body, origin) for _, body, origin in batch])
                except StoreError:
                    raise
                except Exception:  # noqa: BLE001 (a line broke the batch: find it, one line at a time)
                    outcomes = None
                if outcomes is not None:
                    for (line, _, origin), outcome in zip(batch, outcomes):
                        self._count(line, origin, outcome)
                    return True
            for i, (line, body, origin) in enumerate(batch):
                try:
                    self._count(line, origin, self._handle_one(body, origin))
                except StoreError:
                    batch = batch[i:]
                    raise
        except StoreError as exc:
            self.stats.store_errors += 1
            self.stats.stopped_at_line = batch[0][0].number
            log.error("line %d: the store failed, stopping (%s)", batch[0][0].number, exc)
            return False
        return True

    def _handle_one(self, body: str, origin: Origin | None) -> Result | MessageRefused | Exception:
        try:
            return self.handler.handle(body, origin)
        except (MessageRefused, StoreError) as exc:
            if isinstance(exc, MessageRefused):
                return exc
            raise
        except Exception as exc:  # noqa: BLE001 (one bad line must not stop a replay; its text may quote the line)
            return exc

    def _skip(self, line: Line, counter: str, reason: str) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        skipped = self.stats.skipped
        if skipped <= MAX_LOGGED_SKIPS:
            log.warning("line %d skipped (%s)", line.number, reason)
        if skipped == MAX_LOGGED_SKIPS:
            log.warning("further skipped lines are counted, not logged")

    def _count(self, line: Line, origin: Origin | None, outcome: Result | Exception) -> None:
        if isinstance(outcome, MessageRefused):
            self._skip(line, "refused", f"refused by the store: {outcome}")
            return
        if isinstance(outcome, Exception):
            self._skip(line, "internal_errors", f"could not be handled: {type(outcome).__name__}")
            return
        result = outcome
        self.stats.clamped_times += result.clamped
        if result.outcome is Outcome.OK:
            if result.changed:
                self.stats.stored += 1
            else:
                self.stats.duplicates += 1
            log.info("line %d: %s %s", line.number, result.kind, "stored" if result.changed else "duplicate")
        elif result.outcome is Outcome.UNKNOWN_VERSION:
            self._skip(line, "unknown_version", f"unknown-version: {result.reason}")
        elif result.outcome is Outcome.REJECTED:
            reason = result.reason
            if origin is not None and not origin.sender:
                self.stats.no_sender += 1
                reason = "the line carries no SenderId (a bare body, or an SQS message without its attributes)"
            self._skip(line, "rejected_sender", f"rejected: {reason}")
        else:
            self._skip(line, "malformed", f"malformed: {result.reason}")
