"""Give a role (or an IAM Identity Center permission set) exactly the permissions of the IAM user whose key it replaces.

Same privilege means: every managed policy of the user and of its groups, every inline policy (copied by content:
saved with ``get-user-policy``/``get-group-policy`` and put on the role), and the user's permissions boundary, so
the role never gets more than the user was allowed. A role holds at most 10 managed policies by default (a quota
that can be raised to 20): past that, the extra ones are copied as inline policies from their default version
instead of being attached, so no command fails at the 11th attach.

Used by the agent's suggestions (``suggest``) and the central audit's ``key-on-hosts`` items alike.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from keysweep.iam_policies import InlinePolicy, UserPolicies

MANAGED_POLICIES_PER_ROLE = 10  # IAM's default quota; adjustable to 20
ROLE_INLINE_CHARACTERS = 10240  # all inline policies of one role together, whitespace not counted
_QUOTA_COMMAND = (
    "aws service-quotas request-service-quota-increase --service-code iam --quota-code L-0DA4ABF3 "
    "--desired-value 20 --region us-east-1"
)
_FILE_BAD = re.compile(r"[^\w.+=,@-]")


@dataclass(frozen=True)
class RoleCopy:
    """Commands, steps and Terraform giving one role the user's permissions."""

    commands: tuple[str, ...]
    steps: tuple[str, ...]
    source: str  # where the permissions come from, for ``Suggestion.permissions_source``
    create_flags: str = ""  # appended to ``aws iam create-role`` for a new role (the boundary)
    role_attributes: str = ""  # lines inside a new ``aws_iam_role`` resource (the boundary)
    terraform: str = ""  # resources after the role: attachments and inline policies

    def to_dict(self) -> dict[str, object]:
        return {
            "permissions_source": self.source,
            "commands": list(self.commands),
            "steps": list(self.steps),
            "terraform": self.terraform or None,
        }


def is_aws_managed(arn: str) -> bool:
    parts = arn.split(":")
    return len(parts) > 5 and parts[4] == "aws"


def policy_name_and_path(arn: str) -> tuple[str, str]:
    """``arn:aws:iam::1:policy/team/ci/deploy`` -> (``deploy``, ``/team/ci/``): the path is part of the ARN."""
    resource = arn.split(":", 5)[-1]
    _, _, rest = resource.partition("policy/")
    path, _, name = rest.rpartition("/")
    return name, f"/{path}/" if path else "/"


def _file(kind: str, *names: str) -> str:
    return _FILE_BAD.sub("-", "-".join((kind, *names))) + ".json"


def _save_inline(user_ref: str, p: InlinePolicy, name: str) -> tuple[str, str]:
    """(command saving the inline policy's document to a file, that file); ``name`` is its name on the role."""
    if p.group is None:
        f = _file("inline", name)
        cmd = f"aws iam get-user-policy --user-name {user_ref} --policy-name {p.name} --query PolicyDocument"
    else:
        f = _file(name)
        cmd = f"aws iam get-group-policy --group-name {p.group} --policy-name {p.name} --query PolicyDocument"
    return f"{cmd} --output json > {f}", f


def _distinct(name: str, used: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``… when another copied policy already has it (group ``a-b`` policy ``c``
    and group ``a`` policy ``b-c`` would both be ``group-a-b-c``)."""
    out, n = name, 1
    while out in used:
        n += 1
        out = f"{name[:120]}-{n}"
    used.add(out)
    return out


def _save_managed(arn: str, used: set[str]) -> tuple[str, str, str]:
    """(command saving a managed policy's default version to a file, that file, the name to give it inline).

    The name holds the path (and ``aws`` for an AWS managed policy): two policies of one name stay apart."""
    name, path = policy_name_and_path(arn)
    unique = _distinct(
        "managed-" + _FILE_BAD.sub("-", ("aws" if is_aws_managed(arn) else "") + path + name).strip("-"), used
    )[:128]
    f = _file(unique)
    cmd = (
        f"aws iam get-policy-version --policy-arn {arn} --version-id "
        f'"$(aws iam get-policy --policy-arn {arn} --query Policy.DefaultVersionId --output text)" '
        f"--query PolicyVersion.Document --output json > {f}"
    )
    return cmd, f, unique


def hcl_json(doc: object) -> str:
    """A JSON value as an HCL expression (for ``jsonencode(...)``): HCL would interpolate ``${`` and ``%{``."""
    return json.dumps(doc, separators=(", ", ": ")).replace("${", "$${").replace("%{", "%%{")


def _hcl_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _inline_size(policies: UserPolicies) -> int | None:
    docs = [p.document for p in policies.inline_policies()]
    if any(d is None for d in docs):
        return None
    return sum(len(json.dumps(d, separators=(",", ":"))) for d in docs)


def _boundary_lookup(user_ref: str) -> str:
    return (
        f"aws iam get-user --user-name {user_ref} --query User.PermissionsBoundary.PermissionsBoundaryArn --output text"
    )


def copy_to_role(
    policies: UserPolicies | None,
    role: str,
    *,
    user_ref: str,
    user: str | None,
    new_role: bool,
    max_commands: int | None = None,
) -> RoleCopy:
    """How to give ``role`` the permissions of the key's IAM user.

    ``new_role``: the role is created with the suggestion (the boundary goes on ``create-role``); otherwise it
    exists already and gets the boundary with ``put-role-permissions-boundary``. Terraform refers to a new role
    as ``aws_iam_role.replacement`` and to an existing one by name. ``max_commands`` bounds the commands (a
    message carries at most 64): the boundary command is always kept, a save is never separated from its put,
    and a step says how many were left out (Terraform keeps them all).
    """
    ref = "aws_iam_role.replacement.name" if new_role else '"' + role.strip('"').lstrip("$") + '"'
    if policies is None:
        return _unread_copy(role, user_ref, user, new_role)
    p = policies
    managed = p.managed_arns()
    attach, extra = managed[:MANAGED_POLICIES_PER_ROLE], managed[MANAGED_POLICIES_PER_ROLE:]
    cmds = [f"aws iam attach-role-policy --role-name {role} --policy-arn {arn}" for arn in attach]
    tf: list[str] = []
    for i, arn in enumerate(attach):
        tf.append(
            f'resource "aws_iam_role_policy_attachment" "replacement_{i}" {{\n  role       = {ref}\n'
            f'  policy_arn = "{arn}"\n}}'
        )
    steps = [f"Give role {role} the permissions of IAM user {p.user_name} (commands below), then narrow them."]
    used: set[str] = set()
    for arn in extra:
        save, f, name = _save_managed(arn, used)
        cmds += [save, f"aws iam put-role-policy --role-name {role} --policy-name {name} --policy-document file://{f}"]
        label = _hcl_label(name)
        tf.append(f'data "aws_iam_policy" "{label}" {{\n  arn = "{arn}"\n}}')
        tf.append(
            f'resource "aws_iam_role_policy" "{label}" {{\n  name   = "{name}"\n  role   = {ref}\n'
            f"  policy = data.aws_iam_policy.{label}.policy\n}}"
        )
    if extra:
        steps.append(
            f"IAM user {p.user_name} has {len(managed)} managed policies (its own and its groups'); a role holds "
            f"{MANAGED_POLICIES_PER_ROLE} by default. The first {MANAGED_POLICIES_PER_ROLE} are attached; the other "
            f"{len(extra)} ({', '.join(policy_name_and_path(a)[0] for a in extra)}) are copied as inline policies "
            f"from their default version (role inline policies share {ROLE_INLINE_CHARACTERS} characters). Better: "
            f"merge them into one customer managed policy and narrow it, or raise the quota to 20 ({_QUOTA_COMMAND}) "
            "and attach them instead."
        )
    if not new_role and managed:
        steps.append(
            f"Role {role} already exists: its own managed policies count towards the same quota "
            f"(aws iam list-attached-role-policies --role-name {role})."
        )
    for i, pol in enumerate(p.inline_policies()):
        name = _distinct(pol.role_policy_name, used)
        save, f = _save_inline(user_ref, pol, name)
        cmds += [save, f"aws iam put-role-policy --role-name {role} --policy-name {name} --policy-document file://{f}"]
        body = f"jsonencode({hcl_json(pol.document)})" if pol.document is not None else f'file("{f}")'
        tf.append(
            f'resource "aws_iam_role_policy" "inline_{i}" {{\n  name   = "{name}"\n  role   = {ref}\n'
            f"  policy = {body}\n}}"
        )
    size = _inline_size(p)
    if size is not None and size > ROLE_INLINE_CHARACTERS:
        steps.append(
            f"The inline policies copied from {p.user_name} and its groups hold {size} characters; a role's "
            f"inline policies may hold {ROLE_INLINE_CHARACTERS}: merge them into customer managed policies."
        )
    if any(pol.document is None for pol in p.inline_policies()):
        steps.append(
            "Terraform reads the inline policies it could not copy by content from the files the "
            "get-user-policy / get-group-policy commands write: run those first."
        )
    create_flags = role_attributes = ""
    if not p.boundary_known:
        cmds.append(_boundary_lookup(user_ref))
        steps.append(
            f"keysweep could not read IAM user {p.user_name}'s permissions boundary: if the get-user "
            f"command prints a policy ARN (not None), set it on the role: aws iam "
            f"put-role-permissions-boundary --role-name {role} --permissions-boundary BOUNDARY_ARN."
        )
        tf.append(
            f"# permissions boundary of {p.user_name} not read: set permissions_boundary on the role if "
            "`aws iam get-user` shows one"
        )
    elif p.boundary and new_role:
        create_flags = f" --permissions-boundary {p.boundary}"
        role_attributes = f'  permissions_boundary = "{p.boundary}"\n'
        steps.append(
            f"The role gets {p.user_name}'s permissions boundary {p.boundary}, so it can do no more than "
            "the user could."
        )
    elif p.boundary:
        cmds.append(f"aws iam put-role-permissions-boundary --role-name {role} --permissions-boundary {p.boundary}")
        steps.append(
            f"IAM user {p.user_name} is limited by permissions boundary {p.boundary}: the last command sets it on "
            f"role {role} so the copied permissions stay within it. It also limits what the role does today, and "
            f"replaces any boundary it has: check first (aws iam get-role --role-name {role})."
        )
        tf.append(f'# role {role} exists: set permissions_boundary = "{p.boundary}" where it is defined')
    if max_commands is not None and len(cmds) > max_commands:
        cmds, steps = _bounded(cmds, steps, max_commands, p.user_name)
    unread = [u for u in p.unread if not u.startswith("permissions boundary")]
    source = (
        f"iam-user:{p.user_name} (read from IAM: {len(managed)} managed, {len(p.inline_policies())} inline "
        f"policies, boundary {p.boundary or ('none' if p.boundary_known else 'not read')})"
    )
    if unread:
        source += f"; not read: {', '.join(unread)}"
    return RoleCopy(tuple(cmds), tuple(steps), source, create_flags, role_attributes, "\n\n".join(tf))


def _bounded(cmds: list[str], steps: list[str], limit: int, user: str) -> tuple[list[str], list[str]]:
    boundary = [c for c in cmds if c.startswith(("aws iam put-role-permissions-boundary ", "aws iam get-user "))]
    kept = [c for c in cmds if c not in boundary][: max(0, limit - len(boundary))]
    if kept and " > " in kept[-1]:  # a saved document without the put-role-policy that uses it
        kept.pop()
    left = len(cmds) - len(kept) - len(boundary)
    steps = [
        *steps,
        f"IAM user {user}'s permissions take {len(cmds)} commands, more than a suggestion carries: "
        f"{left} are left out here (the Terraform has them all; `keysweep audit --db` lists every command in "
        "key-on-hosts details.replacement). A role this broad is worth narrowing first.",
    ]
    return [*kept, *boundary], steps


def _unread_copy(role: str, user_ref: str, user: str | None, new_role: bool) -> RoleCopy:
    u = user_ref
    cmds = [
        f"aws iam list-attached-user-policies --user-name {u}",
        f"aws iam list-user-policies --user-name {u}",
        f"aws iam list-groups-for-user --user-name {u}",
        _boundary_lookup(u),
    ]
    steps = [
        f"List the permissions of the key's IAM user ({user or 'see the first command'}) with the list-* "
        "commands below (and list-attached-group-policies / list-group-policies for each group).",
        f"Attach each managed policy to {role}: aws iam attach-role-policy --role-name {role} --policy-arn POLICY_ARN "
        f"(at most {MANAGED_POLICIES_PER_ROLE} per role by default: merge the others into one customer managed policy, "
        f"or raise the quota with {_QUOTA_COMMAND}); copy each inline policy by saving it "
        f"(aws iam get-user-policy --user-name {u} --policy-name NAME --query PolicyDocument --output json > NAME.json) "
        f"and putting it on the role (aws iam put-role-policy --role-name {role} --policy-name NAME "
        "--policy-document file://NAME.json); the same for each group's policies (get-group-policy).",
        "If get-user prints a permissions boundary ARN (not None), give the role the same boundary: "
        f"aws iam put-role-permissions-boundary --role-name {role} --permissions-boundary BOUNDARY_ARN"
        + (" (or --permissions-boundary on create-role)." if new_role else "."),
    ]
    tf = (
        f"# permissions of IAM user {user or 'unknown'} not read: add an aws_iam_role_policy_attachment per managed "
        "policy, an aws_iam_role_policy per inline policy (its own and its groups') and its permissions_boundary"
    )
    return RoleCopy(
        tuple(cmds), tuple(steps), f"iam-user:{user or 'unknown'} (not read: list with the commands)", terraform=tf
    )


@dataclass(frozen=True)
class PermissionSetCopy:
    commands: tuple[str, ...]
    steps: tuple[str, ...]
    terraform: str


_PS = "--instance-arn INSTANCE_ARN --permission-set-arn PERMISSION_SET_ARN"
_TF_PS = '  instance_arn       = "INSTANCE_ARN"\n  permission_set_arn = aws_ssoadmin_permission_set.replacement.arn\n'


def copy_to_permission_set(policies: UserPolicies | None, *, account: str, user_ref: str) -> PermissionSetCopy:
    """How to give an IAM Identity Center permission set the key owner's permissions.

    AWS managed policies attach by ARN; customer managed ones by name and path (and must exist in every account
    the permission set is assigned to); a permission set has one inline policy, so the user's and its groups'
    inline policies (and managed ones past the quota) are merged into it.
    """
    if policies is None:
        lookups = [
            f"aws iam list-attached-user-policies --user-name {user_ref}",
            f"aws iam list-user-policies --user-name {user_ref}",
            f"aws iam list-groups-for-user --user-name {user_ref}",
            _boundary_lookup(user_ref),
        ]
        how = [
            "Give the permission set the permissions these commands list: AWS managed policies with "
            "attach-managed-policy-to-permission-set, customer managed ones with "
            "attach-customer-managed-policy-reference-to-permission-set (Name=...,Path=...; the policy must "
            f"exist in account {account}), inline ones merged into one with put-inline-policy-to-permission-set, "
            "the boundary with put-permissions-boundary-to-permission-set."
        ]
        return PermissionSetCopy(tuple(lookups), tuple(how), "")
    p = policies
    managed = p.managed_arns()
    attach, extra = managed[:MANAGED_POLICIES_PER_ROLE], managed[MANAGED_POLICIES_PER_ROLE:]
    cmds: list[str] = []
    tf: list[str] = []
    steps: list[str] = []
    customer = []
    for i, arn in enumerate(attach):
        if is_aws_managed(arn):
            cmds.append(f"aws sso-admin attach-managed-policy-to-permission-set {_PS} --managed-policy-arn {arn}")
            tf.append(
                f'resource "aws_ssoadmin_managed_policy_attachment" "replacement_{i}" {{\n{_TF_PS}'
                f'  managed_policy_arn = "{arn}"\n}}'
            )
        else:
            name, path = policy_name_and_path(arn)
            customer.append(name)
            cmds.append(
                f"aws sso-admin attach-customer-managed-policy-reference-to-permission-set {_PS} "
                f"--customer-managed-policy-reference Name={name},Path={path}"
            )
            tf.append(
                f'resource "aws_ssoadmin_customer_managed_policy_attachment" "replacement_{i}" {{\n'
                f'  instance_arn       = "INSTANCE_ARN"\n'
                "  permission_set_arn = aws_ssoadmin_permission_set.replacement.arn\n"
                "  customer_managed_policy_reference {\n"
                f'    name = "{name}"\n    path = "{path}"\n  }}\n}}'
            )
    if customer:
        steps.append(
            f"Customer managed policies ({', '.join(customer)}) are referenced by name and path: a policy "
            f"of that name and path must exist in every account the permission set is assigned to (it does "
            f"in {account}; create it in any other)."
        )
    files: list[str] = []
    used: set[str] = set()
    docs: list[object] = []
    for arn in extra:
        save, f, _ = _save_managed(arn, used)
        cmds.append(save)
        files.append(f)
        docs.append(None)
    if extra:
        steps.append(
            f"IAM user {p.user_name} has {len(managed)} managed policies; the role Identity Center creates "
            f"holds {MANAGED_POLICIES_PER_ROLE} by default: the other {len(extra)} go into the inline policy."
        )
    for pol in p.inline_policies():
        save, f = _save_inline(user_ref, pol, _distinct(pol.role_policy_name, used))
        cmds.append(save)
        files.append(f)
        docs.append(pol.document)
    if len(files) == 1:
        cmds.append(f"aws sso-admin put-inline-policy-to-permission-set {_PS} --inline-policy file://{files[0]}")
    elif files:
        cmds.append(
            'jq -s \'{Version: "2012-10-17", Statement: [.[] | .Statement | if type == "array" then .[] '
            f"else . end | del(.Sid)]}}' {' '.join(files)} > permission-set-inline.json"
        )
        cmds.append(
            f"aws sso-admin put-inline-policy-to-permission-set {_PS} --inline-policy file://permission-set-inline.json"
        )
        steps.append(
            "A permission set has one inline policy: jq merges the statements of the inline policies "
            "(and of managed ones past the quota) into permission-set-inline.json."
        )
    if files:
        if all(d is not None for d in docs):
            statements = [s for d in docs for s in _statements(d)]
            body = f"jsonencode({hcl_json({'Version': '2012-10-17', 'Statement': statements})})"
        else:
            body = 'file("permission-set-inline.json")' if len(files) > 1 else f'file("{files[0]}")'
        tf.append(
            f'resource "aws_ssoadmin_permission_set_inline_policy" "replacement" {{\n{_TF_PS}'
            f"  inline_policy      = {body}\n}}"
        )
    if not p.boundary_known:
        cmds.append(_boundary_lookup(user_ref))
        steps.append(
            "keysweep could not read the user's permissions boundary: if get-user prints a policy ARN, "
            f"set it with aws sso-admin put-permissions-boundary-to-permission-set {_PS} "
            "--permissions-boundary ManagedPolicyArn=ARN (AWS managed) or "
            "CustomerManagedPolicyReference={Name=NAME,Path=PATH}."
        )
    elif p.boundary:
        if is_aws_managed(p.boundary):
            value = f"ManagedPolicyArn={p.boundary}"
            tf_boundary = f'    managed_policy_arn = "{p.boundary}"\n'
        else:
            name, path = policy_name_and_path(p.boundary)
            value = f"CustomerManagedPolicyReference={{Name={name},Path={path}}}"
            tf_boundary = (
                f'    customer_managed_policy_reference {{\n      name = "{name}"\n      path = "{path}"\n    }}\n'
            )
        cmds.append(f"aws sso-admin put-permissions-boundary-to-permission-set {_PS} --permissions-boundary '{value}'")
        tf.append(
            f'resource "aws_ssoadmin_permissions_boundary_attachment" "replacement" {{\n{_TF_PS}'
            f"  permissions_boundary {{\n{tf_boundary}  }}\n}}"
        )
        steps.append(
            f"The permission set gets {p.user_name}'s permissions boundary {p.boundary} (a customer managed "
            "boundary must exist in every assigned account too)."
        )
    return PermissionSetCopy(tuple(cmds), tuple(steps), "\n\n".join(tf))


def _statements(doc: object) -> list[object]:
    stmts = doc.get("Statement", []) if isinstance(doc, dict) else []
    stmts = stmts if isinstance(stmts, list) else [stmts]
    return [{k: v for k, v in s.items() if k != "Sid"} if isinstance(s, dict) else s for s in stmts]
