"""Where each IAM user access key is used, from CloudTrail (``keysweep trail``).

For every key of every user (``iam:ListUsers`` + ``iam:ListAccessKeys``, active and inactive) CloudTrail's
``LookupEvents`` by ``AccessKeyId`` over the last ``days`` (at most 90: management events only) gives events; each
event's ``sourceIPAddress`` becomes a :class:`Source` with its user agents, event sources, first/last time and
count. keysweep's own calls (User-Agent ``keysweep/…``: verification's ``GetCallerIdentity``) are counted apart and
never count as use. ``LookupEvents`` allows 2 requests per second per account and region: the calls are paced by a
token bucket per account and region, and the account-regions run side by side (:func:`collect_all`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from keysweep import timeutil
from keysweep.cloud.addresses import Fleet, Resolver
from keysweep.cloud.session import AWS_ERRORS, Account, Skip, Target, account_regions, error_reason, paginate
from keysweep.ratelimit import TokenBucket

MAX_DAYS = 90
LOOKUP_RATE = 2.0  # requests per second per account and region (CloudTrail's limit)
KEYSWEEP_AGENT = "keysweep/"


@dataclass
class Source:
    ip: str
    user_agents: set[str] = field(default_factory=set)
    event_sources: set[str] = field(default_factory=set)
    first: str = ""
    last: str = ""
    events: int = 0
    resource: str | None = None
    kind: str | None = None  # set by the resolver: fleet-host, ec2-instance, lambda, ecs-task, …, outside-aws

    def add(self, at: str, user_agent: str, event_source: str, count: int = 1, last: str | None = None) -> None:
        self.events += count
        if user_agent:
            self.user_agents.add(user_agent)
        if event_source:
            self.event_sources.add(event_source)
        last = last or at
        self.first = min(self.first, at) if self.first else at
        self.last = max(self.last, last)

    def merge(self, other: Source) -> None:
        if other.events:
            self.add(other.first, "", "", other.events, other.last)
        self.user_agents |= other.user_agents
        self.event_sources |= other.event_sources

    def to_dict(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "user_agents": sorted(self.user_agents),
            "resource": self.resource,
            "kind": self.kind,
            "first": self.first,
            "last": self.last,
            "events": self.events,
        }


@dataclass
class KeyUsage:
    key_id: str
    user: str
    account: str
    status: str = "Active"
    sources: dict[str, Source] = field(default_factory=dict)
    keysweep_events: int = 0
    verdict: str = "unused"

    def add(
        self, ip: str, at: str, user_agent: str, event_source: str, count: int = 1, last: str | None = None
    ) -> None:
        if KEYSWEEP_AGENT in (user_agent or ""):
            self.keysweep_events += count
            return
        self.sources.setdefault(ip, Source(ip)).add(at, user_agent, event_source, count, last)

    def merge(self, other: KeyUsage) -> None:
        self.keysweep_events += other.keysweep_events
        for ip, source in other.sources.items():
            self.sources.setdefault(ip, Source(ip)).merge(source)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "user": self.user,
            "account": self.account,
            "verdict": self.verdict,
            "sources": [s.to_dict() for s in sorted(self.sources.values(), key=lambda s: (-s.events, s.ip))],
        }


def iso(when: Any) -> str:
    if isinstance(when, (datetime, int, float)):
        return timeutil.iso(when)
    return str(when or "")


def list_keys(iam: Any, account: str) -> list[KeyUsage]:
    """Every access key of every IAM user of the account, active and inactive."""
    out = []
    for user in paginate(iam, "list_users", "Users"):
        for key in paginate(iam, "list_access_keys", "AccessKeyMetadata", UserName=user["UserName"]):
            out.append(KeyUsage(key["AccessKeyId"], user["UserName"], account, key.get("Status", "Active")))
    return out


def window(days: int, *, limit: int | None = MAX_DAYS, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The last ``days`` (at most ``limit``) up to now."""
    end = now or timeutil.now()
    return end - timedelta(days=max(1, min(days, limit) if limit else days)), end


def lookup_events(
    client: Any, key_id: str, start: datetime, end: datetime, bucket: TokenBucket
) -> Iterator[dict[str, Any]]:
    """Every management event signed with ``key_id`` in ``[start, end]``, one paced request per page."""
    token: str | None = None
    while True:
        bucket.acquire()
        kwargs: dict[str, Any] = {
            "LookupAttributes": [{"AttributeKey": "AccessKeyId", "AttributeValue": key_id}],
            "StartTime": start,
            "EndTime": end,
            "MaxResults": 50,
        }
        if token:
            kwargs["NextToken"] = token
        page = client.lookup_events(**kwargs)
        yield from page.get("Events") or ()
        token = page.get("NextToken")
        if not token:
            return


def record_event(usage: KeyUsage, event: dict[str, Any]) -> None:
    try:
        detail = json.loads(event.get("CloudTrailEvent") or "{}")
    except ValueError:
        detail = {}
    usage.add(
        str(detail.get("sourceIPAddress") or "unknown"),
        iso(event.get("EventTime") or detail.get("eventTime")),
        str(detail.get("userAgent") or ""),
        str(detail.get("eventSource") or event.get("EventSource") or ""),
    )


def collect(
    keys: Iterable[KeyUsage],
    client: Any,
    start: datetime,
    end: datetime,
    bucket: TokenBucket,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Add the events of one account and region to each key's usage."""
    for usage in keys:
        if should_stop():
            return
        for event in lookup_events(client, usage.key_id, start, end, bucket):
            record_event(usage, event)


def collect_all(
    jobs: Sequence[tuple[Sequence[KeyUsage], Target]],
    start: datetime,
    end: datetime,
    should_stop: Callable[[], bool] = lambda: False,
    *,
    workers: int = 8,
) -> None:
    """Every account-region's lookups, each in its own thread with its own pacing (CloudTrail's limit is per
    account and region, so one region never waits for another); each thread fills its own copies of the keys,
    merged here. A region that fails is a skip on its target; what it read before failing still counts."""

    def one(keys: Sequence[KeyUsage], client: Any) -> tuple[list[KeyUsage], str | None]:
        mine = [KeyUsage(u.key_id, u.user, u.account, u.status) for u in keys]
        try:
            collect(mine, client, start, end, TokenBucket(LOOKUP_RATE), should_stop)
        except AWS_ERRORS as exc:
            return mine, error_reason(exc)
        return mine, None

    clients = [target.client("cloudtrail") for _, target in jobs]  # made here: a boto3 session is not thread-safe
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        futures = [pool.submit(one, keys, client) for (keys, _), client in zip(jobs, clients)]
        for (keys, target), future in zip(jobs, futures):
            mine, error = future.result()
            if error:
                target.skip("cloudtrail", error)
            for usage, part in zip(keys, mine):
                usage.merge(part)


def keys_and_targets(
    accounts: Sequence[Account], regions: Sequence[str]
) -> tuple[list[KeyUsage], dict[str, list[Target]], list[Skip]]:
    """Every account's keys and its account-regions; an account whose keys cannot be listed is a skip."""
    usages: list[KeyUsage] = []
    readable: list[Account] = []
    skips: list[Skip] = []
    for account in accounts:
        try:
            usages += list_keys(account.session.client("iam"), account.account)
            readable.append(account)
        except AWS_ERRORS as exc:
            skips.append(Skip(account.account, "-", "iam", error_reason(exc)))
    found, more = account_regions(readable, regions)
    targets: dict[str, list[Target]] = {}
    for t in found:
        targets.setdefault(t.account, []).append(t)
    return usages, targets, skips + more


def lookup_all(
    usages: Sequence[KeyUsage],
    targets: dict[str, list[Target]],
    start: datetime,
    end: datetime,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """LookupEvents for every key in every region of its own account."""
    by_account: dict[str, list[KeyUsage]] = {}
    for u in usages:
        by_account.setdefault(u.account, []).append(u)
    jobs = [(by_account.get(a, []), t) for a, account_targets in targets.items() for t in account_targets]
    collect_all(jobs, start, end, should_stop)


def resolve_all(usages: Sequence[KeyUsage], targets: dict[str, list[Target]], fleet: Fleet) -> None:
    """Resolve every source address in its key's account, then give each key its verdict."""
    resolvers = {account: Resolver(account_targets, fleet) for account, account_targets in targets.items()}
    for u in usages:
        resolver = resolvers.get(u.account)
        for source in u.sources.values():
            source.kind, source.resource = resolver.resolve(source.ip) if resolver else ("outside-aws", None)
        u.verdict = decide(u)


COMPUTE_WITHOUT_AGENT = frozenset({"ec2-instance", "lambda", "ecs-task", "nat-gateway", "network-interface"})


def decide(usage: KeyUsage) -> str:
    """The key's verdict from its resolved sources: the coverage gap first, then use from outside, then fleet."""
    kinds = {s.kind for s in usage.sources.values()}
    if not usage.sources:
        return "used-only-by-keysweep" if usage.keysweep_events else "unused"
    if kinds & COMPUTE_WITHOUT_AGENT:
        return "in-use-by-compute-without-agent"
    if kinds - {"fleet-host"}:
        return "in-use-outside-aws"
    return "in-use-by-fleet-host"
