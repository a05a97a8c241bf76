"""The IAM reads the audit needs: the list docs/audit-report.md gives and the collector template's audit role grants."""

from __future__ import annotations

AUDIT_IAM_READS = frozenset(
    {
        "iam:GenerateCredentialReport",
        "iam:GetCredentialReport",
        "iam:GetAccountSummary",
        "iam:ListAccessKeys",
        "iam:GetAccessKeyLastUsed",
        "iam:ListAttachedUserPolicies",
        "iam:ListUserPolicies",
        "iam:ListGroupsForUser",
        "iam:ListAttachedGroupPolicies",
        "iam:ListGroupPolicies",
        "iam:GetUser",
        "iam:GetUserPolicy",
        "iam:GetGroupPolicy",
        "iam:ListSigningCertificates",
        "iam:ListSSHPublicKeys",
        "iam:ListServiceSpecificCredentials",
        "iam:ListMFADevices",
    }
)
# of those, the ones read only with --db (the boundary and inline documents of the owners of keys on hosts)
DB_ONLY_READS = frozenset({"iam:GetUser", "iam:GetUserPolicy", "iam:GetGroupPolicy"})
