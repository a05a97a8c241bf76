"""Schema-v1 messages as an agent sends them, for the central side's tests (checked against the schema)."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(resources.files("keysweep.schemas").joinpath("message-v1.schema.json").read_text())


def assert_valid(message: dict[str, Any]) -> None:
    jsonschema.validate(message, schema())


def _hex(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _envelope(
    kind: str, message_id: str | None, sent_at: str, agent_version: str, host_info: dict[str, Any]
) -> dict[str, Any]:
    """The fields every agent message starts with."""
    return {
        "schema_version": 1,
        "type": kind,
        "message_id": message_id or uuid.uuid4().hex,
        "sent_at": sent_at,
        "agent": {"version": agent_version, "mode": "agent"},
        "host": host_info,
    }


def _valid(message: dict[str, Any]) -> dict[str, Any]:
    assert_valid(message)
    return message


def host(host_id: str = "i-0123456789abcdef0", hostname: str = "web-1", kind: str = "ec2") -> dict[str, Any]:
    return {
        "host_id": host_id,
        "hostname": hostname,
        "kind": kind,
        "account_id": "123456789012",
        "region": "eu-west-1",
        "instance_id": host_id if kind == "ec2" else None,
        "instance_profile_arn": None,
        "errors": [],
    }


def finding_message(
    *,
    host_info: dict[str, Any] | None = None,
    key_id: str = "AKIAXYZDQCEN4B6JSJQI",
    path: str = "/home/app/.aws/credentials",
    status: str | None = "live",
    checked_at: str | None = None,
    sent_at: str = "2026-11-28T10:00:00Z",
    message_id: str | None = None,
    agent_version: str = "0.1.0",
    severity: str = "critical",
) -> dict[str, Any]:
    h = host_info or host()
    key_fp = _hex("key", key_id)
    verification = None
    if status is not None:
        verification = {
            "status": status,
            "account": "534261010715",
            "arn": "arn:aws:iam::534261010715:user/deploy" if status == "live" else None,
            "user_id": None,
            "principal_type": "iam-user" if status == "live" else None,
            "reason": None,
            "checked_at": checked_at or sent_at,
            "cached": False,
        }
    return _valid(
        {
            **_envelope("finding", message_id, sent_at, agent_version, h),
            "finding": {
                "finding_fingerprint": _hex("finding", h["host_id"], path, key_fp),
                "fingerprint": key_fp,
                "secret_fingerprint": _hex("secret", key_id),
                "rule": "aws-credentials-file",
                "key_id": key_id,
                "key_type": "long-term",
                "has_secret": True,
                "has_session_token": False,
                "secret_redacted": "wJal…",
                "account_id": "534261010715",
                "severity": severity,
                "pairing": "profile",
                "profile_kind": "static",
                "location": {"kind": "aws-credentials", "path": path, "profile": "default", "line": 2},
                "verification": verification,
                "report_reason": "new",
            },
            "suggestion": {
                "kind": "ec2-new-instance-profile",
                "summary": "Replace the key with an instance profile",
                "role_name": "web-1-role",
                "trust_policy": None,
                "steps": ["create the role", "associate the instance profile"],
                "commands": ["aws iam create-role --role-name web-1-role ..."],
                "cleanup": ["aws iam update-access-key --status Inactive ..."],
            },
        }
    )


def heartbeat_message(
    *,
    host_info: dict[str, Any] | None = None,
    sent_at: str = "2026-11-28T10:05:00Z",
    message_id: str | None = None,
    agent_version: str = "0.1.0",
    files_scanned: int = 1000,
    errors: list[str] | None = None,
) -> dict[str, Any]:
    return _valid(
        {
            **_envelope("heartbeat", message_id, sent_at, agent_version, host_info or host()),
            "sweep": {
                "sweep_id": uuid.uuid4().hex,
                "started_at": "2026-11-28T10:00:00Z",
                "finished_at": sent_at,
                "duration_s": 300.0,
                "stats": {
                    "files_scanned": files_scanned,
                    "bytes_scanned": files_scanned * 4096,
                    "skipped": {"too-large": 2},
                    "errors": {},
                    "findings_by_source": {"filesystem": 1},
                },
                "errors": errors or [],
            },
            "spool": {"depth": 0, "bytes": 0, "capacity_bytes": 10485760, "filling": False, "dropped": 0},
        }
    )


def variant(message: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy with top-level fields changed."""
    out = copy.deepcopy(message)
    out.update(changes)
    return out
