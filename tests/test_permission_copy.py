"""Same-privilege copy: a role or permission set gets exactly the key owner's permissions, boundary included.

IAM is moto's server over HTTP; moto has no user permissions boundaries, so a proxy adds them to GetUser
(tests/support/iam_boundaries.py). Where the AWS CLI is installed, the emitted commands are run with it, as
written, against moto; the jq merge is run with jq.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from keysweep import aws
from keysweep.central.audit import AccountTarget, AuditOptions, run_audit
from keysweep.central.handler import MessageHandler, Outcome
from keysweep.central.store import open_store
from keysweep.iam_policies import GroupPolicies, UserPolicies, read_user_policies
from keysweep.models import HostContext
from keysweep.permission_copy import (
    MANAGED_POLICIES_PER_ROLE,
    copy_to_permission_set,
    copy_to_role,
    policy_name_and_path,
)
from keysweep.suggest import Suggestion, suggest

from tests.support.hcl import hcl_problems
from tests.support.iam_boundaries import user_boundaries
from tests.support.messages import finding_message, host
from tests.test_suggest import LIVE, _finding, aws_command_problems

pytestmark = pytest.mark.timeout(180)


def _doc(*actions: str, sid: str | None = None) -> dict:
    stmt = {"Effect": "Allow", "Action": list(actions), "Resource": "*"}
    if sid:
        stmt["Sid"] = sid
    return {"Version": "2012-10-17", "Statement": [stmt]}


def _aws_cli() -> str | None:
    exe = shutil.which("aws")
    if exe is None:
        return None
    try:
        # a slow start-up is no reason to skip the commands' run: only a hung CLI is
        ok = subprocess.run([exe, "--version"], capture_output=True, timeout=300).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return None
    return exe if ok else None


def _run(commands, cwd: Path) -> None:
    for cmd in commands:
        run = subprocess.run(
            ["bash", "-c", "set -o pipefail; " + cmd], cwd=cwd, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, f"{cmd}\n{run.stderr}"


def _user_with_everything(iam, managed: int = 3) -> tuple[list[str], str]:
    """User "ci" with ``managed`` managed policies (the last two through group "builders"), an inline policy of its
    own and one of the group (with a policy variable); returns (managed ARNs, boundary ARN)."""
    iam.create_user(UserName="ci")
    iam.create_group(GroupName="builders")
    iam.add_user_to_group(GroupName="builders", UserName="ci")
    arns = []
    for i in range(managed):
        path = "/team/ci/" if i == 0 else "/"
        arn = iam.create_policy(PolicyName=f"p{i:02d}", Path=path, PolicyDocument=json.dumps(_doc(f"s3:Get{i}")))[
            "Policy"
        ]["Arn"]
        arns.append(arn)
        if i < managed - 2:
            iam.attach_user_policy(UserName="ci", PolicyArn=arn)
        else:
            iam.attach_group_policy(GroupName="builders", PolicyArn=arn)
    iam.put_user_policy(UserName="ci", PolicyName="own-logs", PolicyDocument=json.dumps(_doc("logs:*", sid="A")))
    iam.put_group_policy(
        GroupName="builders",
        PolicyName="home",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": {
                    "Sid": "A",
                    "Effect": "Allow",
                    "Action": "s3:*",
                    "Resource": "arn:aws:s3:::home/${aws:username}/*",
                },
            }
        ),
    )
    boundary = iam.create_policy(PolicyName="ci-boundary", PolicyDocument=json.dumps(_doc("s3:*", "logs:*")))
    return arns, boundary["Policy"]["Arn"]


def _read(moto_server, monkeypatch, boundaries) -> UserPolicies:
    with user_boundaries(moto_server.endpoint, boundaries) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_IAM", proxy.endpoint)
        policies = read_user_policies(aws.make_client("iam"), "ci")
        actions = [r.body.decode() for r in proxy.snapshot()]
    monkeypatch.delenv("AWS_ENDPOINT_URL_IAM")
    assert any("Action=GetUser&" in a for a in actions)
    return policies


def test_the_reader_returns_lists_boundary_and_documents(moto_server, monkeypatch):
    arns, boundary = _user_with_everything(aws.make_client("iam"))
    p = _read(moto_server, monkeypatch, {"ci": boundary})
    assert p == UserPolicies(
        "ci", (arns[0],), ("own-logs",), (GroupPolicies("builders", tuple(arns[1:]), ("home",)),), boundary
    )
    assert p.documents["own-logs"] == _doc("logs:*", sid="A")
    assert p.group_policies[0].documents["home"]["Statement"]["Resource"] == "arn:aws:s3:::home/${aws:username}/*"
    assert p.boundary_known and p.unread == () and p.managed_arns() == arns
    assert "boundary ci-boundary" in p.summary()
    # without details, only the List* calls are made (the audit's users to delete need no more)
    light = read_user_policies(aws.make_client("iam"), "ci", details=False)
    assert light.boundary is None and not light.documents and light.inline == ("own-logs",)


def test_refused_details_are_named_and_the_copy_reads_them_itself(moto_server, monkeypatch):
    iam = aws.make_client("iam")
    _user_with_everything(iam)
    iam.create_user(UserName="lister")
    iam.put_user_policy(UserName="lister", PolicyName="list", PolicyDocument=json.dumps(_doc("iam:List*")))
    key = iam.create_access_key(UserName="lister")["AccessKey"]
    moto_server.enable_auth()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    p = read_user_policies(aws.make_client("iam"), "ci")
    assert p.inline == ("own-logs",) and p.groups == ("builders",)
    assert not p.boundary_known and not p.documents
    assert any(u.startswith("permissions boundary (iam:GetUser: AccessDenied") for u in p.unread)
    copy = copy_to_role(p, "ci-ec2", user_ref="ci", user="ci", new_role=True)
    assert copy.create_flags == ""  # a boundary not read is not guessed
    assert (
        "aws iam get-user --user-name ci --query User.PermissionsBoundary.PermissionsBoundaryArn --output text"
        in copy.commands
    )
    assert "boundary not read" in copy.source and "not read: inline policy own-logs" in copy.source
    # Terraform takes the inline documents from the files the commands save
    assert 'file("inline-own-logs.json")' in copy.terraform and 'file("group-builders-home.json")' in copy.terraform
    assert all(aws_command_problems(c) == [] for c in copy.commands)


@pytest.mark.parametrize("managed", [3, 12])
# runs some 30 AWS CLI commands, each its own Python start-up of about 2 s on a quiet machine (several times that
# under load): the budget guards against a hang, it is not what is tested
@pytest.mark.timeout(900)
def test_role_copy_within_the_managed_policy_quota(moto_server, monkeypatch, tmp_path, managed):
    iam = aws.make_client("iam")
    arns, boundary = _user_with_everything(iam, managed)
    p = _read(moto_server, monkeypatch, {"ci": boundary})
    ctx = HostContext(kind="ec2", hostname="w", host_id="i-1", instance_id="i-1")
    s = suggest(_finding(verification=LIVE), ctx, iam_policies=p)
    attaches = [c for c in s.commands if "attach-role-policy" in c]
    assert [c.rsplit(" ", 1)[-1] for c in attaches] == arns[:MANAGED_POLICIES_PER_ROLE]
    extra = arns[MANAGED_POLICIES_PER_ROLE:]
    for arn in extra:
        name = policy_name_and_path(arn)[0]
        assert any(f"get-policy-version --policy-arn {arn}" in c for c in s.commands)
        assert any(f"--policy-name managed-{name} " in c for c in s.commands)
    quota_steps = [st for st in s.steps if "a role holds 10 by default" in st]
    assert len(quota_steps) == (1 if extra else 0)
    if extra:
        assert "request-service-quota-increase --service-code iam" in quota_steps[0]
    for cmd in s.commands:
        assert aws_command_problems(cmd) == [], cmd
    names = [*arns, "own-logs", "group-builders-home", boundary]
    assert hcl_problems(s.terraform, names=names) == []
    assert s.terraform.count('resource "aws_iam_role_policy_attachment"') == min(managed, MANAGED_POLICIES_PER_ROLE)
    assert "$${aws:username}" in s.terraform

    cli = _aws_cli()
    if cli is None:
        pytest.skip("the AWS CLI is not installed: commands checked against botocore's models only")
    copy_cmds = [c for c in s.commands if c.startswith("aws iam") and "instance-profile" not in c]
    _run(copy_cmds, tmp_path)
    name = s.role_name
    assert name == "ci-ec2"  # named after the user the policies were read for
    role = iam.get_role(RoleName=name)["Role"]
    assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary
    attached = [a["PolicyArn"] for a in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]]
    assert sorted(attached) == sorted(arns[:MANAGED_POLICIES_PER_ROLE])
    inline = iam.list_role_policies(RoleName=name)["PolicyNames"]
    assert sorted(inline) == sorted(
        ["own-logs", "group-builders-home", *(f"managed-{policy_name_and_path(a)[0]}" for a in extra)]
    )
    got = iam.get_role_policy(RoleName=name, PolicyName="group-builders-home")["PolicyDocument"]
    assert got["Statement"]["Resource"] == "arn:aws:s3:::home/${aws:username}/*"


def test_existing_role_gets_the_boundary_with_a_warning(moto_server, monkeypatch):
    _, boundary = _user_with_everything(aws.make_client("iam"))
    p = _read(moto_server, monkeypatch, {"ci": boundary})
    ctx = HostContext(kind="lambda", hostname="h", host_id="lambda:x", function_name="export", region="eu-west-1")
    s = suggest(_finding(verification=LIVE), ctx, iam_policies=p)
    assert (
        f"aws iam put-role-permissions-boundary --role-name ROLE_NAME --permissions-boundary {boundary}" in s.commands
    )
    assert any("also limits what the role does today" in st for st in s.steps)
    assert hcl_problems(s.terraform, names=["own-logs", "group-builders-home"]) == []


def _sso_suggestion(moto_server, monkeypatch) -> tuple[list[str], UserPolicies, Suggestion]:
    """The suggestion for a laptop key of user ci, the user's policies read from IAM, and its managed ARNs."""
    arns, boundary = _user_with_everything(aws.make_client("iam"))
    p = _read(moto_server, monkeypatch, {"ci": boundary})
    # moto loads no AWS managed policies by default: add one as if attached to the user
    p = dataclasses.replace(p, attached=(*p.attached, "arn:aws:iam::aws:policy/ReadOnlyAccess"))
    return (
        arns,
        p,
        suggest(
            _finding("/home/ci/.aws/credentials", verification=LIVE),
            HostContext(kind="on-premises", hostname="laptop", host_id="m"),
            iam_policies=p,
        ),
    )


def test_permission_set_copy(moto_server, monkeypatch, tmp_path):
    arns, p, s = _sso_suggestion(moto_server, monkeypatch)
    assert s.kind == "sso"
    joined = "\n".join(s.commands)
    assert (
        "attach-managed-policy-to-permission-set --instance-arn INSTANCE_ARN --permission-set-arn "
        "PERMISSION_SET_ARN --managed-policy-arn arn:aws:iam::aws:policy/ReadOnlyAccess"
    ) in joined
    for arn in arns:  # customer managed: by name and path, never by ARN
        name, path = policy_name_and_path(arn)
        assert f"--customer-managed-policy-reference Name={name},Path={path}" in joined
        assert f"--managed-policy-arn {arn}" not in joined
    assert "Name=p00,Path=/team/ci/" in joined
    assert any("must exist in every account" in st for st in s.steps)
    assert ("--permissions-boundary 'CustomerManagedPolicyReference={Name=ci-boundary,Path=/}'") in joined
    assert "--inline-policy file://permission-set-inline.json" in joined
    for cmd in s.commands:
        if not cmd.startswith("jq "):
            assert aws_command_problems(cmd) == [], cmd
    customer = [f'name = "{policy_name_and_path(a)[0]}"' for a in arns] + ['path = "/team/ci/"']
    assert hcl_problems(s.terraform, names=[*customer, "ReadOnlyAccess", "ci-boundary", "logs:*", "s3:*"]) == []

    # the merge: the files the get-*-policy commands save, merged by the emitted jq command
    (tmp_path / "inline-own-logs.json").write_text(json.dumps(p.documents["own-logs"]))
    (tmp_path / "group-builders-home.json").write_text(json.dumps(p.group_policies[0].documents["home"]))
    (merge,) = [c for c in s.commands if c.startswith("jq ")]
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    _run([merge], tmp_path)
    merged = json.loads((tmp_path / "permission-set-inline.json").read_text())
    assert merged["Version"] == "2012-10-17"
    assert [st["Action"] for st in merged["Statement"]] == [["logs:*"], "s3:*"]
    assert all("Sid" not in st for st in merged["Statement"])  # both were "A": duplicates would be refused


def test_one_inline_policy_goes_straight_to_the_permission_set():
    p = UserPolicies("u", inline=("only",), documents={"only": _doc("s3:GetObject")})
    ps = copy_to_permission_set(p, account="111122223333", user_ref="u")
    assert not any(c.startswith("jq ") for c in ps.commands)
    assert ps.commands[-1].endswith("--inline-policy file://inline-only.json")
    assert "aws iam get-user --user-name u" not in "\n".join(ps.commands)  # boundary known: none


def test_policy_name_and_path():
    assert policy_name_and_path("arn:aws:iam::111122223333:policy/team/ci/deploy") == ("deploy", "/team/ci/")
    assert policy_name_and_path("arn:aws:iam::111122223333:policy/deploy") == ("deploy", "/")
    assert policy_name_and_path("arn:aws:iam::aws:policy/service-role/AWSLambdaRole") == (
        "AWSLambdaRole",
        "/service-role/",
    )


def test_audit_key_on_hosts_carries_the_copy(moto_server, monkeypatch, tmp_path):
    iam = aws.make_client("iam")
    _user_with_everything(iam)
    key = iam.create_access_key(UserName="ci")["AccessKey"]["AccessKeyId"]
    db = tmp_path / "fleet.db"
    store = open_store(str(db))
    try:
        handler = MessageHandler(store)
        msg = finding_message(host_info=host("i-0aaaaaaaaaaaaaaa1", "web-1"), key_id=key, path="/srv/app/.env")
        assert handler.handle(json.dumps(msg)).outcome is Outcome.OK
        records = list(store.iter_findings())
    finally:
        store.close()
    result = run_audit([AccountTarget()], AuditOptions(), findings=records)
    (item,) = [i for i in result.items if i.check == "key-on-hosts"]
    (replacement,) = item.to_dict()["details"]["replacement"]
    assert replacement["role_name"] == "web-1-role" and replacement["hosts"] == ["web-1"]
    cmds = replacement["commands"]
    assert (
        "aws iam put-role-policy --role-name web-1-role --policy-name group-builders-home "
        "--policy-document file://group-builders-home.json" in cmds
    )
    assert any(c.startswith("aws iam attach-role-policy --role-name web-1-role") for c in cmds)
    # moto answers GetUser without a boundary: "none", and nothing to put
    assert "boundary none" in replacement["permissions_source"]
    assert not any("permissions-boundary" in c for c in cmds)
    assert all(aws_command_problems(c) == [] for c in cmds)
    assert hcl_problems(replacement["terraform"], names=["own-logs", "group-builders-home"]) == []


def test_permission_set_commands_run_as_written(moto_server, monkeypatch, tmp_path):
    cli = _aws_cli()
    if cli is None or shutil.which("jq") is None:
        pytest.skip("the AWS CLI or jq is not installed: commands checked against botocore's models only")
    arns, p, s = _sso_suggestion(moto_server, monkeypatch)
    sso = aws.make_client("sso-admin")
    instance = sso.list_instances()["Instances"][0]["InstanceArn"]
    name = next(c for c in s.commands if "create-permission-set" in c).split("--name ")[1].split()[0]
    ps_arn = None
    for cmd in s.commands:
        if "list-instances" in cmd or "create-account-assignment" in cmd:
            continue
        if "put-permissions-boundary-to-permission-set" in cmd:
            continue  # moto 5.2 does not implement PutPermissionsBoundaryToPermissionSet
        cmd = cmd.replace("INSTANCE_ARN", instance)
        if ps_arn is None and "create-permission-set" in cmd:
            _run([cmd + " > ps.json"], tmp_path)
            ps_arn = json.loads((tmp_path / "ps.json").read_text())["PermissionSet"]["PermissionSetArn"]
            continue
        _run([cmd.replace("PERMISSION_SET_ARN", ps_arn)], tmp_path)
    assert ps_arn and name == "ci-access"
    refs = sso.list_customer_managed_policy_references_in_permission_set(InstanceArn=instance, PermissionSetArn=ps_arn)[
        "CustomerManagedPolicyReferences"
    ]
    assert sorted((r["Name"], r["Path"]) for r in refs) == sorted(policy_name_and_path(a) for a in arns)
    aws_managed = sso.list_managed_policies_in_permission_set(InstanceArn=instance, PermissionSetArn=ps_arn)[
        "AttachedManagedPolicies"
    ]
    assert [m["Arn"] for m in aws_managed] == ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
    inline = json.loads(
        sso.get_inline_policy_for_permission_set(InstanceArn=instance, PermissionSetArn=ps_arn)["InlinePolicy"]
    )
    assert [st["Action"] for st in inline["Statement"]] == [["logs:*"], "s3:*"]


def test_a_very_broad_user_fits_a_message_without_broken_pairs():
    from keysweep.report.message import finding_message as agent_message

    boundary = "arn:aws:iam::534261010715:policy/bound"
    groups = tuple(
        GroupPolicies(f"g{g}", tuple(f"arn:aws:iam::534261010715:policy/g{g}-{i}" for i in range(10)), (f"gi{g}",))
        for g in range(10)
    )
    p = UserPolicies(
        "ci-deployer", tuple(f"arn:aws:iam::534261010715:policy/u{i}" for i in range(10)), ("own",), groups, boundary
    )
    ctx = HostContext(kind="lambda", hostname="h", host_id="lambda:x", function_name="export", region="eu-west-1")
    f = _finding(verification=LIVE)
    s = suggest(f, ctx, iam_policies=p)
    assert len(s.commands) <= 64
    assert s.commands[-1] == (
        f"aws iam put-role-permissions-boundary --role-name ROLE_NAME --permissions-boundary {boundary}"
    )
    saves = [i for i, c in enumerate(s.commands) if " > " in c]
    assert saves and all("put-role-policy" in s.commands[i + 1] for i in saves)
    assert any("more than a suggestion carries" in st and "left out here" in st for st in s.steps)
    assert s.terraform.count("aws_iam_role_policy_attachment") == 10 and 'data "aws_iam_policy"' in s.terraform
    msg = agent_message(f, ctx, finding_fingerprint="d" * 32, suggestion=s, report_reason="new")
    assert msg["suggestion"]["commands"] == list(s.commands)
    assert not any("commands" in t for t in msg.get("truncated", []))
    # the audit's copy is not bounded: every policy is there
    full = copy_to_role(p, "ROLE_NAME", user_ref="ci-deployer", user="ci-deployer", new_role=False)
    assert len(full.commands) == 10 + 100 * 2 + 11 * 2 + 1


def test_hcl_json_escapes_template_sequences():
    from keysweep.permission_copy import hcl_json

    doc = {"Resource": "arn:aws:s3:::b/${aws:username}/%{x}", "N": [1, True, None]}
    text = f'resource "aws_iam_role_policy" "x" {{\n  policy = jsonencode({hcl_json(doc)})\n}}\n'
    assert "$${aws:username}" in text and "%%{x}" in text
    assert hcl_problems(text) == []


def test_permission_set_past_the_quota_and_unread():
    managed = tuple(f"arn:aws:iam::111122223333:policy/p{i}" for i in range(12))
    p = UserPolicies("u", managed, ("own",), documents={"own": _doc("s3:GetObject")})
    ps = copy_to_permission_set(p, account="111122223333", user_ref="u")
    refs = [c for c in ps.commands if "attach-customer-managed-policy-reference" in c]
    assert len(refs) == MANAGED_POLICIES_PER_ROLE
    (merge,) = [c for c in ps.commands if c.startswith("jq ")]
    assert "managed-p10.json managed-p11.json inline-own.json" in merge
    assert any("the other 2 go into the inline policy" in st for st in ps.steps)
    assert 'file("permission-set-inline.json")' in ps.terraform  # managed documents are not read: from the file
    unread = copy_to_permission_set(None, account="111122223333", user_ref="$USER_NAME")
    assert unread.commands[-1].startswith("aws iam get-user --user-name $USER_NAME")
    for cmd in (*ps.commands, *unread.commands):
        if not cmd.startswith("jq "):
            assert aws_command_problems(cmd) == [], cmd


def test_copied_names_never_collide():
    p = UserPolicies(
        "u",
        tuple(f"arn:aws:iam::1:policy/p{i}" for i in range(10))
        + ("arn:aws:iam::1:policy/a/deploy", "arn:aws:iam::1:policy/b/deploy", "arn:aws:iam::aws:policy/deploy"),
        ("group-a-b-c",),
        (GroupPolicies("a-b", (), ("c",)), GroupPolicies("a", (), ("b-c",))),
    )
    copy = copy_to_role(p, "R", user_ref="u", user="u", new_role=True)
    puts = [c.split("--policy-name ")[1].split()[0] for c in copy.commands if "put-role-policy" in c]
    files = [c.rsplit("> ", 1)[1] for c in copy.commands if " > " in c]
    assert puts == [
        "managed-a-deploy",
        "managed-b-deploy",
        "managed-aws-deploy",
        "group-a-b-c",
        "group-a-b-c-2",
        "group-a-b-c-3",
    ]
    assert len(set(files)) == len(files) == 6
    ps = copy_to_permission_set(p, account="1", user_ref="u")
    (merge,) = [c for c in ps.commands if c.startswith("jq ")]
    assert all(f in merge for f in files)
    assert hcl_problems(copy.terraform, names=puts) == []
