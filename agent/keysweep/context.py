"""Where the agent runs: EC2, ECS, EKS/Kubernetes, Lambda or on-premises, detected once per sweep.

Detection is cheap and bounded: environment variables and small files first, then at most a handful of
metadata requests with short timeouts. EC2 is asked through IMDSv2 only (a session token on every request), and
the credential paths (``iam/security-credentials``) are never requested: they return live credentials. Every
context also lists the host's own interface addresses (``psutil``; no request), so the fleet store knows where a
host's calls can come from. Nothing here raises; what could not be learnt is recorded in ``HostContext.errors``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from keysweep.aws import USER_AGENT
from keysweep.ipaddr import canonical_ip, reachable_addresses
from keysweep.models import HostContext
from keysweep.stage_config import ContextConfig

_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_IMDS = "http://169.254.169.254"
# /etc/machine-id must not leave the host as is (machine-id(5)); an app-specific keyed hash of it is stable instead
_MACHINE_ID_APP_KEY = b"keysweep host id v1"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# metadata must never go through an HTTP proxy from the environment, nor follow a redirect elsewhere
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


class _Unreachable(Exception):
    """The endpoint did not answer at all (timeout, refused, no route)."""


def _http(
    url: str, *, method: str = "GET", headers: Mapping[str, str] | None = None, timeout: float
) -> tuple[int, bytes]:
    """(status, body) of one request; HTTP errors are answers, network failures raise :class:`_Unreachable`."""
    req = urllib.request.Request(
        url, method=method, headers={"User-Agent": USER_AGENT, **(headers or {})}, data=b"" if method == "PUT" else None
    )
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise _Unreachable("timed out") from None
        raise _Unreachable(type(reason).__name__ if not isinstance(reason, str) else reason) from None


@dataclass
class _Found:
    values: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _imds(config: ContextConfig, environ: Mapping[str, str], found: _Found) -> bool:
    """Fill EC2 facts through IMDSv2; True when an instance metadata service answered."""
    if environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":  # the SDKs' own switch
        return False
    base = (config.imds_endpoint or environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or _IMDS).rstrip("/")
    deadline = time.monotonic() + 4 * config.imds_timeout
    try:
        status, token = _http(
            f"{base}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(config.imds_token_ttl)},
            timeout=config.imds_timeout,
        )
    except _Unreachable as exc:
        found.errors.append(f"imds: metadata unreachable ({exc})")
        return False
    if status != 200 or not token:
        found.errors.append(f"imds: token request answered HTTP {status}")
        return False
    headers = {"X-aws-ec2-metadata-token": token.decode("ascii", "replace").strip()}

    def get(path: str) -> tuple[int, bytes]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Unreachable("time budget spent")
        return _http(f"{base}/latest/{path}", headers=headers, timeout=min(config.imds_timeout, remaining))

    try:
        status, body = get("dynamic/instance-identity/document")
        if status == 200:
            doc = json.loads(body)
            found.values.update(
                instance_id=doc.get("instanceId"),
                account_id=doc.get("accountId"),
                region=doc.get("region"),
                availability_zone=doc.get("availabilityZone"),
                ami_id=doc.get("imageId"),
            )
        else:
            found.errors.append(f"imds: identity document answered HTTP {status}")
        for key, path in (
            ("instance_id", "meta-data/instance-id"),
            ("availability_zone", "meta-data/placement/availability-zone"),
            ("ami_id", "meta-data/ami-id"),
        ):
            if not found.values.get(key):
                status, body = get(path)
                if status == 200:
                    found.values[key] = body.decode("utf-8", "replace").strip()
        status, body = get("meta-data/iam/info")
        if status == 200:
            found.values["instance_profile_arn"] = json.loads(body).get("InstanceProfileArn")
        elif status != 404:  # 404 = no instance profile attached
            found.errors.append(f"imds: iam/info answered HTTP {status}")
        for key, path in (("private_ip", "meta-data/local-ipv4"), ("public_ip", "meta-data/public-ipv4")):
            status, body = get(path)
            if status == 200:
                found.values[key] = canonical_ip(body.decode("ascii", "replace"))
            elif status != 404:  # 404 = none (public-ipv4 of an instance without a public address)
                found.errors.append(f"imds: {path} answered HTTP {status}")
    except _Unreachable as exc:
        found.errors.append(f"imds: metadata incomplete ({exc})")
    except (ValueError, AttributeError):
        found.errors.append("imds: unreadable metadata document")
    return True


def _ecs(uri: str, config: ContextConfig, environ: Mapping[str, str], found: _Found) -> None:
    found.values["task_role_present"] = bool(environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"))
    try:
        status, body = _http(uri.rstrip("/") + "/task", timeout=config.ecs_timeout)
    except _Unreachable as exc:
        found.errors.append(f"ecs: task metadata unreachable ({exc})")
        return
    if status != 200:
        found.errors.append(f"ecs: task metadata answered HTTP {status}")
        return
    try:
        task = json.loads(body)
        arn = str(task.get("TaskARN") or "")
    except (ValueError, AttributeError):
        found.errors.append("ecs: unreadable task metadata")
        return
    parts = arn.split(":")
    found.values.update(
        cluster=task.get("Cluster"),
        task_arn=arn or None,
        task_family=task.get("Family"),
        task_revision=str(task["Revision"]) if task.get("Revision") is not None else None,
        launch_type=task.get("LaunchType"),
        availability_zone=task.get("AvailabilityZone"),
        region=parts[3] if len(parts) > 5 else None,
        account_id=parts[4] if len(parts) > 5 else None,
    )


def _read_small(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(4096).decode("utf-8", "replace").strip() or None
    except OSError:
        return None


def _service_account_from_token(sa_dir: Path) -> str | None:
    """The service account name from the projected token's claims; the token itself is never kept or logged."""
    token = _read_small(sa_dir / "token")
    if not token or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        sub = str(claims.get("sub", ""))
    except (ValueError, AttributeError):
        return None
    # "system:serviceaccount:<namespace>:<name>"
    parts = sub.split(":")
    return parts[3] if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"] else None


def _kubernetes(config: ContextConfig, environ: Mapping[str, str], found: _Found) -> bool:
    sa_dir = Path(config.kubernetes_serviceaccount_dir)
    podinfo = Path(config.kubernetes_podinfo_dir)
    namespace = environ.get("POD_NAMESPACE") or _read_small(podinfo / "namespace") or _read_small(sa_dir / "namespace")
    if not (environ.get("KUBERNETES_SERVICE_HOST") or namespace):
        return False
    found.values.update(
        pod=environ.get("POD_NAME") or _read_small(podinfo / "name") or environ.get("HOSTNAME"),
        namespace=namespace,
        service_account=environ.get("POD_SERVICE_ACCOUNT")
        or environ.get("SERVICE_ACCOUNT")
        or _read_small(podinfo / "serviceaccount")
        or _service_account_from_token(sa_dir),
        cluster=config.cluster_name,
        irsa_role_arn=environ.get("AWS_ROLE_ARN") if environ.get("AWS_WEB_IDENTITY_TOKEN_FILE") else None,
        pod_identity=bool(environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")),
    )
    return True


def _interface_addresses(found: _Found) -> tuple[str, ...]:
    """This host's (or container's) own addresses, as its network interfaces carry them."""
    try:
        interfaces = psutil.net_if_addrs()
    except (OSError, psutil.Error) as exc:
        found.errors.append(f"addresses: interfaces unreadable ({type(exc).__name__})")
        return ()
    return reachable_addresses(
        a.address for addrs in interfaces.values() for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)
    )


def _machine_host_id(config: ContextConfig, hostname: str) -> str:
    machine_id = _read_small(Path(config.machine_id_path))
    if machine_id:
        return "machine-" + hmac.new(_MACHINE_ID_APP_KEY, machine_id.encode(), hashlib.sha256).hexdigest()[:32]
    return hostname


def detect_context(config: ContextConfig | None = None, *, environ: Mapping[str, str] | None = None) -> HostContext:
    """Detect where this process runs. Never raises; takes about ``imds_timeout`` when there is no metadata service."""
    config = config or ContextConfig()
    env = os.environ if environ is None else environ
    hostname = socket.gethostname()
    found = _Found()
    if not config.enabled:
        return HostContext(kind="unknown", hostname=hostname, host_id=_machine_host_id(config, hostname))

    kind = "on-premises"
    host_id: str | None = None
    if env.get("AWS_LAMBDA_FUNCTION_NAME"):
        kind = "lambda"
        name = env["AWS_LAMBDA_FUNCTION_NAME"]
        found.values.update(function_name=name, region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"))
        host_id = f"lambda:{found.values['region'] or ''}:{name}"
    elif config.ecs_metadata_uri or env.get("ECS_CONTAINER_METADATA_URI_V4"):
        kind = "ecs"
        _ecs(config.ecs_metadata_uri or env["ECS_CONTAINER_METADATA_URI_V4"], config, env, found)
        host_id = found.values.get("task_arn")
    elif _kubernetes(config, env, found):
        on_ec2 = _imds(config, env, found)
        if found.values.get("irsa_role_arn") or found.values.get("pod_identity") or on_ec2:
            kind = "eks"
        else:
            kind = "kubernetes"
        if found.values.get("namespace") and found.values.get("pod"):
            host_id = f"{found.values['namespace']}/{found.values['pod']}"
    elif _imds(config, env, found):
        kind = "ec2"
        host_id = found.values.get("instance_id")
        if not host_id:
            kind = "unknown"  # something answered IMDSv2 but told us nothing usable

    addresses = _interface_addresses(found)
    return HostContext(
        kind=kind,
        hostname=hostname,
        host_id=host_id or _machine_host_id(config, hostname),
        addresses=addresses,
        errors=tuple(found.errors),
        **{k: v for k, v in found.values.items() if v is not None},
    )
