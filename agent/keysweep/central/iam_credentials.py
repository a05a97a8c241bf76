"""Every credential an IAM user can hold besides access keys and a console password.

``delete-user`` refuses while any of them remains, and a user who still holds an active one is not "without
credentials": signing certificates (X.509, for SOAP and some older services), SSH public keys (CodeCommit),
service-specific credentials (CodeCommit HTTPS, Keyspaces, Bedrock API keys) and MFA devices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from keysweep.retry import error_code


@dataclass(frozen=True)
class OtherCredential:
    kind: str  # signing-certificate, ssh-public-key, service-specific-credential, mfa-device
    ident: str  # certificate id, SSH key id, credential id, MFA serial number
    active: bool
    service: str | None = None  # service-specific credentials only


@dataclass(frozen=True)
class OtherCredentials:
    items: tuple[OtherCredential, ...] = ()
    unlisted: tuple[str, ...] = field(default=())  # kinds whose listing failed (error code), so unknown

    @property
    def active(self) -> list[OtherCredential]:
        # an MFA device signs nothing by itself: it never keeps a user "with credentials"
        return [c for c in self.items if c.active and c.kind != "mfa-device"]

    def delete_commands(self, user: str) -> list[str]:
        """What ``delete-user`` needs gone first, in an order IAM accepts."""
        cmds: list[str] = []
        for c in self.items:
            if c.kind == "signing-certificate":
                cmds.append(f"aws iam delete-signing-certificate --user-name {user} --certificate-id {c.ident}")
            elif c.kind == "ssh-public-key":
                cmds.append(f"aws iam delete-ssh-public-key --user-name {user} --ssh-public-key-id {c.ident}")
            elif c.kind == "service-specific-credential":
                cmds.append(
                    f"aws iam delete-service-specific-credential --user-name {user} "
                    f"--service-specific-credential-id {c.ident}"
                )
            elif c.kind == "mfa-device":
                cmds.append(f"aws iam deactivate-mfa-device --user-name {user} --serial-number {c.ident}")
                if ":mfa/" in c.ident:  # a virtual device is an IAM resource of its own
                    cmds.append(f"aws iam delete-virtual-mfa-device --serial-number {c.ident}")
        return cmds

    def to_dict(self) -> dict[str, Any]:
        return {
            "credentials": [
                {"kind": c.kind, "id": c.ident, "active": c.active, **({"service": c.service} if c.service else {})}
                for c in self.items
            ],
            "unlisted": list(self.unlisted),
        }


# kind -> (operation, response list key, id field, status field or None when every item counts as active)
_LISTS: dict[str, tuple[str, str, str, str | None]] = {
    "signing-certificate": ("list_signing_certificates", "Certificates", "CertificateId", "Status"),
    "ssh-public-key": ("list_ssh_public_keys", "SSHPublicKeys", "SSHPublicKeyId", "Status"),
    "service-specific-credential": (
        "list_service_specific_credentials",
        "ServiceSpecificCredentials",
        "ServiceSpecificCredentialId",
        "Status",
    ),
    "mfa-device": ("list_mfa_devices", "MFADevices", "SerialNumber", None),
}


def other_credentials(iam: Any, user: str) -> OtherCredentials:
    """The user's other credentials; a kind that cannot be listed is named in ``unlisted`` with its error."""
    items: list[OtherCredential] = []
    unlisted: list[str] = []
    for kind, (op, key, ident, status) in _LISTS.items():
        try:
            listed = _all(iam, op, key, UserName=user)
        except ClientError as exc:
            unlisted.append(f"{kind}: {error_code(exc)}")
            continue
        except (BotoCoreError, ResponseParserError) as exc:  # e.g. an endpoint that lacks the API
            unlisted.append(f"{kind}: {type(exc).__name__}")
            continue
        for entry in listed:
            active = status is None or entry.get(status) == "Active"
            items.append(OtherCredential(kind, str(entry.get(ident)), active, entry.get("ServiceName")))
    return OtherCredentials(tuple(items), tuple(unlisted))


def _all(iam: Any, op: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    if iam.can_paginate(op):
        return [e for page in iam.get_paginator(op).paginate(**kwargs) for e in page.get(key, [])]
    return list(getattr(iam, op)(**kwargs).get(key, []))
