"""The verification cache: what STS said about a key, keyed by the key's keyed fingerprint, with a TTL per status.

The file (``verify-cache.json`` in the state directory) holds no secret and no key id: entries are keyed by
an HMAC fingerprint that only this installation can compute. It is written atomically (temp file, fsync,
rename) with mode 0600; a damaged file is moved aside to ``corrupt/`` and rebuilt (see keysweep.statedir).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from keysweep import statedir, textsafe
from keysweep.atomicfile import atomic_write
from keysweep.models import Verification

log = logging.getLogger(__name__)

CACHE_FILE = "verify-cache.json"
_FORMAT = 1
_FIELDS = ("status", "account", "arn", "user_id", "principal_type", "reason", "checked_at", "request_id")


def _entry_ok(v: Any) -> bool:
    return (
        isinstance(v, dict)
        and isinstance(v.get("expires_at"), (int, float))
        and isinstance(v.get("status"), str)
        and all(v.get(f) is None or isinstance(v.get(f), (str, int, float)) for f in _FIELDS)
    )


def _valid(doc: Any) -> dict[str, dict[str, Any]]:
    return statedir.entries(doc, _FORMAT, "verification cache", _entry_ok, "a verification")


class VerifyCache:
    """In memory while a run lasts; ``save()`` persists it. ``path`` None keeps it in memory only."""

    def __init__(self, path: Path | None, ttls: Mapping[str, float], *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.ttls = dict(ttls)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self._dirty = False
        if path is not None:
            self._entries = statedir.load_json(path.parent, path, _valid) or {}

    def get(self, key: str) -> Verification | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry["expires_at"] <= self._clock():
                del self._entries[key]
                self._dirty = True
                return None
        fields: dict[str, Any] = {f: entry.get(f) for f in _FIELDS}
        if not isinstance(fields["status"], str):
            return None
        return Verification(**fields, cached=True)

    def put(self, key: str, verification: Verification) -> None:
        ttl = self.ttls.get(verification.status, 0)
        if ttl <= 0:
            return
        entry = {f: getattr(verification, f) for f in _FIELDS}
        entry["expires_at"] = self._clock() + ttl
        with self._lock:
            self._entries[key] = entry
            self._dirty = True

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        now = self._clock()
        with self._lock:
            live = {k: v for k, v in self._entries.items() if v["expires_at"] > now}
            self._entries = live
            self._dirty = False
            data = textsafe.dumps_json({"format": _FORMAT, "entries": live}, sort_keys=True).encode()
        atomic_write(self.path, data)
