"""`keysweep plan`: the ordered removal steps, from a store filled by genuine agent messages and moto's IAM."""

from __future__ import annotations

import html
import json
import os
import re
from datetime import UTC, datetime, timedelta

import pytest
from keysweep import aws
from keysweep.central.key_states import KeyState
from keysweep.central.plan import STEPS, PlanOptions, build_plan, burn_down
from keysweep.central.store import open_store
from keysweep.cli import main

from tests.support.fleet import store_messages
from tests.support.messages import finding_message, heartbeat_message, host
from tests.test_html_report import _run_chromium
from tests.test_store import store  # noqa: F401  (the fixture: both backends)

ACCOUNT = "123456789012"  # moto's
WEB = (host("i-0aaaaaaaaaaaaaaa1", "web-1"), host("i-0aaaaaaaaaaaaaaa2", "web-2"))
SECRETS: list[str] = []


def _finding(h, key_id, path):
    msg = finding_message(host_info=h, key_id=key_id, path=path)
    msg["finding"]["account_id"] = ACCOUNT
    msg["finding"]["verification"].update(account=ACCOUNT, arn=f"arn:aws:iam::{ACCOUNT}:user/busy-svc")
    return msg


def _plan(capsys, db, *argv):
    code = main(["plan", "--db", str(db), "--format", "json", *argv])
    out = capsys.readouterr()
    for secret in SECRETS:
        assert secret not in out.out and secret not in out.err
    doc = json.loads(out.out)
    return code, doc, {k["key_id"]: k for k in doc["keys"]}


def _steps(key):
    assert [s["step"] for s in key["steps"]] == list(STEPS)
    return {s["step"]: s for s in key["steps"]}


def _check_order(key):
    """No step offers commands while an earlier one is open."""
    blocked = False
    for step in key["steps"]:
        if blocked:
            assert step["state"] in ("waiting", "done", "not-needed"), step
            if step["state"] == "waiting":
                assert step["commands"] == [] and step["reason"].startswith("waits for "), step
        if step["state"] not in ("done", "not-needed"):
            blocked = True


def _busy_user(iam):
    iam.create_user(UserName="busy-svc")
    key = iam.create_access_key(UserName="busy-svc")["AccessKey"]
    SECRETS.append(key["SecretAccessKey"])
    aws.isolated_client(
        "sts", access_key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"]
    ).get_caller_identity()  # a real use, just now
    iam.create_policy(
        PolicyName="S3Read",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}]}
        ),
    )
    iam.attach_user_policy(UserName="busy-svc", PolicyArn=f"arn:aws:iam::{ACCOUNT}:policy/S3Read")
    iam.put_user_policy(
        UserName="busy-svc",
        PolicyName="extra",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}]}
        ),
    )
    return key["AccessKeyId"]


def test_without_iam_the_plan_says_what_cannot_be_judged(tmp_path, capsys, monkeypatch):
    db = tmp_path / "fleet.db"
    store_messages(
        db,
        *(_finding(h, "AKIAXYZDQCEN4B6JSJQI", "/home/app/.aws/credentials") for h in WEB),
        finding_message(host_info=WEB[0], key_id="ASIAY34FZKBOKMUTVV7A", path="/tmp/session.env"),
    )
    code, doc, keys = _plan(capsys, db, "--no-iam")
    assert code == 1 and doc["iam"] is False and doc["states"]["found"] == 1
    assert list(keys) == ["AKIAXYZDQCEN4B6JSJQI"]  # a temporary key expires by itself
    key = keys["AKIAXYZDQCEN4B6JSJQI"]
    steps = _steps(key)
    assert key["state"] == "found" and key["next_step"] == "replace"
    # the agents' own suggestion is the replacement when the owner's account was not read
    assert steps["replace"]["state"] == "open" and steps["replace"]["commands"] == [
        "aws iam create-role --role-name web-1-role ..."
    ]
    assert steps["deploy"]["state"] == "waiting" and steps["deploy"]["commands"] == []
    for name in ("confirm-unused", "deactivate", "delete-key", "delete-user"):
        assert steps[name]["state"] == "waiting" and "cannot be judged" in steps[name]["reason"]
        assert steps[name]["commands"] == []
    assert any("No IAM facts" in n for n in doc["notes"])
    assert main(["plan", "--db", str(db), "--no-iam"]) == 1
    table = capsys.readouterr().out
    assert "AKIAXYZDQCEN4B6JSJQI" in table and "[      open] replace" in table


@pytest.mark.timeout(180)
def test_a_key_is_walked_from_found_to_deleted(moto_server, tmp_path, capsys):
    iam = aws.make_client("iam")
    key_id = _busy_user(iam)
    db = tmp_path / "fleet.db"
    store_messages(
        db, _finding(WEB[0], key_id, "/home/app/.aws/credentials"), _finding(WEB[1], key_id, "/srv/app/.env")
    )

    # on two hosts and used seconds ago: only the replacement is offered, with the user's exact permissions
    code, doc, keys = _plan(capsys, db)
    assert code == 1 and doc["iam"] is True
    key = keys[key_id]
    steps = _steps(key)
    _check_order(key)
    assert key["user"] == "busy-svc" and key["iam_status"] == "Active" and key["state"] == "found"
    assert {(loc["host"], loc["place"]) for loc in key["locations"]} == {
        ("web-1", "/home/app/.aws/credentials"),
        ("web-2", "/srv/app/.env"),
    }
    replace = steps["replace"]
    assert replace["state"] == "open" and "exact permissions" in replace["reason"]
    assert any("S3Read" in c for c in replace["commands"]) and any("extra" in c for c in replace["commands"])
    assert [(s["state"], s["commands"]) for s in key["steps"][1:]] == [("waiting", [])] * 5, key["steps"]
    assert not any("delete" in c or "Inactive" in c for s in key["steps"] for c in s["commands"])

    # both hosts swept two days later without reporting it: replaced and deployed; the recent use still holds it
    store_messages(db, *(heartbeat_message(host_info=h, sent_at="2026-11-30T10:05:00Z") for h in WEB))
    code, doc, keys = _plan(capsys, db)
    steps = _steps(keys[key_id])
    assert keys[key_id]["locations"] == [] and len(keys[key_id]["cleared_locations"]) == 2
    assert steps["replace"]["state"] == "done" and steps["deploy"]["state"] == "done"
    assert steps["confirm-unused"]["state"] == "open" and "sts" in steps["confirm-unused"]["reason"]
    assert keys[key_id]["state"] == "replaced"
    assert steps["deactivate"]["state"] == "waiting" and not steps["deactivate"]["commands"]

    # the quiet period passed (here: none asked): deactivation is offered, deletion not yet
    code, doc, keys = _plan(capsys, db, "--quiet-days", "0")
    steps = _steps(keys[key_id])
    assert keys[key_id]["state"] == "unused"
    assert steps["deactivate"]["state"] == "open"
    assert steps["deactivate"]["commands"] == [f"keysweep audit --deactivate {key_id}"]
    assert steps["delete-key"]["state"] == "waiting" and not steps["delete-key"]["commands"]

    assert main(["audit", "--deactivate", key_id, "--yes", "--force", "--db", str(db)]) == 0
    capsys.readouterr()
    code, doc, keys = _plan(capsys, db)
    steps = _steps(keys[key_id])
    assert keys[key_id]["state"] == "deactivated" and keys[key_id]["iam_status"] == "Inactive"
    assert steps["delete-key"]["state"] == "waiting" and "30-day wait" in steps["delete-key"]["reason"]
    observed = {h["state"]: h for h in keys[key_id]["history"]}
    assert set(observed) == {"replaced", "unused", "deactivated"}
    assert all(h["source"] == "observed" and "arn:aws:sts::123456789012" in h["actor"] for h in observed.values())
    assert steps["delete-user"]["state"] == "waiting" and not steps["delete-user"]["commands"]

    code, doc, keys = _plan(capsys, db, "--inactive-days", "0")
    steps = _steps(keys[key_id])
    assert steps["delete-key"]["state"] == "open"
    assert steps["delete-key"]["commands"] == [
        f"aws iam delete-access-key --user-name busy-svc --access-key-id {key_id}"
    ]
    assert steps["delete-user"]["state"] == "waiting"

    iam.delete_access_key(UserName="busy-svc", AccessKeyId=key_id)
    code, doc, keys = _plan(capsys, db)
    key = keys[key_id]
    steps = _steps(key)
    assert key["iam_status"] == "deleted" and key["state"] == "deleted" and code == 1  # the user is left
    assert {h["state"] for h in key["history"]} == {"replaced", "unused", "deactivated", "deleted"}
    delete_user = steps["delete-user"]
    assert delete_user["state"] == "open"
    cmds = delete_user["commands"]
    backup = next(i for i, c in enumerate(cmds) if c.startswith("aws iam get-user-policy") and "extra" in c)
    assert backup < next(i for i, c in enumerate(cmds) if c.startswith("aws iam delete-user-policy"))
    assert cmds[-1] == "aws iam delete-user --user-name busy-svc"


@pytest.mark.timeout(120)
def test_a_key_on_a_host_is_never_offered_for_deletion(moto_server, tmp_path, capsys):
    """Deactivated by hand while still on a host: deletion waits for the host, and so does its user."""
    iam = aws.make_client("iam")
    key_id = _busy_user(iam)
    iam.update_access_key(UserName="busy-svc", AccessKeyId=key_id, Status="Inactive")
    db = tmp_path / "fleet.db"
    store_messages(db, _finding(WEB[0], key_id, "/home/app/.aws/credentials"))
    code, doc, keys = _plan(capsys, db, "--inactive-days", "0", "--quiet-days", "0")
    key = keys[key_id]
    steps = _steps(key)
    assert steps["deactivate"]["state"] == "done" and steps["replace"]["state"] == "open"
    assert steps["delete-key"]["state"] == "waiting" and steps["delete-user"]["state"] == "waiting"
    assert not any("delete" in c for s in key["steps"] for c in s["commands"])
    assert key["state"] == "found"


def test_bad_options_are_usage_errors(tmp_path, capsys):
    assert main(["plan", "--db", str(tmp_path / "missing.db")]) == 2
    assert "no such store" in capsys.readouterr().err


def test_key_states_are_kept_first_record_wins(store):  # noqa: F811
    first = KeyState(
        "AKIAXYZDQCEN4B6JSJQI",
        "replaced",
        "arn:aws:iam::123456789012:user/alice",
        "2026-11-29T10:00:00.000Z",
        "mark",
        "CHG-1",
    )
    assert store.record_key_state(first) is True
    again = KeyState(
        "AKIAXYZDQCEN4B6JSJQI", "replaced", "arn:aws:iam::123456789012:user/bob", "2026-11-30T10:00:00.000Z", "mark"
    )
    assert store.record_key_state(again) is False
    seen = KeyState("AKIAXYZDQCEN4B6JSJQI", "deactivated", "keysweep plan", "2026-11-29T09:00:00.000Z", "observed")
    other = KeyState("AKIAAAAAAAAAAAAAAAAA", "deleted", "keysweep plan", "2026-11-28T09:00:00.000Z", "observed")
    assert store.record_key_state(seen) and store.record_key_state(other)
    assert list(store.iter_key_states()) == [other, seen, first]
    with pytest.raises(ValueError):
        KeyState("AKIAXYZDQCEN4B6JSJQI", "gone", "x", "2026-11-29T10:00:00.000Z")


def test_marks_carry_a_plan_without_iam(tmp_path, capsys):
    """Without IAM facts a person's marks are the plan's only word past the hosts; who and when are kept."""
    db = tmp_path / "fleet.db"
    key_id = "AKIAXYZDQCEN4B6JSJQI"
    store_messages(db, _finding(WEB[0], key_id, "/home/app/.aws/credentials"))
    assert main(["plan", "--db", str(db), "--no-iam", "--mark", key_id, "replaced", "--note", "CHG-7"]) == 1
    capsys.readouterr()
    code, doc, keys = _plan(capsys, db, "--no-iam")
    key = keys[key_id]
    steps = _steps(key)
    # marked replaced after the host last reported it: the place counts as cleared
    assert key["locations"] == [] and steps["replace"]["state"] == "done" and steps["deploy"]["state"] == "done"
    assert steps["replace"]["commands"] == [] and "marked replaced by" in steps["deploy"]["reason"]
    assert steps["confirm-unused"]["state"] == "unknown" and steps["deactivate"]["state"] == "waiting"
    (mark,) = [h for h in key["history"] if h["state"] == "replaced"]
    assert mark["source"] == "mark" and mark["note"] == "CHG-7" and mark["actor"]
    for state in ("unused", "deactivated"):
        assert main(["plan", "--db", str(db), "--no-iam", "--mark", key_id, state]) == 1
    capsys.readouterr()
    code, doc, keys = _plan(capsys, db, "--no-iam")
    steps = _steps(keys[key_id])
    assert keys[key_id]["state"] == "deactivated"
    assert steps["delete-key"]["state"] == "unknown" and steps["delete-key"]["commands"] == []
    # a host reporting the key after the mark puts it back
    later = finding_message(host_info=WEB[1], key_id=key_id, path="/srv/app/.env", sent_at="2099-01-01T00:00:00Z")
    store_messages(db, later)
    code, doc, keys = _plan(capsys, db, "--no-iam")
    assert [loc["host"] for loc in keys[key_id]["locations"]] == ["web-2"]
    assert _steps(keys[key_id])["deploy"]["state"] in ("open", "waiting")
    assert main(["plan", "--db", str(db), "--mark", key_id, "found"]) == 2
    assert main(["plan", "--db", str(db), "--mark", "ASIAY34FZKBOKMUTVV7A", "deleted"]) == 2
    assert main(["plan", "--db", str(db), "--note", "x"]) == 2


def _records(db):
    fleet = open_store(str(db), create=False)
    try:
        return list(fleet.iter_findings()), list(fleet.iter_hosts()), list(fleet.iter_key_states())
    finally:
        fleet.close()


def test_burn_down_counts_keys_until_their_recorded_deletion(tmp_path):
    db = tmp_path / "fleet.db"
    early = finding_message(host_info=WEB[0], key_id="AKIAXYZDQCEN4B6JSJQI", sent_at="2026-11-20T10:00:00Z")
    late = finding_message(host_info=WEB[1], key_id="AKIAXYZDQCEN4B6JSJQJ", sent_at="2026-11-25T10:00:00Z")
    store_messages(db, early, late)
    records, hosts, _ = _records(db)
    states = [KeyState("AKIAXYZDQCEN4B6JSJQI", "deleted", "arn:aws:iam::1:user/a", "2026-11-27T08:00:00.000Z")]
    plan = build_plan(records, hosts, None, PlanOptions(now=datetime(2026, 11, 28, 12, tzinfo=UTC)), states)
    days = dict(burn_down(plan))
    assert list(days)[0] == "2026-11-20" and list(days)[-1] == "2026-11-28"
    assert days["2026-11-20"] == 1 and days["2026-11-24"] == 1  # the second key was found on the 25th
    assert days["2026-11-25"] == 2 and days["2026-11-26"] == 2
    assert days["2026-11-27"] == 1 and days["2026-11-28"] == 1  # the first was deleted on the 27th
    assert dict(burn_down(plan, days=3)) == {"2026-11-26": 2, "2026-11-27": 1, "2026-11-28": 1}


@pytest.mark.timeout(180)
def test_html_plan_is_self_contained_and_renders(tmp_path, capsys):
    db = tmp_path / "fleet.db"
    hostile = "<img src=x onerror=alert(1)>"
    store_messages(
        db,
        finding_message(host_info=host("i-0aaaaaaaaaaaaaaa9", hostile), key_id="AKIAXYZDQCEN4B6JSJQI"),
        _finding(WEB[0], "AKIAXYZDQCEN4B6JSJQJ", "/home/app/.aws/credentials"),
    )
    assert (
        main(
            [
                "plan",
                "--db",
                str(db),
                "--no-iam",
                "--mark",
                "AKIAXYZDQCEN4B6JSJQJ",
                "replaced",
                "--note",
                "<b>CHG-9</b>",
            ]
        )
        == 1
    )
    capsys.readouterr()
    out = tmp_path / "plan.html"
    assert main(["plan", "--db", str(db), "--no-iam", "--format", "html", "--output", str(out)]) == 1
    text = out.read_text()
    assert hostile not in text and html.escape(hostile, quote=True) in text
    assert "<b>CHG-9</b>" not in text and html.escape("<b>CHG-9</b>") in text
    assert text.count("<script") == 1 and not re.search(r"\b(src|href)\s*=", text.replace(html.escape(hostile), ""))
    assert len(re.findall(r'<svg class="ks-chart" data-chart="burn_down"', text)) == 1
    assert "aws iam create-role --role-name web-1-role" in text
    assert re.search(r"<b>1</b>keys replaced", text) and re.search(r"<b>1</b>keys found", text)
    dom = _run_chromium(tmp_path, out, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(r'<body[^>]* data-charts-ready="1"', dom.stdout)
    errors = re.search(r'<div id="ks-errors">(.*?)</div>', dom.stdout, re.S)
    assert errors is not None and errors.group(1) == ""


def test_without_credentials_the_plan_is_from_the_store(tmp_path, capsys, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    db = tmp_path / "fleet.db"
    store_messages(db, _finding(WEB[0], "AKIAXYZDQCEN4B6JSJQI", "/home/app/.aws/credentials"))
    code, doc, keys = _plan(capsys, db)
    assert code == 1 and doc["iam"] is False and any("No IAM facts" in n for n in doc["notes"])
    assert "cannot be judged" in _steps(keys["AKIAXYZDQCEN4B6JSJQI"])["deactivate"]["reason"]
    # naming accounts without credentials to reach them is an error, not a quiet plan without IAM
    assert main(["plan", "--db", str(db), "--account", "111111111111", "--role-name", "Audit"]) == 2
    assert "plan: no AWS credentials" in capsys.readouterr().err
    assert main(["plan", "--db", str(db), "--role-name", "Audit"]) == 2
    assert main(["plan", "--db", str(db), "--no-iam", "--account", "111111111111", "--role-name", "A"]) == 2


# ---------------------------------------------------------------------------------------------------- --trail

OUTSIDE = "81.2.69.160"
CLI = "aws-cli/2.15.0 Python/3.11 Linux"
OWN = "Boto3/1.40 md/Botocore#1.40 keysweep/0.1.0"


@pytest.fixture
def cloudtrail(moto_server, monkeypatch):
    from tests.support.cloudtrail_server import cloudtrail_server

    with cloudtrail_server(page_size=2) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDTRAIL", server.endpoint)
        yield server


def _ago(days):
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_of(iam, user):
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    SECRETS.append(key["SecretAccessKey"])
    return key["AccessKeyId"]


def _found(h, key_id, user, days_ago):
    msg = finding_message(host_info=h, key_id=key_id, path="/srv/app/.env", sent_at=_ago(days_ago))
    msg["finding"]["account_id"] = ACCOUNT
    msg["finding"]["verification"].update(account=ACCOUNT, arn=f"arn:aws:iam::{ACCOUNT}:user/{user}")
    return msg


@pytest.mark.timeout(180)
def test_cloudtrail_use_holds_confirm_unused_and_names_where_the_key_is_used(moto_server, cloudtrail, tmp_path, capsys):
    iam = aws.make_client("iam")
    ec2 = aws.make_client("ec2")
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    with_agent, without_agent = (
        ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0] for _ in range(2)
    )
    web = host(with_agent["InstanceId"], "web-1")
    other = host("i-0bbbbbbbbbbbbbbb1", "batch-1")
    held, used, own_only = _key_of(iam, "held-svc"), _key_of(iam, "used-svc"), _key_of(iam, "quiet-svc")
    db = tmp_path / "fleet.db"
    # held-svc's key is still on web-1; the other two were on batch-1, which swept since without them
    store_messages(
        db,
        _found(web, held, "held-svc", 1),
        _found(other, used, "used-svc", 3),
        _found(other, own_only, "quiet-svc", 3),
        heartbeat_message(host_info=web, sent_at=_ago(1)),
        heartbeat_message(host_info=other, sent_at=_ago(1)),
    )
    now = datetime.now(UTC).timestamp()
    cloudtrail.add_event(held, ip=with_agent["PrivateIpAddress"], user_agent=CLI, at=now - 2 * 86400)
    cloudtrail.add_event(held, ip=without_agent["PrivateIpAddress"], user_agent=CLI, at=now - 3 * 86400)
    cloudtrail.add_event(held, ip=OUTSIDE, user_agent=CLI, at=now - 5 * 86400)
    cloudtrail.add_event(held, ip="203.0.113.9", user_agent=CLI, at=now - 6 * 86400)  # the oldest of four
    # used-svc: used from outside AWS four days ago (before batch-1 last reported it), and verified by keysweep
    cloudtrail.add_event(used, ip=OUTSIDE, user_agent=CLI, at=now - 4 * 86400, source="sts.amazonaws.com")
    cloudtrail.add_event(used, ip="198.51.100.7", user_agent=OWN, at=now - 3600, source="sts.amazonaws.com")
    # quiet-svc: only keysweep's own verification calls, and a use older than the quiet period
    for hours in (1, 30):
        cloudtrail.add_event(
            own_only, ip="198.51.100.7", user_agent=OWN, at=now - hours * 3600, source="sts.amazonaws.com"
        )
    cloudtrail.add_event(own_only, ip=OUTSIDE, user_agent=CLI, at=now - 20 * 86400)

    code, doc, keys = _plan(capsys, db, "--trail", "--trail-days", "30", "--trail-region", "us-east-1")
    assert doc["trail_days"] == 30 and code == 1
    for key in keys.values():
        _check_order(key)

    replace = _steps(keys[held])["replace"]
    assert replace["state"] == "open"
    attach = [c for c in replace["commands"] if c.startswith("# attach the role where the key is used")]
    assert len(attach) == 4 and any("203.0.113.9 (outside AWS)" in c for c in attach)
    assert any(f"{with_agent['PrivateIpAddress']} (fleet host {with_agent['InstanceId']})" in c for c in attach)
    assert any(
        f"{without_agent['PrivateIpAddress']} (ec2-instance without the agent {without_agent['InstanceId']})" in c
        for c in attach
    )
    assert any(f"{OUTSIDE} (outside AWS)" in c for c in attach)
    assert f"{OUTSIDE} (outside AWS)" in replace["reason"] and "203.0.113.9" not in replace["reason"]
    assert "and 1 more address(es)" in replace["reason"]  # the reason names the three latest; commands have all

    steps = _steps(keys[used])
    assert steps["replace"]["state"] == "done" and steps["deploy"]["state"] == "done"
    confirm = steps["confirm-unused"]
    assert confirm["state"] == "open", confirm
    day = datetime.fromtimestamp(now - 4 * 86400, UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert f"CloudTrail: last used {day} from {OUTSIDE} (outside AWS)" in confirm["reason"]
    assert "198.51.100.7" not in confirm["reason"]  # keysweep's own call is not a use
    assert any("lookup-events" in c and used in c for c in confirm["commands"])
    assert steps["deactivate"]["state"] == "waiting" and steps["deactivate"]["commands"] == []
    assert keys[used]["state"] == "replaced"
    assert not any(h["state"] == "unused" for h in keys[used]["history"])  # not recorded as unused

    steps = _steps(keys[own_only])
    assert steps["confirm-unused"]["state"] == "done", steps["confirm-unused"]
    assert "2 call(s) of keysweep's own not counted" in steps["confirm-unused"]["reason"]
    assert steps["deactivate"]["state"] == "open"
    assert steps["deactivate"]["commands"] == [f"keysweep audit --deactivate {own_only}"]
    # the replace step lists the old use as a place, but it came before the host last reported the key
    assert steps["replace"]["state"] == "done"

    # without --trail nothing changes: IAM alone has no use of used-svc's key
    code, doc, keys = _plan(capsys, db)
    assert doc["trail_days"] is None
    assert _steps(keys[used])["confirm-unused"]["state"] == "done"
    assert "CloudTrail" not in json.dumps(doc)


def _let_go_key(tmp_path, user):
    """A key of IAM user ``user`` that host batch-1 found five days ago and no longer reports; the store, the key."""
    key_id = _key_of(aws.make_client("iam"), user)
    other = host("i-0bbbbbbbbbbbbbbb1", "batch-1")
    db = tmp_path / "fleet.db"
    store_messages(db, _found(other, key_id, user, 5), heartbeat_message(host_info=other, sent_at=_ago(3)))
    return db, key_id


@pytest.mark.timeout(120)
def test_cloudtrail_use_after_the_hosts_let_go_reopens_replace(moto_server, cloudtrail, tmp_path, capsys):
    db, key_id = _let_go_key(tmp_path, "moved-svc")
    at = datetime.now(UTC).timestamp() - 86400
    cloudtrail.add_event(key_id, ip=OUTSIDE, user_agent=CLI, at=at)
    code, doc, keys = _plan(capsys, db, "--trail", "--trail-region", "us-east-1")
    assert doc["trail_days"] == 14
    steps = _steps(keys[key_id])
    assert steps["deploy"]["state"] == "done"
    assert steps["replace"]["state"] == "open" and "no host reports it, but CloudTrail" in steps["replace"]["reason"]
    last = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert steps["replace"]["commands"] == [
        f"# attach the role where the key is used: {OUTSIDE} (outside AWS), last {last}"
    ]
    assert steps["confirm-unused"]["state"] == "waiting"


@pytest.mark.timeout(120)
def test_a_region_cloudtrail_cannot_be_read_in_is_a_note_not_a_no_use(moto_server, cloudtrail, tmp_path, capsys):
    db, key_id = _let_go_key(tmp_path, "dark-svc")
    cloudtrail.errors = ["AccessDeniedException"]
    code, doc, keys = _plan(capsys, db, "--trail", "--trail-region", "us-east-1")
    assert any(
        n.startswith(f"CloudTrail not read: cloudtrail in {ACCOUNT} us-east-1: AccessDeniedException")
        for n in doc["notes"]
    ), doc["notes"]
    confirm = _steps(keys[key_id])["confirm-unused"]
    assert confirm["state"] == "done" and "CloudTrail" not in confirm["reason"]  # IAM's word alone


def test_trail_options_are_checked(tmp_path, capsys):
    db = tmp_path / "fleet.db"
    store_messages(db)
    assert main(["plan", "--db", str(db), "--trail-days", "7"]) == 2
    assert "go with --trail" in capsys.readouterr().err
    assert main(["plan", "--db", str(db), "--trail", "--trail-days", "91"]) == 2
    assert "from 1 to 90" in capsys.readouterr().err
    assert main(["plan", "--db", str(db), "--trail", "--no-iam"]) == 2
    assert "--trail needs IAM facts" in capsys.readouterr().err
