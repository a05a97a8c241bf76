"""Findings built the way detection builds them, for verification tests that start after detection."""

from __future__ import annotations

from keysweep import keyid
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Finding, Location, Secret

FINGERPRINTER = Fingerprinter(b"verification-tests-fingerprint-key")


def finding(
    key_id: str,
    secret: str | None = None,
    token: str | None = None,
    *,
    path: str = "/srv/app/.env",
    profile: str | None = None,
    profile_kind: str | None = None,
) -> Finding:
    kind = "aws-credentials" if profile else "file"
    return Finding(
        rule="aws-access-key-id",
        key_id=key_id,
        location=Location(kind=kind, path=path, profile=profile, line=1),
        fingerprint=FINGERPRINTER.key_fingerprint(key_id, secret),
        has_secret=secret is not None,
        secret_redacted=secret[:4] + "…" if secret else None,
        secret_fingerprint=FINGERPRINTER.secret_fingerprint(secret) if secret else None,
        account_id=keyid.decode_account(key_id),
        key_type=keyid.key_type(key_id),
        pairing="profile" if profile else ("same-line" if secret else "none"),
        has_session_token=token is not None,
        profile_kind=profile_kind,
        secret=Secret(secret) if secret is not None else None,
        session_token=Secret(token) if token is not None else None,
    )
