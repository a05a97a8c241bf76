"""The collector as an AWS Lambda function behind an SQS event-source mapping (serverless mode).

Handler: ``keysweep.central.lambda_handler.handler``. Environment: ``KEYSWEEP_TABLE`` (the DynamoDB table),
optionally ``KEYSWEEP_SENDER_MAP`` (the sender map as JSON: :mod:`keysweep.central.senders`) and
``KEYSWEEP_LOG_LEVEL``. Each record's ``attributes`` (``SenderId``, ``SentTimestamp``) bind it to its sender and
give its time. The event-source mapping must enable ``ReportBatchItemFailures``: messages
that were not stored (malformed, unknown version, refused by the store for their own content, or a store failure) are returned in ``batchItemFailures`` so
SQS keeps them and its redrive policy eventually moves them to the dead-letter queue; the stored ones are
deleted by the Lambda service. Bodies are never logged.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

from keysweep.central.handler import MessageHandler, Outcome, queue_origin
from keysweep.central.senders import SENDER_MAP_ENV, SenderMap
from keysweep.central.store import MessageRefused, open_store
from keysweep.errors import ConfigError, StoreError

TABLE_ENV = "KEYSWEEP_TABLE"

log = logging.getLogger("keysweep.lambda")
_handlers: dict[tuple[str, str], MessageHandler] = {}  # reused across warm invocations


def _handler() -> MessageHandler:
    table = os.environ.get(TABLE_ENV)
    if not table:
        raise ConfigError(f"{TABLE_ENV} is not set")
    sender_map = os.environ.get(SENDER_MAP_ENV, "")
    if (table, sender_map) not in _handlers:
        logging.getLogger("keysweep").setLevel(os.environ.get("KEYSWEEP_LOG_LEVEL", "INFO").upper())
        senders = SenderMap.from_json(sender_map)
        _handlers[(table, sender_map)] = MessageHandler(
            open_store(f"dynamodb://{table}", create=False), senders=senders
        )
    return _handlers[(table, sender_map)]


def handler(event: dict[str, Any], context: Any = None) -> dict[str, list[dict[str, str]]]:
    message_handler = _handler()
    failures: list[dict[str, str]] = []
    counts: Counter[str] = Counter()
    store_down = False
    for record in event.get("Records", []):
        message_id = str(record.get("messageId", ""))
        if store_down:  # do not hammer a failing store; these come back with the next delivery
            counts["not_tried"] += 1
            failures.append({"itemIdentifier": message_id})
            continue
        try:
            result = message_handler.handle(record.get("body", ""), queue_origin(record.get("attributes")))
        except MessageRefused as exc:  # this message only: the store is fine
            counts["refused"] += 1
            log.warning("message %s rejected (%s); left for the dead-letter queue", message_id, exc)
            failures.append({"itemIdentifier": message_id})
            continue
        except StoreError as exc:
            counts["store_error"] += 1
            log.error("store failed for message %s: %s", message_id, exc)
            failures.append({"itemIdentifier": message_id})
            store_down = True
            continue
        except Exception as exc:  # noqa: BLE001 (fail this message only; its text may quote the body)
            counts["internal_error"] += 1
            log.error("message %s could not be handled (%s)", message_id, type(exc).__name__)
            failures.append({"itemIdentifier": message_id})
            continue
        if result.clamped:
            counts["clamped_times"] += result.clamped
        if result.outcome is Outcome.OK:
            counts["stored" if result.changed else "duplicate"] += 1
            continue
        counts[result.outcome.value] += 1
        log.warning(
            "message %s rejected (%s: %s); left for the dead-letter queue (receive %s)",
            message_id,
            result.outcome.value,
            result.reason,
            (record.get("attributes") or {}).get("ApproximateReceiveCount", "?"),
        )
        failures.append({"itemIdentifier": message_id})
    log.info("batch of %d: %s", len(event.get("Records", [])), dict(sorted(counts.items())))
    return {"batchItemFailures": failures}
