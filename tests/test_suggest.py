from __future__ import annotations

import json
import re
import shlex

import botocore.session
import pytest
from botocore import xform_name
from keysweep.iam_policies import UserPolicies, read_user_policies_if_allowed
from keysweep.models import Finding, HostContext, Location, Verification
from keysweep.scp import SCP_WARNING, deny_key_creation_policy
from keysweep.suggest import Suggestion, suggest

from tests.support.hcl import hcl_problems

pytestmark = pytest.mark.timeout(60)

KEY = "AKIAXYZDQCEN4B6JSJQI"
USER_ARN = "arn:aws:iam::534261010715:user/ci-deployer"
_GLOBAL_OPTIONS = {"query", "output", "region", "profile", "cli-input-json", "debug", "no-paginate"}
_JSON_OPTIONS = {"assume-role-policy-document", "policy-document", "content", "inline-policy"}
_SUBSTITUTION = re.compile(r"\$\((aws [^()]*)\)")
_BOTO = botocore.session.get_session()


def _finding(path: str = "/srv/app/.env", *, verification: Verification | None = None, key_id: str = KEY) -> Finding:
    return Finding(
        rule="aws-access-key-pair",
        key_id=key_id,
        location=Location(kind="file", path=path, line=4),
        fingerprint="0" * 32,
        has_secret=True,
        account_id="534261010715",
        key_type="temporary" if key_id.startswith("ASIA") else "long-term",
        verification=verification,
    )


LIVE = Verification(status="live", account="534261010715", arn=USER_ARN, principal_type="iam-user")


def aws_command_problems(command: str) -> list[str]:
    """Why ``command`` is not a valid AWS CLI call according to botocore's service models (empty when valid).

    ``NAME=$(aws ...)`` assignments and ``$(aws ...)`` substitutions inside a command are checked as well."""
    if re.match(r"[A-Z_]+=\$\(", command):
        assert command.endswith(")")
        command = command.split("=$(", 1)[1][:-1]
    nested = [p for inner in _SUBSTITUTION.findall(command) for p in aws_command_problems(inner)]
    if nested:
        return nested
    tokens = shlex.split(command)
    if ">" in tokens:
        tokens = tokens[: tokens.index(">")]
    if tokens[:1] != ["aws"] or len(tokens) < 3:
        return [f"not an aws command: {command}"]
    service, op = tokens[1], tokens[2]
    try:
        model = _BOTO.get_service_model(service)
    except Exception:
        return [f"unknown service {service}"]
    ops = {xform_name(name, "-"): name for name in model.operation_names}
    if op not in ops:
        return [f"unknown operation {service} {op}"]
    shape = model.operation_model(ops[op]).input_shape
    members = {xform_name(m, "-"): m for m in (shape.members if shape else {})}
    given: dict[str, str | None] = {}
    i = 3
    problems = []
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            problems.append(f"stray argument {tok!r}")
            i += 1
            continue
        name = tok[2:]
        value = tokens[i + 1] if i + 1 < len(tokens) and not tokens[i + 1].startswith("--") else None
        i += 2 if value is not None else 1
        given[name] = value
        if name in _GLOBAL_OPTIONS:
            continue
        if name not in members and not (name.startswith("no-") and name[3:] in members):
            problems.append(f"{service} {op}: unknown option --{name}")
        if name in _JSON_OPTIONS and value and not value.startswith("file://"):
            try:
                json.loads(value)
            except ValueError:
                problems.append(f"--{name} is not valid JSON")
    required = {xform_name(r, "-") for r in (shape.required_members if shape else [])}
    if "cli-input-json" not in given:
        problems += [f"{service} {op}: missing --{r}" for r in required - set(given)]
    return problems


def _check_all_commands(s) -> None:
    cmds = list(s.commands) + [c for c in s.cleanup if c.startswith("aws ")]
    if s.scp:
        cmds += s.scp["commands"]
    for cmd in cmds:
        if cmd.startswith("jq "):  # merging saved policy files; run for real in test_permission_copy.py
            continue
        assert aws_command_problems(cmd) == [], cmd


def _checked(*args, **kwargs) -> Suggestion:
    """``suggest(*args, **kwargs)``, each of whose commands is checked to be well formed."""
    s = suggest(*args, **kwargs)
    _check_all_commands(s)
    return s


def test_the_command_checker_itself_rejects_bad_commands():
    assert aws_command_problems("aws iam create-rolez --role-name x")
    assert aws_command_problems("aws iam create-role --role-name x")  # missing trust policy
    assert aws_command_problems("aws iam create-role --role-name x --assume-role-policy-document '{bad'")
    assert aws_command_problems("aws ec2 associate-iam-instance-profile --instance-id i-1 --profile-name x")
    assert not aws_command_problems("aws iam list-user-policies --user-name u")


def test_ec2_without_profile_creates_profile_and_associates_with_this_instance():
    ctx = HostContext(kind="ec2", hostname="web-1", host_id="i-0abc", instance_id="i-0abc", region="eu-west-1")
    s = _checked(_finding(verification=LIVE), ctx)
    assert s.kind == "ec2-new-instance-profile"
    assert s.role_name == "ci-deployer-ec2"
    assert s.trust_policy["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    joined = "\n".join(s.commands)
    # policies not read: the exact commands listing the user's permissions
    for listing in ("list-attached-user-policies", "list-user-policies", "list-groups-for-user"):
        assert f"aws iam {listing} --user-name ci-deployer" in joined
    assert "aws iam create-instance-profile --instance-profile-name ci-deployer-ec2" in joined
    assert (
        "aws iam add-role-to-instance-profile --instance-profile-name ci-deployer-ec2 --role-name ci-deployer-ec2"
        in joined
    )
    assert "associate-iam-instance-profile --instance-id i-0abc --iam-instance-profile Name=ci-deployer-ec2" in joined
    assert f"aws iam update-access-key --access-key-id {KEY} --status Inactive --user-name ci-deployer" in s.cleanup
    assert f"aws iam get-access-key-last-used --access-key-id {KEY}" in s.cleanup
    assert s.cleanup[0].startswith("Remove the key from /srv/app/.env:4")
    assert s.scp["policy"] == deny_key_creation_policy()
    assert s.scp["warning"] == SCP_WARNING and "rotation" in SCP_WARNING
    assert "aws_iam_instance_profile" in s.terraform


def test_ec2_with_profile_adds_permissions_to_its_role_and_associates_nothing():
    ctx = HostContext(
        kind="ec2",
        hostname="w",
        host_id="i-1",
        instance_id="i-1",
        instance_profile_arn="arn:aws:iam::534261010715:instance-profile/web-profile",
    )
    s = _checked(_finding(verification=LIVE), ctx)
    assert s.kind == "ec2-existing-profile"
    joined = "\n".join(s.commands)
    assert "get-instance-profile --instance-profile-name web-profile" in joined
    assert "associate-iam-instance-profile" not in joined and "create-role" not in joined


def test_unverified_key_looks_up_its_owner_first():
    ctx = HostContext(kind="ec2", hostname="w", host_id="i-1", instance_id="i-1")
    s = _checked(_finding(), ctx)
    assert s.commands[0] == (
        f"USER_NAME=$(aws iam get-access-key-last-used --access-key-id {KEY} --query UserName --output text)"
    )
    assert any('--user-name "$USER_NAME"' in c or "--user-name $USER_NAME" in c for c in s.commands)


def test_ecs_task_role_and_existing_task_role():
    ctx = HostContext(
        kind="ecs",
        hostname="ip-10",
        host_id="arn:aws:ecs:us-east-2:1:task/prod/x",
        task_family="billing-worker",
        cluster="arn:aws:ecs:us-east-2:111122223333:cluster/prod",
        region="us-east-2",
        account_id="111122223333",
    )
    s = _checked(_finding(verification=LIVE), ctx)
    assert s.kind == "ecs-task-role" and s.role_name == "billing-worker-task"
    assert s.trust_policy["Statement"][0]["Principal"]["Service"] == "ecs-tasks.amazonaws.com"
    assert any("register-task-definition" in c for c in s.commands)
    existing = _checked(
        _finding(verification=LIVE), HostContext(**{**ctx.to_dict(), "errors": (), "task_role_present": True})
    )
    assert existing.kind == "ecs-existing-task-role"
    assert not any("create-role" in c for c in existing.commands)


@pytest.mark.parametrize(
    ("extra", "kind"),
    [
        ({"irsa_role_arn": "arn:aws:iam::1:role/ledger-irsa"}, "eks-irsa-existing"),
        ({"pod_identity": True}, "eks-pod-identity-existing"),
        ({}, "eks-pod-identity"),
    ],
)
def test_eks_service_account_roles(extra, kind):
    ctx = HostContext(
        kind="eks",
        hostname="p",
        host_id="payments/ledger-0",
        pod="ledger-0",
        namespace="payments",
        service_account="ledger-sa",
        **extra,
    )
    s = _checked(_finding(verification=LIVE), ctx)
    assert s.kind == kind
    if kind == "eks-pod-identity":
        assert s.trust_policy["Statement"][0]["Principal"]["Service"] == "pods.eks.amazonaws.com"
        assert any("create-pod-identity-association" in c and "--service-account ledger-sa" in c for c in s.commands)
    if kind == "eks-irsa-existing":
        assert all("ledger-irsa" in c for c in s.commands if "role-name" in c)


def test_lambda_execution_role():
    ctx = HostContext(
        kind="lambda", hostname="h", host_id="lambda:x", function_name="invoice-export", region="eu-central-1"
    )
    s = _checked(_finding(verification=LIVE), ctx)
    assert s.kind == "lambda-execution-role"
    assert s.commands[0].startswith("aws lambda get-function-configuration --function-name invoice-export")


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/etc/app/credentials.ini", "roles-anywhere"),
        ("/home/alice/.aws/credentials", "sso"),
        ("/host/home/bob/project/.env", "sso"),
        ("/root/.bash_history", "sso"),
        ("/opt/svc/run.sh", "roles-anywhere"),
    ],
)
def test_on_premises_machines_and_humans(path, kind):
    ctx = HostContext(kind="on-premises", hostname="build-7", host_id="machine-x")
    s = _checked(_finding(path, verification=LIVE), ctx)
    assert s.kind == kind


def test_canary_root_and_temporary_keys():
    ctx = HostContext(kind="on-premises", hostname="h", host_id="m")
    canary = suggest(_finding(verification=Verification(status="canary", account="717712589309")), ctx)
    assert canary.kind == "canary" and canary.commands == ()
    root = _checked(
        _finding(
            verification=Verification(
                status="live", account="534261010715", arn="arn:aws:iam::534261010715:root", principal_type="root"
            )
        ),
        ctx,
    )
    assert root.kind == "root-key"
    assert f"aws iam delete-access-key --access-key-id {KEY}" in root.cleanup
    temp = _checked(
        _finding(
            key_id="ASIAY34FZKBOKMUTVV7A",
            verification=Verification(
                status="live",
                account="609629065308",
                arn="arn:aws:sts::609629065308:assumed-role/deploy/s1",
                principal_type="assumed-role",
            ),
        ),
        ctx,
    )
    assert not any("update-access-key" in c for c in temp.cleanup)
    (revoke,) = [c for c in temp.cleanup if "--role-name deploy --policy-name AWSRevokeOlderSessions" in c]
    doc = json.loads(shlex.split(revoke)[-1])
    issued_before = doc["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", issued_before)


def test_policies_read_from_iam_are_copied_to_the_role(moto_server, monkeypatch):
    from keysweep.aws import make_client
    from keysweep.iam_policies import GroupPolicies

    from tests.support.iam_boundaries import user_boundaries

    iam = make_client("iam")
    iam.create_user(UserName="ci-deployer")
    arn = iam.create_policy(PolicyName="deploy", PolicyDocument=_doc("s3:PutObject"))["Policy"]["Arn"]
    iam.attach_user_policy(UserName="ci-deployer", PolicyArn=arn)
    iam.put_user_policy(UserName="ci-deployer", PolicyName="inline-logs", PolicyDocument=_doc("logs:*"))
    iam.create_group(GroupName="builders")
    iam.add_user_to_group(GroupName="builders", UserName="ci-deployer")
    read_arn = iam.create_policy(PolicyName="read-only", PolicyDocument=_doc("s3:Get*"))["Policy"]["Arn"]
    iam.attach_group_policy(GroupName="builders", PolicyArn=read_arn)
    iam.put_group_policy(GroupName="builders", PolicyName="build-logs", PolicyDocument=_doc("logs:PutLogEvents"))
    boundary = iam.create_policy(PolicyName="ci-boundary", PolicyDocument=_doc("s3:*"))["Policy"]["Arn"]
    # moto 5.2 has no user boundaries (PutUserPermissionsBoundary is not implemented): a proxy adds it to GetUser
    with user_boundaries(moto_server.endpoint, {"ci-deployer": boundary}) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_IAM", proxy.endpoint)
        policies = read_user_policies_if_allowed("ci-deployer")
    assert policies == UserPolicies(
        user_name="ci-deployer",
        attached=(arn,),
        inline=("inline-logs",),
        group_policies=(GroupPolicies("builders", (read_arn,), ("build-logs",)),),
        boundary=boundary,
    )
    ctx = HostContext(kind="ec2", hostname="w", host_id="i-1", instance_id="i-1")
    s = _checked(_finding(verification=LIVE), ctx, iam_policies=policies)
    joined = "\n".join(s.commands)
    assert f"aws iam attach-role-policy --role-name ci-deployer-ec2 --policy-arn {arn}" in joined
    assert f"--policy-arn {read_arn}" in joined
    assert "put-role-policy --role-name ci-deployer-ec2 --policy-name inline-logs" in joined
    assert "put-role-policy --role-name ci-deployer-ec2 --policy-name group-builders-build-logs" in joined
    assert "get-group-policy --group-name builders --policy-name build-logs" in joined
    (create,) = [c for c in s.commands if "create-role" in c]
    assert create.endswith(f" --permissions-boundary {boundary}")
    assert "list-attached-user-policies" not in joined
    assert s.permissions_source.startswith("iam-user:ci-deployer (read from IAM: 2 managed, 2 inline")
    assert f"boundary {boundary}" in s.permissions_source
    assert f'policy_arn = "{arn}"' in s.terraform
    assert f'permissions_boundary = "{boundary}"' in s.terraform
    assert [] == hcl_problems(s.terraform, names=[arn, read_arn, "inline-logs", "group-builders-build-logs", boundary])


def test_policies_unreadable_without_iam_permission_return_none(moto_server):
    moto_server.enable_auth()  # the testing key is not a user of the emulator: IAM refuses
    assert read_user_policies_if_allowed("ci-deployer") is None


def _doc(action: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]})


def test_scp_exempts_break_glass_principals():
    doc = deny_key_creation_policy(["arn:aws:iam::*:role/break-glass"])
    (stmt,) = doc["Statement"]
    assert stmt["Effect"] == "Deny" and set(stmt["Action"]) == {"iam:CreateAccessKey", "iam:CreateUser"}
    assert stmt["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": ["arn:aws:iam::*:role/break-glass"]}}
