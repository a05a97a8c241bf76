"""The DynamoDB store: for fleets that outgrow one collector host, and for the Lambda collector.

Table design (one table, on-demand capacity):

=====================  ================  ==========================================================
pk (hash key, S)       sk (range, S)     item
=====================  ================  ==========================================================
``HOST#<host_id>``     ``FINDING#<ffp>``  one finding of that host (``ffp`` = finding fingerprint)
``HOST#<host_id>``     ``HOST``          one host (coverage)
``HOST#<host_id>``     ``OWNER``         the sender that owns the host id (``sender``)
``KEY#<key_id>``       ``DEACTIVATION``  who set the key Inactive, and when
``KEY#<key_id>``       ``STATE#<state>``  the key's progress (``keysweep plan``): who and when, first record kept
=====================  ================  ==========================================================

Stores written before findings were kept per host hold ``FINDING#<ffp>`` / ``FINDING`` items; they are still read
(a record of the same host and place in the new layout wins, and starts from the old one's history) and never
written again.

Every item carries ``type`` (finding | host | owner | deactivation | key-state); findings and hosts carry ``rev`` (a number bumped
on every write) and ``data`` (the record as zlib-compressed canonical JSON, so nested values need no DynamoDB
type mapping), and findings also the plain attributes ``key_id``, ``fingerprint``, ``host_id``, ``status`` and
``last_seen`` for ad-hoc queries. Writes are optimistic: read the item, merge the message, and put it back with
``ConditionExpression`` ``rev = :read_rev`` (or ``attribute_not_exists(pk)`` for a new item); a concurrent
writer makes the condition fail and the merge is redone from the fresh item, so no update is ever lost.

Reads at scale. A sparse global secondary index, :data:`INDEX` (hash ``tpk``, range ``tsk``, a few small attributes
projected), lists what a fleet view needs without reading the table: hosts (``tpk`` = ``host#<shard>``, ``tsk`` =
host id), findings (``finding#<shard>``, ``<fingerprint>\0<host id>\0<ffp>``, with ``summary``: the finding's
:class:`FindingSummary`, compressed), deactivations (``deactivation``) and key states (``key-state``). The shard,
CRC-32 of the host id modulo :data:`SHARDS`, spreads the index's writes over 16 partition key values (DynamoDB
allows about 1,000 writes per second on one); the shards' answers are merged, so listings keep a global order.
Hosts, key states and one key's findings are then read with ``BatchGetItem``; every finding whole with a parallel
``Scan`` in :data:`SCAN_SEGMENTS` segments.

The index is trusted only once every item carries its attributes: a ``META``/``LAYOUT`` item says so. The store
writes it when it creates the table, and a writer that opens a table without it (``create=True``: the collector,
``collect --from-file``) adds the index if missing, gives every existing item its attributes (a finding of the
layout before per-host records is copied to its host's own record), and writes it once the index is active. Until
then reads scan, as before: slower, never incomplete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import json
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from keysweep.aws import client_config, make_client
from keysweep.central.key_states import KeyState
from keysweep.central.records import FindingRecord, FindingSummary, HostRecord, Origin, merge_finding, merge_host
from keysweep.central.store import MessageRefused, RecordTooLarge
from keysweep.errors import StoreError
from keysweep.retry import Backoff, error_code, failure_name

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 64
CONFLICT_BACKOFF = Backoff(0.01, 0.5)  # after a conditional write lost to another writer
UNPROCESSED_BACKOFF = Backoff(0.02, 1.0)  # before asking again for what BatchGetItem left unprocessed
MAX_ITEM_BYTES = 390_000  # DynamoDB's item limit is 400 KB including attribute names
INDEX = "type-index"
SHARDS = 16
SCAN_SEGMENTS = 8
_PROJECTED = ("type", "summary", "key_id", "actor", "at", "last_message_at", "last_heartbeat")
INDEX_DEFINITION: dict[str, Any] = {
    "IndexName": INDEX,
    "KeySchema": [{"AttributeName": "tpk", "KeyType": "HASH"}, {"AttributeName": "tsk", "KeyType": "RANGE"}],
    "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(_PROJECTED)},
}
INDEX_ATTRIBUTES = [{"AttributeName": "tpk", "AttributeType": "S"}, {"AttributeName": "tsk", "AttributeType": "S"}]
# a finding's summary, kept (compressed) in the index, has every field of FindingSummary but the deactivation,
# which is its key's (a KEY#<key_id> item) and filled in when read
_NOT_SUMMARISED = ("deactivated_by", "deactivated_at")
_SEP = "\x00"  # below every character of an id: (fingerprint, host id, place) sort as a tuple would
_MAX_HOST_BYTES_IN_KEY = 700  # an index range key holds at most 1,024 bytes
_LAYOUT = {"pk": {"S": "META"}, "sk": {"S": "LAYOUT"}}
_NEW = "attribute_not_exists(pk)"  # a conditional put's condition: no item of its key yet

R = TypeVar("R", FindingRecord, HostRecord)


def _encode(data: Mapping[str, Any]) -> bytes:
    return zlib.compress(json.dumps(data, sort_keys=True, separators=(",", ":")).encode(), 6)


def _decode(blob: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(blob))


def shard(host_id: str) -> int:
    return zlib.crc32(host_id.encode("utf-8", "surrogatepass")) % SHARDS


def _key_part(host_id: str) -> str:
    raw = host_id.encode("utf-8", "surrogatepass")
    if len(raw) <= _MAX_HOST_BYTES_IN_KEY:
        return host_id
    return raw[:_MAX_HOST_BYTES_IN_KEY].decode("utf-8", "ignore")  # index keys need not be unique


def finding_attributes(record: FindingRecord) -> dict[str, Any]:
    """A finding item's attributes beside its keys, ``rev`` and ``data``."""
    return {
        "type": {"S": "finding"},
        "key_id": {"S": record.key_id},
        "fingerprint": {"S": record.fingerprint},
        "host_id": {"S": record.host_id},
        "status": {"S": record.status or "none"},
        "last_seen": {"S": record.last_seen},
        **finding_index(record),
    }


def finding_index(record: FindingRecord) -> dict[str, Any]:
    """A finding item's attributes for :data:`INDEX`: its shard, its place in (key, host, place) order, and its
    summary."""
    summary = {k: v for k, v in dataclasses.asdict(FindingSummary.of(record)).items() if k not in _NOT_SUMMARISED}
    return {
        "tpk": {"S": f"finding#{shard(record.host_id)}"},
        "tsk": {"S": _SEP.join((record.fingerprint, _key_part(record.host_id), record.finding_fingerprint))},
        "summary": {"B": _encode(summary)},
    }


def host_index(host_id: str) -> dict[str, Any]:
    return {"tpk": {"S": f"host#{shard(host_id)}"}, "tsk": {"S": host_id}}


def key_index(kind: str, key_id: str, state: str | None = None) -> dict[str, Any]:
    return {"tpk": {"S": kind}, "tsk": {"S": key_id if state is None else f"{key_id}{_SEP}{state}"}}


def _error(table: str, exc: Exception) -> StoreError:
    code = failure_name(exc)
    if code == "ValidationException":  # this request's values (an over-long key, …): the message's fault
        return MessageRefused(f"store dynamodb://{table}: {code} for this message")
    return StoreError(f"store dynamodb://{table}: {code}")


class DynamoDBStore:
    def __init__(self, table: str, *, region: str | None = None, create: bool = True) -> None:
        self.table = table
        self._ddb = make_client(
            "dynamodb",
            region=region,
            config=client_config(read_timeout=20.0, max_attempts=5, max_pool_connections=max(10, SCAN_SEGMENTS + 2)),
        )
        self._indexed: bool | None = None  # whether reads may trust the index (known on the first read)
        try:
            self._ensure_table(create)
            if create:
                self._prepare_index()
        except (ClientError, BotoCoreError) as exc:
            raise _error(table, exc) from exc

    def _ensure_table(self, create: bool) -> None:
        try:
            self._ddb.describe_table(TableName=self.table)
            return
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            if not create:
                raise StoreError(f"store dynamodb://{self.table}: no such table") from None
        try:
            self._ddb.create_table(
                TableName=self.table,
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                    *INDEX_ATTRIBUTES,
                ],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                GlobalSecondaryIndexes=[INDEX_DEFINITION],
                BillingMode="PAY_PER_REQUEST",
                SSESpecification={"Enabled": True},
            )
            created = True
        except ClientError as exc:  # another collector created it first
            if error_code(exc) != "ResourceInUseException":
                raise
            created = False
        self._ddb.get_waiter("table_exists").wait(TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        if created:  # empty, and every item written from now on carries the index's attributes
            self._ddb.put_item(TableName=self.table, Item={**_LAYOUT, "type": {"S": "meta"}, "indexed": {"S": INDEX}})

    # -- writes ----------------------------------------------------------------------------------------------

    def _put(self, item: dict[str, Any], condition: str | None = _NEW, values: dict[str, Any] | None = None) -> bool:
        """Put ``item`` if ``condition`` holds (with its ``values``; None: in any case); False when it did not: an
        item of its key exists already, or another writer changed it since it was read."""
        options: dict[str, Any] = {"ConditionExpression": condition} if condition else {}
        if values:
            options["ExpressionAttributeValues"] = values
        try:
            self._ddb.put_item(TableName=self.table, Item=item, **options)
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def _merge_item(
        self,
        pk: str,
        sk: str,
        load: Callable[[dict[str, Any]], R],
        merge: Callable[[R | None], R],
        attributes: Callable[[R], dict[str, Any]],
    ) -> bool:
        """Read-merge-conditional-put until the write lands on the version it was merged from."""
        key = {"pk": {"S": pk}, "sk": {"S": sk}}
        try:
            for attempt in range(MAX_ATTEMPTS):
                item = self._ddb.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
                old = load(_decode(item["data"]["B"])) if item else None
                new = merge(old)
                if new == old:
                    return False
                blob = _encode(new.to_dict())
                if len(blob) > MAX_ITEM_BYTES:
                    raise RecordTooLarge(f"store dynamodb://{self.table}: record {pk} too large ({len(blob)} bytes)")
                rev = int(item["rev"]["N"]) if item else 0
                put = {**key, **attributes(new), "rev": {"N": str(rev + 1)}, "data": {"B": blob}}
                condition, values = ("rev = :rev", {":rev": {"N": str(rev)}}) if item else (_NEW, None)
                if self._put(put, condition, values):
                    return True
                time.sleep(CONFLICT_BACKOFF.delay(attempt + 1))
        except (ClientError, BotoCoreError) as exc:
            raise _error(self.table, exc) from exc
        raise StoreError(f"store dynamodb://{self.table}: gave up on {pk} after {MAX_ATTEMPTS} conflicting writes")

    def upsert_finding(self, message: Mapping[str, Any], origin: Origin | None = None) -> bool:
        fp, host_id = message["finding"]["finding_fingerprint"], message["host"]["host_id"]
        # the host first: a key DynamoDB refuses (too long) then fails the message before any finding is written
        host_changed = self._merge_host(message, origin)
        changed = self._merge_item(
            f"HOST#{host_id}",
            f"FINDING#{fp}",
            FindingRecord.from_dict,
            lambda old: merge_finding(old or self._legacy_finding(host_id, fp), message, origin),
            finding_attributes,
        )
        return host_changed or changed

    def _legacy_finding(self, host_id: str, fp: str) -> FindingRecord | None:
        """The record of this host and place in the layout before per-host records, to carry its history over."""
        item = self._ddb.get_item(
            TableName=self.table, ConsistentRead=True, Key={"pk": {"S": f"FINDING#{fp}"}, "sk": {"S": "FINDING"}}
        ).get("Item")
        record = FindingRecord.from_dict(_decode(item["data"]["B"])) if item else None
        return record if record is not None and record.host_id == host_id else None

    def record_heartbeat(self, message: Mapping[str, Any], origin: Origin | None = None) -> bool:
        return self._merge_host(message, origin)

    def _merge_host(self, message: Mapping[str, Any], origin: Origin | None) -> bool:
        return self._merge_item(
            f"HOST#{message['host']['host_id']}",
            "HOST",
            HostRecord.from_dict,
            lambda old: merge_host(old, message, origin),
            lambda r: {
                "type": {"S": "host"},
                "last_message_at": {"S": r.last_message_at},
                **({"last_heartbeat": {"S": r.last_heartbeat}} if r.last_heartbeat else {}),
                **host_index(r.host_id),
            },
        )

    def claim_host(self, host_id: str, sender: str, *, take_over: bool = False) -> str:
        key = {"pk": {"S": f"HOST#{host_id}"}, "sk": {"S": "OWNER"}}
        item = {**key, "type": {"S": "owner"}, "sender": {"S": sender}}
        try:
            if self._put(item, None if take_over else _NEW):
                return sender
            owner = self._ddb.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise _error(self.table, exc) from exc
        return owner["sender"]["S"] if owner else sender

    def transaction(self) -> AbstractContextManager[None]:
        """Each write inside is its own, as outside: a claim and the messages of a batch are separate requests (a
        transaction of up to 100 items, TransactWriteItems, would cost twice the write units of each)."""
        return contextlib.nullcontext()

    def record_deactivation(self, key_id: str, actor: str, at: str) -> None:
        try:
            self._ddb.put_item(
                TableName=self.table,
                Item={
                    "pk": {"S": f"KEY#{key_id}"},
                    "sk": {"S": "DEACTIVATION"},
                    "type": {"S": "deactivation"},
                    "key_id": {"S": key_id},
                    "actor": {"S": actor},
                    "at": {"S": at},
                    **key_index("deactivation", key_id),
                },
            )
        except (ClientError, BotoCoreError) as exc:
            raise _error(self.table, exc) from exc

    def record_key_state(self, state: KeyState) -> bool:
        try:
            return self._put(
                {
                    "pk": {"S": f"KEY#{state.key_id}"},
                    "sk": {"S": f"STATE#{state.state}"},
                    "type": {"S": "key-state"},
                    "key_id": {"S": state.key_id},
                    "at": {"S": state.at},
                    "data": {"S": json.dumps(state.to_dict(), sort_keys=True)},
                    **key_index("key-state", state.key_id, state.state),
                }
            )
        except (ClientError, BotoCoreError) as exc:
            raise _error(self.table, exc) from exc

    # -- the index -------------------------------------------------------------------------------------------

    def _index_status(self) -> str | None:
        table = self._ddb.describe_table(TableName=self.table)["Table"]
        return next(
            (g.get("IndexStatus") for g in table.get("GlobalSecondaryIndexes", []) if g["IndexName"] == INDEX), None
        )

    def _marked(self) -> bool:
        return "Item" in self._ddb.get_item(TableName=self.table, Key=_LAYOUT, ConsistentRead=True)

    def _prepare_index(self) -> None:
        """For a writer: make a table written before the index (or created without it) fully indexed — add the
        index, give every item its attributes, and mark the table once the index is active."""
        if self._marked():
            return
        status = self._index_status()
        if status is None:
            try:
                self._ddb.update_table(
                    TableName=self.table,
                    AttributeDefinitions=INDEX_ATTRIBUTES,
                    GlobalSecondaryIndexUpdates=[{"Create": INDEX_DEFINITION}],
                )
                log.warning(
                    "store dynamodb://%s: adding the index %s; reports scan the table until it is built",
                    self.table,
                    INDEX,
                )
            except ClientError as exc:
                log.warning(
                    "store dynamodb://%s: cannot add the index %s (%s); reports scan the table",
                    self.table,
                    INDEX,
                    error_code(exc),
                )
                return
        indexed = sum(self._index_item(item) for item in self._parallel_scan(None))
        if indexed:
            log.warning(
                "store dynamodb://%s: %d item(s) written before the index now carry its attributes", self.table, indexed
            )
        if self._index_status() == "ACTIVE":
            self._ddb.put_item(TableName=self.table, Item={**_LAYOUT, "type": {"S": "meta"}, "indexed": {"S": INDEX}})

    def _index_item(self, item: dict[str, Any]) -> bool:
        """Give one item written before the index its index attributes (True when it needed them)."""
        kind, sk = item.get("type", {}).get("S"), item["sk"]["S"]
        if "tpk" in item or kind is None:
            return False
        if kind == "finding" and sk == "FINDING":
            return self._copy_legacy(item)
        if kind == "finding":
            extra = finding_index(FindingRecord.from_dict(_decode(item["data"]["B"])))
        elif kind == "host":
            record = HostRecord.from_dict(_decode(item["data"]["B"]))
            extra = {
                **host_index(record.host_id),
                **({"last_heartbeat": {"S": record.last_heartbeat}} if record.last_heartbeat else {}),
            }
        elif kind == "deactivation":
            extra = key_index("deactivation", item["key_id"]["S"])
        elif kind == "key-state":
            extra = key_index("key-state", item["key_id"]["S"], sk.removeprefix("STATE#"))
        else:
            return False  # owners are not listed
        names = {f"#a{i}": name for i, name in enumerate(extra)}
        values = {f":v{i}": value for i, value in enumerate(extra.values())}
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression="SET " + ", ".join(f"{n} = :v{i}" for i, n in enumerate(names)),
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(tpk)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":  # rewritten meanwhile: indexed
                raise
        return True

    def _copy_legacy(self, item: dict[str, Any]) -> bool:
        """A finding of the layout before per-host records, as its host's own record (unless that host has one of
        the place already, which wins anyway), so that the index lists it; the old item stays."""
        record = FindingRecord.from_dict(_decode(item["data"]["B"]))
        return self._put(
            {
                "pk": {"S": f"HOST#{record.host_id}"},
                "sk": {"S": f"FINDING#{record.finding_fingerprint}"},
                **finding_attributes(record),
                "rev": {"N": "1"},
                "data": item["data"],
            }
        )

    def indexed(self) -> bool:
        """Whether every item is listed in the index, so reads may use it (else they scan)."""
        if self._indexed is None:
            try:
                self._indexed = self._index_status() == "ACTIVE" and self._marked()
            except (ClientError, BotoCoreError) as exc:
                raise _error(self.table, exc) from exc
        return self._indexed

    # -- reads -----------------------------------------------------------------------------------------------

    def _query(self, tpk: str, **condition: Any) -> Iterator[dict[str, Any]]:
        """The index entries of partition ``tpk`` in ``tsk`` order (``prefix=…``: only those starting with it)."""
        prefix = condition.get("prefix")
        expression = "tpk = :p" + (" AND begins_with(tsk, :b)" if prefix else "")
        values = {":p": {"S": tpk}, **({":b": {"S": prefix}} if prefix else {})}
        try:
            for page in self._ddb.get_paginator("query").paginate(
                TableName=self.table,
                IndexName=INDEX,
                KeyConditionExpression=expression,
                ExpressionAttributeValues=values,
            ):
                yield from page.get("Items", [])
        except (ClientError, BotoCoreError) as exc:
            raise _error(self.table, exc) from exc

    def _get_many(self, entries: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The items (strongly consistent) of index entries, 100 per ``BatchGetItem``, in the entries' order."""
        chunk: list[dict[str, Any]] = []
        for entry in entries:
            chunk.append({"pk": entry["pk"], "sk": entry["sk"]})
            if len(chunk) == 100:
                yield from self._batch_get(chunk)
                chunk = []
        if chunk:
            yield from self._batch_get(chunk)

    def _batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not keys:
            return []
        found: dict[tuple[str, str], dict[str, Any]] = {}
        request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
        try:
            for attempt in range(MAX_ATTEMPTS):
                answer = self._ddb.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    found[(item["pk"]["S"], item["sk"]["S"])] = item
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(UNPROCESSED_BACKOFF.delay(attempt + 1))
            else:
                raise StoreError(f"store dynamodb://{self.table}: BatchGetItem kept returning unprocessed keys")
        except (ClientError, BotoCoreError) as exc:
            raise _error(self.table, exc) from exc
        # an item deleted between the index read and this one is simply gone
        return [found[k] for k in ((key["pk"]["S"], key["sk"]["S"]) for key in keys) if k in found]

    def _parallel_scan(self, item_type: str | None) -> Iterator[dict[str, Any]]:
        """Every item (of ``item_type``), read by :data:`SCAN_SEGMENTS` threads at once, in no particular order;
        a few pages in hand at most."""
        pages: queue.Queue[list[dict[str, Any]] | BaseException | None] = queue.Queue(maxsize=2 * SCAN_SEGMENTS)
        stop = threading.Event()
        request: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True, "TotalSegments": SCAN_SEGMENTS}
        if item_type:
            request |= {
                "FilterExpression": "#t = :t",
                "ExpressionAttributeNames": {"#t": "type"},
                "ExpressionAttributeValues": {":t": {"S": item_type}},
            }

        def hand_over(value: list[dict[str, Any]] | BaseException | None) -> bool:
            while not stop.is_set():
                try:
                    pages.put(value, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        def segment(n: int) -> None:
            try:
                for page in self._ddb.get_paginator("scan").paginate(**request, Segment=n):
                    if not hand_over(page.get("Items", [])):
                        return
            except BaseException as exc:  # noqa: BLE001 (handed to the reader, which raises it)
                hand_over(exc)
            finally:
                hand_over(None)

        workers = [
            threading.Thread(target=segment, args=(n,), name=f"keysweep-scan-{n}", daemon=True)
            for n in range(SCAN_SEGMENTS)
        ]
        for worker in workers:
            worker.start()
        try:
            running = len(workers)
            while running:
                got = pages.get()
                if got is None:
                    running -= 1
                elif isinstance(got, BaseException):
                    if isinstance(got, (ClientError, BotoCoreError)):
                        raise _error(self.table, got) from got
                    raise got
                else:
                    yield from got
        finally:
            stop.set()
            for worker in workers:
                worker.join()

    def _deactivations(self) -> dict[str, tuple[str, str]]:
        items = self._query("deactivation") if self.indexed() else self._parallel_scan("deactivation")
        return {i["key_id"]["S"]: (i["actor"]["S"], i["at"]["S"]) for i in items}

    @staticmethod
    def _finding(data: dict[str, Any], deactivations: Mapping[str, tuple[str, str]]) -> FindingRecord:
        if data["key_id"] in deactivations:
            data["deactivated_by"], data["deactivated_at"] = deactivations[data["key_id"]]
        return FindingRecord.from_dict(data)

    def iter_findings(self) -> Iterator[FindingRecord]:
        """Every finding, in no particular order (a parallel scan: the whole table is read)."""
        deactivations = self._deactivations()
        legacy: list[FindingRecord] = []
        for item in self._parallel_scan("finding"):
            record = self._finding(_decode(item["data"]["B"]), deactivations)
            if item["sk"]["S"] == "FINDING":
                legacy.append(record)
            else:
                yield record
        # records of the layout before per-host records, unless their host has its own record of that place now
        current = {
            (i["pk"]["S"], i["sk"]["S"])
            for i in self._batch_get(
                [{"pk": {"S": f"HOST#{r.host_id}"}, "sk": {"S": f"FINDING#{r.finding_fingerprint}"}} for r in legacy]
            )
        }
        for record in legacy:
            if (f"HOST#{record.host_id}", f"FINDING#{record.finding_fingerprint}") not in current:
                yield record

    def _merged_entries(self, prefix: str = "") -> Iterator[dict[str, Any]]:
        """The findings' index entries of every shard (``tsk`` starting with ``prefix``), merged in ``tsk`` order:
        by key, then host, then place."""
        shards = (self._query(f"finding#{n}", prefix=prefix) for n in range(SHARDS))
        yield from heapq.merge(*shards, key=lambda entry: entry["tsk"]["S"])

    def iter_finding_summaries(self) -> Iterator[FindingSummary]:
        """Every finding's summary, a key's findings together and by host: from the index (16 queries, nothing
        decoded but the summaries), else (a table not indexed yet) from a scan sorted in memory."""
        deactivations = self._deactivations()
        if not self.indexed():
            yield from sorted(
                (FindingSummary.of(r) for r in self.iter_findings()),
                key=lambda s: (s.fingerprint, s.host_id, s.finding_fingerprint),
            )
            return
        for entry in self._merged_entries():
            data = _decode(entry["summary"]["B"])
            by, at = deactivations.get(data["key_id"], (None, None))
            yield FindingSummary(**data, deactivated_by=by, deactivated_at=at)

    def iter_key_findings(self, fingerprint: str) -> Iterator[FindingRecord]:
        """The full records of one key by host id: its index entries (16 queries), then ``BatchGetItem``."""
        if not self.indexed():
            yield from sorted(
                (r for r in self.iter_findings() if r.fingerprint == fingerprint),
                key=lambda r: (r.host_id, r.finding_fingerprint),
            )
            return
        deactivations = self._deactivations()
        for item in self._get_many(self._merged_entries(fingerprint + _SEP)):
            yield self._finding(_decode(item["data"]["B"]), deactivations)

    def get_finding(self, host_id: str, finding_fingerprint: str) -> FindingRecord | None:
        try:
            item = self._ddb.get_item(
                TableName=self.table,
                ConsistentRead=True,
                Key={"pk": {"S": f"HOST#{host_id}"}, "sk": {"S": f"FINDING#{finding_fingerprint}"}},
            ).get("Item")
            if not item:
                return None
            data = _decode(item["data"]["B"])
            deactivation = self._ddb.get_item(
                TableName=self.table,
                ConsistentRead=True,
                Key={"pk": {"S": f"KEY#{data['key_id']}"}, "sk": {"S": "DEACTIVATION"}},
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise _error(self.table, exc) from exc
        found = {data["key_id"]: (deactivation["actor"]["S"], deactivation["at"]["S"])} if deactivation else {}
        return self._finding(data, found)

    def iter_hosts(self) -> Iterator[HostRecord]:
        """Every host by host id: from the index and ``BatchGetItem`` (the findings are not read), else a scan."""
        if not self.indexed():
            records = [HostRecord.from_dict(_decode(i["data"]["B"])) for i in self._parallel_scan("host")]
            yield from sorted(records, key=lambda r: r.host_id)
            return

        def shard_hosts(n: int) -> Iterator[HostRecord]:  # in host id order, as the index keeps them
            for item in self._get_many(self._query(f"host#{n}")):
                yield HostRecord.from_dict(_decode(item["data"]["B"]))

        yield from heapq.merge(*(shard_hosts(n) for n in range(SHARDS)), key=lambda r: r.host_id)

    def iter_key_states(self) -> Iterator[KeyState]:
        items = self._get_many(self._query("key-state")) if self.indexed() else self._parallel_scan("key-state")
        states = [KeyState.from_dict(json.loads(i["data"]["S"])) for i in items]
        yield from sorted(states, key=lambda s: (s.key_id, s.at, s.state))

    def close(self) -> None:
        self._ddb.close()

    def __enter__(self) -> DynamoDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
