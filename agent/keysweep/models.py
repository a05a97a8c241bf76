"""The values passed along the pipeline: created once by detection, enriched, never re-parsed.

The plaintext secret lives only in a :class:`Secret` between detection and verification; nothing that
serialises a finding (``to_dict``) ever includes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class Secret:
    """A secret access key or session token held in memory only. ``repr``/``str`` never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> Any:  # never pickled into a state file or across processes by accident
        raise TypeError("Secret values are not serialisable")


@dataclass(frozen=True)
class Location:
    """Where a key was found. ``kind``: file, archive, process, aws-credentials, aws-config, …"""

    kind: str
    path: str | None = None
    member: str | None = None  # archive member path ("a.zip!inner/b.tar!c.env" style nesting joined with '!')
    line: int | None = None  # 1-based
    offset: int | None = None  # byte offset in the (decoded) stream
    pid: int | None = None
    profile: str | None = None
    user: str | None = None
    exe: str | None = None
    unit: str | None = None
    container_id: str | None = None
    variable: str | None = None  # environment variable name for process findings
    encoding: str | None = None  # "base64", "percent", "utf-16le", … when the key was found decoded
    # AWS files reached through a symlink or named by someone else (``user`` is then the real file's owner):
    named_path: str | None = None  # the path as a home or a process environment named it, when links led elsewhere
    named_by: str | None = None  # the user whose home or process named the file, when not its owner
    # kind "cloud" (keysweep cloud): the control-plane resource that holds the key
    service: str | None = None  # lambda, ecs, ec2, autoscaling, ssm, cloudformation, codebuild, batch
    resource_arn: str | None = None  # the resource's ARN, or its id where it has none
    field: str | None = None  # where in the resource: a variable name, "UserData", a parameter name, …
    region: str | None = None
    account: str | None = None
    role_arn: str | None = None  # the role (or instance profile) the resource runs with: what replaces the key

    def to_dict(self) -> dict[str, Any]:
        return {f: v for f in _LOCATION_FIELDS if (v := getattr(self, f)) is not None}  # every field a scalar

    def identity(self) -> str:
        """A stable string naming this place (used in finding fingerprints)."""
        parts = [self.kind, self.path or "", self.member or "", self.profile or "", self.variable or ""]
        if self.kind == "cloud":
            parts += [self.account or "", self.region or "", self.resource_arn or "", self.field or ""]
        if self.kind == "process":
            # pids are reused and change on restart; the executable and unit name the place
            parts += [self.exe or "", self.unit or "", self.container_id or ""]
        return "\x1f".join(parts)


_LOCATION_FIELDS = tuple(f.name for f in dataclasses.fields(Location))


@dataclass(frozen=True)
class Verification:
    """What sts:GetCallerIdentity proved. status: live, invalid, wrong_secret, expired, unknown, canary, skipped.

    ``checked_at`` and ``request_id`` are set for every call that reached AWS: they name the request that made the
    key's IAM last use, so the central audit can tell keysweep's own use from real use."""

    status: str
    account: str | None = None
    arn: str | None = None
    user_id: str | None = None
    principal_type: str | None = None  # iam-user, root, assumed-role, federated-user
    reason: str | None = None  # short machine-readable cause for unknown/skipped/canary (never a secret)
    checked_at: str | None = None  # ISO-8601 UTC
    cached: bool = False
    request_id: str | None = None  # the STS answer's RequestId (CloudTrail's requestID of the call)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Finding:
    """One key at one place.

    ``fingerprint`` is the keyed fingerprint of the key (id + secret when paired, id alone otherwise):
    the same key in several places gives several findings sharing it. ``secret_fingerprint`` is the
    keyed fingerprint of the secret alone.
    """

    rule: str
    key_id: str
    location: Location
    fingerprint: str
    severity: str = "high"
    has_secret: bool = False
    secret_redacted: str | None = None
    secret_fingerprint: str | None = None
    account_id: str | None = None
    key_type: str | None = None  # long-term, temporary, bearer, context
    pairing: str | None = None  # how id and secret were paired: profile, environment, same-line, window, none
    has_session_token: bool = False
    profile_kind: str | None = None  # for AWS config files: static, credential_process, sso, role_arn, canary
    verification: Verification | None = None
    example: str | None = None  # kept by --include-examples: why it would have been hidden
    secret: Secret | None = field(default=None, repr=False, compare=False)
    session_token: Secret | None = field(default=None, repr=False, compare=False)

    def with_verification(self, verification: Verification) -> Finding:
        return dataclasses.replace(self, verification=verification)

    def without_secret(self) -> Finding:
        """The same finding with the plaintext dropped (for caches and state)."""
        return dataclasses.replace(self, secret=None, session_token=None)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "rule": self.rule,
            "key_id": self.key_id,
            "has_secret": self.has_secret,
            "fingerprint": self.fingerprint,
            "secret_fingerprint": self.secret_fingerprint,
            "account_id": self.account_id,
            "key_type": self.key_type,
            "severity": self.severity,
            "secret_redacted": self.secret_redacted,
            "pairing": self.pairing,
            "has_session_token": self.has_session_token,
            "profile_kind": self.profile_kind,
            "location": self.location.to_dict(),
            "verification": self.verification.to_dict() if self.verification else None,
        }
        if self.example is not None:  # only with --include-examples: every other finding keeps its fields
            d["example"] = self.example
        return d


@dataclass(frozen=True)
class HostContext:
    """Where the agent runs. kind: ec2, ecs, eks, kubernetes, lambda, on-premises, unknown."""

    kind: str
    hostname: str
    host_id: str  # stable id of this host for grouping (instance id, task ARN, pod uid, machine-id)
    account_id: str | None = None
    region: str | None = None
    availability_zone: str | None = None
    instance_id: str | None = None
    ami_id: str | None = None
    instance_profile_arn: str | None = None
    cluster: str | None = None
    task_arn: str | None = None
    task_family: str | None = None
    task_revision: str | None = None
    launch_type: str | None = None
    task_role_present: bool = False
    pod: str | None = None
    namespace: str | None = None
    service_account: str | None = None
    irsa_role_arn: str | None = None
    pod_identity: bool = False
    function_name: str | None = None
    # where the host's calls come from, so ``keysweep trail --db`` can name the fleet host behind a CloudTrail
    # sourceIPAddress: the instance's primary private and its public IPv4 (IMDS), and the interface addresses
    private_ip: str | None = None
    public_ip: str | None = None
    addresses: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["addresses"] = list(self.addresses)
        d["errors"] = list(self.errors)
        return d


def describe_location(loc: Location) -> str:
    """One line naming the place: ``path:line``, ``archive!member:line``, ``pid 42 (exe) $VAR``, ``file [profile]``."""
    if loc.kind == "cloud":
        return _describe_cloud(loc)
    if loc.kind == "process":
        text = f"pid {loc.pid}" if loc.pid is not None else "process"
        if loc.exe:
            text += f" ({loc.exe})"
        if loc.variable:
            text += f" ${loc.variable}"
        return text
    text = loc.path or loc.kind
    if loc.member:
        text += f"!{loc.member}"
    if loc.profile:
        text += f" [{loc.profile}]"
    if loc.line is not None:
        text += f":{loc.line}"
    if loc.encoding:
        text += f" ({loc.encoding})"
    return text


def _describe_cloud(loc: Location) -> str:
    """``arn field``, ``arn Code!member:line``; the line only where a field holds several (user data, templates)."""
    text = loc.resource_arn or loc.service or "cloud"
    if loc.field:
        text += f" {loc.field}"
    if loc.member:
        text += f"!{loc.member}"
    if loc.line is not None and (loc.member or loc.line > 1):
        text += f":{loc.line}"
    if loc.encoding:
        text += f" ({loc.encoding})"
    return text
