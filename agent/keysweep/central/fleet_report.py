"""The fleet view: every key the agents reported, where it is, who owns it and what should replace it.

Built from the central store's records: findings (one per key per place per host) are grouped by the key-level
fingerprint into one :class:`FleetKey` each; hosts come with their coverage (last heartbeat, agent version,
silent or not). Everything here comes from hosts and is treated as untrusted text by the renderers; the store holds
no secret, so neither does the report.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from keysweep.central.coverage import DEFAULT_SILENT_AFTER, OK, HostCoverage, host_coverage
from keysweep.central.records import STATUS_URGENCY, FindingRecord, HostRecord, arrival, host_words, key_word
from keysweep.central.store import Store
from keysweep.textsafe import csv_cell, dump_json, safe_text, shorten

FORMATS = ("table", "json", "csv", "html")
SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
# order of statuses in charts and sorting: what needs action first
STATUS_ORDER = STATUS_URGENCY
AGE_BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("< 1 day", timedelta(days=1)),
    ("1–7 days", timedelta(days=7)),
    ("7–30 days", timedelta(days=30)),
    ("30–90 days", timedelta(days=90)),
    ("90–365 days", timedelta(days=365)),
    ("> 1 year", None),
)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def place(location: Mapping[str, Any]) -> str:
    """A short human name for where on a host a key was found."""
    kind = str(location.get("kind") or "?")
    if location.get("path"):
        where = str(location["path"])
        if location.get("member"):
            where += "!" + str(location["member"])
        if location.get("profile"):
            where += f" [{location['profile']}]"
        if location.get("line"):
            where += f":{location['line']}"
        return where
    if kind == "process":
        what = location.get("unit") or location.get("exe") or f"pid {location.get('pid')}"
        return f"process {what} ${location.get('variable') or '?'}"
    return kind


@dataclass(frozen=True)
class KeyLocation:
    host_id: str
    hostname: str
    host_kind: str
    place: str
    location: Mapping[str, Any]
    first_seen: str
    last_seen: str
    status: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"host_id": self.host_id, "hostname": self.hostname, "host_kind": self.host_kind,
                "place": self.place, "location": dict(self.location), "first_seen": self.first_seen,
                "last_seen": self.last_seen, "status": self.status}


@dataclass(frozen=True)
class FleetKey:
    fingerprint: str
    key_id: str
    key_type: str | None
    account_id: str | None
    owner_arn: str | None
    status: str  # newest verification status of the key; "unverified" when no agent verified it
    severity: str
    first_seen: str
    last_seen: str
    verified_at: str | None
    locations: tuple[KeyLocation, ...]
    suggestions: tuple[Mapping[str, Any], ...] = ()
    deactivated_by: str | None = None
    deactivated_at: str | None = None

    @property
    def hosts(self) -> list[str]:
        return sorted({loc.hostname or loc.host_id for loc in self.locations})

    @property
    def compute_kinds(self) -> list[str]:
        return sorted({loc.host_kind for loc in self.locations})

    def age(self, now: datetime) -> timedelta | None:
        first = parse_time(self.first_seen)
        return now - first if first else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint, "key_id": self.key_id, "key_type": self.key_type,
            "account_id": self.account_id, "owner_arn": self.owner_arn, "status": self.status,
            "severity": self.severity, "first_seen": self.first_seen, "last_seen": self.last_seen,
            "verified_at": self.verified_at, "hosts": self.hosts, "compute_kinds": self.compute_kinds,
            "locations": [loc.to_dict() for loc in self.locations],
            "suggestions": [dict(s) for s in self.suggestions],
            "deactivated_by": self.deactivated_by, "deactivated_at": self.deactivated_at,
        }


@dataclass(frozen=True)
class HostRow:
    """A host's coverage (from its heartbeats) and the keys found on it."""

    coverage: HostCoverage
    keys: int  # distinct keys found on it
    live_keys: int

    @property
    def silent(self) -> bool:
        """No heartbeat within the silence window, or never one."""
        return self.coverage.state != OK

    def to_dict(self) -> dict[str, Any]:
        return {**self.coverage.to_dict(), "keys": self.keys, "live_keys": self.live_keys}


@dataclass(frozen=True)
class FleetReport:
    generated_at: datetime
    keys: tuple[FleetKey, ...]
    hosts: tuple[HostRow, ...]
    silent_after: timedelta = DEFAULT_SILENT_AFTER
    charts: Mapping[str, list[tuple[str, int]]] = field(default_factory=dict)

    @property
    def live_keys(self) -> list[FleetKey]:
        return [k for k in self.keys if k.status == "live"]

    def summary(self) -> dict[str, Any]:
        return {
            "keys": len(self.keys),
            "live_keys": len(self.live_keys),
            "locations": sum(len(k.locations) for k in self.keys),
            "hosts": len(self.hosts),
            "hosts_with_keys": sum(1 for h in self.hosts if h.keys),
            "hosts_with_live_keys": sum(1 for h in self.hosts if h.live_keys),
            "silent_hosts": sum(1 for h in self.hosts if h.silent),
            "deactivated_keys": sum(1 for k in self.keys if k.deactivated_at),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated_at": _iso(self.generated_at),
            "silent_after_hours": self.silent_after.total_seconds() / 3600,
            "summary": self.summary(),
            "charts": {name: [{"label": lab, "value": v} for lab, v in data] for name, data in self.charts.items()},
            "keys": [k.to_dict() for k in self.keys],
            "hosts": [h.to_dict() for h in self.hosts],
        }


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _key_from(records: Sequence[FindingRecord]) -> FleetKey:
    """One key's facts from its records. Each host speaks only for itself: a host's word on the key is its own newest
    check, and the key is as urgent as the most urgent word of any host holding it (``live`` before ``invalid``), so
    one host's report adds to what the fleet knows and never overrules another's. Owner and account follow most
    hosts; suggestions come from the hosts holding the key, each marked with its host, the first from the
    earliest host that says the key's status."""
    by_host: dict[str, list[FindingRecord]] = {}
    for rec in records:
        by_host.setdefault(rec.host_id, []).append(rec)
    words = host_words(records)
    speaker = key_word(records)
    status = speaker.status or "unverified"
    holders = sorted((w for w in words if (w.status or "unverified") == status), key=arrival)
    others = sorted((w for w in words if (w.status or "unverified") != status), key=arrival)

    def most_reported(values: Sequence[str | None]) -> str | None:
        counted = Counter(v for v in values if v)
        return max(counted, key=lambda v: (counted[v], -values.index(v))) if counted else None

    suggestions: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    for word in (*holders, *others):
        rec = max((r for r in by_host[word.host_id] if r.suggestion), key=lambda r: r.version, default=None)
        if rec is None or rec.suggestion is None:
            continue
        ident = json.dumps(rec.suggestion, sort_keys=True)
        if ident not in seen:
            seen.add(ident)
            suggestions.append({**rec.suggestion, "host_id": rec.host_id, "hostname": rec.hostname})
    locations = tuple(sorted(
        (KeyLocation(r.host_id, r.hostname, r.host_kind, place(r.location), r.location, r.first_seen, r.last_seen,
                     r.status) for r in records),
        key=lambda loc: (loc.hostname, loc.place),
    ))
    deactivated = next((r for r in records if r.deactivated_at), None)
    ordered = [*holders, *others]
    return FleetKey(
        fingerprint=speaker.fingerprint,
        key_id=speaker.key_id,
        key_type=speaker.key_type,
        account_id=most_reported([r.account_id for r in ordered]),
        owner_arn=most_reported([r.owner_arn for r in ordered]),
        status=status,
        severity=min((r.severity for r in records), key=lambda s: SEVERITY_RANK.get(s, 9)),
        first_seen=min(r.first_seen for r in records),
        last_seen=max(r.last_seen for r in records),
        verified_at=max((w.verified_at for w in holders if w.verified_at), default=None),
        locations=locations,
        suggestions=tuple(suggestions),
        deactivated_by=deactivated.deactivated_by if deactivated else None,
        deactivated_at=deactivated.deactivated_at if deactivated else None,
    )


def _sort_key(key: FleetKey) -> tuple[Any, ...]:
    status = STATUS_ORDER.index(key.status) if key.status in STATUS_ORDER else len(STATUS_ORDER)
    return (status, SEVERITY_RANK.get(key.severity, 9), -len(key.locations), key.key_id, key.fingerprint)


def build_report(
    findings: Iterable[FindingRecord],
    hosts: Iterable[HostRecord],
    *,
    now: datetime | None = None,
    silent_after: timedelta = DEFAULT_SILENT_AFTER,
) -> FleetReport:
    now = now or datetime.now(UTC)
    groups: dict[str, list[FindingRecord]] = {}
    for rec in findings:
        groups.setdefault(rec.fingerprint, []).append(rec)
    keys = sorted((_key_from(recs) for recs in groups.values()), key=_sort_key)

    keys_per_host: dict[str, set[str]] = {}
    live_per_host: dict[str, set[str]] = {}
    for key in keys:
        for loc in key.locations:
            keys_per_host.setdefault(loc.host_id, set()).add(key.fingerprint)
            if key.status == "live":
                live_per_host.setdefault(loc.host_id, set()).add(key.fingerprint)
    # the store records every host that sent anything (findings too), so coverage names every host of a key
    rows = [HostRow(c, len(keys_per_host.get(c.host_id, ())), len(live_per_host.get(c.host_id, ())))
            for c in host_coverage(hosts, now=now, silent_after=silent_after).hosts]
    rows.sort(key=lambda r: (not r.silent, -r.live_keys, r.coverage.hostname, r.coverage.host_id))
    return FleetReport(now, tuple(keys), tuple(rows), silent_after, chart_data(keys, rows, now))


def chart_data(keys: Sequence[FleetKey], hosts: Sequence[HostRow], now: datetime | None = None) -> dict[str, list[tuple[str, int]]]:
    now = now or datetime.now(UTC)
    live = [k for k in keys if k.status == "live"]
    by_account = Counter(k.account_id or "unknown" for k in live)
    by_status = Counter(k.status for k in keys)
    by_kind = Counter(kind for k in live for kind in k.compute_kinds)
    ages = Counter()  # type: Counter[str]
    for k in keys:
        age = k.age(now)
        if age is None:
            continue
        label = next((lab for lab, limit in AGE_BUCKETS if limit is None or age < limit), AGE_BUCKETS[-1][0])
        ages[label] += 1
    reporting = [h for h in hosts if not h.silent or h.keys]
    return {
        "live_keys_by_account": by_account.most_common(),
        "keys_by_status": sorted(by_status.items(), key=lambda kv: STATUS_ORDER.index(kv[0])
                                 if kv[0] in STATUS_ORDER else 99),
        "live_keys_by_compute_kind": by_kind.most_common(),
        "key_age": [(lab, ages[lab]) for lab, _ in AGE_BUCKETS],
        "hosts_affected": [
            ("with live keys", sum(1 for h in reporting if h.live_keys)),
            ("with other keys", sum(1 for h in reporting if h.keys and not h.live_keys)),
            ("no keys found", sum(1 for h in reporting if not h.keys)),
            ("silent", sum(1 for h in hosts if h.silent)),
        ],
    }


def load_report(store: Store, *, now: datetime | None = None,
                silent_after: timedelta = DEFAULT_SILENT_AFTER) -> FleetReport:
    return build_report(store.iter_findings(), store.iter_hosts(), now=now, silent_after=silent_after)


# ------------------------------------------------------------------------------------------------ text outputs

CSV_FIELDS = (
    "fingerprint", "key_id", "account_id", "status", "severity", "owner_arn", "first_seen", "last_seen",
    "compute_kinds", "hosts", "locations", "suggestion", "commands", "deactivated_by", "deactivated_at",
)


def _commands(key: FleetKey) -> list[str]:
    """The commands of the suggestion shown first (one host's word: never mixed with another host's)."""
    out: list[str] = []
    for s in key.suggestions[:1]:
        for cmd in list(s.get("commands") or []) + list(s.get("cleanup") or []):
            if cmd not in out:
                out.append(str(cmd))
    return out


def write_csv(report: FleetReport, stream: TextIO) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for k in report.keys:
        s = k.suggestions[0] if k.suggestions else {}
        row = [
            k.fingerprint, k.key_id, k.account_id, k.status, k.severity, k.owner_arn, k.first_seen, k.last_seen,
            " ".join(k.compute_kinds), " ".join(k.hosts),
            [f"{loc.hostname}:{loc.place}" for loc in k.locations],
            s.get("summary"), _commands(k), k.deactivated_by, k.deactivated_at,
        ]
        writer.writerow([csv_cell(v) for v in row])


def _short(text: str | None, width: int) -> str:
    """One terminal-safe line of at most ``width`` characters."""
    return shorten(text or "-", width)


def write_table(report: FleetReport, out: TextIO) -> None:
    s = report.summary()
    out.write(f"keysweep fleet report, {_iso(report.generated_at)}\n{s['keys']} key(s), {s['live_keys']} live, "
              f"in {s['locations']} place(s) on {s['hosts_with_keys']} host(s); {s['hosts']} host(s) known, "
              f"{s['silent_hosts']} silent\n\n")
    header = f"{'KEY ID':<22} {'ACCOUNT':<13} {'STATUS':<12} {'HOSTS':>5} {'KINDS':<12} {'FIRST SEEN':<10} " \
             f"{'LAST SEEN':<10}"
    out.write(header.rstrip() + "\n")
    for k in report.keys:  # a key's row fits 100 columns; the longer facts follow on their own lines
        out.write(f"{_short(k.key_id, 22):<22} {_short(k.account_id, 13):<13} {_short(k.status, 12):<12} "
                  f"{len(k.hosts):>5} {_short(','.join(k.compute_kinds), 12):<12} {safe_text(k.first_seen[:10]):<10} "
                  f"{safe_text(k.last_seen[:10]):<10}\n")
        if k.owner_arn:
            out.write(f"    owner: {safe_text(k.owner_arn)}\n")
        for loc in k.locations:
            out.write(f"    at {_short(loc.hostname, 30)} ({_short(loc.host_kind, 12)}): {_short(loc.place, 90)}\n")
        if k.deactivated_at:
            out.write(f"    deactivated {_short(k.deactivated_at, 30)} by {_short(k.deactivated_by, 60)}\n")
        if k.suggestions:
            first = k.suggestions[0]
            out.write(f"    replace (from {_short(first.get('hostname') or first.get('host_id'), 30)}): "
                      f"{_short(first.get('summary'), 100)}\n")
            for cmd in _commands(k):
                out.write(f"      $ {_short(cmd, 200)}\n")
    out.write(f"\nHOST COVERAGE (silent = no heartbeat for {report.silent_after.total_seconds() / 3600:g} h)\n")
    out.write(f"{'HOST':<22} {'KIND':<11} {'AGENT':<10} {'LAST HEARTBEAT':<17} {'KEYS':>4} {'LIVE':>4}  STATE\n")
    for row in report.hosts:
        h = row.coverage
        state = h.state.upper() if row.silent else h.state
        if h.errors:
            state += f", {len(h.errors)} error(s)"
        heartbeat = f"{h.last_heartbeat[:16]}Z" if h.last_heartbeat else None  # to the minute
        out.write(f"{_short(h.hostname, 22):<22} {_short(h.kind, 11):<11} {_short(h.agent_version, 10):<10} "
                  f"{_short(heartbeat, 17):<17} {row.keys:>4} {row.live_keys:>4}  {state}\n")


def render_report(report: FleetReport, fmt: str, stream: TextIO) -> None:
    if fmt == "json":
        dump_json(report.to_dict(), stream)
    elif fmt == "csv":
        write_csv(report, stream)
    elif fmt == "table":
        write_table(report, stream)
    elif fmt == "html":
        from keysweep.central.html_report import render_html

        stream.write(render_html(report))
    else:
        raise ValueError(f"unknown report format {fmt!r}")
