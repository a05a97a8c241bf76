"""The central store interface and how a store URL picks a backend.

``open_store("dynamodb://TABLE")`` (optionally ``?region=eu-west-1``) opens the DynamoDB backend; anything else
(``keysweep.db``, ``/var/lib/keysweep/fleet.db``, ``sqlite:///abs/path.db``) is a SQLite file.
Every backend applies messages with the merge functions of :mod:`keysweep.central.records`, so a message means the
same in all of them, and every write is safe with several collectors on one store.

Fleet-scale reads (a report of 100,000 findings in bounded memory) use :meth:`Store.iter_finding_summaries` and
:meth:`Store.iter_key_findings`; :func:`finding_summaries` and :func:`key_findings` fall back to
:meth:`Store.iter_findings` (whole store in memory) for a backend that does not offer them yet. The audit's
correlation also uses ``iter_signed_summaries`` where a backend has it (SQLite: summaries with the suggested role and
the signed verification times, read from columns), else a key's full records (:func:`key_findings`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from keysweep.central.key_states import KeyState
from keysweep.central.records import FindingRecord, FindingSummary, HostRecord, Origin
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

    def transaction(self) -> AbstractContextManager[None]:
        """A block whose writes are made together where the backend can: SQLite makes them one transaction (one
        commit, rolled back if the block raises); DynamoDB writes each at once, as outside a block. Either way a
        write inside is durable only once the block has ended without an error."""
        ...

    def iter_findings(self) -> Iterator[FindingRecord]:
        """Every finding record, in no particular order."""
        ...

    def iter_finding_summaries(self) -> Iterator[FindingSummary]:
        """Every finding as a :class:`FindingSummary`, the findings of one key (``fingerprint``) together and, within
        a key, by host id; deactivations filled in. Memory bounded: a fleet view streams this, so a backend must
        neither decode what a summary leaves out (suggestion, history, host context) nor hold the whole store."""
        ...

    def iter_key_findings(self, fingerprint: str) -> Iterator[FindingRecord]:
        """The full records of one key (``fingerprint``), by host id then finding fingerprint; deactivations
        filled in. A backend answers from an index (SQLite) or a key-level access pattern, never a whole scan."""
        ...

    def iter_hosts(self) -> Iterator[HostRecord]:
        """Every host record, in no particular order."""
        ...

    def get_finding(self, host_id: str, finding_fingerprint: str) -> FindingRecord | None: ...

    def record_deactivation(self, key_id: str, actor: str, at: str) -> None:
        """Remember that ``actor`` set ``key_id`` Inactive at ``at``; shown on every finding of that key."""
        ...

    def record_key_state(self, state: KeyState) -> bool:
        """Keep ``state`` unless this key already has a record of that state (the first one stays); True when kept."""
        ...

    def iter_key_states(self) -> Iterator[KeyState]:
        """Every key state recorded, by key id then time."""
        ...

    def close(self) -> None: ...


class BatchStore(Store, Protocol):
    """A store that applies several messages in one write (SQLite); :func:`apply_messages` takes any store."""

    def apply_messages(self, items: Sequence[tuple[Mapping[str, Any], Origin | None]]) -> list[bool | MessageRefused]:
        """Apply validated finding and heartbeat messages in order, each exactly as :meth:`upsert_finding` or
        :meth:`record_heartbeat` would, in as few write transactions as the backend can (SQLite: one; a backend
        without transactions over several items may apply them one by one).

        One entry per message: True when the store changed, False when not (a duplicate), or the
        :class:`MessageRefused` for a message refused for its own content (the others are still applied). A
        :class:`StoreError` raised means the store failed: none of the batch may be taken as stored (what was is
        harmless to apply again: every apply is idempotent)."""
        ...


def open_store(url_or_path: str, *, create: bool = True) -> Store:
    """Open the store named by ``url_or_path``; ``create=False`` refuses to create a missing database/table."""
    if url_or_path.startswith("dynamodb://"):
        from keysweep.central.store_dynamodb import DynamoDBStore

        parts = urlsplit(url_or_path)
        table = parts.netloc + parts.path.rstrip("/")
        if not table:
            raise ConfigError(f"store URL {url_or_path!r}: no table name (use dynamodb://TABLE)")
        region = next(iter(parse_qs(parts.query).get("region", [])), None)
        return DynamoDBStore(table, region=region, create=create)
    from keysweep.central.store_sqlite import SQLiteStore

    path = url_or_path[len("sqlite://") :] if url_or_path.startswith("sqlite://") else url_or_path
    if not path:
        raise ConfigError(f"store URL {url_or_path!r}: no database path")
    return SQLiteStore(path, create=create)


def finding_summaries(store: Store) -> Iterator[FindingSummary]:
    """:meth:`Store.iter_finding_summaries`, or the same order built from every record for a backend without it."""
    method = getattr(store, "iter_finding_summaries", None)
    if method is not None:
        yield from method()
        return
    yield from sorted(
        (FindingSummary.of(r) for r in store.iter_findings()),
        key=lambda s: (s.fingerprint, s.host_id, s.finding_fingerprint),
    )


def key_findings(store: Store, fingerprint: str) -> Iterator[FindingRecord]:
    """:meth:`Store.iter_key_findings`, or the same records picked from every record for a backend without it."""
    method = getattr(store, "iter_key_findings", None)
    if method is not None:
        yield from method(fingerprint)
        return
    yield from sorted(
        (r for r in store.iter_findings() if r.fingerprint == fingerprint),
        key=lambda r: (r.host_id, r.finding_fingerprint),
    )


def apply_messages(
    store: Store, items: Sequence[tuple[Mapping[str, Any], Origin | None]]
) -> list[bool | MessageRefused]:
    """:meth:`Store.apply_messages`, or one message at a time for a backend without it."""
    method = getattr(store, "apply_messages", None)
    if method is not None:
        return list(method(items))
    out: list[bool | MessageRefused] = []
    for message, origin in items:
        try:
            if message["type"] == "finding":
                out.append(store.upsert_finding(message, origin))
            else:
                out.append(store.record_heartbeat(message, origin))
        except MessageRefused as exc:
            out.append(exc)
    return out
