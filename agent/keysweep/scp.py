"""The service control policy that keeps an account key-free once its last access key is gone.

Used in every suggested replacement and by the central account audit. It denies creating access keys and IAM
users; it also blocks *rotating* keys (rotation creates a new key), so it belongs only on accounts that have no
access keys left. Principals that must keep the power (a break-glass role) can be exempted by ARN pattern.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

SCP_NAME = "keysweep-deny-access-key-creation"
DENIED_ACTIONS = ("iam:CreateAccessKey", "iam:CreateUser")
SCP_WARNING = (
    "This SCP also blocks key rotation: nobody in the account (except exempted principals) can create an access "
    "key, including a replacement for an existing one. Attach it only once the account has no access keys left."
)


def deny_key_creation_policy(exempt_principal_arns: Sequence[str] = ()) -> dict[str, Any]:
    """The SCP document denying iam:CreateAccessKey and iam:CreateUser (optionally except some principals)."""
    statement: dict[str, Any] = {
        "Sid": "DenyLongLivedAccessKeys",
        "Effect": "Deny",
        "Action": list(DENIED_ACTIONS),
        "Resource": "*",
    }
    if exempt_principal_arns:
        statement["Condition"] = {"ArnNotLike": {"aws:PrincipalArn": list(exempt_principal_arns)}}
    return {"Version": "2012-10-17", "Statement": [statement]}


def scp_commands(target_id: str | None, exempt_principal_arns: Sequence[str] = ()) -> list[str]:
    """AWS CLI commands (run in the organization's management account) creating and attaching the SCP."""
    content = json.dumps(deny_key_creation_policy(exempt_principal_arns), separators=(",", ":"))
    return [
        f"aws organizations create-policy --name {SCP_NAME} --type SERVICE_CONTROL_POLICY "
        f"--description 'Deny creating IAM access keys and users' --content '{content}' "
        "--query Policy.PolicySummary.Id --output text",
        f"aws organizations attach-policy --policy-id POLICY_ID --target-id {target_id or 'ACCOUNT_ID'}",
    ]


def scp_recommendation(account_id: str | None, exempt_principal_arns: Sequence[str] = ()) -> dict[str, Any]:
    """The SCP as a structured recommendation: document, commands, when to apply it and the rotation warning."""
    return {
        "name": SCP_NAME,
        "policy": deny_key_creation_policy(exempt_principal_arns),
        "commands": scp_commands(account_id, exempt_principal_arns),
        "apply_when": "the account has no IAM access keys left (check the credential report)",
        "warning": SCP_WARNING,
    }
