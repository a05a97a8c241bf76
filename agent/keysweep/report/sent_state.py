"""What has already been reported, so each sweep sends only what the central store does not know yet.

A finding is (re)sent when it is new, when its verification status changed, or when it was last sent longer than
``rereport_after`` ago (so the store's "last seen" stays true). The file holds finding fingerprints, statuses and
times only — never a key id's secret — and is replaced atomically. Entries not seen for ``retention`` seconds are
forgotten: a key that comes back after that is "new" again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from keysweep import statedir, textsafe
from keysweep.atomicfile import atomic_write

log = logging.getLogger(__name__)

_FORMAT = 1


def _entry_ok(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) == 4
        and isinstance(v[0], str)
        and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in v[1:])
    )


def _valid(doc: Any) -> dict[str, list]:
    entries = statedir.entries(doc, _FORMAT, "sent-state", _entry_ok, "[status, first_seen, last_sent, last_seen]")
    return {k: list(v) for k, v in entries.items()}


class SentState:
    def __init__(self, path: Path, *, rereport_after: float = 86400.0, retention: float = 30 * 86400.0) -> None:
        self.path = Path(path)
        self.rereport_after = rereport_after
        self.retention = retention
        # finding fingerprint -> [status, first_seen, last_sent, last_seen] (epoch seconds)
        self._entries: dict[str, list] = {}
        self._dirty = False
        self._load()

    def _load(self) -> None:
        # a bad file is moved aside: findings are then re-sent once (the store is idempotent), never a crash
        self._entries = statedir.load_json(self.path.parent, self.path, _valid) or {}

    def reason(self, finding_fp: str, status: str, now: float | None = None) -> str | None:
        """Why this finding should be sent now ("new", "verification-changed", "re-report"), or None."""
        now = time.time() if now is None else now
        entry = self._entries.get(finding_fp)
        if entry is None:
            return "new"
        if entry[0] != status:
            return "verification-changed"
        if now - float(entry[2]) >= self.rereport_after:
            return "re-report"
        return None

    def first_seen(self, finding_fp: str) -> float | None:
        entry = self._entries.get(finding_fp)
        return float(entry[1]) if entry else None

    def seen(self, finding_fp: str, now: float | None = None) -> None:
        """The finding is still there (not re-sent): keep it from being forgotten."""
        entry = self._entries.get(finding_fp)
        if entry is not None:
            entry[3] = time.time() if now is None else now
            self._dirty = True

    def record_sent(self, finding_fp: str, status: str, now: float | None = None) -> None:
        """The finding's message is in the spool (delivery from there is the spool's job)."""
        now = time.time() if now is None else now
        first = self.first_seen(finding_fp)
        self._entries[finding_fp] = [status, first if first is not None else now, now, now]
        self._dirty = True

    def __len__(self) -> int:
        return len(self._entries)

    def save(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        before = len(self._entries)
        self._entries = {k: v for k, v in self._entries.items() if now - float(v[3]) < self.retention}
        if not self._dirty and len(self._entries) == before:
            return
        data = textsafe.dumps_json({"format": _FORMAT, "entries": self._entries}, sort_keys=True).encode()
        atomic_write(self.path, data)
        self._dirty = False
