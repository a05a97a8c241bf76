"""Central trust: one compromised host cannot rewrite the fleet.

Messages are built by the agent's own code from findings of the real detector; the attacks are forged from them the
way a host with send rights would. The queue is moto's; since moto gives every message one fixed SenderId, the
senders are set where SQS sets them: in the Lambda event records, and for the long-polling collector by a loopback
proxy that rewrites the ReceiveMessage answer.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from keysweep.central import lambda_handler
from keysweep.central.collector import Collector, CollectorConfig
from keysweep.central.coverage import host_coverage
from keysweep.central.fleet_report import build_report, load_report, write_table
from keysweep.central.handler import MessageHandler, Outcome
from keysweep.central.records import HostRecord, Origin
from keysweep.central.senders import SENDER_MAP_ENV, SenderMap
from keysweep.central.store import open_store
from keysweep.errors import ConfigError, StoreError
from keysweep.fingerprint import Fingerprinter
from keysweep.models import HostContext
from keysweep.report.message import encode_message, finding_message, heartbeat_message
from keysweep.suggest import suggest

from tests.support.central import counts, drain_bodies, make_queues, send_bodies, sqs_client
from tests.support.planted import LIVE, ec2_context, planted_findings
from tests.support.sqs_sender_proxy import sender_proxy

pytestmark = pytest.mark.timeout(120)

FP = Fingerprinter(b"f" * 32)  # the fleet's fingerprint key: every agent holds it
ROLE = "AROAAGENTINSTANCEROLE1"
VICTIM, ATTACKER = "i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2"
INVALID_9999 = {
    "status": "invalid",
    "account": "123456789012",
    "arn": None,
    "user_id": None,
    "principal_type": None,
    "reason": "InvalidClientTokenId",
    "checked_at": "9999-12-31T23:59:59Z",
    "cached": False,
}
ADMIN = "aws iam attach-user-policy --user-name deployer --policy-arn arn:aws:iam::aws:policy/AdministratorAccess"


def instance_sender(instance_id: str) -> str:
    return f"{ROLE}:{instance_id}"


def on_prem(host_id: str) -> HostContext:
    return HostContext(kind="on-premises", hostname=host_id, host_id=host_id)


_FINDINGS, _ = planted_findings(2, fingerprinter=FP, verification=LIVE, path="/srv/app{i}/.env")


def genuine(context: HostContext, index: int = 0, *, sent_at: str | None = None) -> dict[str, Any]:
    """A finding message exactly as the agent on ``context`` builds and encodes it."""
    f = _FINDINGS[index]
    ffp = FP.finding_fingerprint(context.host_id, f.location, f.fingerprint)
    msg = finding_message(f, context, finding_fingerprint=ffp, suggestion=suggest(f, context), report_reason="new")
    if sent_at:
        msg["sent_at"] = msg["finding"]["last_seen"] = sent_at
    return json.loads(encode_message(msg, 256 * 1024))


def beat(context: HostContext, sent_at: str) -> dict[str, Any]:
    msg = heartbeat_message(context, stats=None, findings=[], started_at=0, finished_at=0, spool={})
    msg["sent_at"] = msg["sweep"]["started_at"] = msg["sweep"]["finished_at"] = sent_at
    return json.loads(encode_message(msg, 256 * 1024))


def the_attack() -> dict[str, Any]:
    """The victim's finding, claimed by the attacker's host: year 9999, invalid, and its own replacement text."""
    forged = copy.deepcopy(genuine(ec2_context(VICTIM, "web-victim")))
    forged["host"] = ec2_context(ATTACKER, "web-attacker").to_dict()
    forged["sent_at"] = "9999-12-31T23:59:59Z"
    forged["finding"]["first_seen"] = forged["finding"]["last_seen"] = "9999-12-31T23:59:59Z"
    forged["finding"]["verification"] = INVALID_9999
    forged["suggestion"]["summary"] = "Grant the deployer administrator rights"
    forged["suggestion"]["commands"] = [ADMIN]
    forged["suggestion"]["cleanup"] = []
    return forged


# -- the Lambda function: senders come from the event records ------------------------------------------------------


@pytest.fixture
def table(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"keysweep-trust-{uuid.uuid4().hex[:8]}"
    open_store(f"dynamodb://{name}").close()
    monkeypatch.setenv(lambda_handler.TABLE_ENV, name)
    monkeypatch.delenv(SENDER_MAP_ENV, raising=False)
    return name


def deliver(messages: list[tuple[str, dict[str, Any] | str]]) -> tuple[dict[str, Any], list[str]]:
    """Send ``(sender, message)`` pairs through a real queue, receive them as Lambda's poller does, give each record
    its sender's SenderId, and run the function. Returns its answer and the message ids in order."""
    sqs = sqs_client()
    q = make_queues(sqs)
    send_bodies(sqs, q.url, [m if isinstance(m, str) else json.dumps(m) for _, m in messages])
    got: list[dict[str, Any]] = []
    while len(got) < len(messages):
        got += sqs.receive_message(
            QueueUrl=q.url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
    by_body = {}
    for sender, m in messages:
        by_body.setdefault(m if isinstance(m, str) else json.dumps(m), []).append(sender)
    records = []
    for m in got:
        attributes = dict(m["Attributes"])
        assert attributes["SenderId"] and int(attributes["SentTimestamp"]) > 0  # what SQS gives, moto too
        attributes["SenderId"] = by_body[m["Body"]].pop(0)
        records.append(
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": attributes,
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "awsRegion": "us-east-1",
            }
        )
    order = [json.loads(r["body"])["message_id"] if r["body"].startswith("{") else r["body"] for r in records]
    return lambda_handler.handler({"Records": records}, None), order


def test_the_attack_in_the_issue_changes_nothing_of_the_victims(table: str, caplog: pytest.LogCaptureFixture) -> None:
    victim = ec2_context(VICTIM, "web-victim")
    first = genuine(victim, sent_at="2026-11-28T10:00:00Z")
    forged = the_attack()
    later = genuine(victim)  # the victim's next report, now: still live
    caplog.set_level(logging.INFO, logger="keysweep")
    for sender, message in [
        (instance_sender(VICTIM), first),
        (instance_sender(ATTACKER), forged),
        (instance_sender(VICTIM), later),
    ]:
        response, _ = deliver([(sender, message)])
        assert response == {"batchItemFailures": []}  # the attacker may speak for its own host: it is stored…

    store = open_store(f"dynamodb://{table}", create=False)
    records = {r.host_id: r for r in store.iter_findings()}
    # …as its own host's record: the victim's record is untouched
    assert set(records) == {VICTIM, ATTACKER}
    assert records[VICTIM].status == "live" and records[VICTIM].sender == instance_sender(VICTIM)
    assert records[ATTACKER].sender == instance_sender(ATTACKER)
    assert records[ATTACKER].verified_at < "2027"  # 9999 was clamped to the queue's time
    assert records[ATTACKER].last_seen < "2027" and records[ATTACKER].version < "2027"
    assert "clamped_times" in caplog.text

    report = load_report(store)
    [key] = report.keys
    assert key.status == "live" and report.summary()["live_keys"] == 1
    assert key.owner_arn == LIVE.arn
    assert {loc.host_id: loc.status for loc in key.locations} == {VICTIM: "live", ATTACKER: "invalid"}
    first_suggestion = key.suggestions[0]
    assert first_suggestion["host_id"] == VICTIM and ADMIN not in first_suggestion["commands"]
    assert any(s["host_id"] == ATTACKER for s in key.suggestions)  # shown, and marked with its host
    import io

    table_text = io.StringIO()
    write_table(report, table_text, details=True)
    replace_line = next(line for line in table_text.getvalue().splitlines() if "  replace with " in line)
    assert "web-victim" in replace_line and "administrator" not in replace_line
    assert ADMIN not in table_text.getvalue()


def test_an_instance_speaks_only_for_itself(table: str) -> None:
    forged = genuine(ec2_context(VICTIM, "web-victim"))  # the victim's own message, sent by another instance
    response, _ = deliver([(instance_sender(ATTACKER), forged)])
    assert len(response["batchItemFailures"]) == 1
    store = open_store(f"dynamodb://{table}", create=False)
    assert list(store.iter_findings()) == [] and list(store.iter_hosts()) == []


def test_first_sender_owns_a_host_and_others_are_refused(table: str) -> None:
    build = on_prem("build-01")
    owner, other = "AIDAONPREMOWNER000001", "AIDAONPREMOTHER000002"
    response, _ = deliver([(owner, genuine(build, 0)), (owner, beat(build, "2026-11-28T10:00:00Z"))])
    assert response == {"batchItemFailures": []}
    intrusion = [
        (other, genuine(build, 1)),
        (other, beat(build, "2026-11-28T12:00:00Z")),
        (other, genuine(ec2_context("i-0ccccccccccccccc3", "x"))),  # an instance id: never first-seen
        ("", genuine(on_prem("build-02"))),
    ]  # no SenderId at all
    response, _ = deliver(intrusion)
    assert len(response["batchItemFailures"]) == 4
    response, _ = deliver([(owner + ":session-2", genuine(build, 1))])  # the same principal, a new session
    assert response == {"batchItemFailures": []}
    store = open_store(f"dynamodb://{table}", create=False)
    assert {(r.host_id, r.sender) for r in store.iter_findings()} == {
        ("build-01", owner),
        ("build-01", owner + ":session-2"),
    }
    [host] = store.iter_hosts()
    assert host.last_heartbeat == "2026-11-28T10:00:00.000Z"  # the other sender's heartbeat was refused


def test_the_sender_map_binds_principals_to_host_patterns(table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SENDER_MAP_ENV, json.dumps({"principals": {"AIDABUILDFARM0000001": ["build-*"]}}))
    farm, stranger = "AIDABUILDFARM0000001", "AIDASTRANGER00000001"
    response, ids = deliver(
        [
            (farm, genuine(on_prem("build-07"))),  # allowed by its pattern
            (farm, genuine(on_prem("db-01"))),  # not one of its hosts
            (stranger, genuine(on_prem("build-09"))),  # reserved by the map for the farm
            (stranger, genuine(on_prem("db-02"))),  # unmapped: first seen
        ]
    )
    assert len(response["batchItemFailures"]) == 2
    store = open_store(f"dynamodb://{table}", create=False)
    assert {(r.host_id, r.sender) for r in store.iter_findings()} == {("build-07", farm), ("db-02", stranger)}


def test_a_spoofed_heartbeat_cannot_pin_coverage(table: str) -> None:
    now = datetime.now(UTC)
    three_days_ago = (now - timedelta(days=3)).isoformat(timespec="seconds").replace("+00:00", "Z")
    host = on_prem("batch-01")
    owner, other = "AIDABATCHOWNER000001", "AIDASPOOFER000000001"
    deliver([(owner, beat(host, three_days_ago))])
    response, _ = deliver([(other, beat(host, "9999-12-31T23:59:59Z"))])  # another sender: refused
    assert len(response["batchItemFailures"]) == 1
    store = open_store(f"dynamodb://{table}", create=False)
    [cov] = host_coverage(store.iter_hosts(), now=now).hosts
    assert cov.state == "silent"
    # from its own sender, a clock in the year 9999 counts as the queue's time: it is silent again a day later
    deliver([(owner, beat(host, "9999-12-31T23:59:59Z"))])
    [record] = store.iter_hosts()
    assert record.last_heartbeat is not None and record.last_heartbeat < "2027"
    assert host_coverage([record], now=now).hosts[0].state == "ok"
    assert host_coverage([record], now=now + timedelta(days=2)).hosts[0].state == "silent"
    # a store that holds a future heartbeat (filled before the collector clamped times) does not pin it either
    pinned = HostRecord.from_dict({**record.to_dict(), "last_heartbeat": "9999-12-31T23:59:59.000Z"})
    assert host_coverage([pinned], now=now).hosts[0].state == "silent"


# -- the long-polling collector: senders set by a proxy in front of moto -------------------------------------------


def _sender_by_host(body: str) -> str:
    """What SQS would say: an EC2 agent sends with its instance profile; a forged body says so in its sweep id."""
    message = json.loads(body)
    if message.get("suggestion", {}).get("summary", "").startswith("Grant"):
        return instance_sender(ATTACKER)
    host_id = message["host"]["host_id"]
    return instance_sender(host_id) if host_id.startswith("i-") else "AIDAONPREM" + host_id.upper().replace("-", "")


def test_collector_binds_senders_and_clamps_times(
    moto_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs = sqs_client()
    q = make_queues(sqs, max_receive=1, visibility=1)
    victim_report = genuine(ec2_context(VICTIM, "web-victim"))
    forged = the_attack()
    forged["host"] = ec2_context(VICTIM, "web-victim").to_dict()  # this time it claims the victim's host itself
    future = genuine(on_prem("build-03"))
    future["finding"]["verification"]["checked_at"] = "9999-01-01T00:00:00Z"
    send_bodies(sqs, q.url, [json.dumps(m) for m in (victim_report, forged, future)])
    with sender_proxy(moto_server.endpoint, _sender_by_host) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", proxy.endpoint)
        store = open_store(str(tmp_path / "fleet.db"))
        stats = Collector(
            CollectorConfig(queue_url=q.url, wait_seconds=1, once=True, visibility_timeout=1), store
        ).run()
        assert proxy.rewritten >= 3
    # clamped: the forged message's four times (sent, first and last seen, checked) and build-03's check
    assert (stats.stored, stats.rejected_sender, stats.clamped_times, stats.deleted) == (2, 1, 5, 2)
    records = {r.host_id: r for r in store.iter_findings()}
    assert records[VICTIM].status == "live" and records[VICTIM].sender == instance_sender(VICTIM)
    assert records["build-03"].verified_at < "2027" and records["build-03"].sender == "AIDAONPREMBUILD03"
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS")
    for _ in range(20):  # the forged message reaches the DLQ through the redrive policy
        if counts(sqs, q.dlq_url)[0]:
            break
        time.sleep(0.5)
        sqs.receive_message(QueueUrl=q.url, WaitTimeSeconds=0)
    [dead] = drain_bodies(sqs, q.dlq_url)
    assert json.loads(dead)["message_id"] == forged["message_id"]


@pytest.mark.parametrize("backend", ["sqlite", "dynamodb"])
def test_two_collectors_at_once_one_first_sender_wins(
    backend: str, moto_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs = sqs_client()
    q = make_queues(sqs, visibility=30)
    contested = on_prem("shared-01")
    bodies = []
    for i in range(20):  # two principals race to be the first to speak for one new host id
        m = beat(contested, f"2026-11-28T10:{i:02d}:00Z")
        m["sweep"]["sweep_id"] = f"{'left' if i % 2 else 'right'}-{i}"
        bodies.append(json.dumps(m))
    send_bodies(sqs, q.url, bodies)

    def sender(body: str) -> str:
        return (
            "AIDALEFT000000000001"
            if json.loads(body)["sweep"]["sweep_id"].startswith("left")
            else "AIDARIGHT00000000001"
        )

    db = str(tmp_path / "fleet.db") if backend == "sqlite" else f"dynamodb://race-{uuid.uuid4().hex[:8]}"
    open_store(db).close()
    results = []
    with sender_proxy(moto_server.endpoint, sender) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", proxy.endpoint)

        def run() -> None:
            store = open_store(db)
            try:
                cfg = CollectorConfig(queue_url=q.url, wait_seconds=1, once=True, max_messages=3)
                results.append(Collector(cfg, store).run())
            finally:
                store.close()

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(r.received for r in results) >= 20
    stored = sum(r.stored + r.duplicates for r in results)
    rejected = sum(r.rejected_sender for r in results)
    assert (stored, rejected) == (10, 10)  # exactly one principal's ten, whichever claimed the host first
    store = open_store(db)
    [host] = store.iter_hosts()
    assert host.sender in ("AIDALEFT000000000001", "AIDARIGHT00000000001")
    winner = host.sender.startswith("AIDALEFT")
    assert host.last_sweep and host.last_sweep["sweep_id"].startswith("left" if winner else "right")


# -- the pieces ----------------------------------------------------------------------------------------------------


def test_handler_without_a_queue_applies_directly_but_clamps_to_now(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "fleet.db"))
    future = genuine(on_prem("local-01"), sent_at="9999-12-31T23:59:59Z")
    result = MessageHandler(store).handle(json.dumps(future))
    assert (result.outcome, result.clamped) == (Outcome.OK, 2)
    [rec] = store.iter_findings()
    assert rec.sender is None and rec.last_seen < "2027"
    refused = MessageHandler(store).handle(json.dumps(genuine(on_prem("local-01"))), Origin("", rec.last_seen))
    assert refused.outcome is Outcome.REJECTED and refused.reason == "the queue gave no SenderId"


def test_sender_map_file_is_checked(tmp_path: Path) -> None:
    good = tmp_path / "senders.yaml"
    good.write_text(
        "principals:\n  AIDAX: [build-*, db-1]\n  'AROAY:*': web-1\ninstance_roles: [AROAZZZZZZZZZZZZZZZZ]\n"
        "unmapped: reject\n"
    )
    senders = SenderMap.load(good)
    assert senders.principals == {"AIDAX": ("build-*", "db-1"), "AROAY:*": ("web-1",)}
    assert senders.bind("AROAY:task-1", "web-1").owner == "AROAY"
    assert senders.bind("AROAOTHER:i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa1").reason  # not an instance role
    assert senders.bind("AROAZZZZZZZZZZZZZZZZ:i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa1").authoritative
    assert senders.bind("AIDANEW", "anything").reason == "sender AIDANEW is not in the sender map"
    # pods on an EC2 node that send with the node's instance profile: the map gives the node role their host ids
    nodes = SenderMap.from_mapping({"principals": {"AROANODEROLE00000001": ["kube-system/*"]}}, source="test")
    node = "AROANODEROLE00000001:i-0ddddddddddddddd4"
    assert nodes.bind(node, "kube-system/keysweep-abcde").authoritative
    assert nodes.bind(node, "i-0ddddddddddddddd4").authoritative  # the node itself still speaks for itself
    assert nodes.bind(node, "default/web").reason and nodes.bind(node, "i-0eeeeeeeeeeeeeee5").reason
    assert SenderMap().bind(node, "kube-system/keysweep-abcde").reason  # without the map: its own id only
    for text, problem in [
        ("principals: [a]", "principals must map"),
        ("unmapped: maybe", "unmapped must be"),
        ("principals: {AIDAX: []}", "expected a list"),
        ("extra: 1", "unknown key"),
        ("principals: {AIDAX: [x]}\ninstance_roles: AROA", "instance_roles must be"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=problem):
            SenderMap.load(bad)
    with pytest.raises(ConfigError, match="not valid JSON"):
        SenderMap.from_json("{principals")


def test_version_1_sqlite_store_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    store = open_store(str(path))
    store.upsert_finding(genuine(on_prem("old-01")))
    [stored] = store.iter_findings()
    store.close()
    with sqlite3.connect(path) as db:  # the version-1 layout: findings keyed by the agent's fingerprint alone
        db.execute("DROP TABLE findings")
        db.execute("DROP TABLE exemplars")
        db.execute(
            "CREATE TABLE findings (finding_fingerprint TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, "
            "key_id TEXT NOT NULL, account_id TEXT, host_id TEXT NOT NULL, status TEXT, "
            "last_seen TEXT NOT NULL, data TEXT NOT NULL)"
        )
        db.execute("CREATE INDEX findings_key_id ON findings (key_id)")
        db.execute(
            "INSERT INTO findings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stored.finding_fingerprint,
                stored.fingerprint,
                stored.key_id,
                stored.account_id,
                stored.host_id,
                stored.status,
                stored.last_seen,
                json.dumps(stored.to_dict()),
            ),
        )
        db.execute("DROP TABLE host_owners")
        db.execute("UPDATE meta SET value = '1' WHERE name = 'schema_version'")
    store = open_store(str(path))
    [old] = store.iter_findings()
    assert store.upsert_finding(genuine(on_prem("new-01"))) is True
    same_place_other_host = genuine(on_prem("new-02"))
    same_place_other_host["finding"]["finding_fingerprint"] = old.finding_fingerprint
    assert store.upsert_finding(same_place_other_host) is True  # no longer overwrites the old host's record
    assert sorted(r.host_id for r in store.iter_findings()) == ["new-01", "new-02", "old-01"]
    assert store.get_finding("old-01", old.finding_fingerprint) == old


def test_report_of_hosts_that_disagree_takes_the_most_urgent_word() -> None:
    def record(host: str, status: str, checked: str, arn: str | None, summary: str) -> Any:
        from keysweep.central.records import merge_finding

        m = genuine(on_prem(host))
        m["finding"]["verification"] = {
            **m["finding"]["verification"],
            "status": status,
            "checked_at": checked,
            "arn": arn,
        }
        m["suggestion"]["summary"] = summary
        return merge_finding(None, m, Origin(f"AIDA{host.upper()}", checked))

    recs = [
        record("a", "live", "2026-11-28T10:00:00Z", LIVE.arn, "from a"),
        record("b", "live", "2026-11-28T11:00:00Z", LIVE.arn, "from b"),
        record("c", "invalid", "2026-11-28T12:00:00Z", "arn:aws:iam::123456789012:user/other", "from c"),
    ]
    [key] = build_report(recs, []).keys
    assert key.status == "live" and key.owner_arn == LIVE.arn and key.verified_at == "2026-11-28T11:00:00.000Z"
    assert [s["summary"] for s in key.suggestions] == ["from a", "from b", "from c"]
    assert [s["host_id"] for s in key.suggestions] == ["a", "b", "c"]
    [key] = build_report(recs[2:], []).keys  # a host's own newer word does change what it says
    assert key.status == "invalid"


def test_cli_collect_takes_the_sender_map(
    moto_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from keysweep.cli import main

    from tests.support.central import MOTO_SENDER

    sqs = sqs_client()
    q = make_queues(sqs)
    send_bodies(sqs, q.url, [json.dumps(genuine(on_prem("build-01"))), json.dumps(genuine(on_prem("db-01")))])
    senders = tmp_path / "senders.yaml"
    senders.write_text(f"principals:\n  {MOTO_SENDER}: [build-*]\n")
    db = str(tmp_path / "fleet.db")
    args = ["collect", "--queue-url", q.url, "--db", db, "--once", "--wait-seconds", "0", "--visibility-timeout", "1"]
    assert main([*args, "--senders", str(senders)]) == 0
    err = capsys.readouterr().err
    assert "stored=1 " in err and "rejected_sender=1 " in err
    assert [r.host_id for r in open_store(db).iter_findings()] == ["build-01"]
    senders.write_text("principals: nonsense\n")
    assert main([*args, "--senders", str(senders)]) == 2
    assert "principals must map" in capsys.readouterr().err


def test_the_audit_takes_the_same_word_for_a_key_on_hosts() -> None:
    from keysweep.central.audit import correlate
    from keysweep.central.records import merge_finding

    victim = genuine(ec2_context(VICTIM, "web-victim"), sent_at="2026-11-28T10:00:00Z")
    forged = the_attack()
    forged["sent_at"] = forged["finding"]["last_seen"] = forged["finding"]["first_seen"] = "2026-11-28T11:00:00Z"
    forged["finding"]["verification"]["checked_at"] = "2026-11-28T11:00:00Z"  # newer, but another host's word
    records = [
        merge_finding(None, victim, Origin(instance_sender(VICTIM), "2026-11-28T10:00:00.000Z")),
        merge_finding(None, forged, Origin(instance_sender(ATTACKER), "2026-11-28T11:00:00.000Z")),
    ]
    [host_key], _ = correlate(records, [], {})
    assert host_key.fleet_status == "live"


# -- a batch's claims: in the batch's own transaction ---------------------------------------------------------------


def _queued(sender: str, message: dict[str, Any]) -> tuple[str, Origin]:
    return json.dumps(message), Origin(sender, "2026-11-28T12:00:00.000Z")


def test_a_batch_claims_its_new_hosts_in_its_one_commit(tmp_path: Path) -> None:
    import sqlite3

    store = open_store(str(tmp_path / "fleet.db"))
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)  # SQLite's own statement trace
    owner = "AIDAONPREMOWNER000001"
    batch = [_queued(instance_sender(VICTIM), genuine(ec2_context(VICTIM, "web-victim")))]
    batch += [_queued(owner, genuine(on_prem(f"build-{n:02d}"))) for n in range(3)]
    batch += [_queued("AIDASPOOFER000000001", beat(on_prem("build-01"), "2026-11-28T11:00:00Z"))]
    results = MessageHandler(store).handle_batch(batch)
    assert [r.outcome for r in results] == [Outcome.OK] * 4 + [Outcome.REJECTED]
    assert statements.count("COMMIT") == 1 and statements.count("BEGIN IMMEDIATE") == 1
    store.close()
    with sqlite3.connect(tmp_path / "fleet.db") as db:
        owners = dict(db.execute("SELECT host_id, sender FROM host_owners"))
    assert owners == {VICTIM: instance_sender(VICTIM), **{f"build-{n:02d}": owner for n in range(3)}}


def test_a_failed_batch_claims_nothing_and_its_collector_trusts_no_claim_of_it(tmp_path: Path) -> None:
    """The batch's store write fails after its new host was claimed: the claim is rolled back with the batch, so
    another collector's sender may claim that host first, and the first collector (whose claim never counted) then
    refuses the sender it would have cached."""
    import sqlite3

    path = tmp_path / "fleet.db"
    first, second = MessageHandler(open_store(str(path))), MessageHandler(open_store(str(path)))
    mine, theirs = "AIDAONPREMFIRST00001", "AIDAONPREMSECOND0001"
    with sqlite3.connect(path) as db:  # the disk fills up as the first batch writes its finding
        db.execute("CREATE TRIGGER full BEFORE INSERT ON findings BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(StoreError, match="disk full"):
        first.handle_batch([_queued(mine, genuine(on_prem("build-09")))])
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM host_owners").fetchone() == (0,)
        db.execute("DROP TRIGGER full")
    [taken] = second.handle_batch([_queued(theirs, genuine(on_prem("build-09")))])
    assert taken.outcome is Outcome.OK
    [refused] = first.handle_batch([_queued(mine, genuine(on_prem("build-09"), 1))])
    assert refused.outcome is Outcome.REJECTED and theirs in (refused.reason or "")
    assert {r.sender for r in open_store(str(path)).iter_findings()} == {theirs}
