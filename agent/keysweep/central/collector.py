"""The long-polling collector: SQS queue in, store out, at least once and idempotently.

A batch is received, each body is validated, the valid ones are applied to the store in one transaction, and only
then are the applied messages deleted. A crash between the store commit and the delete redelivers messages the store already holds; the
idempotent upsert makes that harmless. Malformed and unknown-version messages are never deleted: they become
visible again and the queue's redrive policy moves them to the dead-letter queue. Each message is bound to the
SQS sender that sent it (:mod:`keysweep.central.senders`): one that claims a host its sender may not speak for is
rejected the same way. While a batch is being
processed a background thread keeps extending the visibility timeout of the messages still in hand.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from keysweep.aws import client_config, make_client
from keysweep.central.handler import MessageHandler, Outcome, Result, queue_origin
from keysweep.central.senders import SenderMap
from keysweep.central.store import MessageRefused, Store
from keysweep.errors import KeysweepError, StoreError
from keysweep.retry import Backoff, failure_name

log = logging.getLogger(__name__)


class QueueError(KeysweepError):
    """The queue could not be read."""


@dataclass(frozen=True)
class CollectorConfig:
    queue_url: str
    wait_seconds: int = 20  # long poll (0–20)
    max_messages: int = 10  # per receive (1–10)
    visibility_timeout: int = 120  # requested on receive; extended while a batch is in hand
    once: bool = False  # drain what is there, stop after the first empty receive
    region: str | None = None
    max_receive_failures: int = 3  # consecutive failed receives before --once gives up
    senders: SenderMap = field(default_factory=SenderMap)  # which SQS sender may speak for which host

    def __post_init__(self) -> None:
        if not 0 <= self.wait_seconds <= 20:
            raise ValueError("wait_seconds must be 0..20")
        if not 1 <= self.max_messages <= 10:
            raise ValueError("max_messages must be 1..10")
        if not 1 <= self.visibility_timeout <= 43200:
            raise ValueError("visibility_timeout must be 1..43200 seconds")


@dataclass
class CollectStats:
    batches: int = 0
    received: int = 0
    stored: int = 0  # applied and changed the store
    duplicates: int = 0  # applied, changed nothing
    malformed: int = 0
    unknown_version: int = 0
    rejected_sender: int = 0  # its SQS sender may not speak for the host it names
    clamped_times: int = 0  # times later than the queue's time plus the skew, set to the queue's time
    refused: int = 0  # valid, but the store refused it for its own content (too large, ValidationException)
    store_errors: int = 0
    internal_errors: int = 0  # a message that broke the handler: left on the queue, so it ends in the DLQ
    deleted: int = 0
    delete_failures: int = 0
    visibility_extensions: int = 0
    receive_errors: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class VisibilityExtender:
    """Keeps the messages still in hand invisible while a slow batch is processed."""

    def __init__(self, sqs: Any, queue_url: str, timeout: int, stats: CollectStats) -> None:
        self._sqs, self._queue_url, self._timeout, self._stats = sqs, queue_url, timeout, stats
        self._pending: dict[str, str] = {}  # MessageId -> ReceiptHandle
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> VisibilityExtender:
        self._thread = threading.Thread(target=self._run, name="keysweep-visibility", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread:
            self._thread.join()

    def hold(self, messages: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            self._pending.update({m["MessageId"]: m["ReceiptHandle"] for m in messages})

    def release(self, message_id: str) -> None:
        with self._lock:
            self._pending.pop(message_id, None)

    def _run(self) -> None:
        interval = max(self._timeout / 3, 0.2)
        while not self._done.wait(interval):
            with self._lock:
                entries = [
                    {"Id": str(i), "ReceiptHandle": rh, "VisibilityTimeout": self._timeout}
                    for i, rh in enumerate(self._pending.values())
                ]
            if not entries:
                continue
            try:
                response = self._sqs.change_message_visibility_batch(QueueUrl=self._queue_url, Entries=entries)
                self._stats.visibility_extensions += len(response.get("Successful", []))
            except (ClientError, BotoCoreError) as exc:
                log.warning("could not extend visibility of %d message(s): %s", len(entries), type(exc).__name__)


# after a failed receive: 1 s, 2 s, 4 s … up to a minute; after a failed store write: 2 s … up to 5 minutes
RECEIVE_BACKOFF = Backoff(1.0, 60.0, "equal")
STORE_BACKOFF = Backoff(2.0, 300.0, "equal")


class Collector:
    def __init__(
        self,
        config: CollectorConfig,
        store: Store,
        *,
        sqs: Any | None = None,
        should_stop: Callable[[], bool] | None = None,
        handler: MessageHandler | None = None,
    ) -> None:
        self.config = config
        self.handler = handler or MessageHandler(store, senders=config.senders)
        self.stats = CollectStats()
        self._sqs = sqs or make_client(
            "sqs",
            region=config.region,
            config=client_config(read_timeout=config.wait_seconds + 10.0),
        )
        self._should_stop = should_stop or (lambda: False)

    def run(self) -> CollectStats:
        failures = store_failures = 0
        while not self._should_stop():
            try:
                messages = self._receive()
            except QueueError:
                failures += 1
                self.stats.receive_errors += 1
                if self.config.once and failures >= self.config.max_receive_failures:
                    raise
                self._sleep(RECEIVE_BACKOFF.delay(failures))
                continue
            failures = 0
            if not messages:
                if self.config.once:
                    break
                if self.config.wait_seconds == 0:
                    self._sleep(1.0)  # short polling: do not spin on an empty queue
                continue
            if self.process_batch(messages):
                store_failures = 0
                continue
            # the store is failing: receiving more would only push good messages towards the DLQ
            store_failures += 1
            if self.config.once:
                break
            self._sleep(STORE_BACKOFF.delay(store_failures))
        return self.stats

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._should_stop() and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _receive(self) -> list[dict[str, Any]]:
        try:
            response = self._sqs.receive_message(
                QueueUrl=self.config.queue_url,
                MaxNumberOfMessages=self.config.max_messages,
                WaitTimeSeconds=self.config.wait_seconds,
                VisibilityTimeout=self.config.visibility_timeout,
                # who sent it and when, as SQS says: the sender binding and the collector's clock
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SenderId", "SentTimestamp"],
            )
        except (ClientError, BotoCoreError) as exc:
            code = failure_name(exc)
            log.warning("receive from the queue failed: %s", code)
            raise QueueError(f"receive from {self.config.queue_url} failed: {code}") from exc
        return list(response.get("Messages", []))

    def process_batch(self, messages: Sequence[dict[str, Any]]) -> bool:
        """Apply the messages, then delete the ones the store committed. False when the store failed: the rest of
        the batch is left untouched and becomes visible again after the timeout."""
        self.stats.batches += 1
        self.stats.received += len(messages)
        done: list[dict[str, Any]] = []
        store_ok = True
        with VisibilityExtender(
            self._sqs, self.config.queue_url, self.config.visibility_timeout, self.stats
        ) as extender:
            extender.hold(messages)
            try:
                applied = self._apply_all(messages)
            except StoreError as exc:
                self.stats.store_errors += 1
                log.error("store failed for a batch of %d message(s), batch left on the queue: %s", len(messages), exc)
                applied, store_ok = [], False
            for i, message in enumerate(messages):
                if i < len(applied) and applied[i]:
                    done.append(message)
                else:
                    extender.release(message["MessageId"])  # let it reappear for the redrive policy
        self._delete(done)
        return store_ok

    def _apply_all(self, messages: Sequence[dict[str, Any]]) -> list[bool]:
        """Whether each message is in the store, the batch applied in one store transaction; a message that breaks
        the batch (not a store failure) has it applied one message at a time, so only that one fails. Raises
        StoreError."""
        items = [(m.get("Body", ""), queue_origin(m.get("Attributes"))) for m in messages]
        try:
            results = self.handler.handle_batch(items)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 (find the message that broke it, one at a time)
            log.warning(
                "a batch of %d message(s) failed (%s): applying them one at a time", len(messages), type(exc).__name__
            )
            return [self._apply(m) for m in messages]
        return [
            self._refused(m, result) if isinstance(result := results[i], MessageRefused) else self._account(m, result)
            for i, m in enumerate(messages)
        ]

    def _refused(self, message: dict[str, Any], exc: MessageRefused) -> bool:
        """This message's failure: the store is not down, no backoff."""
        self.stats.refused += 1
        log.warning(
            "message %s refused by the store (%s), left for the dead-letter queue", message.get("MessageId", "?"), exc
        )
        return False

    def _apply(self, message: dict[str, Any]) -> bool:
        """True when the message is in the store; False when it was rejected. Raises StoreError."""
        message_id = message.get("MessageId", "?")
        try:
            result = self.handler.handle(message.get("Body", ""), queue_origin(message.get("Attributes")))
        except MessageRefused as exc:
            return self._refused(message, exc)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 (one bad message must not stop the collector)
            self.stats.internal_errors += 1
            # the type only: an exception's text may quote the message
            log.error("message %s could not be handled (%s), left on the queue", message_id, type(exc).__name__)
            return False
        return self._account(message, result)

    def _account(self, message: dict[str, Any], result: Result) -> bool:
        """Count and log a handled message's outcome; True when it is in the store."""
        message_id = message.get("MessageId", "?")
        self.stats.clamped_times += result.clamped
        if result.outcome is Outcome.OK:
            if result.changed:
                self.stats.stored += 1
            else:
                self.stats.duplicates += 1
            log.info("message %s: %s %s", message_id, result.kind, "stored" if result.changed else "duplicate")
            return True
        if result.outcome is Outcome.UNKNOWN_VERSION:
            self.stats.unknown_version += 1
        elif result.outcome is Outcome.REJECTED:
            self.stats.rejected_sender += 1
        else:
            self.stats.malformed += 1
        receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
        log.warning(
            "message %s rejected (%s: %s), left for the dead-letter queue (receive %s)",
            message_id,
            result.outcome.value,
            result.reason,
            receives,
        )
        return False

    def _delete(self, messages: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
            try:
                response = self._sqs.delete_message_batch(QueueUrl=self.config.queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                # stored already: redelivery is harmless, the upsert is idempotent
                self.stats.delete_failures += len(entries)
                log.warning("delete of %d stored message(s) failed: %s", len(entries), type(exc).__name__)
                continue
            self.stats.deleted += len(response.get("Successful", []))
            for failed in response.get("Failed", []):
                self.stats.delete_failures += 1
                log.warning(
                    "delete of stored message %s failed: %s",
                    chunk[int(failed["Id"])].get("MessageId"),
                    failed.get("Code"),
                )
