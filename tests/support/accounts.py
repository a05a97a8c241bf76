"""Other accounts of the emulator: an organization's member account, and clients acting in one through a role."""

from __future__ import annotations

from typing import Any

import boto3


def member_account(name: str) -> str:
    """Create an organization with a member account ``name``; the member's account id."""
    org = boto3.client("organizations")
    org.create_organization(FeatureSet="ALL")
    return org.create_account(Email=f"{name}@example.com", AccountName=name)["CreateAccountStatus"]["AccountId"]


def client_in(account: str, service: str, role: str = "Audit") -> Any:
    """A boto3 client acting in ``account`` with the credentials of ``role`` assumed there."""
    creds = boto3.client("sts").assume_role(RoleArn=f"arn:aws:iam::{account}:role/{role}", RoleSessionName="seed")[
        "Credentials"
    ]
    return boto3.client(
        service,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
