"""What ``keysweep iac`` reports: one flagged resource per finding, plus what could not be read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# what each kind of flagged resource means, and what to do instead
KIND_ACCESS_KEY = "access-key"
KIND_IAM_USER = "iam-user"
KIND_SECRET_IN_STATE = "secret-in-state"

ADVICE = {
    KIND_ACCESS_KEY: "creates a long-lived IAM access key: give the workload a role (instance profile, task role, "
    "IRSA/Pod Identity, execution role) instead",
    KIND_IAM_USER: "creates an IAM user: humans sign in through IAM Identity Center, workloads use roles",
    KIND_SECRET_IN_STATE: "Terraform state holds this access key's secret in plain text: replace the key with a "
    "role, then delete the key and rotate anything that read this state",
}


@dataclass(frozen=True)
class IacFinding:
    """One resource that creates (or, in state, holds) a long-lived credential."""

    kind: str  # access-key, iam-user, secret-in-state
    framework: str  # terraform, cloudformation, terraform-state
    resource: str  # aws_iam_access_key.deploy, AWS::IAM::AccessKey.DeployKey, module.x.aws_iam_access_key.y[0]
    path: str
    line: int | None = None
    key_id: str | None = None  # state only: the id of the key Terraform created
    secret_redacted: str | None = None  # state only

    @property
    def message(self) -> str:
        return ADVICE[self.kind]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "framework": self.framework,
            "resource": self.resource,
            "path": self.path,
            "line": self.line,
            "key_id": self.key_id,
            "secret_redacted": self.secret_redacted,
            "message": self.message,
        }
        return {k: v for k, v in d.items() if v is not None}


@dataclass
class IacResult:
    findings: list[IacFinding] = field(default_factory=list)
    files: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), capped by the scanner
