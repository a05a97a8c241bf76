"""What should replace each found key, chosen by where the agent runs.

A :class:`Suggestion` is structured data (role, trust policy, where its permissions come from) plus ready-to-run
AWS CLI commands and a Terraform snippet, followed by the same clean-up every time: remove the key from where it
was found, deactivate it, delete it once unused, and — once the account has no keys left — the SCP that stops new
ones. Commands use the key owner's IAM user name from verification; when it is unknown, a first command looks it
up (``get-access-key-last-used`` answers the owner's name for a key id).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from keysweep import timeutil
from keysweep.iam_policies import UserPolicies
from keysweep.models import Finding, HostContext, describe_location
from keysweep.permission_copy import RoleCopy, copy_to_permission_set, copy_to_role, hcl_json
from keysweep.scp import scp_recommendation

_HUMAN_PATH = re.compile(r"(^|/)(home|Users)/[^/]+/")
_HISTORY_NAMES = (".bash_history", ".zsh_history", ".history", ".sh_history", ".ash_history", "fish_history")
_ROLE_NAME_BAD = re.compile(r"[^\w+=,.@-]")
_COPY_COMMANDS = 48  # of the 64 commands a finding message carries, leaving room for the role's own


@dataclass(frozen=True)
class Suggestion:
    kind: str
    summary: str
    role_name: str | None = None
    trust_policy: dict[str, Any] | None = field(default=None, compare=False)
    permissions_source: str | None = None
    steps: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    terraform: str | None = None
    cleanup: tuple[str, ...] = ()
    scp: dict[str, Any] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "summary": self.summary,
            "role_name": self.role_name,
            "trust_policy": self.trust_policy,
            "permissions_source": self.permissions_source,
            "steps": list(self.steps),
            "commands": list(self.commands),
            "terraform": self.terraform,
            "cleanup": list(self.cleanup),
            "scp": self.scp,
        }


def _trust(
    service: str, actions: Sequence[str] = ("sts:AssumeRole",), condition: dict[str, Any] | None = None
) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": actions[0] if len(actions) == 1 else list(actions),
    }
    if condition:
        statement["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [statement]}


def _json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _role_name(base: str, suffix: str) -> str:
    name = _ROLE_NAME_BAD.sub("-", f"{base}-{suffix}")
    return name[:64]


def _arn_tail(arn: str | None) -> str | None:
    return arn.rsplit("/", 1)[-1] if arn and "/" in arn else None


@dataclass
class _Plan:
    """What every suggestion kind shares: the key, its owner and where to copy permissions from."""

    finding: Finding
    context: HostContext
    policies: UserPolicies | None
    account: str
    user: str | None  # IAM user name of the key owner, when known
    user_ref: str  # what commands use for it: the name, or "$USER_NAME" set by a look-up command
    lookup: list[str]

    @property
    def region_flag(self) -> str:
        return f" --region {self.context.region}" if self.context.region else ""

    def copy_permissions(self, role: str, *, new_role: bool = False) -> RoleCopy:
        """What gives ``role`` the permissions of the key's IAM user (``new_role``: created by this suggestion)."""
        return copy_to_role(
            self.policies, role, user_ref=self.user_ref, user=self.user, new_role=new_role, max_commands=_COPY_COMMANDS
        )

    def role_arn(self, role: str) -> str:
        return f"arn:aws:iam::{self.account}:role/{role}"


def _terraform(role: str | None, trust: dict[str, Any] | None, copy: RoleCopy, extra: str = "") -> str | None:
    blocks = []
    if role and trust:
        blocks.append(
            f'resource "aws_iam_role" "replacement" {{\n  name = "{role}"\n'
            f"  assume_role_policy = jsonencode({hcl_json(trust)})\n{copy.role_attributes}}}"
        )
    if copy.terraform:
        blocks.append(copy.terraform)
    if extra:
        blocks.append(extra)
    return "\n\n".join(blocks) + "\n" if blocks else None


def _is_human_location(finding: Finding) -> bool:
    path = finding.location.path or ""
    return bool(_HUMAN_PATH.search(path)) or path.rsplit("/", 1)[-1] in _HISTORY_NAMES


def _where(finding: Finding) -> str:
    loc = finding.location
    if loc.kind == "process":
        what = f"the environment of process {loc.exe or loc.pid}"
        if loc.variable:
            what += f" (variable {loc.variable})"
        if loc.unit:
            what += f", set by unit {loc.unit}"
        return what
    return describe_location(loc)


def _cleanup(plan: _Plan) -> list[str]:
    f = plan.finding
    out = [f"Remove the key from {_where(f)} (and from any copy, backup or image of it)."]
    if f.key_type == "temporary" or f.key_id.startswith("ASIA"):
        role = None
        arn = f.verification.arn if f.verification else None
        if arn and ":assumed-role/" in arn:
            role = arn.split(":assumed-role/", 1)[1].split("/", 1)[0]
        revoke = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Deny",
                    "Action": "*",
                    "Resource": "*",
                    # sessions issued before this suggestion was made, as the console's "revoke sessions" does
                    "Condition": {"DateLessThan": {"aws:TokenIssueTime": timeutil.now_iso()}},
                }
            ],
        }
        out.append("Temporary credentials expire by themselves; to cut them off now, revoke the role's older sessions:")
        out.append(
            f"aws iam put-role-policy --role-name {role or 'ROLE_NAME'} --policy-name AWSRevokeOlderSessions "
            f"--policy-document '{_json(revoke)}'"
        )
        return out
    if plan.finding.verification and plan.finding.verification.principal_type == "root":
        out += [
            "Signed in as the root user, delete the root access key (root should have none):",
            f"aws iam delete-access-key --access-key-id {f.key_id}",
        ]
        return out
    u = plan.user_ref
    out += [
        "Deactivate the key (reversible), watch for breakage, then delete it once it is no longer used:",
        f"aws iam update-access-key --access-key-id {f.key_id} --status Inactive --user-name {u}",
        f"aws iam get-access-key-last-used --access-key-id {f.key_id}",
        f"aws iam delete-access-key --access-key-id {f.key_id} --user-name {u}",
    ]
    return out


def _plan(finding: Finding, context: HostContext, policies: UserPolicies | None) -> _Plan:
    v = finding.verification
    account = (v.account if v else None) or finding.account_id or context.account_id or "ACCOUNT_ID"
    user = None
    if v and v.arn and ":user/" in v.arn:
        user = v.arn.rsplit("/", 1)[-1]
    if policies is not None:
        user = policies.user_name
    lookup = []
    user_ref = user or "$USER_NAME"
    if not user:
        lookup = [
            f"USER_NAME=$(aws iam get-access-key-last-used --access-key-id {finding.key_id} --query UserName --output text)"
        ]
    return _Plan(finding, context, policies, account, user, user_ref, lookup)


def suggest(
    finding: Finding,
    context: HostContext,
    *,
    iam_policies: UserPolicies | None = None,
    scp_exempt_principal_arns: Sequence[str] = (),
) -> Suggestion:
    """The replacement for ``finding``'s key on this host, with commands, Terraform and clean-up."""
    plan = _plan(finding, context, iam_policies)
    v = finding.verification
    scp = scp_recommendation([plan.account] if plan.account != "ACCOUNT_ID" else [], scp_exempt_principal_arns)
    if v and v.status == "canary":
        return Suggestion(
            kind="canary",
            summary="A canary (honeytoken) key: it is not a working credential. Do not use it; if it was not planted "
            "on purpose, remove it and tell the security team, whose alarm it has tripped.",
            steps=("Check with the security team whether this canary was placed here deliberately.",),
            cleanup=(f"Remove the key from {_where(finding)} unless it was planted on purpose.",),
        )
    if v and v.principal_type == "root":
        return Suggestion(
            kind="root-key",
            summary="An access key of the account's root user: delete it; use an IAM role (or SSO) instead.",
            steps=("Sign in as the root user and delete the access key; set up MFA for root if it is missing.",),
            cleanup=tuple(_cleanup(plan)),
            scp=scp,
        )
    if finding.location.kind == "cloud":
        plan.context = _resource_context(finding, context)
    builder = {
        "ec2": _ec2,
        "ecs": _ecs,
        "eks": _eks,
        "lambda": _lambda,
        "launch-template": _launch_template,
        "codebuild": _codebuild,
        "batch": _batch,
        "stored": _stored,
    }.get(plan.context.kind)
    if builder is None:
        builder = _sso if _is_human_location(finding) else _roles_anywhere
    kind, summary, role, trust, steps, cmds, tf = builder(plan)
    return Suggestion(
        kind=kind,
        summary=summary,
        role_name=role,
        trust_policy=trust,
        permissions_source=plan.copy_permissions(role or "ROLE_NAME").source,
        steps=tuple(steps),
        commands=tuple(plan.lookup + cmds),
        terraform=tf,
        cleanup=tuple(_cleanup(plan)),
        scp=scp,
    )


_Built = tuple[str, str, Optional[str], Optional[dict[str, Any]], list[str], list[str], Optional[str]]


def _existing_role(
    plan: _Plan,
    kind: str,
    summary: str,
    role: str | None,
    *,
    find: str = "",
    name_from: str = "",
    then: Sequence[str] = (),
    copy_to: str = "",
) -> _Built:
    """The workload already has a role: give it the key's permissions. ``role`` by name, or None for ROLE_NAME,
    which the command ``find`` prints (``name_from`` says where in its output) or sets as the shell variable the
    commands name as ``copy_to``; ``then``: the steps that follow."""
    rc = plan.copy_permissions(copy_to or role or "ROLE_NAME")
    cmds = [find, *rc.commands] if find else list(rc.commands)
    steps = [name_from, *rc.steps] if name_from else list(rc.steps)
    return kind, summary, role, None, [*steps, *then], cmds, _terraform(role or "ROLE_NAME", None, rc)


def _existing_profile(plan: _Plan, profile: str, summary: str, *, name_from: str = "", then: Sequence[str]) -> _Built:
    """EC2 instances already have instance profile ``profile``: give its role (ROLE_NAME, which the first command
    sets) the key's permissions."""
    find = (
        f"ROLE_NAME=$(aws iam get-instance-profile --instance-profile-name {profile} "
        "--query 'InstanceProfile.Roles[0].RoleName' --output text)"
    )
    return _existing_role(
        plan, "ec2-existing-profile", summary, None, copy_to='"$ROLE_NAME"', find=find, name_from=name_from, then=then
    )


def _new_instance_profile(plan: _Plan, flags: str = "") -> tuple[str, dict[str, Any], RoleCopy, list[str]]:
    """A new role EC2 may assume with the key's permissions, in an instance profile of its name: the role, its
    trust policy, the permission copy and the commands (``flags``: more options of create-role)."""
    role = _role_name(_base_name(plan), "ec2")
    trust = _trust("ec2.amazonaws.com")
    rc = plan.copy_permissions(role, new_role=True)
    cmds = [
        _create_role(role, trust, rc, flags),
        *rc.commands,
        f"aws iam create-instance-profile --instance-profile-name {role}",
        f"aws iam add-role-to-instance-profile --instance-profile-name {role} --role-name {role}",
    ]
    return role, trust, rc, cmds


def _create_role(role: str, trust: dict[str, Any], rc: RoleCopy, flags: str = "") -> str:
    """The command creating ``role`` with ``trust`` (``flags``: more options; ``rc``'s own come last)."""
    return (
        f"aws iam create-role --role-name {role} --assume-role-policy-document '{_json(trust)}'{flags}"
        + rc.create_flags
    )


def _base_name(plan: _Plan) -> str:
    return plan.user or "keysweep"


def _ec2(plan: _Plan) -> _Built:
    ctx = plan.context
    instance = ctx.instance_id or "INSTANCE_ID"
    if ctx.instance_profile_arn:
        profile = _arn_tail(ctx.instance_profile_arn) or "PROFILE_NAME"
        summary = (
            f"Instance {instance} already has instance profile {profile}: give its role the permissions this key "
            "gives, and let the application use the instance's credentials (the default credential chain does)."
        )
        return _existing_profile(
            plan,
            profile,
            summary,
            name_from=f"Find the role of instance profile {profile} (first command).",
            then=["Remove the key from the application's configuration; the SDK then uses the instance role."],
        )
    role, trust, rc, cmds = _new_instance_profile(plan, f" --description 'Replaces access key {plan.finding.key_id}'")
    cmds.append(
        f"aws ec2 associate-iam-instance-profile --instance-id {instance} --iam-instance-profile Name={role}"
        + plan.region_flag
    )
    steps = [
        f"Create role {role} that EC2 may assume.",
        *rc.steps,
        f"Put it in instance profile {role} and associate that with instance {instance}.",
        "Remove the key from the application's configuration; the SDK then uses the instance role.",
    ]
    extra = (
        f'resource "aws_iam_instance_profile" "replacement" {{\n  name = "{role}"\n  role = aws_iam_role.replacement.name\n}}\n'
        f"# on the aws_instance for {instance}: iam_instance_profile = aws_iam_instance_profile.replacement.name"
    )
    summary = (
        f"Instance {instance} has no instance profile: create role {role} with this key's permissions and attach it."
    )
    return "ec2-new-instance-profile", summary, role, trust, steps, cmds, _terraform(role, trust, rc, extra)


def _ecs(plan: _Plan) -> _Built:
    ctx = plan.context
    family = ctx.task_family or "TASK_FAMILY"
    cluster = ctx.cluster or "CLUSTER"
    known = _arn_tail(plan.finding.location.role_arn)
    if ctx.task_role_present and known:  # read from the task definition (keysweep cloud)
        summary = (
            f"Task family {family} already has task role {known}: give it this key's permissions and drop the key."
        )
        return _existing_role(
            plan,
            "ecs-existing-task-role",
            summary,
            known,
            then=[
                "Register a task definition revision without the key in the container environment and "
                "update the services that use it."
            ],
        )
    if ctx.task_role_present:
        summary = f"Task family {family} already has a task role: give it this key's permissions and drop the key."
        return _existing_role(
            plan,
            "ecs-existing-task-role",
            summary,
            None,
            find=f"aws ecs describe-task-definition --task-definition {family} --query taskDefinition.taskRoleArn "
            "--output text",
            name_from="ROLE_NAME: the last part of the task role ARN the first command prints.",
        )
    role = _role_name(family if family != "TASK_FAMILY" else _base_name(plan), "task")
    region = ctx.region or "*"
    trust = _trust(
        "ecs-tasks.amazonaws.com",
        condition={
            "ArnLike": {"aws:SourceArn": f"arn:aws:ecs:{region}:{plan.account}:*"},
            "StringEquals": {"aws:SourceAccount": plan.account},
        },
    )
    rc = plan.copy_permissions(role, new_role=True)
    copy, copy_steps = list(rc.commands), list(rc.steps)
    cmds = [
        _create_role(role, trust, rc),
        *copy,
        f"aws ecs describe-task-definition --task-definition {family} --query taskDefinition --output json"
        + plan.region_flag
        + " > taskdef.json",
        "aws ecs register-task-definition --cli-input-json file://taskdef.json" + plan.region_flag,
        f"aws ecs update-service --cluster {cluster} --service SERVICE_NAME --task-definition {family}"
        + plan.region_flag,
    ]
    steps = [
        f"Create task role {role} that ECS tasks may assume.",
        *copy_steps,
        f'In taskdef.json set "taskRoleArn": "{plan.role_arn(role)}", remove the read-only fields '
        "(taskDefinitionArn, revision, status, requiresAttributes, compatibilities, registeredAt, registeredBy) "
        "and the key from the container environment, then register the new revision and update the service.",
    ]
    extra = f"# on aws_ecs_task_definition {family}: task_role_arn = aws_iam_role.replacement.arn"
    summary = f"Give task family {family} a task role {role} with this key's permissions instead of the key."
    return "ecs-task-role", summary, role, trust, steps, cmds, _terraform(role, trust, rc, extra)


def _eks(plan: _Plan) -> _Built:
    ctx = plan.context
    ns, sa = ctx.namespace or "NAMESPACE", ctx.service_account or "SERVICE_ACCOUNT"
    cluster = ctx.cluster or "CLUSTER_NAME"
    if ctx.irsa_role_arn:
        role = _arn_tail(ctx.irsa_role_arn) or "ROLE_NAME"
        summary = (
            f"Service account {ns}/{sa} already uses IRSA role {role}: give it this key's permissions and drop the key."
        )
        return _existing_role(plan, "eks-irsa-existing", summary, role)
    if ctx.pod_identity:
        summary = f"Service account {ns}/{sa} already has an EKS Pod Identity role: give it this key's permissions."
        return _existing_role(
            plan,
            "eks-pod-identity-existing",
            summary,
            None,
            find=f"aws eks list-pod-identity-associations --cluster-name {cluster} --namespace {ns} "
            f"--service-account {sa}",
            name_from="ROLE_NAME: the role of the association (aws eks describe-pod-identity-association).",
        )
    role = _role_name(f"{ns}-{sa}" if ctx.namespace and ctx.service_account else _base_name(plan), "pod")
    trust = _trust("pods.eks.amazonaws.com", ("sts:AssumeRole", "sts:TagSession"))
    rc = plan.copy_permissions(role, new_role=True)
    copy, copy_steps = list(rc.commands), list(rc.steps)
    cmds = [
        f"aws eks create-addon --cluster-name {cluster} --addon-name eks-pod-identity-agent" + plan.region_flag,
        _create_role(role, trust, rc),
        *copy,
        f"aws eks create-pod-identity-association --cluster-name {cluster} --namespace {ns} --service-account {sa} "
        f"--role-arn {plan.role_arn(role)}" + plan.region_flag,
    ]
    steps = [
        "Make sure the EKS Pod Identity Agent add-on runs (first command; it fails harmlessly if it exists).",
        f"Create role {role} that EKS Pod Identity may assume.",
        *copy_steps,
        f"Associate it with service account {ns}/{sa}, restart the pods and remove the key from their spec/secret.",
        "(IRSA works as well: an OIDC-trusted role annotated on the service account as eks.amazonaws.com/role-arn.)",
    ]
    extra = (
        f'resource "aws_eks_pod_identity_association" "replacement" {{\n  cluster_name    = "{cluster}"\n'
        f'  namespace       = "{ns}"\n  service_account = "{sa}"\n  role_arn        = aws_iam_role.replacement.arn\n}}'
    )
    summary = f"Give service account {ns}/{sa} an EKS Pod Identity role {role} with this key's permissions."
    return "eks-pod-identity", summary, role, trust, steps, cmds, _terraform(role, trust, rc, extra)


def _lambda(plan: _Plan) -> _Built:
    fn = plan.context.function_name or "FUNCTION_NAME"
    role = _arn_tail(plan.finding.location.role_arn)
    if role:  # read from the function's configuration (keysweep cloud)
        return _lambda_known_role(plan, fn, role)
    summary = f"Function {fn} already runs with an execution role: give it this key's permissions and drop the key."
    return _existing_role(
        plan,
        "lambda-execution-role",
        summary,
        None,
        find=f"aws lambda get-function-configuration --function-name {fn} --query Role --output text"
        + plan.region_flag,
        name_from="ROLE_NAME: the last part of the execution role ARN the first command prints.",
        then=[
            f"Remove the key from function {fn} (environment variables or code) and redeploy; "
            "the function then uses its execution role's credentials."
        ],
    )


def _roles_anywhere(plan: _Plan) -> _Built:
    host = plan.context.hostname or "host"
    role = _role_name(_base_name(plan), "rolesanywhere")
    trust = _trust(
        "rolesanywhere.amazonaws.com",
        ("sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"),
        condition={"StringEquals": {"aws:PrincipalTag/x509Subject/CN": host}},
    )
    rc = plan.copy_permissions(role, new_role=True)
    copy, copy_steps = list(rc.commands), list(rc.steps)
    cmds = [
        "aws rolesanywhere create-trust-anchor --name keysweep-trust-anchor --enabled "
        "--source 'sourceType=AWS_ACM_PCA,sourceData={acmPcaArn=PCA_ARN}'",
        _create_role(role, trust, rc),
        *copy,
        f"aws rolesanywhere create-profile --name {role} --role-arns {plan.role_arn(role)} --enabled",
    ]
    steps = [
        "Create an IAM Roles Anywhere trust anchor for your certificate authority (once per account; a "
        "CERTIFICATE_BUNDLE source works without AWS Private CA).",
        f"Create role {role}, trusted by Roles Anywhere for certificates with CN={host}.",
        *copy_steps,
        f"Issue {host} a certificate, install aws_signing_helper and configure a profile with "
        "credential_process = aws_signing_helper credential-process --certificate ... --private-key ... "
        "--trust-anchor-arn ... --profile-arn ... --role-arn ...; then remove the key.",
    ]
    extra = (
        f'resource "aws_rolesanywhere_profile" "replacement" {{\n  name      = "{role}"\n'
        "  role_arns = [aws_iam_role.replacement.arn]\n  enabled   = true\n}"
    )
    summary = f"Machine {host} is outside AWS: use IAM Roles Anywhere (X.509 certificate) with role {role} instead of the key."
    return "roles-anywhere", summary, role, trust, steps, cmds, _terraform(role, trust, rc, extra)


def _sso(plan: _Plan) -> _Built:
    name = _role_name(_base_name(plan), "access")[:32]
    ps = copy_to_permission_set(plan.policies, account=plan.account, user_ref=plan.user_ref)
    cmds = [
        "aws sso-admin list-instances --query 'Instances[0].InstanceArn' --output text",
        f"aws sso-admin create-permission-set --instance-arn INSTANCE_ARN --name {name} --session-duration PT8H",
        *ps.commands,
        f"aws sso-admin create-account-assignment --instance-arn INSTANCE_ARN --target-id {plan.account} "
        "--target-type AWS_ACCOUNT --permission-set-arn PERMISSION_SET_ARN --principal-type USER --principal-id PRINCIPAL_ID",
    ]
    steps = [
        "This key sits in a person's home directory or shell history: people should sign in with IAM Identity Center "
        "(SSO) and get short-lived credentials, not keep an access key.",
        f"Create permission set {name} with the key owner's permissions and assign it to the person for account "
        f"{plan.account} (INSTANCE_ARN from the first command, PERMISSION_SET_ARN from create-permission-set, "
        "PRINCIPAL_ID from aws identitystore list-users).",
        *ps.steps,
        "The person runs `aws configure sso` once and `aws sso login` when a session expires; then delete the key "
        "from ~/.aws/credentials, scripts and shell history.",
    ]
    tf = (
        f'resource "aws_ssoadmin_permission_set" "replacement" {{\n  name             = "{name}"\n'
        '  instance_arn     = "INSTANCE_ARN"\n  session_duration = "PT8H"\n}\n'
    )
    if ps.terraform:
        tf += "\n" + ps.terraform + "\n"
    summary = "A person's key: replace it with IAM Identity Center (SSO) sign-in and short-lived credentials."
    return "sso", summary, None, None, steps, cmds, tf


# --- keysweep cloud: the resource that holds the key is known, and so is the role it runs with ----------------


def _resource_context(finding: Finding, context: HostContext) -> HostContext:
    """The context the replacement is planned for: the resource itself (its function, task family, instance, …)."""
    loc = finding.location
    arn = loc.resource_arn or ""
    region = loc.region or context.region
    account = loc.account or context.account_id
    base: dict[str, Any] = {"hostname": arn, "host_id": arn, "region": region, "account_id": account}
    if loc.service == "lambda" and ":function:" in arn:
        return HostContext(kind="lambda", function_name=arn.split(":function:", 1)[1].split(":", 1)[0], **base)
    if loc.service == "ecs":
        family = arn.rsplit("/", 1)[-1].rsplit(":", 1)[0]
        return HostContext(kind="ecs", task_family=family, task_role_present=loc.role_arn is not None, **base)
    if loc.service == "ec2" and ":instance/" in arn:
        return HostContext(kind="ec2", instance_id=arn.rsplit("/", 1)[-1], instance_profile_arn=loc.role_arn, **base)
    if loc.service in ("ec2", "autoscaling"):
        return HostContext(kind="launch-template", **base)
    if loc.service in ("codebuild", "batch"):
        return HostContext(kind=loc.service, **base)
    return HostContext(kind="stored", **base)


def _lambda_known_role(plan: _Plan, fn: str, role: str) -> _Built:
    rc = plan.copy_permissions(role)
    copy, copy_steps = list(rc.commands), list(rc.steps)
    arn = plan.finding.location.resource_arn or ""
    version = arn.rsplit(":", 1)[-1] if arn.count(":") >= 7 else "$LATEST"
    cmds = [
        *copy,
        f"aws lambda get-function-configuration --function-name {fn} --query Environment --output json"
        + plan.region_flag
        + " > environment.json",
        f"aws lambda update-function-configuration --function-name {fn} --environment file://environment.json"
        + plan.region_flag,
    ]
    steps = [
        *copy_steps,
        f"Remove the key's variables from environment.json and update function {fn}; the function then uses its "
        f"execution role {role}.",
    ]
    if version.isdigit():
        steps.append(
            f"Published version {version} keeps its configuration: publish a new version without the key, "
            "move aliases to it, then delete this one."
        )
        cmds.append(f"aws lambda delete-function --function-name {fn} --qualifier {version}" + plan.region_flag)
    summary = f"Function {fn} runs with execution role {role}: give it this key's permissions and drop the key."
    return "lambda-execution-role", summary, role, None, steps, cmds, _terraform(role, None, rc)


def _launch_template(plan: _Plan) -> _Built:
    loc = plan.finding.location
    arn = loc.resource_arn or ""
    what = (
        f"launch template {arn.rsplit('/', 1)[-1]}"
        if ":launch-template/" in arn
        else f"launch configuration {arn.rsplit('/', 1)[-1]}"
    )
    profile = _arn_tail(loc.role_arn)
    remove = f"Remove the key from the user data of {what} (a new version or configuration) and roll the instances."
    if profile:
        summary = f"Instances from {what} get instance profile {profile}: give its role this key's permissions."
        return _existing_profile(plan, profile, summary, then=[remove])
    role, trust, rc, cmds = _new_instance_profile(plan)
    if ":launch-template/" in arn:
        data = _json({"IamInstanceProfile": {"Name": role}})
        cmds.append(
            f"aws ec2 create-launch-template-version --launch-template-id {arn.rsplit('/', 1)[-1]} "
            f"--source-version '$Latest' --launch-template-data '{data}'" + plan.region_flag
        )
    steps = [
        f"Create role {role} that EC2 may assume, in instance profile {role}.",
        *rc.steps,
        f"Give {what} that instance profile.",
        remove,
    ]
    summary = f"Instances from {what} run without an instance profile: create {role} with this key's permissions."
    return "ec2-new-instance-profile", summary, role, trust, steps, cmds, _terraform(role, trust, rc)


def _service_role(plan: _Plan, kind: str, what: str, service: str, register: str) -> _Built:
    known = _arn_tail(plan.finding.location.role_arn)
    if known:
        summary = f"{what} runs with role {known}: give it this key's permissions and drop the key."
        return _existing_role(plan, kind, summary, known, then=[register])
    role = _role_name(_base_name(plan), kind.split("-")[0])
    trust = _trust(service)
    rc = plan.copy_permissions(role, new_role=True)
    copy, copy_steps = list(rc.commands), list(rc.steps)
    cmds = [_create_role(role, trust, rc), *copy]
    summary = f"{what} has no role of its own: create {role} with this key's permissions and use it instead."
    steps = [f"Create role {role} that {service} may assume.", *copy_steps, register]
    return kind, summary, role, trust, steps, cmds, _terraform(role, trust, rc)


def _codebuild(plan: _Plan) -> _Built:
    name = (plan.finding.location.resource_arn or "PROJECT").rsplit("/", 1)[-1]
    return _service_role(
        plan,
        "codebuild-service-role",
        f"CodeBuild project {name}",
        "codebuild.amazonaws.com",
        f"Remove the key from project {name}'s environment variables or buildspec (aws codebuild update-project); "
        "builds then use the service role's credentials.",
    )


def _batch(plan: _Plan) -> _Built:
    name = (plan.finding.location.resource_arn or "JOB_DEFINITION").rsplit("/", 1)[-1]
    return _service_role(
        plan,
        "batch-job-role",
        f"Batch job definition {name}",
        "ecs-tasks.amazonaws.com",
        f"Register a revision of {name.rsplit(':', 1)[0]} with jobRoleArn set and without the key in its environment.",
    )


def _stored(plan: _Plan) -> _Built:
    """A key kept in a parameter or a stack: its readers are elsewhere; they need roles, the store loses the key."""
    loc = plan.finding.location
    rc = plan.copy_permissions("ROLE_NAME")
    copy, copy_steps = list(rc.commands), list(rc.steps)
    cmds = list(copy)
    if loc.service == "ssm" and loc.field:
        cmds.append(f"aws ssm delete-parameter --name {loc.field}" + plan.region_flag)
    where = f"{loc.service} {loc.resource_arn} ({loc.field})"
    steps = [
        f"The key is stored in {where}; whatever reads it should use a role of its own. `keysweep trail` shows "
        "where the key is used from.",
        "ROLE_NAME: each reader's role (instance profile, task, function or Roles Anywhere role).",
        *copy_steps,
        "Then delete the key from the store (for a stack: update it without the parameter or output).",
    ]
    summary = f"A key stored in {loc.service}: give its readers roles, then remove it from the store."
    return "stored-key", summary, None, None, steps, cmds, None
