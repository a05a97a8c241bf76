"""Small real HTTP servers standing in for the EC2 instance metadata service (IMDSv2) and ECS task metadata.

The IMDS server behaves like an instance that requires IMDSv2: ``PUT /latest/api/token`` with a TTL header hands
out a token, every GET without a valid token is answered 401, ``iam/info`` is 404 when no instance profile is
attached, and the credential paths are recorded (a test asserts they are never asked for).
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.support.loopback import LoopbackServer, QuietHandler


@dataclass
class Instance:
    instance_id: str = "i-0abc123def4567890"
    account_id: str = "123456789012"
    region: str = "eu-west-1"
    availability_zone: str = "eu-west-1b"
    ami_id: str = "ami-0123456789abcdef0"
    instance_profile_arn: str | None = "arn:aws:iam::123456789012:instance-profile/web-profile"
    local_ipv4: str = "172.31.20.7"
    public_ipv4: str | None = "54.170.12.34"  # None: an instance without a public address (IMDS answers 404)

    def paths(self) -> dict[str, tuple[int, bytes]]:
        doc = {
            "accountId": self.account_id,
            "region": self.region,
            "availabilityZone": self.availability_zone,
            "instanceId": self.instance_id,
            "imageId": self.ami_id,
            "instanceType": "t3.micro",
        }
        out: dict[str, tuple[int, bytes]] = {
            "/latest/dynamic/instance-identity/document": (200, json.dumps(doc).encode()),
            "/latest/meta-data/instance-id": (200, self.instance_id.encode()),
            "/latest/meta-data/ami-id": (200, self.ami_id.encode()),
            "/latest/meta-data/placement/availability-zone": (200, self.availability_zone.encode()),
            "/latest/meta-data/placement/region": (200, self.region.encode()),
            "/latest/meta-data/local-ipv4": (200, self.local_ipv4.encode()),
        }
        if self.public_ipv4:
            out["/latest/meta-data/public-ipv4"] = (200, self.public_ipv4.encode())
        if self.instance_profile_arn:
            info = {
                "Code": "Success",
                "InstanceProfileArn": self.instance_profile_arn,
                "InstanceProfileId": "AIPAEXAMPLE",
            }
            out["/latest/meta-data/iam/info"] = (200, json.dumps(info).encode())
        return out


class _Server(LoopbackServer):
    """A metadata server that records every request as (method, path, lower-cased headers)."""

    def __init__(self, handler: type[_Recording]) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        super().__init__(handler)

    def paths_requested(self) -> list[str]:
        return [path for _, path, _ in self.requests]


class _Recording(QuietHandler):
    def record(self) -> None:
        assert isinstance(self.owner, _Server)
        self.owner.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))


@contextmanager
def imds_server(instance: Instance | None = None) -> Iterator[_Server]:
    """An IMDSv2-only metadata service for ``instance``."""
    inst = instance or Instance()
    tokens: set[str] = set()

    class Handler(_Recording):
        def do_PUT(self) -> None:  # noqa: N802 - http.server naming
            self.record()
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if self.path != "/latest/api/token":
                self.reply(404)
            elif not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                self.reply(400)
            else:
                token = secrets.token_urlsafe(32)
                tokens.add(token)
                self.reply(200, token.encode())

        def do_GET(self) -> None:  # noqa: N802
            self.record()
            if self.headers.get("X-aws-ec2-metadata-token") not in tokens:
                self.reply(401)
                return
            if "/iam/security-credentials" in self.path:
                self.reply(200, b'{"AccessKeyId": "ASIAIMDSROLECREDENTIAL", "Token": "never-ask-for-this"}')
                return
            status, body = inst.paths().get(self.path, (404, b""))
            self.reply(status, body)

    with _Server(Handler) as served:
        yield served


def ecs_task_document(
    *,
    cluster: str = "arn:aws:ecs:us-east-2:111122223333:cluster/prod",
    task_id: str = "0c8f3e1b2a4d4c6e8f0a1b2c3d4e5f60",
    family: str = "billing-worker",
    revision: str = "7",
    launch_type: str = "FARGATE",
) -> dict[str, Any]:
    return {
        "Cluster": cluster,
        "TaskARN": f"arn:aws:ecs:us-east-2:111122223333:task/prod/{task_id}",
        "Family": family,
        "Revision": revision,
        "DesiredStatus": "RUNNING",
        "KnownStatus": "RUNNING",
        "LaunchType": launch_type,
        "AvailabilityZone": "us-east-2a",
        "Containers": [{"Name": "app", "DockerId": "abc"}],
    }


@contextmanager
def ecs_metadata_server(task: dict[str, Any] | None = None) -> Iterator[_Server]:
    """ECS task metadata endpoint v4: ``<uri>`` (container) and ``<uri>/task``; the test sets the env var to ``endpoint``."""
    doc = task or ecs_task_document()

    class Handler(_Recording):
        def do_GET(self) -> None:  # noqa: N802
            self.record()
            if self.path == "/v4/task":
                self.reply(200, json.dumps(doc).encode(), "application/json")
            elif self.path == "/v4":
                self.reply(200, json.dumps(doc["Containers"][0]).encode(), "application/json")
            else:
                self.reply(404)

    with _Server(Handler) as served:
        yield served


@contextmanager
def blackhole_endpoint() -> Iterator[str]:
    """An address that accepts TCP connections but never answers: a metadata service that is not there."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def closed_endpoint() -> str:
    """An address where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
