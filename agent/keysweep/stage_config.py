"""The configuration sections of the pipeline's stages: ``verify``, ``report`` and ``context``.

Plain frozen sections (:mod:`keysweep.sections`) that the agent's file (:mod:`keysweep.config`) is built from, kept
apart from the stages that read them (:mod:`keysweep.verify`, :mod:`keysweep.report.sqs`,
:mod:`keysweep.context`): a scan that verifies nothing, sends nothing and asks no metadata service reads its
configuration without importing botocore, urllib's HTTP stack or the spool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keysweep import aws, keyid
from keysweep.canary import is_account_id
from keysweep.sections import Section, option

# --- verify ---------------------------------------------------------------------------------------------

DEFAULT_REGION = "us-east-1"
_REGION_RE = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")
_URL_RE = re.compile(r"https?://[^\s/]+")
_ACCOUNTS = "a list of quoted 12-digit account ids"
_UNKNOWN_ACCOUNT_POLICIES = ("verify", "skip")
MODES = ("sign", "identify")


@dataclass(frozen=True)
class VerifyConfig(Section):
    """How keysweep verifies keys (section ``verify``). Durations are in seconds; a TTL of 0 means "do not
    cache"; durations in the file take a unit: ``250ms``, ``30s``, ``15m``, ``6h``, ``1d``."""

    name = "verify"

    enabled: bool = False
    # sign: GetCallerIdentity with the found key (proves live / invalid / wrong secret; counts as the key's last use)
    # identify: never signs with the found key: the account only (offline, or GetAccessKeyInfo as keysweep itself)
    mode: str = option("sign", choices=MODES)
    # None: AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, else https://sts.<region>.amazonaws.com
    endpoint: str | None = option(None, valid=_URL_RE.match, expected="an http(s) URL or null")
    region: str = option(DEFAULT_REGION, valid=_REGION_RE.fullmatch, expected="an AWS region name such as us-east-1")
    rate_limit_per_s: float = option(5.0, above=0, hi=1000)
    max_concurrency: int = option(4, lo=1, hi=64)
    connect_timeout: float = option(3.0, kind="duration", above=0)
    read_timeout: float = option(5.0, kind="duration", above=0)
    max_retries: int = option(2, lo=0, hi=64)  # extra attempts after a transient failure (timeouts, 5xx, throttling)
    backoff_base: float = option(0.5, kind="duration")
    backoff_max: float = option(8.0, kind="duration")
    same_key_spacing: float = option(5.0, kind="duration")  # minimum gap between two calls with the same key id
    cache_enabled: bool = True
    # a week: each re-verification is a last use of the key in IAM (the audit discounts it by the store's
    # verification times), and a week is soon enough to notice a key that was deactivated
    cache_ttl_live: float = option(7 * 86400.0, kind="duration")
    cache_ttl_invalid: float = option(7 * 86400.0, kind="duration")
    cache_ttl_wrong_secret: float = option(86400.0, kind="duration")
    cache_ttl_expired: float = option(7 * 86400.0, kind="duration")
    cache_ttl_unknown: float = option(0.0, kind="duration")
    # added to rules/canary-accounts.yaml
    canary_accounts: tuple[str, ...] = option((), valid=is_account_id, expected=_ACCOUNTS, one_item_list=False)
    # AWS profile names holding honey tokens (e.g. planted by ggshield)
    canary_profiles: tuple[str, ...] = option((), expected="a list of profile names", one_item_list=False)
    canary_key_ids: tuple[str, ...] = option(
        (), valid=keyid.is_key_id, expected="a list of access key ids", one_item_list=False
    )
    # when set: verify only keys of these accounts
    allow_accounts: tuple[str, ...] = option((), valid=is_account_id, expected=_ACCOUNTS, one_item_list=False)
    deny_accounts: tuple[str, ...] = option((), valid=is_account_id, expected=_ACCOUNTS, one_item_list=False)
    use_get_access_key_info: bool = True
    # old key ids whose account stays unknown: "skip" (a honey token with an old id is never tripped) or "verify"
    unknown_account: str = option("skip", choices=_UNKNOWN_ACCOUNT_POLICIES)

    def endpoint_url(self) -> str:
        return self.endpoint or aws.service_endpoint("sts") or f"https://sts.{self.region}.amazonaws.com"

    def cache_ttls(self) -> dict[str, float]:
        return {
            "live": self.cache_ttl_live,
            "invalid": self.cache_ttl_invalid,
            "wrong_secret": self.cache_ttl_wrong_secret,
            "expired": self.cache_ttl_expired,
            "unknown": self.cache_ttl_unknown,
            "canary": self.cache_ttl_invalid,  # a key id once seen as a honey token, wherever it shows up next
        }


# --- report ---------------------------------------------------------------------------------------------

SQS_MAX_BYTES = 1024 * 1024  # a message, and a SendMessageBatch request
_QUEUE_URL = re.compile(r"^https?://[^/\s]+/\d{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?$")


@dataclass(frozen=True)
class ReportConfig(Section):
    """Section ``report`` of the agent config (and the scan's ``--queue-url``)."""

    name = "report"

    queue_url: str | None = None
    region: str | None = None  # default: from the queue URL, else the SDK's region
    fifo: bool | None = None  # default: the queue name ends in .fifo
    max_message_size: int = option(256 * 1024, kind="size")  # the queue's MaximumMessageSize
    max_batch_size: int = option(SQS_MAX_BYTES, kind="size")
    flush_timeout: float = option(20.0, kind="duration")
    backoff_base: float = option(0.5, kind="duration")
    backoff_max: float = option(10.0, kind="duration")
    spool_max_size: int = option(64 * 1024 * 1024, kind="size")
    spool_max_messages: int = 10_000
    spool_max_heartbeats: int = 24
    spool_warn_ratio: float = 0.8
    rereport_interval: float = option(86400.0, kind="duration")
    sent_state_retention: float = option(30 * 86400.0, kind="duration")
    heartbeats: bool = True
    read_iam_policies: bool = False
    scp_exempt_principal_arns: tuple[str, ...] = ()

    def problems(self) -> list[str]:
        out = []
        if self.queue_url is not None and not _QUEUE_URL.match(self.queue_url):
            out.append(f"queue_url: expected https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, got {self.queue_url!r}")
        if not 1024 <= self.max_message_size <= SQS_MAX_BYTES:
            out.append(f"max_message_size: must be between 1 KiB and 1 MiB, got {self.max_message_size!r}")
        if not self.max_message_size <= self.max_batch_size <= SQS_MAX_BYTES:
            out.append(f"max_batch_size: must be between max_message_size and 1 MiB, got {self.max_batch_size!r}")
        if not 0 < self.spool_warn_ratio <= 1:
            out.append(f"spool_warn_ratio: must be in (0, 1], got {self.spool_warn_ratio!r}")
        if self.spool_max_messages < 1 or self.spool_max_size < self.max_message_size:
            out.append("spool_max_messages/spool_max_size: the spool must hold at least one message")
        if self.flush_timeout <= 0 or self.backoff_base <= 0 or self.backoff_max < self.backoff_base:
            out.append("flush_timeout/backoff_base/backoff_max: must be positive, backoff_max >= backoff_base")
        return out

    @property
    def is_fifo(self) -> bool:
        return self.fifo if self.fifo is not None else bool(self.queue_url and self.queue_url.endswith(".fifo"))

    def queue_region(self) -> str | None:
        return self.region or aws.region_in_url(self.queue_url)


# --- context --------------------------------------------------------------------------------------------

_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class ContextConfig(Section):
    """Where the metadata services are and how long to wait for them (section ``context`` of the agent config)."""

    name = "context"

    enabled: bool = True
    imds_endpoint: str | None = None  # default: $AWS_EC2_METADATA_SERVICE_ENDPOINT, else http://169.254.169.254
    imds_timeout: float = option(0.8, kind="duration", above=0)
    imds_token_ttl: int = option(60, lo=1, hi=21600)  # seconds
    ecs_metadata_uri: str | None = None  # default: $ECS_CONTAINER_METADATA_URI_V4
    ecs_timeout: float = option(1.0, kind="duration", above=0)
    kubernetes_serviceaccount_dir: str = _SA_DIR
    kubernetes_podinfo_dir: str = "/etc/podinfo"
    machine_id_path: str = "/etc/machine-id"
    cluster_name: str | None = None  # the EKS/Kubernetes cluster's name: a pod cannot discover it
