"""The store contract, on every backend: merging, idempotency, out-of-order delivery, hosts, deactivation."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from keysweep.central.records import FindingSummary, insert_history, utc_iso
from keysweep.central.store import MessageRefused, Store, apply_messages, finding_summaries, key_findings, open_store
from keysweep.central.store_sqlite import SCHEMA_VERSION
from keysweep.errors import StoreError

from tests.support import messages as M


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = str(tmp_path / "fleet.db")
    else:
        request.getfixturevalue("moto_server")
        url = f"dynamodb://keysweep-test-{uuid.uuid4().hex[:8]}"
    s = open_store(url)
    yield s
    s.close()


def content(store: Store) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Everything stored; findings sorted (DynamoDB reads them by a parallel scan, in no particular order)."""
    findings = sorted(store.iter_findings(), key=lambda f: (f.finding_fingerprint, f.host_id))
    return [f.to_dict() for f in findings], [h.to_dict() for h in store.iter_hosts()]


def test_new_finding_is_stored_with_host_and_status(store: Store) -> None:
    msg = M.finding_message(sent_at="2026-11-28T10:00:00+01:00")
    assert store.upsert_finding(msg) is True
    [rec] = list(store.iter_findings())
    assert rec.finding_fingerprint == msg["finding"]["finding_fingerprint"]
    assert rec.fingerprint == msg["finding"]["fingerprint"]
    assert rec.key_id == "AKIAXYZDQCEN4B6JSJQI"
    assert rec.status == "live"
    assert rec.owner_arn == "arn:aws:iam::534261010715:user/deploy"
    assert rec.first_seen == rec.last_seen == "2026-11-28T09:00:00.000Z"
    assert rec.location["path"] == "/home/app/.aws/credentials"
    assert rec.host_kind == "ec2" and rec.hostname == "web-1"
    assert rec.suggestion and rec.suggestion["kind"] == "ec2-new-instance-profile"
    assert [e["status"] for e in rec.verification_history] == ["live"]
    [host] = list(store.iter_hosts())
    assert host.host_id == msg["host"]["host_id"]
    assert host.last_heartbeat is None  # findings alone are not a heartbeat
    assert store.get_finding(rec.host_id, rec.finding_fingerprint) == rec
    assert store.get_finding("i-other", rec.finding_fingerprint) is None
    assert store.get_finding(rec.host_id, "0" * 32) is None


def test_replaying_messages_changes_nothing(store: Store) -> None:
    h1, h2 = M.host("i-1", "a"), M.host("i-2", "b")
    batch = [
        M.finding_message(host_info=h1, sent_at="2026-11-28T10:00:00Z"),
        M.finding_message(host_info=h1, sent_at="2026-11-28T11:00:00Z", status="invalid"),
        M.finding_message(host_info=h2, path="/srv/.env", sent_at="2026-11-28T10:30:00Z"),
        M.heartbeat_message(host_info=h1, sent_at="2026-11-28T11:05:00Z"),
        M.heartbeat_message(host_info=h2, sent_at="2026-11-28T10:35:00Z"),
    ]

    def apply(msgs: list[dict[str, Any]]) -> list[bool]:
        return [store.upsert_finding(m) if m["type"] == "finding" else store.record_heartbeat(m) or True for m in msgs]

    apply(batch)
    before = content(store)
    changed = apply(batch)
    assert changed[:3] == [False, False, False]
    apply(list(reversed(batch)))
    assert content(store) == before
    assert len(before[0]) == 2 and len(before[1]) == 2


def test_out_of_order_delivery_gives_the_same_record(store: Store, tmp_path: Path) -> None:
    times = [f"2026-11-28T1{i}:00:00Z" for i in range(6)]
    statuses = ["live", "live", "invalid", "invalid", "live", "expired"]
    msgs = [M.finding_message(sent_at=t, status=s, path="/p") for t, s in zip(times, statuses, strict=True)]
    for m in random.Random(7).sample(msgs, len(msgs)):
        store.upsert_finding(m)
    [rec] = list(store.iter_findings())
    assert rec.first_seen == utc_iso(times[0]) and rec.last_seen == utc_iso(times[-1])
    assert rec.status == "expired"
    assert [(e["status"], e["at"]) for e in rec.verification_history] == [
        ("live", utc_iso(times[0])),
        ("invalid", utc_iso(times[2])),
        ("live", utc_iso(times[4])),
        ("expired", utc_iso(times[5])),
    ]
    in_order = open_store(str(tmp_path / "ordered.db"))
    for m in msgs:
        in_order.upsert_finding(m)
    assert [r.to_dict() for r in in_order.iter_findings()] == [rec.to_dict()]


def test_history_appends_only_on_status_change(store: Store) -> None:
    for i, status in enumerate(["live", "live", "live", "wrong_secret", "wrong_secret"]):
        store.upsert_finding(M.finding_message(sent_at=f"2026-11-28T10:0{i}:00Z", status=status))
    [rec] = list(store.iter_findings())
    assert [e["status"] for e in rec.verification_history] == ["live", "wrong_secret"]
    assert rec.owner_arn == "arn:aws:iam::534261010715:user/deploy"  # kept after a later status without an ARN


def test_unverified_finding_has_no_status(store: Store) -> None:
    store.upsert_finding(M.finding_message(status=None))
    [rec] = list(store.iter_findings())
    assert rec.status is None and rec.verification_history == ()


def test_same_key_on_two_hosts_is_two_findings_sharing_a_fingerprint(store: Store) -> None:
    store.upsert_finding(M.finding_message(host_info=M.host("i-1", "a")))
    store.upsert_finding(M.finding_message(host_info=M.host("i-2", "b")))
    recs = list(store.iter_findings())
    assert len(recs) == 2
    assert len({r.fingerprint for r in recs}) == 1
    assert {r.host_id for r in recs} == {"i-1", "i-2"}


def test_heartbeats_keep_the_newest_sweep(store: Store) -> None:
    h = M.host("i-9", "db-1")
    new = M.heartbeat_message(host_info=h, sent_at="2026-11-28T12:00:00Z", files_scanned=5, agent_version="0.2.0")
    old = M.heartbeat_message(host_info=h, sent_at="2026-11-28T11:00:00Z", files_scanned=3, errors=["boom"])
    store.record_heartbeat(new)
    store.record_heartbeat(old)
    [host] = list(store.iter_hosts())
    assert host.last_heartbeat == "2026-11-28T12:00:00.000Z"
    assert host.first_seen == "2026-11-28T11:00:00.000Z"
    assert host.agent_version == "0.2.0"
    assert host.last_sweep and host.last_sweep["stats"]["files_scanned"] == 5
    assert host.errors == ()
    assert host.spool and host.spool["depth"] == 0


def test_deactivation_shows_on_every_finding_of_the_key(store: Store) -> None:
    store.upsert_finding(M.finding_message(host_info=M.host("i-1", "a")))
    store.record_deactivation("AKIAXYZDQCEN4B6JSJQI", "arn:aws:iam::1:user/sec", "2026-11-28T13:00:00Z")
    store.upsert_finding(M.finding_message(host_info=M.host("i-2", "b")))  # found after deactivation
    store.upsert_finding(M.finding_message(key_id="AKIASP2TPHJSQH3FJRUX"))
    by_key = {(r.key_id, r.host_id): r for r in store.iter_findings()}
    for host_id in ("i-1", "i-2"):
        rec = by_key[("AKIAXYZDQCEN4B6JSJQI", host_id)]
        assert rec.deactivated_by == "arn:aws:iam::1:user/sec"
        assert rec.deactivated_at == "2026-11-28T13:00:00Z"
    assert by_key[("AKIASP2TPHJSQH3FJRUX", "i-0123456789abcdef0")].deactivated_by is None


def test_a_finding_kept_by_include_examples_keeps_its_reason_to_the_fleet_report(store: Store) -> None:
    import io

    from keysweep.central.fleet_report import load_report, render_report

    reason = "key id ends in EXAMPLE; secret contains EXAMPLE"
    shown = M.finding_message(key_id="AKIAIOSFODNN7EXAMPLE", path="/srv/docs/.env")
    shown["finding"]["example"] = reason
    M.assert_valid(shown)
    plain = M.finding_message(path="/srv/app/.env")
    assert "example" not in plain["finding"]
    apply_messages(store, [(shown, None), (plain, None)])
    records = {r.key_id: r for r in store.iter_findings()}
    assert records["AKIAIOSFODNN7EXAMPLE"].example == reason
    assert records["AKIAXYZDQCEN4B6JSJQI"].example is None
    assert {s.key_id: s.example for s in finding_summaries(store)} == {
        "AKIAIOSFODNN7EXAMPLE": reason,
        "AKIAXYZDQCEN4B6JSJQI": None,
    }
    assert not store.upsert_finding(shown)  # the same message again: a duplicate
    out = io.StringIO()
    render_report(load_report(store), "json", out)
    places = {k["key_id"]: k["locations"] for k in json.loads(out.getvalue())["keys"]}
    [example_place] = places["AKIAIOSFODNN7EXAMPLE"]
    [plain_place] = places["AKIAXYZDQCEN4B6JSJQI"]
    assert example_place["example"] == reason
    # every other finding keeps exactly its fields
    assert "example" not in plain_place
    assert set(example_place) - {"example"} == set(plain_place)


def _obs(at: int, status: str) -> dict[str, Any]:
    return {"status": status, "at": f"t{at:03d}", "last_at": f"t{at:03d}"}


def _runs(observations: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The exact history: observations in time order, one run per change of status."""
    runs: list[list[str]] = []
    for o in sorted(observations, key=lambda o: (o["at"], o["status"])):
        if runs and runs[-1][0] == o["status"]:
            runs[-1][2] = o["at"]
        else:
            runs.append([o["status"], o["at"], o["at"]])
    return [tuple(r) for r in runs]  # type: ignore[misc]


def _history(history: tuple[dict[str, Any], ...]) -> list[tuple[str, str, str]]:
    return [(e["status"], e["at"], e["last_at"]) for e in history]


def test_insert_history_in_order_is_exact_and_replays_change_nothing() -> None:
    rng = random.Random(11)
    for _ in range(200):
        observations = [_obs(t, rng.choice("abc")) for t in sorted(rng.sample(range(100), rng.randint(1, 12)))]
        history: tuple[dict[str, Any], ...] = ()
        for o in observations:
            history = insert_history(history, o)
        assert _history(history) == _runs(observations)
        for o in rng.sample(observations, len(observations)):
            assert insert_history(history, o) == history


def test_insert_history_any_order_exact_when_runs_hold_two_observations_at_most() -> None:
    # the shape of out-of-order delivery in practice: statuses alternate between a few observations
    rng = random.Random(5)
    for _ in range(200):
        observations = [_obs(t, ["live", "invalid"][t % 2]) for t in range(4)]
        history: tuple[dict[str, Any], ...] = ()
        for o in rng.sample(observations, len(observations)):
            history = insert_history(history, o)
            history = insert_history(history, o)
        assert _history(history) == _runs(observations)


def test_insert_history_same_instant_two_statuses_is_idempotent() -> None:
    history: tuple[dict[str, Any], ...] = ()
    for o in [_obs(1, "a"), _obs(5, "a"), _obs(5, "b"), _obs(1, "a"), _obs(5, "b"), _obs(5, "a")]:
        history = insert_history(history, o)
    again = history
    for o in [_obs(5, "a"), _obs(5, "b"), _obs(1, "a")]:
        again = insert_history(again, o)
    assert again == history
    assert [e["status"] for e in history] == ["a", "b"] or [e["status"] for e in history] == ["a", "b", "a"]


def test_sqlite_store_is_private_and_refuses_missing_without_create(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    open_store(str(path)).close()
    assert path.stat().st_mode & 0o077 == 0
    with pytest.raises(StoreError):
        open_store(str(tmp_path / "missing.db"), create=False)
    open_store(f"sqlite://{path}", create=False).close()
    with pytest.raises(StoreError, match="cannot create"):
        open_store(str(tmp_path / "no" / "such" / "dir" / "fleet.db"))


def test_sqlite_replay_leaves_rows_byte_identical(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "fleet.db"
    store = open_store(str(path))
    batch = [
        M.finding_message(
            host_info=M.host(f"i-{i % 3}", f"h{i % 3}"),
            path=f"/p/{i}",
            sent_at=f"2026-11-28T10:{i:02d}:00Z",
            status=["live", "invalid"][i % 2],
        )
        for i in range(12)
    ] + [M.heartbeat_message(host_info=M.host(f"i-{i}", f"h{i}")) for i in range(3)]

    def rows() -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as db:
            return [
                r
                for t in ("findings", "hosts", "deactivations", "meta")
                for r in db.execute(f"SELECT * FROM {t} ORDER BY 1")
            ]  # noqa: S608 (fixed table names)

    for m in batch:
        store.upsert_finding(m) if m["type"] == "finding" else store.record_heartbeat(m)
    before = rows()
    changed = [store.upsert_finding(m) if m["type"] == "finding" else store.record_heartbeat(m) for m in batch]
    assert not any(changed)
    assert rows() == before


def test_dynamodb_refusing_a_message_is_that_messages_failure(moto_server: Any) -> None:
    store = open_store(f"dynamodb://keysweep-test-{uuid.uuid4().hex[:8]}")
    long_host = M.finding_message(host_info=M.host("x", "long", "on-premises"))
    long_host["host"]["host_id"] = "h-" + "a" * 2998  # over DynamoDB's 2048-byte key limit
    with pytest.raises(MessageRefused, match="ValidationException") as err:
        store.upsert_finding(long_host)
    assert "aaaa" not in str(err.value)
    assert list(store.iter_findings()) == [] and list(store.iter_hosts()) == []  # nothing half-written
    assert store.upsert_finding(M.finding_message()) is True  # the store is fine


def test_dynamodb_reads_findings_of_the_layout_before_per_host_records(moto_server: Any) -> None:
    import boto3
    from keysweep.central.records import merge_finding

    from tests.support.dynamodb_layouts import put_legacy_finding

    table = f"keysweep-test-{uuid.uuid4().hex[:8]}"
    store = open_store(f"dynamodb://{table}")
    old = merge_finding(None, M.finding_message(sent_at="2026-11-28T10:00:00Z", status="live"))
    put_legacy_finding(boto3.client("dynamodb", region_name="us-east-1"), table, old)
    assert [r.to_dict() for r in store.iter_findings()] == [old.to_dict()]
    store.upsert_finding(M.finding_message(sent_at="2026-11-28T11:00:00Z", status="invalid"))
    [now] = list(store.iter_findings())  # the same host and place in the per-host layout wins
    assert now.status == "invalid" and now.finding_fingerprint == old.finding_fingerprint
    assert [e["status"] for e in now.verification_history] == ["live", "invalid"]  # the old history carried over


def _fleet_messages(hosts: int, keys: int) -> list[dict[str, Any]]:
    """Every key on every host, each host with its own suggestion text (it names the host's role)."""
    out = []
    for h in range(hosts):
        for k in range(keys):
            m = M.finding_message(
                host_info=M.host(f"i-{h:04d}", f"web-{h}"),
                key_id=f"AKIAFLEET{k:011d}",
                path=f"/srv/{k}/.env",
                sent_at=f"2026-11-28T10:{k:02d}:00Z",
                status=["live", "invalid", None][k % 3],
            )
            m["suggestion"]["role_name"] = f"web-{h}-role"
            m["suggestion"]["commands"] = [
                f"aws iam create-role --role-name web-{h}-role ...",
                *m["suggestion"]["commands"],
            ]
            out.append(m)
    return out


def test_apply_messages_is_the_same_as_one_by_one_and_idempotent(store: Store, tmp_path: Path) -> None:
    msgs = _fleet_messages(3, 4) + [M.heartbeat_message(host_info=M.host("i-0001", "web-1"))]
    msgs.append(
        M.finding_message(
            host_info=M.host("i-0001", "web-1"),
            key_id="AKIAFLEET00000000001",
            path="/srv/1/.env",
            sent_at="2026-11-29T10:00:00Z",
            status="expired",
        )
    )
    first = apply_messages(store, [(m, None) for m in msgs])
    assert first == [True] * len(msgs)
    assert apply_messages(store, [(m, None) for m in msgs]) == [False] * len(msgs)
    one_by_one = open_store(str(tmp_path / "one.db"))
    for m in msgs:
        one_by_one.upsert_finding(m) if m["type"] == "finding" else one_by_one.record_heartbeat(m)

    def ordered(s: Store) -> list[dict[str, Any]]:
        return sorted((r.to_dict() for r in s.iter_findings()), key=lambda d: (d["host_id"], d["finding_fingerprint"]))

    assert ordered(store) == ordered(one_by_one)
    assert [h.to_dict() for h in store.iter_hosts()] == [h.to_dict() for h in one_by_one.iter_hosts()]
    [rec] = [r for r in store.iter_findings() if r.host_id == "i-0001" and r.key_id.endswith("1")]
    assert [e["status"] for e in rec.verification_history] == ["invalid", "expired"]
    one_by_one.close()


def test_a_batch_with_a_hosts_older_messages_last_does_not_regress_its_host(store: Store, tmp_path: Path) -> None:
    """A batch keeps each host's record in hand and writes it once: what it writes is what one by one gives."""
    renamed = M.host("i-0009", "web-9-new")
    msgs = [
        M.heartbeat_message(host_info=renamed, sent_at="2026-11-28T12:00:00Z"),
        M.finding_message(host_info=M.host("i-0009", "web-9-old"), sent_at="2026-11-28T09:00:00Z"),
        M.finding_message(host_info=renamed, key_id="AKIAFLEET00000000009", sent_at="2026-11-28T11:00:00Z"),
        M.heartbeat_message(host_info=M.host("i-0009", "web-9-old"), sent_at="2026-11-28T08:00:00Z"),
    ]
    assert apply_messages(store, [(m, None) for m in msgs]) == [True, True, True, True]
    one_by_one = open_store(str(tmp_path / "one.db"))
    for m in msgs:
        one_by_one.upsert_finding(m) if m["type"] == "finding" else one_by_one.record_heartbeat(m)
    [host] = store.iter_hosts()
    assert host.to_dict() == next(one_by_one.iter_hosts()).to_dict()
    assert (host.hostname, host.last_heartbeat, host.first_seen) == (
        "web-9-new",
        "2026-11-28T12:00:00.000Z",
        "2026-11-28T08:00:00.000Z",
    )
    # the batch again, and its messages one at a time: nothing changes
    assert apply_messages(store, [(m, None) for m in msgs]) == [False] * 4
    assert [store.record_heartbeat(m) if m["type"] == "heartbeat" else store.upsert_finding(m) for m in msgs] == (
        [False] * 4
    )
    one_by_one.close()


def test_summaries_come_grouped_by_key_and_agree_with_the_records(store: Store) -> None:
    msgs = _fleet_messages(4, 3)
    apply_messages(store, [(m, None) for m in msgs])
    store.record_deactivation("AKIAFLEET00000000002", "arn:aws:iam::1:user/admin", "2026-11-30T00:00:00Z")
    summaries = list(finding_summaries(store))
    assert len(summaries) == 12
    order = [(s.fingerprint, s.host_id) for s in summaries]
    assert order == sorted(order)
    records = {(r.host_id, r.finding_fingerprint): r for r in store.iter_findings()}
    for s in summaries:
        assert s == FindingSummary.of(records[(s.host_id, s.finding_fingerprint)])
    assert {s.deactivated_by for s in summaries if s.key_id.endswith("2")} == {"arn:aws:iam::1:user/admin"}
    fp = summaries[0].fingerprint
    assert [r.host_id for r in key_findings(store, fp)] == ["i-0000", "i-0001", "i-0002", "i-0003"]
    assert all(r.fingerprint == fp for r in key_findings(store, fp))
    assert len({s.suggestion_digest for s in summaries}) == 4  # each host names its own role, whatever the key


def test_sqlite_keeps_what_a_key_shares_once(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "fleet.db"
    store = open_store(str(path))
    msgs = _fleet_messages(40, 2)
    apply_messages(store, [(m, None) for m in msgs])
    expected = {(m["host"]["host_id"], m["finding"]["finding_fingerprint"]): m["suggestion"] for m in msgs}
    records = list(store.iter_findings())
    assert {(r.host_id, r.finding_fingerprint): r.suggestion for r in records} == expected
    store.close()
    with sqlite3.connect(path) as db:
        [(exemplars,)] = db.execute("SELECT COUNT(*) FROM exemplars")
        [(average,)] = db.execute("SELECT AVG(LENGTH(data)) FROM findings")
    raw = sum(len(json.dumps(r.to_dict())) for r in records) / len(records)
    assert exemplars == 2  # one per key (and suggestion kind)
    assert average < raw / 8, (average, raw)


def test_sqlite_store_of_schema_2_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "fleet.db"
    store = open_store(str(path))
    msgs = _fleet_messages(3, 2)
    apply_messages(store, [(m, None) for m in msgs])
    before = content(store)
    records = list(store.iter_findings())
    store.close()
    with sqlite3.connect(path) as db:  # the schema-2 layout: each whole record as JSON
        db.execute("DROP TABLE findings")
        db.execute("DROP TABLE exemplars")
        db.execute(
            "CREATE TABLE findings (finding_fingerprint TEXT NOT NULL, fingerprint TEXT NOT NULL, "
            "key_id TEXT NOT NULL, account_id TEXT, host_id TEXT NOT NULL, status TEXT, "
            "last_seen TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (host_id, finding_fingerprint))"
        )
        db.execute("CREATE INDEX findings_key_id ON findings (key_id)")
        db.execute("CREATE INDEX findings_fingerprint ON findings (fingerprint)")
        db.executemany(
            "INSERT INTO findings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.finding_fingerprint,
                    r.fingerprint,
                    r.key_id,
                    r.account_id,
                    r.host_id,
                    r.status,
                    r.last_seen,
                    json.dumps(r.to_dict()),
                )
                for r in records
            ],
        )
        db.execute("UPDATE meta SET value = '2' WHERE name = 'schema_version'")
    store = open_store(str(path))
    assert content(store) == before
    assert not store.upsert_finding(msgs[0])  # the same message: still a duplicate
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        names = {n for (n,) in db.execute("SELECT name FROM sqlite_master")}
    assert "findings_old" not in names and {"findings_key", "exemplars"} <= names and "findings_key_id" not in names


def test_sqlite_store_of_schema_3_gains_the_correlation_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from keysweep.central import store_sqlite
    from keysweep.central.audit.correlation import FleetFindings

    monkeypatch.setattr(store_sqlite, "_PAGE_ROWS", 3)  # the upgrade pages through the 8 findings

    path = tmp_path / "fleet.db"
    store = open_store(str(path))
    msgs = _fleet_messages(4, 2)
    for i, m in enumerate(msgs):
        m["suggestion"]["role_name"] = f"role-{i % 3}"
    apply_messages(store, [(m, None) for m in msgs])
    before = content(store)
    records = list(store.iter_findings())
    store.close()
    with sqlite3.connect(path) as db:  # the schema-3 layout: the same table without the correlation columns
        for column in ("role_name", "signed", "example"):
            db.execute(f"ALTER TABLE findings DROP COLUMN {column}")
        db.execute("UPDATE meta SET value = '3' WHERE name = 'schema_version'")
    store = open_store(str(path))
    assert content(store) == before
    fleet, held = FleetFindings.read(store), FleetFindings.of_records(records)
    assert fleet.sightings == held.sightings and fleet.verified == held.verified and fleet.verified
    assert {role for s in fleet.sightings.values() for _, role in s.roles} == {"role-0", "role-1", "role-2"}
    assert not store.upsert_finding(msgs[0])  # the same message: still a duplicate
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        assert db.execute("SELECT COUNT(*) FROM findings WHERE signed IS NOT NULL").fetchone() == (len(records),)


def test_sqlite_store_of_schema_4_gains_the_example_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "fleet.db"
    store = open_store(str(path))
    apply_messages(store, [(m, None) for m in _fleet_messages(2, 2)])
    before, summaries = content(store), list(finding_summaries(store))
    store.close()
    with sqlite3.connect(path) as db:  # the schema-4 layout: the same table without the example column
        db.execute("ALTER TABLE findings DROP COLUMN example")
        db.execute("UPDATE meta SET value = '4' WHERE name = 'schema_version'")
    store = open_store(str(path))
    assert content(store) == before and list(finding_summaries(store)) == summaries
    shown = M.finding_message(key_id="AKIAIOSFODNN7EXAMPLE")
    shown["finding"]["example"] = "key id ends in EXAMPLE"
    assert store.upsert_finding(shown)
    assert [s.example for s in finding_summaries(store) if s.key_id == "AKIAIOSFODNN7EXAMPLE"] == [
        "key id ends in EXAMPLE"
    ]
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)


def test_sqlite_store_with_the_key_id_index_loses_it_and_reads_the_same(tmp_path: Path) -> None:
    """Stores before this version kept an index by key id that no query used: opening one drops it, every read
    answers as before, and a finding is still written once."""
    import sqlite3

    path = tmp_path / "fleet.db"
    store = open_store(str(path))
    msgs = _fleet_messages(3, 2)
    apply_messages(store, [(m, None) for m in msgs[:-1]])
    first, fp = msgs[0]["finding"], msgs[0]["finding"]["fingerprint"]

    def reads(s: Store) -> tuple[Any, ...]:
        return (
            content(s),
            list(finding_summaries(s)),
            list(key_findings(s, fp)),
            s.get_finding("i-0000", first["finding_fingerprint"]),
        )

    before = reads(store)
    store.close()
    with sqlite3.connect(path) as db:  # what stores of schema 1 to 5 had
        db.execute("CREATE INDEX findings_key_id ON findings (key_id)")
    store = open_store(str(path))
    with sqlite3.connect(path) as db:
        assert db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'findings'"
        ).fetchall() == [("findings_key",)]
    assert reads(store) == before and before[3] is not None
    assert store.upsert_finding(msgs[-1]) and not store.upsert_finding(msgs[-1])
    assert len(content(store)[0]) == len(before[0][0]) + 1
    store.close()


def test_an_objects_json_with_one_member_serialised_apart_is_its_canonical_json() -> None:
    from keysweep.central.records import canonical_json
    from keysweep.central.store_sqlite import json_with_member

    record = {"zeta": None, "Alpha": [1, 2.5, {"b": "é", "a": True}], 'a"q': "ünïcode\n", "": {}, "b": "x"}
    for name in record:  # first, last and in between
        assert json_with_member(record, name) == (canonical_json(record), canonical_json(record[name]))
    assert json_with_member({"only": None}, "only") == ('{"only":null}', "null")
