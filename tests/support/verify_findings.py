"""Findings made the way detection makes them, and a moto STS behind a recording proxy, for verification tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from keysweep.detect import Detector
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Finding, Location
from keysweep.ruleset import load_ruleset
from keysweep.stage_config import VerifyConfig

from tests.support.moto_server import MotoServer
from tests.support.recording_proxy import RecordingProxy, recording_proxy

FINGERPRINTER = Fingerprinter(b"verification-tests-fingerprint-key")
DETECTOR = Detector(load_ruleset(), FINGERPRINTER, include_examples=True)

MOTO_ACCOUNT = "123456789012"
CANARY_KEY = "AKIAXYZDQCEN4B6JSJQI"  # decodes to 534261010715, a Thinkst canary account
CANARY_SECRET = "Qm4vX9tLp2Zr8Wn5YbC7sFd3Hg6Jk1NqRt0UvXwA"
MADE_UP_KEY = "AKIAQQQQRRRRSSSSTTT2"
MADE_UP_SECRET = "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"
OLD_FORMAT_KEY = "AKIAJ2ZZZZQQQQRRRRSS"

FAST = VerifyConfig(
    enabled=True,
    rate_limit_per_s=1000,
    connect_timeout=2.0,
    read_timeout=5.0,
    backoff_base=0.01,
    backoff_max=0.05,
    same_key_spacing=0.05,
)


@dataclass(frozen=True)
class Key:
    key_id: str
    secret: str


@dataclass
class Emulator:
    server: MotoServer
    proxy: RecordingProxy
    alice: Key
    agent: Key
    role_arn: str

    def requests_with(self, needle: str) -> list:
        return [r for r in self.proxy.snapshot() if needle in r.headers.get("Authorization", "")]


def _create_user(iam, name: str, actions: list[str]) -> Key:
    iam.create_user(UserName=name)
    if actions:
        doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(doc))
    k = boto3.client("iam").create_access_key(UserName=name)["AccessKey"]
    return Key(k["AccessKeyId"], k["SecretAccessKey"])


@contextmanager
def sts_emulator(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """IAM users alice (AssumeRole) and keysweep-agent (GetAccessKeyInfo), a role, auth on, and keysweep's
    AWS_ENDPOINT_URL_STS pointing at a recording proxy in front of moto."""
    iam = boto3.client("iam")
    alice = _create_user(iam, "alice", ["sts:AssumeRole"])
    agent = _create_user(iam, "keysweep-agent", ["sts:GetAccessKeyInfo"])
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    role_arn = iam.create_role(RoleName="ci", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    moto_server.enable_auth()
    with recording_proxy(moto_server.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", proxy.endpoint)
        yield Emulator(moto_server, proxy, alice, agent, role_arn)


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
    return DETECTOR.make_finding(
        key_id,
        location=Location(kind=kind, path=path, profile=profile, line=1),
        secret=secret,
        session_token=token,
        pairing="profile" if profile else ("same-line" if secret else "none"),
        profile_kind=profile_kind,
    )


def plant(root: Path, emulator: Emulator, evil_endpoint: str) -> list[Path]:
    """A tree under root/srv/app with a live key (.env, beside endpoint settings pointing at ``evil_endpoint``), a
    made-up key (settings.py), alice's key with a wrong secret (old.ini) and a canary key (canary.cfg)."""
    app = root / "srv" / "app"
    app.mkdir(parents=True)
    (app / ".env").write_text(
        f"AWS_ENDPOINT_URL_STS={evil_endpoint}\n"
        f"AWS_ENDPOINT_URL={evil_endpoint}\n"
        f"AWS_ACCESS_KEY_ID={emulator.alice.key_id}\n"
        f"AWS_SECRET_ACCESS_KEY={emulator.alice.secret}\n"
        "AWS_PROFILE=attacker\n"
    )
    (app / "settings.py").write_text(
        f'ENDPOINT = "{evil_endpoint}"\naws_access_key_id = "{MADE_UP_KEY}"\naws_secret_access_key = "{MADE_UP_SECRET}"\n'
    )
    (app / "old.ini").write_text(
        f"[legacy]\naws_access_key_id={emulator.alice.key_id}\naws_secret_access_key={MADE_UP_SECRET}\n"
    )
    (app / "canary.cfg").write_text(f"key = {CANARY_KEY}\nsecret = {CANARY_SECRET}\n")
    return sorted(p for p in app.iterdir())
