"""Building boto3 clients the one way keysweep does it.

Every client carries the documented User-Agent (``keysweep/<version>``) so a security team can recognise
keysweep's calls in CloudTrail, and short timeouts so a dead network never hangs a sweep. Endpoints come only from
keysweep's own environment (the standard ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>`` settings), never
from anything found in a scanned file or process.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from keysweep import __version__
from keysweep.errors import ConfigError

if TYPE_CHECKING:  # boto3 is imported where a client is built: `keysweep scan` without AWS calls never loads it
    from botocore.config import Config

USER_AGENT = f"keysweep/{__version__}"
# a region as one label of an AWS host name: sqs.eu-west-1.amazonaws.com, vpce-….sqs.us-gov-west-1.vpce…
_REGION_LABEL = re.compile(r"(?:^|\.)([a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d)\.")


def client_config(
    *, connect_timeout: float = 3.0, read_timeout: float = 10.0, max_attempts: int = 3, **extra: Any
) -> Config:
    from botocore.config import Config

    return Config(
        user_agent_extra=USER_AGENT,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        **extra,
    )


class ResponseStatus:
    """The HTTP status of the last response a client received, noted before botocore parses the body.

    A throttling proxy or load balancer may answer 429 or 503 with a plain-text body; botocore then raises a bare
    ``ResponseParserError`` that does not carry the status, and only the status tells throttling from garbage.
    One instance per client, used by one thread at a time; :meth:`reset` before each call."""

    def __init__(self, client: Any) -> None:
        self.value: int | None = None
        client.meta.events.register("before-parse", self._seen)

    def reset(self) -> None:
        self.value = None

    def _seen(self, response_dict: dict[str, Any] | None = None, **_: Any) -> None:
        status = (response_dict or {}).get("status_code")
        self.value = status if isinstance(status, int) else None


def service_endpoint(service: str) -> str | None:
    """The endpoint keysweep's own environment names for ``service``: per-service setting first, then the global one."""
    env_name = "AWS_ENDPOINT_URL_" + service.upper().replace("-", "_").replace(" ", "_")
    return os.environ.get(env_name) or os.environ.get("AWS_ENDPOINT_URL") or None


def region_in_url(url: str | None) -> str | None:
    """The region an AWS endpoint URL names (``https://sqs.eu-west-1.amazonaws.com/…``), else None."""
    if not url:
        return None
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return None
    m = _REGION_LABEL.search(host)
    return m.group(1) if m else None


def resolve_region(explicit: str | None, url: str | None, *, what: str) -> str:
    """The region for a client of ``url``: ``explicit``, else the one in the URL, else the SDK's own setting
    (``AWS_REGION``, ``AWS_DEFAULT_REGION``, the profile's ``region``). None of them: a :class:`ConfigError` naming
    how to give one (``what`` says which option names the URL)."""
    import boto3

    region = explicit or region_in_url(url) or boto3.session.Session().region_name
    if not region:
        raise ConfigError(
            f"{what}: no AWS region: the URL names none and none is configured (use --region, or set AWS_REGION)"
        )
    return region


def has_credentials() -> bool:
    """Whether keysweep's own credentials chain (environment, profile, SSO, instance profile, task role) finds any."""
    import boto3

    return boto3.session.Session().get_credentials() is not None


def make_client(
    service: str, *, region: str | None = None, config: Config | None = None, endpoint_url: str | None = None
) -> Any:
    """A client using keysweep's own credentials chain (instance profile, task role, environment, …)."""
    import boto3

    session = boto3.session.Session(region_name=region) if region else boto3.session.Session()
    return session.client(service, config=config or client_config(), endpoint_url=endpoint_url)


def isolated_client(
    service: str,
    *,
    access_key_id: str,
    secret_access_key: str,
    session_token: str | None = None,
    region: str = "us-east-1",
    endpoint_url: str | None = None,
    config: Config | None = None,
) -> Any:
    """A client signed with the given credentials only.

    It is built from a botocore session that ignores ``AWS_PROFILE``, ``AWS_SESSION_TOKEN`` and the shared
    config/credentials files, so nothing in the agent's environment or a scanned file can change where the
    credentials are sent or what signs the request. The endpoint is the caller's, or keysweep's own
    ``AWS_ENDPOINT_URL_<SERVICE>`` / ``AWS_ENDPOINT_URL`` setting.
    """
    import botocore.session

    bc_session = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
    bc_session.set_config_variable("config_file", os.devnull)
    bc_session.set_config_variable("credentials_file", os.devnull)
    bc_session.set_config_variable("profile", None)
    return bc_session.create_client(
        service,
        region_name=region,
        endpoint_url=endpoint_url or service_endpoint(service),
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token,
        config=config or client_config(),
    )
