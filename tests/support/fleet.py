"""A small fleet in a real SQLite store, filled through the collector's message handler with schema-valid messages."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keysweep.central.handler import MessageHandler, Outcome
from keysweep.central.store import open_store

from tests.support.messages import finding_message, heartbeat_message, host

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LIVE_KEY = "AKIAXYZDQCEN4B6JSJQI"  # account 534261010715
DEAD_KEY = "AKIASP2TPHJSQH3FJRUX"
OLD_KEY = "AKIAYVP4CIPPERUVIFXG"
HOSTILE_HOST = "<img src=x onerror=\"document.title='pwned'\">"
HOSTILE_PATH = '/srv/"><script>document.title="pwned"</script>/=cmd|calc\x1b[31m.env'
# a 40-character run of the secret alphabet, standing alone: what a raw secret access key looks like
SECRET_SHAPE = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")

WEB1 = host("i-0aaaaaaaaaaaaaaa1", "web-1", "ec2")
WEB2 = host("i-0aaaaaaaaaaaaaaa2", "web-2", "ec2")
ETL = host("arn:aws:ecs:eu-west-1:123456789012:task/etl/1", "=etl-task", "ecs")  # a formula to a spreadsheet
POD = host("pod-uid-1", HOSTILE_HOST, "eks")
QUIET = host("i-0aaaaaaaaaaaaaaa9", "quiet-1", "ec2")


def messages() -> list[dict[str, Any]]:
    live1 = finding_message(host_info=WEB1, key_id=LIVE_KEY, sent_at="2026-11-28T10:00:00Z")
    return [
        live1,
        json.loads(json.dumps(live1)),  # delivered twice (at-least-once): must not double anything
        finding_message(host_info=WEB2, key_id=LIVE_KEY, path="/srv/app/.env", sent_at="2026-11-28T10:01:00Z"),
        finding_message(
            host_info=ETL,
            key_id=DEAD_KEY,
            path="/app/config.json",
            status="invalid",
            severity="medium",
            sent_at="2026-11-28T10:02:00Z",
        ),
        finding_message(host_info=POD, key_id=OLD_KEY, path=HOSTILE_PATH, sent_at="2025-01-01T00:00:00Z"),
        finding_message(
            host_info=WEB1, key_id=OLD_KEY, path="/home/u/.aws/credentials", status=None, sent_at="2026-11-28T09:00:00Z"
        ),
        heartbeat_message(host_info=WEB1, sent_at="2026-11-28T11:00:00Z", agent_version="0.2.0"),
        heartbeat_message(host_info=WEB2, sent_at="2026-11-28T11:30:00Z"),
        heartbeat_message(host_info=ETL, sent_at="2026-11-25T11:00:00Z", errors=["permission denied: /root"]),
        heartbeat_message(host_info=QUIET, sent_at="2026-11-28T11:45:00Z", files_scanned=42),
    ]


def store_messages(url: str | Path, *fleet_messages: dict[str, Any]) -> None:
    """Store messages in the fleet store at ``url`` (a path or a store URL) as the collector would; each must be
    accepted."""
    store = open_store(str(url))
    try:
        handler = MessageHandler(store)
        for message in fleet_messages:
            result = handler.handle(json.dumps(message))
            assert result.outcome is Outcome.OK, result.reason
    finally:
        store.close()


def build_store(path: Path, extra: list[dict[str, Any]] = ()) -> Path:  # type: ignore[assignment]
    store_messages(path, *messages(), *extra)
    return path
