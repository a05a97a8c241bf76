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
"""

from __future__ import annotations

import json
import random
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from keysweep.aws import client_config, make_client
from keysweep.central.key_states import KeyState
from keysweep.central.records import FindingRecord, HostRecord, Origin, merge_finding, merge_host
from keysweep.central.store import MessageRefused, RecordTooLarge
from keysweep.errors import StoreError

MAX_ATTEMPTS = 64
MAX_ITEM_BYTES = 390_000  # DynamoDB's item limit is 400 KB including attribute names

R = TypeVar("R", FindingRecord, HostRecord)


def _encode(data: Mapping[str, Any]) -> bytes:
    return zlib.compress(json.dumps(data, sort_keys=True, separators=(",", ":")).encode(), 6)


def _decode(blob: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(blob))


def _error(table: str, exc: Exception) -> StoreError:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "error")
        if code == "ValidationException":  # this request's values (an over-long key, …): the message's fault
            return MessageRefused(f"store dynamodb://{table}: {code} for this message")
        return StoreError(f"store dynamodb://{table}: {code}")
    return StoreError(f"store dynamodb://{table}: {type(exc).__name__}")


class DynamoDBStore:
    def __init__(self, table: str, *, region: str | None = None, create: bool = True) -> None:
        self.table = table
        self._ddb = make_client("dynamodb", region=region, config=client_config(read_timeout=20.0, max_attempts=5))
        try:
            self._ensure_table(create)
        except (ClientError, BotoCoreError) as exc:
            raise _error(table, exc) from exc

    def _ensure_table(self, create: bool) -> None:
        try:
            self._ddb.describe_table(TableName=self.table)
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            if not create:
                raise StoreError(f"store dynamodb://{self.table}: no such table") from None
        try:
            self._ddb.create_table(
                TableName=self.table,
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                      {"AttributeName": "sk", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                BillingMode="PAY_PER_REQUEST",
                SSESpecification={"Enabled": True},
            )
        except ClientError as exc:  # another collector created it first
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise
        self._ddb.get_waiter("table_exists").wait(TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 120})

    # -- writes ----------------------------------------------------------------------------------------------

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
                condition: dict[str, Any] = (
                    {"ConditionExpression": "rev = :rev", "ExpressionAttributeValues": {":rev": {"N": str(rev)}}}
                    if item else {"ConditionExpression": "attribute_not_exists(pk)"}
                )
                try:
                    self._ddb.put_item(TableName=self.table, Item=put, **condition)
                    return True
                except ClientError as exc:
                    if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                        raise
                time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
        except (ClientError, BotoCoreError) as exc:
            raise _error(self.table, exc) from exc
        raise StoreError(f"store dynamodb://{self.table}: gave up on {pk} after {MAX_ATTEMPTS} conflicting writes")

    def upsert_finding(self, message: Mapping[str, Any], origin: Origin | None = None) -> bool:
        fp, host_id = message["finding"]["finding_fingerprint"], message["host"]["host_id"]
        # the host first: a key DynamoDB refuses (too long) then fails the message before any finding is written
        host_changed = self._merge_host(message, origin)
        changed = self._merge_item(
            f"HOST#{host_id}", f"FINDING#{fp}", FindingRecord.from_dict,
            lambda old: merge_finding(old or self._legacy_finding(host_id, fp), message, origin),
            lambda r: {"type": {"S": "finding"}, "key_id": {"S": r.key_id}, "fingerprint": {"S": r.fingerprint},
                       "host_id": {"S": r.host_id}, "status": {"S": r.status or "none"},
                       "last_seen": {"S": r.last_seen}},
        )
        return host_changed or changed

    def _legacy_finding(self, host_id: str, fp: str) -> FindingRecord | None:
        """The record of this host and place in the layout before per-host records, to carry its history over."""
        item = self._ddb.get_item(TableName=self.table, ConsistentRead=True,
                                  Key={"pk": {"S": f"FINDING#{fp}"}, "sk": {"S": "FINDING"}}).get("Item")
        record = FindingRecord.from_dict(_decode(item["data"]["B"])) if item else None
        return record if record is not None and record.host_id == host_id else None

    def record_heartbeat(self, message: Mapping[str, Any], origin: Origin | None = None) -> bool:
        return self._merge_host(message, origin)

    def _merge_host(self, message: Mapping[str, Any], origin: Origin | None) -> bool:
        return self._merge_item(
            f"HOST#{message['host']['host_id']}", "HOST", HostRecord.from_dict,
            lambda old: merge_host(old, message, origin),
            lambda r: {"type": {"S": "host"}, "last_message_at": {"S": r.last_message_at}},
        )

    def claim_host(self, host_id: str, sender: str, *, take_over: bool = False) -> str:
        key = {"pk": {"S": f"HOST#{host_id}"}, "sk": {"S": "OWNER"}}
        item = {**key, "type": {"S": "owner"}, "sender": {"S": sender}}
        try:
            try:
                condition = {} if take_over else {"ConditionExpression": "attribute_not_exists(pk)"}
                self._ddb.put_item(TableName=self.table, Item=item, **condition)
                return sender
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
            owner = self._ddb.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise _error(self.table, exc) from exc
        return owner["sender"]["S"] if owner else sender

    def record_deactivation(self, key_id: str, actor: str, at: str) -> None:
        try:
            self._ddb.put_item(TableName=self.table, Item={
                "pk": {"S": f"KEY#{key_id}"}, "sk": {"S": "DEACTIVATION"}, "type": {"S": "deactivation"},
                "key_id": {"S": key_id}, "actor": {"S": actor}, "at": {"S": at},
            })
        except (ClientError, BotoCoreError) as exc:
            raise _error(self.table, exc) from exc

    def record_key_state(self, state: KeyState) -> bool:
        try:
            self._ddb.put_item(TableName=self.table, ConditionExpression="attribute_not_exists(pk)", Item={
                "pk": {"S": f"KEY#{state.key_id}"}, "sk": {"S": f"STATE#{state.state}"}, "type": {"S": "key-state"},
                "key_id": {"S": state.key_id}, "at": {"S": state.at},
                "data": {"S": json.dumps(state.to_dict(), sort_keys=True)},
            })
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise _error(self.table, exc) from exc
        except BotoCoreError as exc:
            raise _error(self.table, exc) from exc
        return True

    # -- reads -----------------------------------------------------------------------------------------------

    def _scan(self, item_type: str) -> Iterator[dict[str, Any]]:
        try:
            pages = self._ddb.get_paginator("scan").paginate(
                TableName=self.table, ConsistentRead=True, FilterExpression="#t = :t",
                ExpressionAttributeNames={"#t": "type"}, ExpressionAttributeValues={":t": {"S": item_type}},
            )
            for page in pages:
                yield from page.get("Items", [])
        except (ClientError, BotoCoreError) as exc:
            raise _error(self.table, exc) from exc

    def _deactivations(self) -> dict[str, tuple[str, str]]:
        return {i["key_id"]["S"]: (i["actor"]["S"], i["at"]["S"]) for i in self._scan("deactivation")}

    @staticmethod
    def _finding(data: dict[str, Any], deactivations: Mapping[str, tuple[str, str]]) -> FindingRecord:
        if data["key_id"] in deactivations:
            data["deactivated_by"], data["deactivated_at"] = deactivations[data["key_id"]]
        return FindingRecord.from_dict(data)

    def iter_findings(self) -> Iterator[FindingRecord]:
        deactivations = self._deactivations()
        records: dict[tuple[str, str], FindingRecord] = {}
        for item in self._scan("finding"):
            record = self._finding(_decode(item["data"]["B"]), deactivations)
            place = (record.host_id, record.finding_fingerprint)
            if item["sk"]["S"] != "FINDING" or place not in records:  # the per-host layout wins over the old one
                records[place] = record
        yield from sorted(records.values(), key=lambda r: (r.finding_fingerprint, r.host_id))

    def get_finding(self, host_id: str, finding_fingerprint: str) -> FindingRecord | None:
        try:
            item = self._ddb.get_item(
                TableName=self.table, ConsistentRead=True,
                Key={"pk": {"S": f"HOST#{host_id}"}, "sk": {"S": f"FINDING#{finding_fingerprint}"}},
            ).get("Item")
            if not item:
                return None
            data = _decode(item["data"]["B"])
            deactivation = self._ddb.get_item(
                TableName=self.table, ConsistentRead=True,
                Key={"pk": {"S": f"KEY#{data['key_id']}"}, "sk": {"S": "DEACTIVATION"}},
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise _error(self.table, exc) from exc
        found = {data["key_id"]: (deactivation["actor"]["S"], deactivation["at"]["S"])} if deactivation else {}
        return self._finding(data, found)

    def iter_hosts(self) -> Iterator[HostRecord]:
        records = [HostRecord.from_dict(_decode(i["data"]["B"])) for i in self._scan("host")]
        yield from sorted(records, key=lambda r: r.host_id)

    def iter_key_states(self) -> Iterator[KeyState]:
        states = [KeyState.from_dict(json.loads(i["data"]["S"])) for i in self._scan("key-state")]
        yield from sorted(states, key=lambda s: (s.key_id, s.at, s.state))

    def close(self) -> None:
        self._ddb.close()

    def __enter__(self) -> DynamoDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
