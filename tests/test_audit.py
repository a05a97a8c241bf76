"""The account audit: checks on a real-column report file, and end to end against moto's IAM and STS over HTTP."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from keysweep import aws
from keysweep.central.audit import AuditOptions, account_targets, evaluate_report
from keysweep.central.credential_report import parse_credential_report
from keysweep.central.store import open_store
from keysweep.cli import main
from keysweep.errors import ConfigError

from tests.support.audit_role import AUDIT_IAM_READS, DB_ONLY_READS
from tests.support.cli import run_keysweep
from tests.support.fleet import store_messages
from tests.support.messages import finding_message, host

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def _checks(items):
    return sorted((i.check, i.user or "", i.key_id or "") for i in items)


def test_checks_on_a_real_report_file():
    report = parse_credential_report((DATA / "credential-report-sample.csv").read_bytes())
    items = evaluate_report(report, account_id="123456789012", options=AuditOptions(now=NOW))
    by = {(i.check, i.user) for i in items}
    assert by == {
        ("root-access-key", "<root_account>"),
        ("console-user-with-keys", "alice"),
        ("inactive-key", "alice"),
        ("never-used-key", "deploy-bot"),
        ("unused-key", "backup"),
        ("never-used-key", "olduser"),
        ("user-without-credentials", "ghost"),
        ("console-user", "erin"),
        ("inactive-key", "retired"),
        ("user-without-credentials", "retired"),
    }
    assert sum(1 for i in items if i.check == "inactive-key" and i.user == "retired") == 2
    old = next(i for i in items if i.user == "olduser")
    assert "2015-04-22" in old.summary and old.details["use_may_predate_tracking"] is True
    backup = next(i for i in items if i.check == "unused-key")
    assert backup.details["idle_days"] == 211 and backup.details["last_used_service"] == "dynamodb"
    root = next(i for i in items if i.check == "root-access-key")
    assert root.severity == "critical" and root.details["keys"][0]["last_used_service"] == "s3"
    retired = next(i for i in items if i.check == "user-without-credentials" and i.user == "retired")
    # the user's two inactive keys are deleted before the user
    assert retired.commands[-1] == "aws iam delete-user --user-name retired"
    assert len([c for c in retired.commands if "delete-access-key" in c]) == 2
    # every item says what to do and how
    assert all(i.action and i.commands for i in items)


def test_each_check_is_one_function():
    """The registry and the functions agree: a check added to CHECKS without its function (or the reverse) fails."""
    from keysweep.central.audit import CHECKS, checks, correlation

    functions = (
        checks.root_access_key,
        *checks.KEY_CHECKS,
        *checks.USER_CHECKS,
        correlation.key_on_hosts,
        correlation.host_key_unknown_to_audit,
    )
    assert sorted(f.__name__.replace("_", "-") for f in functions) == sorted(CHECKS)


def test_thresholds_are_options():
    report = parse_credential_report((DATA / "credential-report-sample.csv").read_bytes())
    strict = evaluate_report(report, account_id="1", options=AuditOptions(now=NOW, unused_days=250, rotation_days=30))
    checks = {(i.check, i.user) for i in strict}
    assert ("unused-key", "backup") not in checks  # 211 days idle < 250
    assert ("old-key", "backup") in checks  # …but older than 30 days and still in use
    assert ("old-key", "alice") in checks  # 58 days old
    assert all(
        i.check != "old-key"
        for i in evaluate_report(report, account_id="1", options=AuditOptions(now=NOW))
        if i.user == "alice"
    )


def test_root_keys_from_account_summary_alone():
    report = parse_credential_report("user,arn\nbob,arn:aws:iam::123456789012:user/bob\n")
    items = evaluate_report(report, account_id="123456789012", options=AuditOptions(now=NOW), root_keys_present=True)
    assert [i.check for i in items if i.severity == "critical"] == ["root-access-key"]


def test_bad_account_options_are_usage_errors():
    with pytest.raises(ConfigError, match="role-name"):
        account_targets(accounts=["111111111111"])
    with pytest.raises(ConfigError, match="12 digits"):
        account_targets(accounts=["1111"], role_name="r")
    with pytest.raises(ConfigError, match="role ARN"):
        account_targets(role_arns=["arn:aws:iam::111111111111:user/x"])
    with pytest.raises(ConfigError, match="at least 1 day"):
        AuditOptions(unused_days=0)
    assert main(["audit", "--account", "111111111111"]) == 2


# ------------------------------------------------------------------------------------------ against moto's IAM

SECRETS: list[str] = []
POLICY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}]}
)


def _key(iam, user):
    key = iam.create_access_key(UserName=user)["AccessKey"]
    SECRETS.append(key["SecretAccessKey"])
    return key


def _populate(iam):
    """One user per check; returns the key ids by role."""
    keys = {}
    iam.create_user(UserName="idle-svc")
    keys["idle"] = _key(iam, "idle-svc")["AccessKeyId"]
    iam.create_user(UserName="busy-svc")
    busy = _key(iam, "busy-svc")
    keys["busy"] = busy["AccessKeyId"]
    # using the key makes moto record its last use
    aws.isolated_client(
        "sts", access_key_id=busy["AccessKeyId"], secret_access_key=busy["SecretAccessKey"]
    ).get_caller_identity()
    iam.create_user(UserName="off-svc")
    keys["off"] = _key(iam, "off-svc")["AccessKeyId"]
    iam.update_access_key(UserName="off-svc", AccessKeyId=keys["off"], Status="Inactive")
    iam.create_user(UserName="nobody")
    iam.create_group(GroupName="readers")
    iam.add_user_to_group(GroupName="readers", UserName="nobody")
    for name in ("ReadOnly", "S3Read"):
        iam.create_policy(PolicyName=name, PolicyDocument=POLICY)
    iam.attach_user_policy(UserName="nobody", PolicyArn="arn:aws:iam::123456789012:policy/ReadOnly")
    iam.put_user_policy(UserName="nobody", PolicyName="extra", PolicyDocument=POLICY)
    iam.create_user(UserName="human")
    iam.create_login_profile(UserName="human", Password="Corr3ct-horse-battery!")
    iam.create_user(UserName="human-keys")
    iam.create_login_profile(UserName="human-keys", Password="Corr3ct-horse-battery!")
    keys["human"] = _key(iam, "human-keys")["AccessKeyId"]
    return keys


def _audit_json(capsys, *argv):
    code = main(["audit", "--format", "json", *argv])
    out = capsys.readouterr()
    for secret in SECRETS:
        assert secret not in out.out and secret not in out.err
    return code, json.loads(out.out)


@pytest.mark.timeout(120)
def test_audit_against_moto(moto_server, capsys):
    iam = aws.make_client("iam")
    keys = _populate(iam)
    # keys created seconds ago are not "never used" yet: the grace period holds them back, and says so
    code, doc = _audit_json(capsys)
    assert code == 1
    assert not [i for i in doc["items"] if i["check"] == "never-used-key"]
    assert any(n.startswith("2 active key(s) created within the last 7 day(s)") for n in doc["accounts"][0]["notes"])
    code, doc = _audit_json(capsys, "--new-key-grace-days", "0")
    assert code == 1
    got = {(i["check"], i["user"], i["key_id"]) for i in doc["items"]}
    assert got == {
        ("never-used-key", "idle-svc", keys["idle"]),
        ("inactive-key", "off-svc", keys["off"]),
        ("user-without-credentials", "off-svc", None),
        ("user-without-credentials", "nobody", None),
        ("console-user", "human", None),
        ("console-user-with-keys", "human-keys", keys["human"]),
        ("never-used-key", "human-keys", keys["human"]),
    }
    [acct] = doc["accounts"]
    assert acct["account_id"] == "123456789012" and acct["error"] is None and acct["keys"] == 4
    nobody = next(i for i in doc["items"] if i["user"] == "nobody")
    assert nobody["commands"] == [
        "aws iam detach-user-policy --user-name nobody --policy-arn arn:aws:iam::123456789012:policy/ReadOnly",
        # the inline policy exists nowhere else: saved before it is deleted
        "aws iam get-user-policy --user-name nobody --policy-name extra --query PolicyDocument --output json "
        "> keysweep-backup-nobody-extra.json",
        "aws iam delete-user-policy --user-name nobody --policy-name extra",
        "aws iam remove-user-from-group --user-name nobody --group-name readers",
        "aws iam delete-user --user-name nobody",
    ]
    assert nobody["details"]["inline_policy_backups"] == ["keysweep-backup-nobody-extra.json"]
    # moto has no ListServiceSpecificCredentials: the item says what it could not check
    assert [u.split(":")[0] for u in nobody["details"]["unlisted"]] == ["service-specific-credential"]
    assert "list-service-specific-credentials" in nobody["action"]
    off = next(i for i in doc["items"] if i["check"] == "user-without-credentials" and i["user"] == "off-svc")
    assert f"aws iam delete-access-key --user-name off-svc --access-key-id {keys['off']}" in off["commands"]
    # the SCP, with its warning, and the shorter-window advice
    assert doc["scp"]["policy"]["Statement"][0]["Action"] == ["iam:CreateAccessKey", "iam:CreateUser"]
    assert "rotation" in doc["scp"]["warning"] and doc["scp"]["ready_accounts"] == []
    assert any("45 days" in n for n in doc["notes"])
    assert doc["counts"]["never-used-key"] == 2


@pytest.mark.timeout(120)
def test_unused_and_old_keys_with_a_later_clock(moto_server):
    """moto stamps creation and use with its own clock, so the audit's clock moves forward instead."""
    from keysweep.central.audit import run_audit

    keys = _populate(aws.make_client("iam"))
    later = datetime.now(UTC) + timedelta(days=100)
    result = run_audit(account_targets(), AuditOptions(now=later))
    got = {(i.check, i.key_id) for i in result.items}
    assert ("unused-key", keys["busy"]) in got
    busy = next(i for i in result.items if i.key_id == keys["busy"] and i.check == "unused-key")
    assert busy.details["idle_days"] == 100
    assert busy.details["last_used_service"] == "not_supported"  # moto's report leaves service/region out
    young = run_audit(account_targets(), AuditOptions(now=datetime.now(UTC) + timedelta(days=20), rotation_days=10))
    assert ("old-key", keys["busy"]) in {(i.check, i.key_id) for i in young.items}
    assert ("unused-key", keys["busy"]) not in {(i.check, i.key_id) for i in young.items}


@pytest.mark.timeout(120)
def test_several_accounts_by_assuming_a_role(moto_server, capsys):
    iam = aws.make_client("iam")
    for account, user in (("111111111111", "alpha"), ("222222222222", "beta")):
        role_arn = f"arn:aws:iam::{account}:role/KeysweepAudit"
        creds = aws.make_client("sts").assume_role(RoleArn=role_arn, RoleSessionName="setup")["Credentials"]
        other = aws.isolated_client(
            "iam",
            access_key_id=creds["AccessKeyId"],
            secret_access_key=creds["SecretAccessKey"],
            session_token=creds["SessionToken"],
        )
        other.create_user(UserName=user)
    iam.create_user(UserName="home")  # in the caller's own account: not audited when roles are given
    code, doc = _audit_json(
        capsys,
        "--account",
        "111111111111",
        "--account",
        "222222222222",
        "--role-name",
        "KeysweepAudit",
        "--format",
        "json",
    )
    assert code == 1
    assert [(a["account_id"], a["caller_arn"]) for a in doc["accounts"]] == [
        ("111111111111", "arn:aws:sts::111111111111:assumed-role/KeysweepAudit/keysweep-audit"),
        ("222222222222", "arn:aws:sts::222222222222:assumed-role/KeysweepAudit/keysweep-audit"),
    ]
    assert {(i["account_id"], i["user"]) for i in doc["items"]} == {("111111111111", "alpha"), ("222222222222", "beta")}
    assert doc["scp"]["ready_accounts"] == ["111111111111", "222222222222"]


@pytest.mark.timeout(120)
def test_table_and_csv_formats(moto_server, capsys):
    keys = _populate(aws.make_client("iam"))
    assert main(["audit", "--format", "table", "--new-key-grace-days", "0"]) == 1
    table = capsys.readouterr().out
    assert "[MEDIUM] never-used-key" in table and "[LOW] inactive-key" in table
    assert f"$ aws iam update-access-key --user-name idle-svc --access-key-id {keys['idle']} --status Inactive" in table
    assert "WARNING: This SCP also blocks key rotation" in table
    assert "iam:CreateAccessKey" in table
    assert main(["audit", "--format", "csv", "--new-key-grace-days", "0"]) == 1
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["check"] for r in rows} >= {"never-used-key", "inactive-key", "console-user"}
    idle = next(r for r in rows if r["key_id"] == keys["idle"])
    assert idle["commands"].splitlines()[0].startswith("aws iam update-access-key")
    for secret in SECRETS:
        assert secret not in table


# ------------------------------------------------------------------------------------------ fleet correlation


def _fleet(db: Path, known_key: str) -> None:
    """Two hosts holding a key of the audited account, one holding a key of another account."""
    msgs = [
        finding_message(host_info=h, key_id=known_key, path=path)
        for h, path in (
            (host("i-0aaaaaaaaaaaaaaa1", "web-1"), "/home/app/.aws/credentials"),
            (host("i-0aaaaaaaaaaaaaaa2", "web-2"), "/srv/app/.env"),
        )
    ]
    msgs.append(
        finding_message(
            host_info=host("i-0aaaaaaaaaaaaaaa3", "batch-1"), key_id="AKIAXYZDQCEN4B6JSJQI", path="/opt/job/config.ini"
        )
    )
    msgs.append(
        finding_message(
            host_info=host("i-0aaaaaaaaaaaaaaa3", "batch-1"), key_id="ASIAY34FZKBOKMUTVV7A", path="/opt/job/session.env"
        )
    )
    store_messages(db, *msgs)


@pytest.mark.timeout(120)
def test_correlation_with_the_fleet_store(moto_server, capsys, tmp_path):
    iam = aws.make_client("iam")
    keys = _populate(iam)
    iam.attach_user_policy(UserName="busy-svc", PolicyArn="arn:aws:iam::123456789012:policy/S3Read")
    iam.add_user_to_group(GroupName="readers", UserName="busy-svc")
    db = tmp_path / "fleet.db"
    _fleet(db, keys["busy"])
    code, doc = _audit_json(capsys, "--db", str(db))
    assert code == 1
    on_hosts = [i for i in doc["items"] if i["check"] == "key-on-hosts"]
    assert [(i["user"], i["key_id"]) for i in on_hosts] == [("busy-svc", keys["busy"])]
    hk = next(k for k in doc["host_keys"] if k["key_id"] == keys["busy"])
    assert hk["known"] and hk["hosts"] == ["web-1", "web-2"]
    assert hk["last_used_service"] == "sts" and hk["last_used_region"] == "us-east-1" and hk["last_used"]
    assert hk["policies"]["attached"] == ["arn:aws:iam::123456789012:policy/S3Read"]
    assert list(hk["policies"]["groups"]) == ["readers"]
    assert "S3Read" in on_hosts[0]["summary"] and "group readers: ReadOnly" not in on_hosts[0]["summary"]
    unknown = [i for i in doc["items"] if i["check"] == "host-key-unknown-to-audit"]
    assert [(i["key_id"], i["account_id"]) for i in unknown] == [("AKIAXYZDQCEN4B6JSJQI", "534261010715")]
    assert unknown[0]["severity"] == "high" and "batch-1" in unknown[0]["summary"]
    assert any(n.startswith("1 temporary") for n in doc["notes"])


# ------------------------------------------------------------------------------------------ deactivation


def _cli(args, stdin="", env_extra=None):
    return run_keysweep(*args, stdin=stdin, env=dict(os.environ, **(env_extra or {})), cwd=Path(__file__).parent.parent)


@pytest.mark.timeout(120)
def test_deactivate_needs_confirmation(moto_server):
    iam = aws.make_client("iam")
    keys = _populate(iam)

    def status():
        return iam.list_access_keys(UserName="idle-svc")["AccessKeyMetadata"][0]["Status"]

    refused = _cli(["audit", "--deactivate", keys["idle"]], stdin="no\n")
    assert refused.returncode == 2 and "nothing changed" in refused.stderr and status() == "Active"
    silent = _cli(["audit", "--deactivate", keys["idle"]], stdin="")
    assert silent.returncode == 2 and "--yes" in silent.stderr and status() == "Active"
    agreed = _cli(["audit", "--deactivate", keys["idle"]], stdin="yes\n")
    assert agreed.returncode == 0, agreed.stderr
    assert "idle-svc" in agreed.stderr and status() == "Inactive"
    assert f"{keys['idle']}\tdeactivated by arn:aws:sts::123456789012:user/moto" in agreed.stdout


@pytest.mark.timeout(120)
def test_deactivate_from_a_report_records_who_and_when(moto_server, capsys, tmp_path):
    iam = aws.make_client("iam")
    keys = _populate(iam)
    db = tmp_path / "fleet.db"
    _fleet(db, keys["busy"])
    listing = tmp_path / "keys.json"
    listing.write_text(
        json.dumps({"items": [{"key_id": keys["busy"]}, {"key_id": keys["off"]}, {"key_id": "AKIAXYZDQCEN4B6JSJQI"}]})
    )
    # the key is still on two hosts and was used seconds ago: held back, nothing changed
    code = main(["audit", "--deactivate-from", str(listing), "--yes", "--db", str(db)])
    out = capsys.readouterr()
    assert code == 3  # the key of an unaudited account could not be deactivated
    assert f"{keys['busy']}\theld (still on 2 host(s): web-1, web-2" in out.out
    assert iam.list_access_keys(UserName="busy-svc")["AccessKeyMetadata"][0]["Status"] == "Active"
    # without the store the recent use alone holds it back
    code = main(["audit", "--deactivate", keys["busy"], "--yes"])
    out = capsys.readouterr()
    assert code == 1 and "held (used 0 minute(s) ago (sts in us-east-1), within the 14-day quiet period" in out.out
    assert iam.list_access_keys(UserName="busy-svc")["AccessKeyMetadata"][0]["Status"] == "Active"
    code = main(["audit", "--deactivate-from", str(listing), "--yes", "--force", "--db", str(db)])
    out = capsys.readouterr()
    assert code == 3
    assert f"{keys['off']}\talready-inactive" in out.out
    assert "AKIAXYZDQCEN4B6JSJQI\tnot-found" in out.out and "534261010715" in out.out
    meta = iam.list_access_keys(UserName="busy-svc")["AccessKeyMetadata"][0]
    assert meta["Status"] == "Inactive"
    store = open_store(str(db), create=False)
    try:
        recs = [r for r in store.iter_findings() if r.key_id == keys["busy"]]
        others = [r for r in store.iter_findings() if r.key_id != keys["busy"]]
    finally:
        store.close()
    assert len(recs) == 2 and {r.deactivated_by for r in recs} == {"arn:aws:sts::123456789012:user/moto"}
    at = datetime.fromisoformat(recs[0].deactivated_at.replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - at).total_seconds()) < 300
    assert all(r.deactivated_by is None for r in others)


def test_deactivate_rejects_what_is_not_a_long_term_key(tmp_path, capsys):
    assert main(["audit", "--deactivate", "ASIAY34FZKBOKMUTVV7A", "--yes"]) == 2
    assert "not a long-term access key" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert main(["audit", "--deactivate-from", str(empty), "--yes"]) == 2


# ------------------------------------------------------------------------------------------ least privilege

# an auditor without --db: the audit's IAM reads but the ones only --db needs, and who it is
READ_ONLY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Resource": "*",
            "Action": [*sorted(AUDIT_IAM_READS - DB_ONLY_READS), "sts:GetCallerIdentity"],
        }
    ],
}


@pytest.mark.timeout(120)
def test_read_only_permissions_suffice_and_failures_are_errors(moto_server, monkeypatch, capsys):
    iam = aws.make_client("iam")
    iam.create_user(UserName="auditor")
    iam.put_user_policy(UserName="auditor", PolicyName="read", PolicyDocument=json.dumps(READ_ONLY))
    auditor = iam.create_access_key(UserName="auditor")["AccessKey"]
    SECRETS.append(auditor["SecretAccessKey"])
    iam.create_user(UserName="stale")
    stale = _key(iam, "stale")["AccessKeyId"]
    moto_server.enable_auth()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", auditor["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", auditor["SecretAccessKey"])

    code, doc = _audit_json(capsys, "--new-key-grace-days", "0")
    assert code == 1 and doc["accounts"][0]["caller_arn"] == "arn:aws:iam::123456789012:user/auditor"
    assert ("never-used-key", stale) in {(i["check"], i["key_id"]) for i in doc["items"]}

    # a role the auditor may not assume: the account is reported as not audited, and the run is an error
    code, doc = _audit_json(capsys, "--assume-role-arn", "arn:aws:iam::111111111111:role/KeysweepAudit")
    assert code == 3 and doc["accounts"][0]["error"].endswith("AccessDenied") and doc["items"] == []

    # read-only credentials cannot deactivate: the failure is reported, the key stays active
    assert main(["audit", "--deactivate", stale, "--yes"]) == 3
    assert f"{stale}\tfailed (AccessDenied)" in capsys.readouterr().out
    moto_server.reset()


@pytest.mark.timeout(60)
def test_two_keys_of_one_user_map_to_their_report_slots(moto_server):
    from keysweep.central.audit import run_audit

    iam = aws.make_client("iam")
    iam.create_user(UserName="pair")
    first = _key(iam, "pair")["AccessKeyId"]
    second = _key(iam, "pair")["AccessKeyId"]
    iam.update_access_key(UserName="pair", AccessKeyId=first, Status="Inactive")
    result = run_audit(account_targets(), AuditOptions(new_key_grace_days=0))
    assert {(i.check, i.key_id) for i in result.items} == {("inactive-key", first), ("never-used-key", second)}
    [acct] = result.accounts
    assert sorted((k.slot, k.key_id, k.status) for k in acct.keys) == [(1, first, "Inactive"), (2, second, "Active")]


def test_key_lists_in_every_accepted_shape(tmp_path):
    from keysweep.central.deactivate import read_key_list

    a, b = "AKIAXYZDQCEN4B6JSJQI", "AKIASP2TPHJSQH3FJRUX"
    shapes = {
        "keys.txt": f"# to retire\n{a}\n\n{b}  # the batch job\n{a}\n",
        "keys.csv": f"account_id,key_id\n1,{a}\n2,{b}\n",
        "report.json": json.dumps({"summary": {}, "keys": [{"key_id": a}, {"key_id": b}]}),
        "audit.json": json.dumps({"items": [{"key_id": a}, {"key_id": None}, {"key_id": b}]}),
        "list.json": json.dumps([a, b]),
    }
    for name, text in shapes.items():
        (tmp_path / name).write_text(text)
        assert read_key_list(tmp_path / name) == [a, b], name
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        read_key_list(tmp_path / "bad.json")
    (tmp_path / "odd.txt").write_text("AKIA-not-a-key\n")
    with pytest.raises(ConfigError, match="not a long-term"):
        read_key_list(tmp_path / "odd.txt")


# ------------------------------------------------------------------------------------------ removal safety


def _self_signed_pem() -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keysweep-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _ssh_public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.mark.timeout(120)
def test_every_credential_kind_counts_before_a_user_is_called_credential_free(moto_server, capsys):
    iam = aws.make_client("iam")
    iam.create_user(UserName="git-user")  # an active SSH key for CodeCommit is a credential in use
    iam.upload_ssh_public_key(UserName="git-user", SSHPublicKeyBody=_ssh_public_key())
    iam.create_user(UserName="leftovers")  # only inactive credentials and an MFA device: deletable, in order
    ssh = iam.upload_ssh_public_key(UserName="leftovers", SSHPublicKeyBody=_ssh_public_key())["SSHPublicKey"]
    iam.update_ssh_public_key(UserName="leftovers", SSHPublicKeyId=ssh["SSHPublicKeyId"], Status="Inactive")
    cert = iam.upload_signing_certificate(UserName="leftovers", CertificateBody=_self_signed_pem())["Certificate"]
    iam.update_signing_certificate(UserName="leftovers", CertificateId=cert["CertificateId"], Status="Inactive")
    mfa = iam.create_virtual_mfa_device(VirtualMFADeviceName="leftovers")["VirtualMFADevice"]["SerialNumber"]
    iam.enable_mfa_device(
        UserName="leftovers", SerialNumber=mfa, AuthenticationCode1="123456", AuthenticationCode2="654321"
    )
    code, doc = _audit_json(capsys)
    assert code == 1
    users = {i["user"] for i in doc["items"] if i["check"] == "user-without-credentials"}
    assert users == {"leftovers"}
    [item] = [i for i in doc["items"] if i["user"] == "leftovers"]
    assert item["commands"] == [
        f"aws iam delete-signing-certificate --user-name leftovers --certificate-id {cert['CertificateId']}",
        f"aws iam delete-ssh-public-key --user-name leftovers --ssh-public-key-id {ssh['SSHPublicKeyId']}",
        f"aws iam deactivate-mfa-device --user-name leftovers --serial-number {mfa}",
        f"aws iam delete-virtual-mfa-device --serial-number {mfa}",
        "aws iam delete-user --user-name leftovers",
    ]
    kinds = {(c["kind"], c["active"]) for c in item["details"]["credentials"]}
    assert kinds == {("signing-certificate", False), ("ssh-public-key", False), ("mfa-device", True)}


@pytest.mark.timeout(120)
def test_keysweeps_own_verification_is_not_use_and_nothing_on_a_host_is_offered_for_removal(
    moto_server, capsys, tmp_path
):
    iam = aws.make_client("iam")
    iam.create_user(UserName="found-svc")
    found = _key(iam, "found-svc")
    # the agent's verification: the only call ever signed with this key
    aws.isolated_client(
        "sts", access_key_id=found["AccessKeyId"], secret_access_key=found["SecretAccessKey"]
    ).get_caller_identity()
    verified_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    iam.create_user(UserName="retired-svc")
    retired = _key(iam, "retired-svc")["AccessKeyId"]
    iam.update_access_key(UserName="retired-svc", AccessKeyId=retired, Status="Inactive")
    store_messages(
        tmp_path / "fleet.db",
        *(
            finding_message(
                host_info=host("i-0aaaaaaaaaaaaaaa1", "web-1"),
                key_id=key_id,
                path=path,
                checked_at=verified_at,
                sent_at=verified_at,
            )
            for key_id, path in ((found["AccessKeyId"], "/srv/app/.env"), (retired, "/opt/old/.env"))
        ),
    )
    # without the store, the verification looks like use: the key is not "never used"
    code, doc = _audit_json(capsys, "--new-key-grace-days", "0")
    assert ("never-used-key", found["AccessKeyId"]) not in {(i["check"], i["key_id"]) for i in doc["items"]}
    code, doc = _audit_json(capsys, "--new-key-grace-days", "0", "--db", str(tmp_path / "fleet.db"))
    by = {(i["check"], i["key_id"] or i["user"]): i for i in doc["items"]}
    never = by[("never-used-key", found["AccessKeyId"])]
    assert never["details"]["keysweep_verification_use"] and "keysweep's own verification" in never["summary"]
    on_hosts = by[("key-on-hosts", found["AccessKeyId"])]
    assert "only by keysweep's verification" in on_hosts["summary"]
    # still on a host: no removal is offered for either key, nor for the retired key's user
    for item in (never, on_hosts, by[("inactive-key", retired)], by[("user-without-credentials", "retired-svc")]):
        assert item["commands"] == [], item
    assert never["details"]["held_by_hosts"] == ["web-1"] and never["action"].startswith("Held: key")
    assert by[("user-without-credentials", "retired-svc")]["details"]["held_by_hosts"] == ["web-1"]


# ------------------------------------------------------------------------------------------ organizations


def _member_iam(account: str):
    creds = aws.make_client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/KeysweepAudit", RoleSessionName="setup"
    )["Credentials"]
    return aws.isolated_client(
        "iam",
        access_key_id=creds["AccessKeyId"],
        secret_access_key=creds["SecretAccessKey"],
        session_token=creds["SessionToken"],
    )


@pytest.mark.timeout(180)
def test_organization_audit_attaches_the_scps_per_ready_ou_and_account(moto_server, capsys):
    org = aws.make_client("organizations")
    management = org.create_organization(FeatureSet="ALL")["Organization"]["MasterAccountId"]
    root = org.list_roots()["Roots"][0]["Id"]
    prod = org.create_organizational_unit(ParentId=root, Name="Prod")["OrganizationalUnit"]["Id"]
    web = org.create_organizational_unit(ParentId=prod, Name="Web")["OrganizationalUnit"]["Id"]
    dev = org.create_organizational_unit(ParentId=root, Name="Dev")["OrganizationalUnit"]["Id"]

    def account(name: str, parent: str) -> str:
        acct = org.create_account(AccountName=name, Email=f"{name}@example.com")["CreateAccountStatus"]["AccountId"]
        org.move_account(AccountId=acct, SourceParentId=root, DestinationParentId=parent)
        return acct

    prod_a, web_a, dev_clean, dev_keys, loose = (
        account("prod-a", prod),
        account("web-a", web),
        account("dev-clean", dev),
        account("dev-keys", dev),
        account("loose", root),
    )
    member = _member_iam(dev_keys)
    member.create_user(UserName="ci")
    SECRETS.append(member.create_access_key(UserName="ci")["AccessKey"]["SecretAccessKey"])

    code, doc = _audit_json(
        capsys, "--organization", "--role-name", "KeysweepAudit", "--exempt-role", "arn:aws:iam::*:role/BreakGlass"
    )
    assert code == 0  # the only key is new (grace period): nothing to act on yet, but its account is not ready
    audited = {a["account_id"]: a for a in doc["accounts"]}
    assert set(audited) == {management, prod_a, web_a, dev_clean, dev_keys, loose}
    assert audited[management]["caller_arn"].endswith(":user/moto")  # its own credentials, no role
    assert audited[prod_a]["caller_arn"].endswith("assumed-role/KeysweepAudit/keysweep-audit")
    scp = doc["scp"]
    assert scp["management_account"] == management and management in scp["ready_accounts"]
    targets = {(t["type"], t["target_id"]): t["accounts"] for t in scp["targets"]}
    # the whole Prod OU (with its nested OU) is ready; Dev is not, so its clean account stands alone;
    # the management account is never a target: SCPs do not apply to it
    assert targets == {
        ("ORGANIZATIONAL_UNIT", prod): sorted([prod_a, web_a]),
        ("ACCOUNT", dev_clean): [dev_clean],
        ("ACCOUNT", loose): [loose],
    }
    attach = [c for c in scp["commands"] if "attach-policy" in c]
    assert sorted(c.rsplit(" ", 1)[1] for c in attach) == sorted([prod, dev_clean, loose])
    assert "ACCOUNT_ID" not in " ".join(scp["commands"]) and "management account" in scp["management_account_note"]
    condition = scp["policy"]["Statement"][0]["Condition"]
    assert condition == {"ArnNotLike": {"aws:PrincipalArn": ["arn:aws:iam::*:role/BreakGlass"]}}
    root_scp = doc["root_scp"]["policy"]["Statement"][0]
    assert root_scp["Action"] == "*" and root_scp["Condition"]["ArnLike"]["aws:PrincipalArn"] == "arn:aws:iam::*:root"
    assert sorted(c.rsplit(" ", 1)[1] for c in doc["root_scp"]["commands"] if "attach-policy" in c) == sorted(
        [prod, dev_clean, loose]
    )

    assert main(["audit", "--organization"]) == 2  # needs --role-name
    assert main(["audit", "--exempt-role", "arn:aws:iam::1:user/x"]) == 2


def test_only_verifications_that_signed_with_the_key_can_explain_a_use():
    from keysweep.central.evidence import keysweep_use, verification_times
    from keysweep.central.records import FindingRecord

    at = datetime(2026, 11, 28, 10, tzinfo=UTC)
    common = dict(
        finding_fingerprint="f",
        fingerprint="k",
        key_id="AKIAXYZDQCEN4B6JSJQI",
        account_id=None,
        rule="r",
        severity="high",
        has_secret=True,
        host_id="h",
        hostname="h",
        host_kind="ec2",
        first_seen="2026-11-28T10:00:00Z",
        last_seen="2026-11-28T10:00:00Z",
        version="v",
        verified_at="2026-11-28T10:00:00Z",
    )
    identify_only = FindingRecord(
        **common,
        status="skipped",
        verification={"status": "skipped", "reason": "identify-only"},
        verification_history=({"status": "skipped", "at": "2026-11-28T10:00:00Z", "last_at": "2026-11-28T10:00:00Z"},),
    )
    unparsed = FindingRecord(**common, status="unknown", verification={"status": "unknown", "reason": "throttled"})
    signed = FindingRecord(**common, status="unknown", verification={"status": "unknown", "request_id": "req-1"})
    legacy_live = FindingRecord(
        **{**common, "verified_at": None},
        status="live",
        verification={"status": "live"},
        verification_history=({"status": "live", "at": "2026-11-28T10:00:00Z", "last_at": "2026-11-28T10:00:00Z"},),
    )
    use = at + timedelta(minutes=5)
    assert verification_times([identify_only, unparsed]) == {}
    for rec in (signed, legacy_live):
        times = verification_times([rec])
        assert keysweep_use(use, "sts", times[rec.key_id]) == at
        assert keysweep_use(use, "s3", times[rec.key_id]) is None
        assert keysweep_use(at + timedelta(minutes=30), "sts", times[rec.key_id]) is None


@pytest.mark.timeout(180)
def test_audit_items_go_to_security_hub_and_close_once_resolved(moto_server, capsys):
    iam = aws.make_client("iam")
    keys = _populate(iam)
    hub = aws.make_client("securityhub")

    def findings():
        return {f["Id"]: f for page in hub.get_paginator("get_findings").paginate() for f in page["Findings"]}

    code = main(["audit", "--format", "json", "--new-key-grace-days", "0", "--securityhub"])
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert code == 1 and f"Security Hub: {len(doc['items'])} imported, 0 archived, 0 refused" in out.err
    idle_id = f"keysweep-audit/123456789012/never-used-key/{keys['idle']}"
    idle = findings()[idle_id]
    assert idle["GeneratorId"] == "keysweep/audit/never-used-key" and idle["Severity"]["Label"] == "MEDIUM"
    assert idle["Resources"][0]["Type"] == "AwsIamAccessKey" and idle["RecordState"] == "ACTIVE"
    assert "update-access-key" in idle["ProductFields"]["keysweep/commands"]
    nobody = findings()["keysweep-audit/123456789012/user-without-credentials/nobody"]
    assert nobody["Resources"][0]["Type"] == "AwsIamUser"
    for secret in SECRETS:
        assert secret not in json.dumps(findings())
    # the key is deleted: the next audit archives its finding, and the others stay open
    iam.delete_access_key(UserName="idle-svc", AccessKeyId=keys["idle"])
    assert main(["audit", "--format", "json", "--new-key-grace-days", "0", "--securityhub"]) == 1
    assert "1 archived, 0 refused" in capsys.readouterr().err
    now = findings()
    assert now[idle_id]["RecordState"] == "ARCHIVED"
    assert now["keysweep-audit/123456789012/user-without-credentials/nobody"]["RecordState"] == "ACTIVE"
