"""The one reader of an IAM user's permissions, shared by the agent's suggestions and the central audit.

What a user may do is its attached managed policies, its inline policies, those of every group it is in, all
capped by its permissions boundary. A replacement role must get exactly that, so the reader returns all of it —
the inline policy documents too, since they can only be copied by content. The lists are required (an error
there is raised); the details (boundary, documents) are read when allowed, and what could not be read is named
in ``unread`` so that the copy can fall back to commands that read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from keysweep.retry import error_code


@dataclass(frozen=True)
class GroupPolicies:
    """One group of the user: its managed policy ARNs and inline policy names (with documents when read)."""

    name: str
    attached: tuple[str, ...] = ()
    inline: tuple[str, ...] = ()
    documents: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class UserPolicies:
    """The permissions of an IAM user: what a role replacing its key must be given, boundary included."""

    user_name: str
    attached: tuple[str, ...] = ()  # managed policy ARNs attached to the user
    inline: tuple[str, ...] = ()  # names of the user's inline policies
    group_policies: tuple[GroupPolicies, ...] = ()
    boundary: str | None = None  # the permissions boundary's policy ARN
    documents: Mapping[str, Any] = field(default_factory=dict, compare=False)  # inline name -> document
    unread: tuple[str, ...] = ()  # what could not be read, e.g. "permissions boundary (iam:GetUser: AccessDenied)"

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.group_policies)

    @property
    def boundary_known(self) -> bool:
        return not any(u.startswith("permissions boundary") for u in self.unread)

    def managed_arns(self) -> list[str]:
        """Every managed policy the user has, its own first, each once."""
        return list(dict.fromkeys(self.attached + tuple(a for g in self.group_policies for a in g.attached)))

    def inline_policies(self) -> list[InlinePolicy]:
        """The user's own inline policies, then each group's, with their documents when read."""
        out = [InlinePolicy(n, None, self.documents.get(n)) for n in self.inline]
        for g in self.group_policies:
            out += [InlinePolicy(n, g.name, g.documents.get(n)) for n in g.inline]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_name": self.user_name,
            "attached": list(self.attached),
            "inline": list(self.inline),
            "groups": {g.name: {"attached": list(g.attached), "inline": list(g.inline)} for g in self.group_policies},
            "permissions_boundary": self.boundary,
            "unread": list(self.unread),
        }

    def summary(self) -> str:
        parts = [a.rsplit("/", 1)[-1] for a in self.attached] + [f"{n} (inline)" for n in self.inline]
        for g in self.group_policies:
            names = [a.rsplit("/", 1)[-1] for a in g.attached] + list(g.inline)
            parts.append(f"group {g.name}: {', '.join(names) or 'no policies'}")
        if self.boundary:
            parts.append(f"boundary {self.boundary.rsplit('/', 1)[-1]}")
        return "; ".join(parts) or "no policies"


@dataclass(frozen=True)
class InlinePolicy:
    name: str
    group: str | None  # the group it belongs to; None for the user's own
    document: Any = None  # the policy document (a dict) when it was read

    @property
    def role_policy_name(self) -> str:
        """Its name on the role: the user's own keep theirs, a group's is prefixed ``group-<group>-``."""
        return self.name if self.group is None else f"group-{self.group}-{self.name}"[:128]


def read_user_policies(iam: Any, user: str, *, details: bool = True) -> UserPolicies:
    """Read ``user``'s policies with the IAM client ``iam``.

    Listing errors (``ClientError``/``BotoCoreError``) propagate. With ``details`` the boundary (``GetUser``) and
    the inline documents (``GetUserPolicy``/``GetGroupPolicy``) are read too; a refusal there is noted in
    ``unread`` instead of failing the whole read.
    """

    def pages(op: str, key: str, **kw: Any) -> list[Any]:
        out: list[Any] = []
        for page in iam.get_paginator(op).paginate(**kw):
            out.extend(page.get(key, []))
        return out

    unread: list[str] = []

    def detail(what: str, action: str, call: Any, **kw: Any) -> Any:
        try:
            return call(**kw)
        except ClientError as exc:
            unread.append(f"{what} (iam:{action}: {error_code(exc)})")
            return None

    attached = tuple(p["PolicyArn"] for p in pages("list_attached_user_policies", "AttachedPolicies", UserName=user))
    inline = tuple(pages("list_user_policies", "PolicyNames", UserName=user))
    groups = []
    for group in pages("list_groups_for_user", "Groups", UserName=user):
        name = group["GroupName"]
        groups.append(
            GroupPolicies(
                name,
                tuple(
                    p["PolicyArn"] for p in pages("list_attached_group_policies", "AttachedPolicies", GroupName=name)
                ),
                tuple(pages("list_group_policies", "PolicyNames", GroupName=name)),
            )
        )
    if not details:
        return UserPolicies(user, attached, inline, tuple(groups))
    boundary = None
    got = detail("permissions boundary", "GetUser", iam.get_user, UserName=user)
    if got is not None:
        boundary = (got.get("User", {}).get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
    documents = {}
    for n in inline:
        doc = detail(f"inline policy {n}", "GetUserPolicy", iam.get_user_policy, UserName=user, PolicyName=n)
        if doc is not None:
            documents[n] = doc.get("PolicyDocument")
    with_docs = []
    for g in groups:
        group_docs = {}
        for n in g.inline:
            doc = detail(
                f"inline policy {n} of group {g.name}",
                "GetGroupPolicy",
                iam.get_group_policy,
                GroupName=g.name,
                PolicyName=n,
            )
            if doc is not None:
                group_docs[n] = doc.get("PolicyDocument")
        with_docs.append(GroupPolicies(g.name, g.attached, g.inline, group_docs))
    return UserPolicies(user, attached, inline, tuple(with_docs), boundary, documents, tuple(unread))


def read_user_policies_if_allowed(user: str, *, client: Any = None) -> UserPolicies | None:
    """The agent's read: ``user``'s policies with details through ``client`` (default: an IAM client on the
    host's credentials); None when those credentials may not list them or IAM cannot be reached."""
    from keysweep.aws import make_client

    try:
        return read_user_policies(client or make_client("iam"), user)
    except (ClientError, BotoCoreError):
        return None
