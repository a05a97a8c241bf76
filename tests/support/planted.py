"""Findings with planted secrets, produced by the real detector from generated file contents."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from keysweep.detect import Detector
from keysweep.fingerprint import Fingerprinter
from keysweep.keyid import decode_account
from keysweep.models import Finding, HostContext, Location, Verification
from keysweep.ruleset import load_ruleset

# the key owner's answer to an agent that verified a planted key
LIVE = Verification(
    status="live",
    account="123456789012",
    arn="arn:aws:iam::123456789012:user/deployer",
    principal_type="iam-user",
    checked_at="2026-11-28T10:00:00Z",
)


def ec2_context(instance_id: str, hostname: str) -> HostContext:
    """An agent's context on EC2 instance ``instance_id`` (its host id) of that account."""
    return HostContext(
        kind="ec2",
        hostname=hostname,
        host_id=instance_id,
        instance_id=instance_id,
        account_id="123456789012",
        region="us-east-1",
    )


@dataclass(frozen=True)
class Planted:
    key_id: str
    secret: str


def planted_key(i: int) -> Planted:
    """A distinct, well-formed key id (its offline account decodes to 12 digits) and secret for each ``i``."""
    for salt in range(100):
        digest = hashlib.sha256(f"planted-{i}-{salt}".encode()).digest()
        key_id = "AKIA" + base64.b32encode(digest)[:16].decode()
        if len(decode_account(key_id) or "") == 12:
            break
    secret = base64.b64encode(hashlib.sha256(f"secret-{i}".encode()).digest())[:40].decode().replace("=", "A")
    return Planted(key_id, secret)


def planted_findings(
    n: int, *, fingerprinter: Fingerprinter, path: str = "/srv/app{i}/.env", verification: Verification | None = None
) -> tuple[list[Finding], list[Planted]]:
    """``n`` findings, one per generated file, each with a paired secret (the secret stays in memory)."""
    detector = Detector(load_ruleset(), fingerprinter)
    findings: list[Finding] = []
    planted: list[Planted] = []
    for i in range(n):
        p = planted_key(i)
        buf = f"aws_access_key_id = {p.key_id}\naws_secret_access_key = {p.secret}\n".encode()
        found = detector.scan(buf, location=Location(kind="file", path=path.format(i=i)))
        assert len(found) == 1 and found[0].secret is not None, found
        f = found[0]
        findings.append(f.with_verification(verification) if verification else f)
        planted.append(p)
    return findings, planted
