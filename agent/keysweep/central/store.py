"""The central store interface and how a store URL picks a backend.

``open_store("dynamodb://TABLE")`` (optionally ``?region=eu-west-1``) opens the DynamoDB backend; anything else
(``keysweep.db``, ``/var/lib/keysweep/fleet.db``, ``sqlite:///abs/path.db``) is a SQLite file.
Every backend applies messages with the merge functions of :mod:`keysweep.central.records`, so a message means the
same in all of them, and every write is safe with several collectors on one store.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from keysweep.central.key_states import KeyState
from keysweep.central.records import FindingRecord, HostRecord, Origin
from keysweep.errors import ConfigError, StoreError

DEFAULT_DB = "keysweep.db"


class MessageRefused(StoreError):
    """The store refuses this one message for its own content (a DynamoDB ValidationException, a record too large):
    the message fails, the store itself is fine and the rest of a batch is stored."""


class RecordTooLarge(MessageRefused):
    """This one message would make a record larger than the backend allows."""


@runtime_checkable
class Store(Protocol):
    def upsert_finding(self, message: Mapping[str, Any], origin: Origin | None = None) -> bool:
        """Apply a validated finding message to its own host's record of that place (and touch the host).
        ``origin`` is the queue's word on who sent it and when. True when the store changed."""
        ...

    def record_heartbeat(self, message: Mapping[str, Any], origin: Origin | None = None) -> bool:
        """Apply a validated heartbeat message to its host's record. True when the store changed."""
        ...

    def claim_host(self, host_id: str, sender: str, *, take_over: bool = False) -> str:
        """Record ``sender`` as the owner of ``host_id`` unless another sender owns it already (``take_over``:
        even then); atomic with respect to other collectors. Returns the owner after the call."""
        ...

    def iter_findings(self) -> Iterator[FindingRecord]:
        ...

    def iter_hosts(self) -> Iterator[HostRecord]:
        ...

    def get_finding(self, host_id: str, finding_fingerprint: str) -> FindingRecord | None:
        ...

    def record_deactivation(self, key_id: str, actor: str, at: str) -> None:
        """Remember that ``actor`` set ``key_id`` Inactive at ``at``; shown on every finding of that key."""
        ...

    def record_key_state(self, state: KeyState) -> bool:
        """Keep ``state`` unless this key already has a record of that state (the first one stays); True when kept."""
        ...

    def iter_key_states(self) -> Iterator[KeyState]:
        """Every key state recorded, by key id then time."""
        ...

    def close(self) -> None:
        ...


def open_store(url_or_path: str, *, create: bool = True) -> Store:
    """Open the store named by ``url_or_path``; ``create=False`` refuses to create a missing database/table."""
    if url_or_path.startswith("dynamodb://"):
        from keysweep.central.store_dynamodb import DynamoDBStore

        parts = urlsplit(url_or_path)
        table = parts.netloc + parts.path.rstrip("/")
        if not table:
            raise ConfigError(f"store URL {url_or_path!r}: no table name (use dynamodb://TABLE)")
        region = (parse_qs(parts.query).get("region") or [None])[0]
        return DynamoDBStore(table, region=region, create=create)
    from keysweep.central.store_sqlite import SQLiteStore

    path = url_or_path[len("sqlite://"):] if url_or_path.startswith("sqlite://") else url_or_path
    if not path:
        raise ConfigError(f"store URL {url_or_path!r}: no database path")
    return SQLiteStore(path, create=create)
