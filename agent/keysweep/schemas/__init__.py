"""The message schema shipped with keysweep, shared by the agent (which builds messages) and the collector."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

MESSAGE_SCHEMA_FILE = "message-v1.schema.json"


@lru_cache(maxsize=1)
def message_schema() -> dict[str, Any]:
    """The schema-v1 message schema (loaded once; treat as read-only)."""
    text = resources.files(__name__).joinpath(MESSAGE_SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]
