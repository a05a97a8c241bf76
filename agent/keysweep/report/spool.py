"""The durable outbox in the state directory: every message is on disk before it is sent.

One file per message (mode 0600), written to a temporary name, fsynced, renamed into place and the directory
fsynced, so a message is either wholly in the spool or not at all — across restarts and ``kill -9``. A message
leaves the spool only when SQS has accepted it.

Bounded by bytes and by count. Policy when it fills:

* heartbeats give way first: at most ``max_heartbeats`` are kept (older ones are coalesced into the newest), and
  pending heartbeats are evicted to make room for a finding;
* findings are never evicted. A finding that does not fit is *refused*: the caller gets :class:`SpoolFull`, counts
  it (:meth:`Spool.count`), logs it and does not mark it as reported, so the next sweep offers it again;
* above ``warn_ratio`` of either bound the spool is "filling": logged and carried in every heartbeat.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keysweep import statedir, textsafe
from keysweep.atomicfile import atomic_write, fsync_dir
from keysweep.errors import DeliveryError

log = logging.getLogger(__name__)

_SUFFIX = ".msg"
_KINDS = {"finding": "f", "heartbeat": "h"}


class SpoolError(DeliveryError):
    """A message could not be written to the spool (it was not written)."""


class SpoolFull(SpoolError):
    """The spool has no room for this message (it was not written)."""


@dataclass(frozen=True)
class SpoolEntry:
    name: str
    kind: str  # finding | heartbeat
    size: int
    path: Path


@dataclass(frozen=True)
class SpoolStatus:
    depth: int
    bytes: int
    capacity_bytes: int
    capacity_messages: int
    filling: bool
    full: bool
    refused: int  # messages the full spool could not take (findings are offered again next sweep); cumulative
    coalesced: int  # older heartbeats replaced by newer ones
    corrupt: int  # unreadable messages moved to corrupt/ in the state directory

    def to_dict(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "bytes": self.bytes,
            "capacity_bytes": self.capacity_bytes,
            "capacity_messages": self.capacity_messages,
            "filling": self.filling,
            "full": self.full,
            "dropped": 0,  # nothing is ever dropped silently; kept for schema-v1 readers
            "refused": self.refused,
            "coalesced": self.coalesced,
            "corrupt": self.corrupt,
        }


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        max_messages: int = 10_000,
        warn_ratio: float = 0.8,
        max_heartbeats: int = 24,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.warn_ratio = warn_ratio
        self.max_heartbeats = max(1, max_heartbeats)
        self._counters_path = self.directory / "counters.json"
        self.counters = {"refused": 0, "coalesced": 0, "corrupt": 0}
        self._seq = 0
        self.state_dir = self.directory.parent
        try:
            statedir.subdir(statedir.prepare(self.state_dir), self.directory.name)  # a planted link is moved aside
            self._remove_partial_writes()
        except OSError as exc:
            raise SpoolError(f"spool {self.directory}: cannot create ({exc.strerror})") from None
        self._load_counters()
        self._index: dict[str, SpoolEntry] = {}
        self._size = 0
        self.refresh()

    def _load_counters(self) -> None:
        def valid(doc: Any) -> dict[str, int]:
            statedir.require(isinstance(doc, dict), "not an object")
            return {k: v for k, v in doc.items() if k in self.counters and isinstance(v, int)}

        self.counters.update(statedir.load_json(self.state_dir, self._counters_path, valid) or {})  # bad: from 0

    def count(self, name: str, n: int = 1) -> None:
        """Add to a persistent counter (refused, coalesced, corrupt): carried in every heartbeat, across restarts."""
        self.counters[name] += n
        try:
            atomic_write(self._counters_path, textsafe.dumps_json(self.counters).encode())
        except OSError as exc:
            log.error("spool: cannot persist counters %s (%s)", self.counters, exc.strerror)

    def _remove_partial_writes(self) -> None:
        """Temporary files are writes a crash interrupted; their callers never got a success, so nothing is lost."""
        for p in self.directory.glob(".*" + _SUFFIX + ".*.tmp"):
            p.unlink(missing_ok=True)

    # --- reading ---------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the directory: another process (a scan, the agent) may have added or sent messages."""
        index = {}
        with os.scandir(self.directory) as it:
            for e in it:
                if not e.name.endswith(_SUFFIX) or e.name.startswith("."):
                    continue
                if not e.is_file(follow_symlinks=False):  # a link, a directory or a FIFO: never opened
                    statedir.quarantine(self.state_dir, Path(e.path), "spool message: not a regular file")
                    continue
                parts = e.name.split("-")
                kind = "heartbeat" if len(parts) > 2 and parts[1] == "h" else "finding"
                try:
                    size = e.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
                index[e.name] = SpoolEntry(e.name, kind, size, Path(e.path))
        self._index = index
        self._size = sum(e.size for e in index.values())

    def _drop(self, name: str) -> None:
        entry = self._index.pop(name, None)
        if entry is not None:
            self._size -= entry.size

    def entries(self) -> list[SpoolEntry]:
        """Pending messages, oldest first (as of the last :meth:`refresh` and this object's own changes)."""
        return sorted(self._index.values(), key=lambda x: x.name)

    def read(self, entry: SpoolEntry) -> str | None:
        """The body of ``entry``; None when it is gone or unreadable (then it is quarantined, not deleted)."""
        try:
            return statedir.read_file(entry.path).decode("ascii")
        except FileNotFoundError:
            self._drop(entry.name)
            return None
        except (OSError, UnicodeDecodeError, statedir.CorruptStateFile) as exc:
            self.quarantine(entry, str(exc))
            return None

    def quarantine(self, entry: SpoolEntry, why: str) -> None:
        """Move an unreadable or rejected message aside (``corrupt/`` in the state directory), counted and logged,
        never deleted; the other messages are still sent."""
        self._drop(entry.name)
        if statedir.quarantine(self.state_dir, entry.path, f"spool message: {why}") is not None:
            self.count("corrupt")

    def status(self) -> SpoolStatus:
        entries = self._index.values()
        size = self._size
        return SpoolStatus(
            depth=len(entries),
            bytes=size,
            capacity_bytes=self.max_bytes,
            capacity_messages=self.max_messages,
            filling=size >= self.warn_ratio * self.max_bytes or len(entries) >= self.warn_ratio * self.max_messages,
            full=size >= self.max_bytes or len(entries) >= self.max_messages,
            refused=self.counters["refused"],
            coalesced=self.counters["coalesced"],
            corrupt=self.counters["corrupt"],
        )

    # --- writing ---------------------------------------------------------------------------------------------
    def put(self, body: str, *, kind: str, message_id: str) -> SpoolEntry:
        """Durably add one message; raises :class:`SpoolFull` when it does not fit (see the module's policy)."""
        (result,) = self.put_many([(body, kind, message_id)])
        if isinstance(result, SpoolError):
            raise result
        return result

    def put_many(self, items: Sequence[tuple[str, str, str]]) -> list[SpoolEntry | SpoolError]:
        """Durably add ``(body, kind, message_id)`` messages, in order; per message its entry or why it was refused.

        Each file is fsynced and renamed into place; the directory is fsynced once at the end, before this returns —
        only then may a caller treat the messages as spooled.
        """
        results: list[SpoolEntry | SpoolError] = []
        changed = False
        for body, kind, message_id in items:
            data = body.encode("ascii")
            if kind == "heartbeat":
                heartbeats = self._heartbeats()
                for old in heartbeats[: max(0, len(heartbeats) - self.max_heartbeats + 1)]:
                    changed |= self._evict(old)
            elif not self._fits(len(data)):
                heartbeats = self._heartbeats()
                while not self._fits(len(data)) and heartbeats:
                    changed |= self._evict(heartbeats.pop(0))
            if not self._fits(len(data)):
                depth, size = len(self._index), self._size
                results.append(
                    SpoolFull(
                        f"spool {self.directory} is full ({depth} messages, {size} bytes; limits "
                        f"{self.max_messages} messages, {self.max_bytes} bytes): {kind} {message_id} not spooled"
                    )
                )
                continue
            self._seq += 1
            name = f"{time.time_ns():020d}-{_KINDS[kind]}-{os.getpid()}-{self._seq}-{message_id}{_SUFFIX}"
            try:
                atomic_write(self.directory / name, data, sync_dir=False)
            except OSError as exc:
                full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                why = "no space left on device" if full else f"cannot write ({exc.strerror})"
                results.append((SpoolFull if full else SpoolError)(f"spool {self.directory}: {why}"))
                continue
            entry = SpoolEntry(name, kind, len(data), self.directory / name)
            self._index[name] = entry
            self._size += entry.size
            results.append(entry)
            changed = True
        if changed:
            fsync_dir(self.directory)
        return results

    def _heartbeats(self) -> list[SpoolEntry]:
        return sorted((e for e in self._index.values() if e.kind == "heartbeat"), key=lambda x: x.name)

    def _fits(self, add: int) -> bool:
        return len(self._index) + 1 <= self.max_messages and self._size + add <= self.max_bytes

    def _evict(self, entry: SpoolEntry) -> bool:
        entry.path.unlink(missing_ok=True)
        self._drop(entry.name)
        self.count("coalesced")
        return True

    def remove(self, entries: list[SpoolEntry]) -> None:
        """Forget messages SQS has accepted."""
        for e in entries:
            e.path.unlink(missing_ok=True)
            self._drop(e.name)
        if entries:
            fsync_dir(self.directory)

    @contextmanager
    def locked(self) -> Iterator[bool]:
        """An exclusive, non-blocking lock for sending: yields False when another process is already sending."""
        fd = statedir.open_file(self.directory / ".lock", os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)
