"""Verification that keeps the evidence: each check's time and STS request id travel to the fleet store, and
``verify.mode: identify`` learns a key's account without ever signing with it (liveness then comes from IAM)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from keysweep.central.store import open_store
from keysweep.cli import main
from keysweep.verify import Verifier, request_id

from tests.support.central import make_queues, sqs_client
from tests.support.moto_server import MotoServer
from tests.support.recording_proxy import RecordingProxy, recording_proxy
from tests.support.sts_stub import identity, running_stub, sts_error
from tests.support.verify_findings import FAST, FINGERPRINTER, MADE_UP_KEY, MADE_UP_SECRET, MOTO_ACCOUNT, finding

REQUEST_ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"


@dataclass(frozen=True)
class Fleet:
    queue_url: str
    found_key: str
    found_secret: str
    proxy: RecordingProxy  # every AWS request of keysweep (STS, SQS, IAM) passes through it

    def signed_with(self, key_id: str) -> list[Any]:
        return [r for r in self.proxy.snapshot() if f"Credential={key_id}/" in r.headers.get("Authorization", "")]


@pytest.fixture
def fleet(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    """A key of user found-svc to plant on a host; keysweep runs as its own IAM user (auth on), through a proxy."""
    iam = boto3.client("iam")
    iam.create_user(UserName="found-svc")
    found = iam.create_access_key(UserName="found-svc")["AccessKey"]
    iam.create_user(UserName="keysweep")
    admin = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="keysweep", PolicyName="all", PolicyDocument=json.dumps(admin))
    own = iam.create_access_key(UserName="keysweep")["AccessKey"]
    queue_url = make_queues(sqs_client()).url
    moto_server.enable_auth()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", own["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", own["SecretAccessKey"])
    with recording_proxy(moto_server.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        yield Fleet(queue_url, found["AccessKeyId"], found["SecretAccessKey"], proxy)


def _plant(tmp_path: Path, fleet: Fleet) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "app.env").write_text(f"AWS_ACCESS_KEY_ID={fleet.found_key}\nAWS_SECRET_ACCESS_KEY={fleet.found_secret}\n")
    (tree / "settings.py").write_text(
        f'aws_access_key_id = "{MADE_UP_KEY}"\naws_secret_access_key = "{MADE_UP_SECRET}"\n'
    )
    return tree


def _scan_and_collect(tmp_path: Path, fleet: Fleet, *verify: str, capsys: pytest.CaptureFixture[str]) -> dict:
    tree = _plant(tmp_path, fleet)
    out = tmp_path / "scan.json"
    code = main(
        [
            "scan",
            str(tree),
            *verify,
            "--queue-url",
            fleet.queue_url,
            "--state-dir",
            str(tmp_path / "state"),
            "--format",
            "json",
            "--output",
            str(out),
        ]
    )
    assert code == 1, capsys.readouterr().err
    db = tmp_path / "fleet.db"
    assert main(["collect", "--queue-url", fleet.queue_url, "--db", str(db), "--once", "--wait-seconds", "0"]) == 0
    capsys.readouterr()
    store = open_store(str(db))
    try:
        return {r.key_id: r for r in store.iter_findings()}
    finally:
        store.close()


@pytest.mark.timeout(180)
def test_sign_mode_time_and_request_id_reach_the_store(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = _scan_and_collect(tmp_path, fleet, "--verify", capsys=capsys)
    live, invalid = records[fleet.found_key], records[MADE_UP_KEY]
    assert (live.status, invalid.status) == ("live", "invalid")
    # the request ids are the ones STS answered: each names one request signed with that key
    signed = {k: fleet.signed_with(k) for k in (fleet.found_key, MADE_UP_KEY)}
    assert all(len(reqs) == 1 for reqs in signed.values())
    for rec in (live, invalid):
        ver = rec.verification
        assert ver["checked_at"] and rec.verified_at
        assert isinstance(ver["request_id"], str) and re.fullmatch(REQUEST_ID, ver["request_id"])
        (entry,) = rec.verification_history
        assert entry["request_id"] == ver["request_id"] and entry["at"] == rec.verified_at
    assert live.verification["request_id"] != invalid.verification["request_id"]


@pytest.mark.timeout(240)
def test_identify_mode_never_signs_with_the_found_key_and_iam_says_it_is_active(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = _scan_and_collect(tmp_path, fleet, "--verify-mode", "identify", capsys=capsys)
    assert fleet.proxy.snapshot(), "keysweep's own requests (SQS) went through the proxy"
    for key in (fleet.found_key, MADE_UP_KEY):
        assert fleet.signed_with(key) == []
        ver = records[key].verification
        assert (ver["status"], ver["reason"], ver.get("request_id")) == ("skipped", "identify-only", None)
    assert records[fleet.found_key].verification["account"] == MOTO_ACCOUNT  # decoded from the key id, offline
    assert not any(b"GetCallerIdentity" in r.body for r in fleet.proxy.snapshot())

    # IAM never saw the key used, and the audit reads its liveness from IAM: active, on a host, never used
    used = (
        boto3.session.Session().client("iam").get_access_key_last_used(AccessKeyId=fleet.found_key)["AccessKeyLastUsed"]
    )
    assert "LastUsedDate" not in used
    assert main(["audit", "--format", "json", "--db", str(tmp_path / "fleet.db")]) in (0, 1)
    doc = json.loads(capsys.readouterr().out)
    (item,) = [i for i in doc["items"] if i["check"] == "key-on-hosts" and i["key_id"] == fleet.found_key]
    assert item["details"]["iam_status"] == "Active" and item["details"]["fleet_status"] == "skipped"
    assert "last used never" in item["summary"] and item["user"] == "found-svc"
    assert fleet.signed_with(fleet.found_key) == []


@pytest.mark.timeout(60)
def test_identify_mode_old_key_id_asks_the_account_as_keysweep_itself(emulator: Any, monkeypatch) -> None:
    from tests.support.verify_findings import OLD_FORMAT_KEY

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", emulator.agent.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", emulator.agent.secret)
    verifier = Verifier(dataclasses.replace(FAST, mode="identify"), state_dir=None, fingerprinter=FINGERPRINTER)
    old, new = verifier.verify_all(
        [finding(OLD_FORMAT_KEY, MADE_UP_SECRET), finding(emulator.alice.key_id, emulator.alice.secret)]
    )
    assert (old.verification.status, old.verification.reason, old.account_id) == (
        "skipped",
        "identify-only",
        MOTO_ACCOUNT,
    )
    assert (new.verification.status, new.verification.reason) == ("skipped", "identify-only")
    sent = emulator.proxy.snapshot()
    assert len(sent) == 1 and b"Action=GetAccessKeyInfo" in sent[0].body
    assert f"Credential={emulator.agent.key_id}/" in sent[0].headers["Authorization"]
    assert not emulator.requests_with(OLD_FORMAT_KEY) and not emulator.requests_with(emulator.alice.key_id)
    # a restored finding (no secret in memory) is answered from what is known, with no request
    restored = dataclasses.replace(old.without_secret(), verification=None)
    assert verifier.known(restored) == old.verification
    assert verifier.known(dataclasses.replace(new.without_secret(), verification=None)) == new.verification
    assert len(emulator.proxy.snapshot()) == 1


@pytest.mark.timeout(30)
def test_request_id_of_answers_and_of_sts_errors() -> None:
    config = dataclasses.replace(FAST, same_key_spacing=0.0, max_concurrency=1)  # replies in order
    with running_stub(
        identity("210987654321", "arn:aws:iam::210987654321:user/deploy", "AIDAEXAMPLE"),
        sts_error("InvalidClientTokenId"),
    ) as stub:
        verifier = Verifier(
            dataclasses.replace(config, endpoint=stub.endpoint), state_dir=None, fingerprinter=FINGERPRINTER
        )
        live, invalid = verifier.verify_all(
            [finding(MADE_UP_KEY, MADE_UP_SECRET), finding("AKIAQQQQRRRRSSSSTTT3", MADE_UP_SECRET)]
        )
    assert (live.verification.status, live.verification.request_id) == ("live", "0d1c2b3a-0000-4000-8000-000000000001")
    assert (invalid.verification.status, invalid.verification.request_id) == (
        "invalid",
        "0d1c2b3a-0000-4000-8000-000000000000",
    )
    assert live.to_dict()["verification"]["request_id"] == "0d1c2b3a-0000-4000-8000-000000000001"
    # a value that is not a request id (a proxy's junk header) is dropped rather than sent to the fleet
    meta = {"ResponseMetadata": {"HTTPHeaders": {"x-amzn-requestid": "<script>" + "x" * 300}}}
    assert request_id(meta) is None
    assert request_id({"ResponseMetadata": {"HTTPHeaders": {"x-amzn-requestid": "abc-123"}}}) == "abc-123"


def test_history_runs_keep_the_request_ids_of_their_ends_in_any_order() -> None:
    from itertools import permutations

    from keysweep.central.records import _history_entry, insert_history

    seen = [
        ("live", "2026-11-28T10:00:00Z", "r1"),
        ("live", "2026-11-28T11:00:00Z", "r2"),
        ("invalid", "2026-11-28T12:00:00Z", "r3"),
        ("live", "2026-11-28T13:00:00Z", "r4"),
        ("live", "2026-11-28T14:00:00Z", "r5"),
    ]
    rid_at = {at: rid for _, at, rid in seen}
    for order in permutations(seen):
        history: tuple[dict[str, Any], ...] = ()
        for status, at, rid in order:
            history = insert_history(history, _history_entry({"status": status, "request_id": rid}, at))
        # whichever observations a late delivery leaves at a run's ends, the ids are those of the ends' requests
        for e in history:
            assert (e["request_id"], e["last_request_id"]) == (rid_at[e["at"]], rid_at[e["last_at"]]), order
        if order == tuple(seen):
            assert [(e["request_id"], e["last_request_id"]) for e in history] == [
                ("r1", "r2"),
                ("r3", "r3"),
                ("r4", "r5"),
            ]


@pytest.mark.timeout(120)
def test_config_mode_identify_and_the_command_line_overrides_it(
    emulator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "app.env").write_text(
        f"AWS_ACCESS_KEY_ID={emulator.alice.key_id}\nAWS_SECRET_ACCESS_KEY={emulator.alice.secret}\n"
    )
    config = tmp_path / "agent.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nverify:\n  mode: identify\n")  # never the host's own

    def scan(*extra: str) -> dict:
        assert main(["scan", str(tmp_path / "app.env"), "--config", str(config), "--format", "json", *extra]) == 1
        (rec,) = json.loads(capsys.readouterr().out)["findings"]
        return rec["verification"]

    assert (scan("--verify")["reason"], emulator.requests_with(emulator.alice.key_id)) == ("identify-only", [])
    assert scan("--verify-mode", "sign")["status"] == "live"
    assert len(emulator.requests_with(emulator.alice.key_id)) == 1
