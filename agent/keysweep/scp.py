"""The service control policies that keep an account key-free once its last access key is gone.

Used in every suggested replacement and by the central account audit. The first denies creating access keys and
IAM users; it also blocks *rotating* keys (rotation creates a new key), so it belongs only on accounts that have no
access keys left. Principals that must keep the power (a break-glass role) can be exempted by ARN pattern. The
second, offered separately, denies every action to the member accounts' root users. SCPs never apply to the
organisation's management account.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

SCP_NAME = "keysweep-deny-access-key-creation"
DENIED_ACTIONS = ("iam:CreateAccessKey", "iam:CreateUser")
ROOT_SCP_NAME = "keysweep-deny-root-user"
MANAGEMENT_ACCOUNT_NOTE = (
    "SCPs never apply to the organization's management account: remove its keys by hand, keep workloads out of it, "
    "and watch it with the audit."
)
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


def deny_root_user_policy() -> dict[str, Any]:
    """The SCP document denying every action to a member account's root user."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyRootUser",
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:root"}},
            }
        ],
    }


def _policy_commands(name: str, description: str, document: dict[str, Any], target_ids: Sequence[str]) -> list[str]:
    content = json.dumps(document, separators=(",", ":"))
    return [
        f"aws organizations create-policy --name {name} --type SERVICE_CONTROL_POLICY "
        f"--description '{description}' --content '{content}' --query Policy.PolicySummary.Id --output text",
        *(
            f"aws organizations attach-policy --policy-id POLICY_ID --target-id {t}"
            for t in target_ids or ["ACCOUNT_ID"]
        ),
    ]


def scp_commands(target_ids: Sequence[str], exempt_principal_arns: Sequence[str] = ()) -> list[str]:
    """AWS CLI commands (run in the organization's management account) creating the SCP and attaching it to each
    target (an account or OU id; ``ACCOUNT_ID`` as a placeholder when there is none yet)."""
    return _policy_commands(
        SCP_NAME, "Deny creating IAM access keys and users", deny_key_creation_policy(exempt_principal_arns), target_ids
    )


def scp_recommendation(target_ids: Sequence[str], exempt_principal_arns: Sequence[str] = ()) -> dict[str, Any]:
    """The SCP as a structured recommendation: document, commands, when to apply it and the rotation warning."""
    return {
        "name": SCP_NAME,
        "policy": deny_key_creation_policy(exempt_principal_arns),
        "commands": scp_commands(target_ids, exempt_principal_arns),
        "apply_when": "the account has no IAM access keys left (check the credential report)",
        "warning": SCP_WARNING,
        "management_account_note": MANAGEMENT_ACCOUNT_NOTE,
    }


def root_scp_recommendation(target_ids: Sequence[str]) -> dict[str, Any]:
    """The deny-root SCP, offered apart: attach it where no one needs the root user any more."""
    return {
        "name": ROOT_SCP_NAME,
        "policy": deny_root_user_policy(),
        "commands": _policy_commands(
            ROOT_SCP_NAME, "Deny every action to member accounts root users", deny_root_user_policy(), target_ids
        ),
        "apply_when": "the member accounts' root users have no access keys and no task needs root; a few tasks "
        "require root (closing the account, some billing and support settings): detach it for those",
        "management_account_note": MANAGEMENT_ACCOUNT_NOTE,
    }
