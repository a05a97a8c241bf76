"""The DynamoDB store at fleet scale: listings through the sharded index instead of whole-table scans, parallel scan
segments for full reads, and tables written before the index made fully indexed before the index is trusted."""

from __future__ import annotations

import dataclasses
import json
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from keysweep.central import store_dynamodb as ddb
from keysweep.central.handler import MessageHandler, Outcome
from keysweep.central.key_states import KeyState
from keysweep.central.records import FindingSummary
from keysweep.central.store import open_store
from keysweep.central.store_dynamodb import INDEX, SHARDS, DynamoDBStore

from tests.support import fleet
from tests.support import messages as M
from tests.support.dynamodb_layouts import put_legacy_finding
from tests.support.recording_proxy import RecordingProxy, recording_proxy


@pytest.fixture
def proxy(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingProxy]:
    """Every DynamoDB request keysweep makes, through a recording proxy in front of moto."""
    with recording_proxy(moto_server.endpoint) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", p.endpoint)
        yield p


def operations(proxy: RecordingProxy, since: int = 0) -> Counter[str]:
    return Counter(r.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1] for r in proxy.snapshot()[since:])


def fill(store: DynamoDBStore, hosts: int, places: int = 2) -> None:
    for h in range(hosts):
        info = M.host(f"host-{h:03d}", f"host-{h:03d}", "on-premises")
        for p in range(places):
            store.upsert_finding(
                M.finding_message(
                    host_info=info, path=f"/p{p}", key_id=("AKIAXYZDQCEN4B6JSJQI", "AKIASP2TPHJSQH3FJRUX")[p % 2]
                )
            )
        if h % 2:
            store.record_heartbeat(M.heartbeat_message(host_info=info))


def test_hosts_key_states_and_deactivations_are_listed_without_a_scan(proxy: RecordingProxy) -> None:
    table = f"keysweep-scale-{uuid.uuid4().hex[:8]}"
    store = open_store(f"dynamodb://{table}")
    assert isinstance(store, DynamoDBStore)
    fill(store, 24)
    store.record_deactivation("AKIAXYZDQCEN4B6JSJQI", "arn:aws:iam::1:user/secops", "2026-12-01T00:00:00.000Z")
    store.record_key_state(
        KeyState(
            key_id="AKIAXYZDQCEN4B6JSJQI", state="deactivated", at="2026-12-01T00:00:00Z", actor="secops", source="mark"
        )
    )
    store.close()

    reader = open_store(f"dynamodb://{table}", create=False)
    start = len(proxy.snapshot())
    hosts = list(reader.iter_hosts())
    states = list(reader.iter_key_states())
    listed = operations(proxy, start)
    assert [h.host_id for h in hosts] == [f"host-{h:03d}" for h in range(24)]  # in host id order, as SQLite
    assert [h.last_heartbeat is not None for h in hosts] == [bool(h % 2) for h in range(24)]
    assert [s.state for s in states] == ["deactivated"]
    assert listed["Scan"] == 0
    assert listed["Query"] == SHARDS + 1 and listed["BatchGetItem"] >= 1

    start = len(proxy.snapshot())
    findings = list(reader.iter_findings())
    assert len(findings) == 48
    assert all(f.deactivated_by == "arn:aws:iam::1:user/secops" for f in findings if f.key_id.startswith("AKIAXYZ"))
    assert operations(proxy, start)["Scan"] >= ddb.SCAN_SEGMENTS  # a full read: every segment, in parallel
    segments = {
        json.loads(r.body).get("Segment")
        for r in proxy.snapshot()[start:]
        if r.headers.get("X-Amz-Target", "").endswith(".Scan")
    }
    assert segments == set(range(ddb.SCAN_SEGMENTS))
    reader.close()


def test_a_table_written_before_the_index_is_scanned_until_indexed_then_listed(proxy: RecordingProxy) -> None:
    """An older keysweep's table: no index, items without its attributes. Readers scan it (complete, if slower);
    a collector opening it adds the index and indexes every item, and only then is the index trusted."""
    table = f"keysweep-old-{uuid.uuid4().hex[:8]}"
    client = boto3.client("dynamodb")
    client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    # items exactly as the previous version wrote them (the same layout, without the index's attributes)
    new = DynamoDBStore(f"scratch-{uuid.uuid4().hex[:8]}")
    fill(new, 6)
    new.record_deactivation("AKIAXYZDQCEN4B6JSJQI", "secops", "2026-12-01T00:00:00.000Z")
    # and one finding of the layout before per-host records (a host that has not reported since)
    legacy = ddb.merge_finding(None, M.finding_message(host_info=M.host("host-legacy", "legacy", "on-premises")))
    put_legacy_finding(client, table, legacy)
    for item in client.scan(TableName=new.table)["Items"]:
        if item["pk"]["S"] != "META":
            old = {k: v for k, v in item.items() if k not in ("tpk", "tsk", "summary", "last_heartbeat")}
            client.put_item(TableName=table, Item=old)
    new.close()

    reader = open_store(f"dynamodb://{table}", create=False)
    assert isinstance(reader, DynamoDBStore) and not reader.indexed()
    start = len(proxy.snapshot())
    assert len(list(reader.iter_hosts())) == 6
    assert operations(proxy, start)["Scan"] >= ddb.SCAN_SEGMENTS and operations(proxy, start)["Query"] == 0
    reader.close()

    collector = open_store(f"dynamodb://{table}")  # a writer: adds the index and indexes the old items
    assert isinstance(collector, DynamoDBStore)
    description = client.describe_table(TableName=table)["Table"]
    assert [g["IndexName"] for g in description["GlobalSecondaryIndexes"]] == [INDEX]
    old_items = [
        i
        for i in client.scan(TableName=table)["Items"]
        if i["type"]["S"] in ("host", "finding") and i["sk"]["S"] != "FINDING"
    ]
    assert old_items and all("tpk" in i and "tsk" in i for i in old_items)
    assert collector.indexed()  # moto builds the index at once; AWS marks it on a later opening once it is active
    collector.close()

    reader = open_store(f"dynamodb://{table}", create=False)
    start = len(proxy.snapshot())
    hosts = list(reader.iter_hosts())
    assert [h.host_id for h in hosts] == [f"host-{h:03d}" for h in range(6)]
    assert reader._deactivations() == {"AKIAXYZDQCEN4B6JSJQI": ("secops", "2026-12-01T00:00:00.000Z")}
    summaries = list(reader.iter_finding_summaries())
    assert len(summaries) == 13 and "host-legacy" in {s.host_id for s in summaries}  # the old layout's too
    assert operations(proxy, start)["Scan"] == 0
    reader.close()


def test_index_keys_order_findings_by_key_then_host_and_fit_dynamodbs_limits(moto_server: Any) -> None:
    long_host = "h" + "é" * 255  # 256 characters, 511 bytes
    msg = M.finding_message(host_info=M.host(long_host, "x", "on-premises"))
    record = ddb.FindingRecord.from_dict(
        {
            **json.loads(json.dumps(msg["finding"])),
            **{
                "host_id": long_host,
                "hostname": "x",
                "host_kind": "on-premises",
                "first_seen": "a",
                "last_seen": "b",
                "version": "v",
            },
        }
    )
    entry = ddb.finding_index(record)
    assert len(entry["tsk"]["S"].encode()) <= 1024
    assert entry["tpk"]["S"] == f"finding#{zlib.crc32(long_host.encode()) % SHARDS}"
    summary = json.loads(zlib.decompress(entry["summary"]["B"]))
    assert set(summary) == {f.name for f in dataclasses.fields(FindingSummary)} - {"deactivated_by", "deactivated_at"}
    assert summary["host_id"] == long_host
    # (fingerprint, host id, place) order as a tuple sorts, even for host ids with separators in them
    keys = [
        ddb.finding_index(ddb.FindingRecord.from_dict({**record.to_dict(), "host_id": h}))["tsk"]["S"]
        for h in ("a#b", "a", "a b", "ab")
    ]
    assert sorted(keys) == [keys[1], keys[2], keys[0], keys[3]]

    store = open_store(f"dynamodb://keysweep-long-{uuid.uuid4().hex[:8]}")
    assert store.upsert_finding(msg) is True  # within DynamoDB's key limits: stored, not refused
    assert [h.host_id for h in store.iter_hosts()] == [long_host]
    store.close()


def test_summaries_and_one_keys_records_match_sqlite_without_a_scan(proxy: RecordingProxy, tmp_path: Any) -> None:
    """The fleet view's two reads answer exactly what the SQLite store answers for the same messages, from the
    index: no scan of the table."""
    extra = [
        M.finding_message(host_info=fleet.WEB1, key_id=fleet.LIVE_KEY, path=path, sent_at="2026-11-28T10:03:00Z")
        for path in ("/srv/b/.env", "/srv/a/.env")
    ]  # the same key in three places of one host
    stores = [open_store(str(tmp_path / "fleet.db")), open_store(f"dynamodb://keysweep-sum-{uuid.uuid4().hex[:8]}")]
    sent = [*fleet.messages(), *extra]
    for store in stores:
        handler = MessageHandler(store)
        for message in sent:
            assert handler.handle(json.dumps(message)).outcome is Outcome.OK
        store.record_deactivation(fleet.DEAD_KEY, "arn:aws:iam::1:user/secops", "2026-12-01T00:00:00.000Z")
    sqlite, dynamo = stores
    start = len(proxy.snapshot())
    summaries = list(dynamo.iter_finding_summaries())
    assert summaries == list(sqlite.iter_finding_summaries())
    assert len(summaries) == 7 and any(s.deactivated_by for s in summaries)
    keys = list(dict.fromkeys(s.fingerprint for s in summaries))
    for key in keys:
        assert [r.to_dict() for r in dynamo.iter_key_findings(key)] == [
            r.to_dict() for r in sqlite.iter_key_findings(key)
        ]
    assert list(dynamo.iter_key_findings("0" * 32)) == []
    assert operations(proxy, start)["Scan"] == 0
    for store in stores:
        store.close()
