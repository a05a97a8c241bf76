"""keysweep trail: IAM and EC2 in moto, CloudTrail's LookupEvents from a scripted loopback server (moto does not
implement it), the fleet from a real SQLite store."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from keysweep.central.handler import MessageHandler, Outcome
from keysweep.central.store import open_store
from keysweep.cli import main
from keysweep.context import detect_context
from keysweep.models import HostContext
from keysweep.report.message import encode_message, heartbeat_message
from keysweep.stage_config import ContextConfig

from tests.support import messages as M
from tests.support.accounts import client_in, member_account
from tests.support.cloudtrail_server import CloudTrailServer, cloudtrail_server
from tests.support.metadata_server import Instance, closed_endpoint, imds_server
from tests.support.moto_server import MotoServer

pytestmark = pytest.mark.timeout(180)

ACCOUNT = "123456789012"
OUTSIDE = "81.2.69.160"
CLI = "aws-cli/2.15.0 Python/3.11 Linux"
OWN = "Boto3/1.40 md/Botocore#1.40 keysweep/0.1.0"


@pytest.fixture
def trail(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[CloudTrailServer]:
    with cloudtrail_server(page_size=2) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDTRAIL", server.endpoint)
        yield server


def keys_of(user: str, n: int = 1) -> list[str]:
    iam = boto3.client("iam")
    iam.create_user(UserName=user)
    return [iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"] for _ in range(n)]


def run_trail(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["trail", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_each_key_gets_its_sources_and_verdict(
    trail: CloudTrailServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ec2 = boto3.client("ec2")
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    with_agent, without_agent = (
        ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0] for _ in range(2)
    )
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    lambda_eni = ec2.create_network_interface(SubnetId=subnet, Description="AWS Lambda VPC ENI-billing-4f2a")[
        "NetworkInterface"
    ]
    db = str(tmp_path / "fleet.db")
    store = open_store(db)
    store.record_heartbeat(M.heartbeat_message(host_info=M.host(with_agent["InstanceId"], "web-1")))
    store.close()

    fleet_key, gap_key = keys_of("alice", 2)
    (outside_key,) = keys_of("bob")
    (unused_key,) = keys_of("carol")
    (verified_key,) = keys_of("dave")
    now = time.time()
    trail.add_event(fleet_key, ip=with_agent["PrivateIpAddress"], user_agent=CLI, at=now - 3600)
    for i in range(3):  # three events: two pages
        trail.add_event(gap_key, ip=without_agent["PrivateIpAddress"], user_agent=CLI, at=now - 7200 - i)
    trail.add_event(gap_key, ip=lambda_eni["PrivateIpAddress"], user_agent="Boto3/1.34", at=now - 60)
    trail.add_event(gap_key, ip="cloudformation.amazonaws.com", user_agent="cloudformation.amazonaws.com", at=now - 30)
    trail.add_event(outside_key, ip=OUTSIDE, user_agent=CLI, at=now - 86400 * 3, source="sts.amazonaws.com")
    trail.add_event(outside_key, ip=OUTSIDE, user_agent=OWN, at=now - 10, source="sts.amazonaws.com")
    trail.add_event(verified_key, ip=OUTSIDE, user_agent=OWN, at=now - 10, source="sts.amazonaws.com")
    trail.add_event(unused_key, ip=OUTSIDE, user_agent=CLI, at=now - 86400 * 40)  # older than --days 30

    code, out, err = run_trail(capsys, "--days", "30", "--region", "us-east-1", "--db", db, "--format", "json")
    assert code == 1, err
    doc = json.loads(out)
    assert list(doc) == ["keys"]
    keys = {k["key_id"]: k for k in doc["keys"]}
    for k in doc["keys"]:
        assert list(k) == ["key_id", "user", "account", "verdict", "sources"]
        for s in k["sources"]:
            assert list(s) == ["ip", "user_agents", "resource", "kind", "first", "last", "events"]
    assert (keys[fleet_key]["user"], keys[fleet_key]["account"]) == ("alice", ACCOUNT)
    assert keys[fleet_key]["verdict"] == "in-use-by-fleet-host"
    (src,) = keys[fleet_key]["sources"]
    assert (src["ip"], src["kind"], src["resource"], src["events"], src["user_agents"]) == (
        with_agent["PrivateIpAddress"],
        "fleet-host",
        with_agent["InstanceId"],
        1,
        [CLI],
    )

    gap = keys[gap_key]
    assert gap["verdict"] == "in-use-by-compute-without-agent"
    by_ip = {s["ip"]: s for s in gap["sources"]}
    assert (
        by_ip[without_agent["PrivateIpAddress"]]["kind"],
        by_ip[without_agent["PrivateIpAddress"]]["resource"],
        by_ip[without_agent["PrivateIpAddress"]]["events"],
    ) == ("ec2-instance", without_agent["InstanceId"], 3)
    assert by_ip[lambda_eni["PrivateIpAddress"]]["kind"] == "lambda"
    assert by_ip[lambda_eni["PrivateIpAddress"]]["resource"] == "AWS Lambda VPC ENI-billing-4f2a"
    assert by_ip["cloudformation.amazonaws.com"]["kind"] == "aws-service"
    first = by_ip[without_agent["PrivateIpAddress"]]
    assert first["first"] < first["last"]

    (out_src,) = keys[outside_key]["sources"]  # keysweep's own call is not a source
    assert keys[outside_key]["verdict"] == "in-use-outside-aws" and out_src["kind"] == "outside-aws"
    assert out_src["resource"] is None and out_src["events"] == 1
    assert keys[verified_key]["verdict"] == "used-only-by-keysweep" and keys[verified_key]["sources"] == []
    assert keys[unused_key]["verdict"] == "unused"
    assert "2 events of keysweep's own calls not counted as use" in err

    # every lookup was by one access key id, asked for the last 30 days, signed with the caller's key
    assert {r.attributes[0]["AttributeKey"] for r in trail.requests} == {"AccessKeyId"}
    assert all(abs(float(r.start) - (now - 30 * 86400)) < 120 for r in trail.requests)
    assert len(trail.requests) == 7  # five keys, one of them with five events: three pages of two


def test_lookups_are_paced_per_account_and_region(trail: CloudTrailServer, capsys: pytest.CaptureFixture[str]) -> None:
    ids = keys_of("alice", 2) + keys_of("bob", 2)
    code, _, err = run_trail(capsys, "--region", "us-east-1", "eu-west-1", "--format", "json")
    assert code == 0, err
    for region in ("us-east-1", "eu-west-1"):
        times = [r.at for r in trail.requests if r.region == region]
        assert len(times) == len(ids)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= 0.45, gaps  # at most 2 requests per second
    # the regions are paced apart, not one after the other: their lookups overlap in time
    east = [r.at for r in trail.requests if r.region == "us-east-1"]
    west = [r.at for r in trail.requests if r.region == "eu-west-1"]
    assert min(west) < max(east) and min(east) < max(west)


def test_throttled_lookups_back_off_and_a_failing_region_is_a_skip(
    trail: CloudTrailServer, capsys: pytest.CaptureFixture[str]
) -> None:
    (key,) = keys_of("alice")
    trail.add_event(key, ip=OUTSIDE, user_agent=CLI, at=time.time() - 60)
    trail.errors = ["ThrottlingException"]
    code, out, err = run_trail(capsys, "--region", "us-east-1", "--format", "json")
    assert code == 1, err
    assert json.loads(out)["keys"][0]["verdict"] == "in-use-outside-aws"
    trail.errors = ["AccessDeniedException"]
    code, out, err = run_trail(capsys, "--region", "us-east-1", "--format", "csv")
    assert code == 0
    assert "skipped: cloudtrail in 123456789012 us-east-1: AccessDeniedException (LookupEvents)" in err
    lines = out.splitlines()
    assert lines[0] == "key_id,user,account,verdict,ip,kind,resource,user_agents,first,last,events"
    assert lines[1].startswith(f"{key},alice,{ACCOUNT},unused,")


def test_print_query_and_usage(trail: CloudTrailServer, capsys: pytest.CaptureFixture[str]) -> None:
    (key,) = keys_of("alice")
    code, out, _ = run_trail(
        capsys, "--print-query", "--trail-table", "cloudtrail.org_trail", "--days", "365", "--region", "us-east-1"
    )
    assert code == 0 and trail.requests == []
    assert "FROM cloudtrail.org_trail" in out and f"IN ('{key}')" in out and "GROUP BY 1, 2, 3, 4" in out
    assert main(["trail", "--days", "120"]) == 2
    assert main(["trail", "--athena-workgroup", "primary"]) == 2
    assert main(["trail", "--print-query", "--trail-table", "x; DROP TABLE y"]) == 2


def test_athena_runs_the_query_over_the_trail_table(
    trail: CloudTrailServer, moto_server: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import urllib.request

    (key,) = keys_of("alice")
    (quiet,) = keys_of("bob")
    header = ["key_id", "ip", "user_agent", "event_source", "events", "first", "last"]
    rows = [
        header,
        [key, OUTSIDE, CLI, "s3.amazonaws.com", "41", "2026-03-01T10:00:00Z", "2026-11-30T09:00:00Z"],
        [key, OUTSIDE, OWN, "sts.amazonaws.com", "2", "2026-11-30T10:00:00Z", "2026-11-30T10:00:00Z"],
    ]
    body = {"results": [{"rows": [{"Data": [{"VarCharValue": v} for v in r]} for r in rows]}]}
    req = urllib.request.Request(
        f"{moto_server.endpoint}/moto-api/static/athena/query-results",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=10).close()

    code, out, err = run_trail(
        capsys,
        "--athena-workgroup",
        "primary",
        "--trail-table",
        "cloudtrail.org_trail",
        "--days",
        "365",
        "--region",
        "us-east-1",
        "--format",
        "json",
    )
    assert code == 1, err
    assert trail.requests == []  # no LookupEvents: the trail table answers
    keys = {k["key_id"]: k for k in json.loads(out)["keys"]}
    (src,) = keys[key]["sources"]
    assert (src["ip"], src["events"], src["first"], src["last"], src["kind"]) == (
        OUTSIDE,
        41,
        "2026-03-01T10:00:00Z",
        "2026-11-30T09:00:00Z",
        "outside-aws",
    )
    assert keys[key]["verdict"] == "in-use-outside-aws" and keys[quiet]["verdict"] == "unused"
    athena = boto3.client("athena")
    (qid,) = athena.list_query_executions(WorkGroup="primary")["QueryExecutionIds"]
    sql = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Query"]
    assert "FROM cloudtrail.org_trail" in sql and key in sql and quiet in sql


def test_organization_reads_each_accounts_keys_with_its_own_role(
    trail: CloudTrailServer, capsys: pytest.CaptureFixture[str]
) -> None:
    member = member_account("m")
    member_iam = client_in(member, "iam")
    member_iam.create_user(UserName="ci")
    member_key = member_iam.create_access_key(UserName="ci")["AccessKey"]["AccessKeyId"]
    (own_key,) = keys_of("alice")
    trail.add_event(member_key, ip=OUTSIDE, user_agent=CLI, at=time.time() - 60)

    code, out, err = run_trail(
        capsys, "--organization", "--role-name", "Audit", "--region", "us-east-1", "--format", "json"
    )
    assert code == 1, err
    keys = {k["key_id"]: k for k in json.loads(out)["keys"]}
    assert (keys[member_key]["account"], keys[member_key]["user"], keys[member_key]["verdict"]) == (
        member,
        "ci",
        "in-use-outside-aws",
    )
    assert (keys[own_key]["account"], keys[own_key]["verdict"]) == (ACCOUNT, "unused")
    signers = {r.attributes[0]["AttributeValue"]: r.signer for r in trail.requests}
    assert signers[own_key] == "testing" and signers[member_key] not in ("testing", "")  # the assumed role's key


def _agent_body(context: HostContext) -> str:
    """The heartbeat body an agent with ``context`` puts on the queue."""
    msg = heartbeat_message(
        context, stats=None, findings=[], started_at=time.time() - 5, finished_at=time.time(), spool={}
    )
    return encode_message(msg, 256 * 1024)


@pytest.mark.parametrize("backend", ["sqlite", "dynamodb"])
def test_agents_reported_addresses_name_the_fleet_host(
    trail: CloudTrailServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    ec2 = boto3.client("ec2")
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    without_agent = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]
    contexts = ContextConfig(imds_timeout=0.5, machine_id_path=str(tmp_path / "absent"))
    # an on-premises agent: this machine's own interface addresses, as the agent detects them
    on_prem = detect_context(replace(contexts, imds_endpoint=closed_endpoint()), environ={})
    if not on_prem.addresses:
        pytest.skip("this machine has no address but loopback and link-local ones")
    # an agent on an instance of another account: its public address from IMDS
    with imds_server(Instance(instance_id="i-0feed0000000000ab", public_ipv4="54.170.12.34")) as imds:
        elsewhere = detect_context(replace(contexts, imds_endpoint=imds.endpoint), environ={})
    elsewhere = replace(elsewhere, addresses=())  # one machine plays both agents: keep its interfaces to one
    # an office host that happens to use the private address of the account's instance without an agent
    office = replace(
        on_prem, host_id="machine-office", hostname="office-1", addresses=(without_agent["PrivateIpAddress"],)
    )
    db = str(tmp_path / "fleet.db") if backend == "sqlite" else f"dynamodb://fleet-{tmp_path.name[-20:]}"
    store = open_store(db)
    handler = MessageHandler(store)
    for ctx in (on_prem, elsewhere, office):
        assert handler.handle(_agent_body(ctx)).outcome is Outcome.OK
    stored = {h.host_id: h.host for h in store.iter_hosts()}
    store.close()
    assert stored[on_prem.host_id]["addresses"] == list(on_prem.addresses)
    assert stored["i-0feed0000000000ab"]["public_ip"] == "54.170.12.34"

    on_prem_key, elsewhere_key, gap_key = keys_of("alice", 2) + keys_of("bob")
    now = time.time()
    trail.add_event(on_prem_key, ip=on_prem.addresses[0], user_agent=CLI, at=now - 600)
    trail.add_event(elsewhere_key, ip="54.170.12.34", user_agent=CLI, at=now - 600)
    trail.add_event(gap_key, ip=without_agent["PrivateIpAddress"], user_agent=CLI, at=now - 600)

    code, out, err = run_trail(capsys, "--region", "us-east-1", "--format", "json")
    assert code == 1, err
    without_db = {k["key_id"]: k for k in json.loads(out)["keys"]}
    assert without_db[elsewhere_key]["verdict"] == "in-use-outside-aws"  # what the store's addresses change

    code, out, err = run_trail(capsys, "--region", "us-east-1", "--db", db, "--format", "json")
    assert code == 1, err
    keys = {k["key_id"]: k for k in json.loads(out)["keys"]}
    assert keys[on_prem_key]["verdict"] == "in-use-by-fleet-host"
    assert [(s["kind"], s["resource"]) for s in keys[on_prem_key]["sources"]] == [("fleet-host", on_prem.host_id)]
    assert keys[elsewhere_key]["verdict"] == "in-use-by-fleet-host"
    assert keys[elsewhere_key]["sources"][0]["resource"] == "i-0feed0000000000ab"
    # a private address is the account's instance first: the office host reporting it does not hide the gap
    assert keys[gap_key]["verdict"] == "in-use-by-compute-without-agent"
    assert keys[gap_key]["sources"][0]["resource"] == without_agent["InstanceId"]


def test_fleet_reads_every_reported_address_in_canonical_form() -> None:
    from keysweep.cloud.addresses import Fleet

    fleet = Fleet.from_hosts(
        [
            {
                "host_id": "i-1",
                "instance_id": "i-1",
                "private_ip": "172.31.0.5",
                "public_ip": "54.170.12.34",
                "addresses": ["172.31.0.5", "2A05:D018:0:0::1"],
            },
            {"host_id": "machine-a", "addresses": ["172.17.0.1", "not an address"]},
            {"host_id": "machine-b", "addresses": ["172.17.0.1"], "private_ip": None},
            {"host_id": "old-agent"},  # a record from before the agents reported addresses
        ]
    )
    assert fleet.instance_ids == {"i-1"}
    assert [fleet.host_at(ip) for ip in ("172.31.0.5", "54.170.12.34", "2a05:d018::1")] == ["i-1"] * 3
    assert fleet.host_at("172.17.0.1") == "machine-a and 1 more fleet hosts"
    assert fleet.host_at("10.9.9.9") is None and len(fleet.hosts_by_address) == 4
