"""The fleet view: every key the agents reported, where it is, who owns it and what should replace it.

Built from the central store's records: findings (one per key per place per host) are grouped by the key-level
fingerprint into one :class:`FleetKey` each; hosts come with their coverage (last heartbeat, agent version,
silent or not). Everything here comes from hosts and is treated as untrusted text by the renderers; the store holds
no secret, so neither does the report.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import tempfile
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby, islice
from operator import attrgetter
from typing import Any, TextIO, overload

from keysweep import timeutil
from keysweep.central.coverage import DEFAULT_SILENT_AFTER, NO_HEARTBEAT, OK, SILENT, HostCoverage, host_coverage
from keysweep.central.records import (
    STATUS_URGENCY,
    FindingRecord,
    FindingSummary,
    HostRecord,
    arrival,
    host_words,
    key_word,
)
from keysweep.central.store import Store, finding_summaries
from keysweep.textable import table_lines
from keysweep.textsafe import csv_cell, dumps_json, safe_text, shorten

FORMATS = ("table", "json", "csv", "html")
MAX_SUGGESTIONS = 10  # distinct suggestions read and listed per key, the key's speaker first (the rest counted)
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
        return timeutil.parse(value)
    except ValueError:
        return None


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
    example: str | None = None  # why detection would have hidden it: only on findings kept by --include-examples

    def to_dict(self) -> dict[str, Any]:
        d = {
            "host_id": self.host_id,
            "hostname": self.hostname,
            "host_kind": self.host_kind,
            "place": self.place,
            "location": dict(self.location),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "status": self.status,
        }
        if self.example is not None:
            d["example"] = self.example
        return d


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
    locations: Sequence[KeyLocation]  # by host name, then place; spooled to a temporary file by load_report
    suggestions: tuple[Mapping[str, Any], ...] = ()  # the first MAX_SUGGESTIONS distinct ones
    deactivated_by: str | None = None
    deactivated_at: str | None = None
    host_names: tuple[str, ...] = ()  # the hosts holding it (name, else id), sorted
    kinds: tuple[str, ...] = ()  # their compute kinds, sorted
    suggestions_total: int = 0  # distinct suggestions the hosts holding it made

    @property
    def hosts(self) -> list[str]:
        return list(self.host_names)

    @property
    def compute_kinds(self) -> list[str]:
        return list(self.kinds)

    def age(self, now: datetime) -> timedelta | None:
        first = parse_time(self.first_seen)
        return now - first if first else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "key_id": self.key_id,
            "key_type": self.key_type,
            "account_id": self.account_id,
            "owner_arn": self.owner_arn,
            "status": self.status,
            "severity": self.severity,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "verified_at": self.verified_at,
            "hosts": self.hosts,
            "compute_kinds": self.compute_kinds,
            "locations": [loc.to_dict() for loc in self.locations],
            "suggestions": [dict(s) for s in self.suggestions],
            "suggestions_total": self.suggestions_total,
            "deactivated_by": self.deactivated_by,
            "deactivated_at": self.deactivated_at,
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

    def header(self) -> dict[str, Any]:
        """The JSON document's fields before its keys and hosts."""
        return {
            "generated_at": timeutil.iso(self.generated_at),
            "silent_after_hours": self.silent_after.total_seconds() / 3600,
            "summary": self.summary(),
            "charts": {name: [{"label": lab, "value": v} for lab, v in data] for name, data in self.charts.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.header(), "keys": [k.to_dict() for k in self.keys], "hosts": [h.to_dict() for h in self.hosts]}


SuggestionOf = Callable[[FindingSummary], "Mapping[str, Any] | None"]


def _key_from(
    records: Sequence[FindingSummary], suggestion_of: SuggestionOf, spool: LocationSpool | None = None
) -> FleetKey:
    """One key's facts from its records. Each host speaks only for itself: a host's word on the key is its own newest
    check, and the key is as urgent as the most urgent word of any host holding it (``live`` before ``invalid``), so
    one host's report adds to what the fleet knows and never overrules another's. Owner and account follow most
    hosts; suggestions come from the hosts holding the key, each marked with its host, the first from the
    earliest host that says the key's status: the first MAX_SUGGESTIONS distinct ones are read (``suggestion_of``),
    the others only counted. ``spool``: where the locations go (else they are kept in memory)."""
    by_host: dict[str, list[FindingSummary]] = {}
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
        newest = max(
            (r for r in by_host[word.host_id] if r.suggestion_kind is not None), key=lambda r: r.version, default=None
        )
        if newest is None or newest.suggestion_digest in seen:
            continue
        seen.add(newest.suggestion_digest or "")
        suggestion = suggestion_of(newest) if len(suggestions) < MAX_SUGGESTIONS else None
        if suggestion is not None:
            suggestions.append({**suggestion, "host_id": newest.host_id, "hostname": newest.hostname})
    ordered_locations = sorted(
        (
            KeyLocation(
                r.host_id,
                r.hostname,
                r.host_kind,
                place(r.location),
                r.location,
                r.first_seen,
                r.last_seen,
                r.status,
                r.example,
            )
            for r in records
        ),
        key=lambda loc: (loc.hostname, loc.place),
    )
    locations = spool.add(ordered_locations) if spool is not None else tuple(ordered_locations)
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
        host_names=tuple(sorted({r.hostname or r.host_id for r in records})),
        kinds=tuple(sorted({r.host_kind for r in records})),
        suggestions_total=len(seen),
    )


def _sort_key(key: FleetKey) -> tuple[Any, ...]:
    status = STATUS_ORDER.index(key.status) if key.status in STATUS_ORDER else len(STATUS_ORDER)
    return (status, SEVERITY_RANK.get(key.severity, 9), -len(key.locations), key.key_id, key.fingerprint)


class _HostCounts:
    """Distinct keys and live keys per host, counted key by key."""

    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()
        self.live: Counter[str] = Counter()

    def add(self, key: FleetKey, host_ids: Iterable[str]) -> None:
        for host_id in set(host_ids):
            self.keys[host_id] += 1
            if key.status == "live":
                self.live[host_id] += 1


def _assemble(
    keys: list[FleetKey], counts: _HostCounts, hosts: Iterable[HostRecord], now: datetime, silent_after: timedelta
) -> FleetReport:
    keys.sort(key=_sort_key)
    # the store records every host that sent anything (findings too), so coverage names every host of a key
    rows = [
        HostRow(c, counts.keys[c.host_id], counts.live[c.host_id])
        for c in host_coverage(hosts, now=now, silent_after=silent_after).hosts
    ]
    rows.sort(key=lambda r: (not r.silent, -r.live_keys, r.coverage.hostname, r.coverage.host_id))
    return FleetReport(now, tuple(keys), tuple(rows), silent_after, chart_data(keys, rows, now))


def build_report(
    findings: Iterable[FindingRecord],
    hosts: Iterable[HostRecord],
    *,
    now: datetime | None = None,
    silent_after: timedelta = DEFAULT_SILENT_AFTER,
) -> FleetReport:
    """The report of records in memory (every record is held); :func:`load_report` streams a store instead."""
    now = now or timeutil.now()
    groups: dict[str, list[FindingRecord]] = {}
    for rec in findings:
        groups.setdefault(rec.fingerprint, []).append(rec)
    keys: list[FleetKey] = []
    counts = _HostCounts()
    for recs in groups.values():
        by_place = {(r.host_id, r.finding_fingerprint): r for r in recs}

        def suggestion_of(
            s: FindingSummary, by_place: dict[tuple[str, str], FindingRecord] = by_place
        ) -> Mapping[str, Any] | None:
            return by_place[(s.host_id, s.finding_fingerprint)].suggestion

        key = _key_from([FindingSummary.of(r) for r in recs], suggestion_of)
        keys.append(key)
        counts.add(key, (r.host_id for r in recs))
    return _assemble(keys, counts, hosts, now, silent_after)


def chart_data(
    keys: Sequence[FleetKey], hosts: Sequence[HostRow], now: datetime | None = None
) -> dict[str, list[tuple[str, int]]]:
    now = now or timeutil.now()
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
        "keys_by_status": sorted(
            by_status.items(), key=lambda kv: STATUS_ORDER.index(kv[0]) if kv[0] in STATUS_ORDER else 99
        ),
        "live_keys_by_compute_kind": by_kind.most_common(),
        "key_age": [(lab, ages[lab]) for lab, _ in AGE_BUCKETS],
        "hosts_affected": [
            ("with live keys", sum(1 for h in reporting if h.live_keys)),
            ("with other keys", sum(1 for h in reporting if h.keys and not h.live_keys)),
            ("no keys found", sum(1 for h in reporting if not h.keys)),
            ("silent", sum(1 for h in hosts if h.silent)),
        ],
    }


@dataclass(frozen=True)
class ReportFilter:
    """Which keys a report covers: any of ``key_ids``, with any of ``statuses`` (the key's status), on any of
    ``hosts`` (host ids or names); an empty set does not filter. A filtered report's coverage lists the hosts
    holding its keys (with ``hosts``: those hosts only)."""

    key_ids: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.key_ids or self.statuses or self.hosts)

    def wants(self, key: FleetKey, records: Sequence[FindingSummary]) -> bool:
        return (
            (not self.key_ids or key.key_id in self.key_ids)
            and (not self.statuses or key.status in self.statuses)
            and (not self.hosts or any(r.host_id in self.hosts or r.hostname in self.hosts for r in records))
        )


def load_report(
    store: Store,
    *,
    now: datetime | None = None,
    silent_after: timedelta = DEFAULT_SILENT_AFTER,
    only: ReportFilter = ReportFilter(),
) -> FleetReport:
    """The report of a store in bounded memory: the findings are read key by key as summaries (nothing decoded but
    the few suggestions shown), each key's locations go to a temporary file, and only the keys' facts and the hosts'
    coverage are held. ``only``: the keys (and hosts) to report."""
    now = now or timeutil.now()
    spool = LocationSpool()
    keys: list[FleetKey] = []
    counts = _HostCounts()

    def suggestion_of(summary: FindingSummary) -> Mapping[str, Any] | None:
        record = store.get_finding(summary.host_id, summary.finding_fingerprint)
        return record.suggestion if record else None

    for _, group in groupby(finding_summaries(store), key=attrgetter("fingerprint")):
        records = list(group)
        if only.key_ids and records[0].key_id not in only.key_ids:
            continue
        key = _key_from(records, suggestion_of, spool if not only else None)
        if not only.wants(key, records):
            continue
        if only:  # few keys pass a filter: their places are spooled only now
            key = dataclasses.replace(key, locations=spool.add(key.locations))
        keys.append(key)
        counts.add(key, (r.host_id for r in records))

    def covered(host: HostRecord) -> bool:
        if only.hosts:
            return host.host_id in only.hosts or host.hostname in only.hosts
        return not only or counts.keys[host.host_id] > 0

    return _assemble(keys, counts, filter(covered, store.iter_hosts()), now, silent_after)


class LocationSpool:
    """Keys' locations in an unnamed temporary file (private, gone when closed): each key's as one JSON array."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(mode="w+b")

    def add(self, locations: Sequence[KeyLocation]) -> SpooledLocations:
        self._file.seek(0, os.SEEK_END)
        start = self._file.tell()
        self._file.write(
            json.dumps(
                [
                    (
                        loc.host_id,
                        loc.hostname,
                        loc.host_kind,
                        loc.place,
                        loc.location,
                        loc.first_seen,
                        loc.last_seen,
                        loc.status,
                        loc.example,
                    )
                    for loc in locations
                ],
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode()
        )
        return SpooledLocations(self, start, self._file.tell() - start, len(locations))

    def read(self, start: int, size: int) -> bytes:
        self._file.seek(start)
        return self._file.read(size)


class SpooledLocations(Sequence[KeyLocation]):
    """One key's locations in a :class:`LocationSpool`: counted without reading, read on each iteration."""

    def __init__(self, spool: LocationSpool, start: int, size: int, count: int) -> None:
        self._spool, self._start, self._size, self._count = spool, start, size, count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[KeyLocation]:
        for fields in json.loads(self._spool.read(self._start, self._size)):
            yield KeyLocation(*fields)

    @overload
    def __getitem__(self, index: int) -> KeyLocation: ...

    @overload
    def __getitem__(self, index: slice) -> list[KeyLocation]: ...

    def __getitem__(self, index: int | slice) -> KeyLocation | list[KeyLocation]:
        if isinstance(index, slice):
            return list(self)[index]
        if not -self._count <= index < self._count:
            raise IndexError(index)
        return next(islice(self, index % self._count, None))


# ------------------------------------------------------------------------------------------------ text outputs

CSV_FIELDS = (
    "fingerprint",
    "key_id",
    "account_id",
    "status",
    "severity",
    "owner_arn",
    "first_seen",
    "last_seen",
    "compute_kinds",
    "hosts",
    "locations",
    "suggestion",
    "commands",
    "deactivated_by",
    "deactivated_at",
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
            k.fingerprint,
            k.key_id,
            k.account_id,
            k.status,
            k.severity,
            k.owner_arn,
            k.first_seen,
            k.last_seen,
            " ".join(k.compute_kinds),
            " ".join(k.hosts),
            [f"{loc.hostname}:{loc.place}" for loc in k.locations],
            s.get("summary"),
            _commands(k),
            k.deactivated_by,
            k.deactivated_at,
        ]
        writer.writerow([csv_cell(v) for v in row])


def _short(text: str | None, width: int) -> str:
    """One terminal-safe line of at most ``width`` characters."""
    return shorten(text or "-", width)


TABLE_WIDTH = 100
# the key table's fixed columns; OWNER takes what is left of TABLE_WIDTH and is the only value ever cut
STATUS_W, KEY_W, HOSTS_W, AGE_W, KIND_W = 12, 20, 5, 5, 25  # "wrong_secret"; AKIA + 16; "eks-pod-identity-existing"
MAX_KEY_W = 32  # a schema-valid key id longer than this (no AWS key id is) is shortened too
MIN_OWNER_W = 12
# a clean-up line that opens like a sentence ("Remove the key …", "Deactivate the key …:") is prose; the others
# ("aws iam …", "USER_NAME=$(…)") are commands
_PROSE = re.compile(r"[A-Z][a-z]*[ ,:]")


def owner_name(key: FleetKey) -> str:
    """Who holds the key, short: the user name of a user ARN, else the ARN's resource part (``root``,
    ``assumed-role/…``), else the account, else ``-``."""
    arn = key.owner_arn or ""
    resource = arn.split(":", 5)[5] if arn.count(":") >= 5 else ""
    if resource.startswith("user/"):
        return resource.rsplit("/", 1)[1]
    return resource or key.account_id or "-"


def age_text(age: timedelta | None) -> str:
    """``12d``, ``5h``, ``40m``; ``-`` when unknown."""
    if age is None:
        return "-"
    seconds = max(0, int(age.total_seconds()))
    if seconds >= 86400:
        return f"{seconds // 86400}d"
    return f"{seconds // 3600}h" if seconds >= 3600 else f"{seconds // 60}m"


def table_order(keys: Iterable[FleetKey]) -> list[FleetKey]:
    """Most urgent first: by status (live first), then the keys on more hosts, then severity."""
    return sorted(
        keys,
        key=lambda k: (
            STATUS_ORDER.index(k.status) if k.status in STATUS_ORDER else len(STATUS_ORDER),
            -len(k.hosts),
            SEVERITY_RANK.get(k.severity, 9),
            -len(k.locations),
            k.key_id,
            k.fingerprint,
        ),
    )


def _key_lines(keys: Sequence[FleetKey], now: datetime) -> list[str]:
    key_w = min(MAX_KEY_W, max([KEY_W, *(len(safe_text(k.key_id)) for k in keys)]))
    owner_w = max(MIN_OWNER_W, TABLE_WIDTH - (STATUS_W + key_w + HOSTS_W + AGE_W + KIND_W + 5))
    rows = [("STATUS", "KEY ID", "OWNER", "HOSTS", "AGE", "REPLACE WITH")]
    for k in keys:
        kind = k.suggestions[0].get("kind") if k.suggestions else None
        rows.append(
            (
                _short(k.status, STATUS_W),
                _short(k.key_id, key_w),
                _short(owner_name(k), owner_w),
                str(len(k.hosts)),
                age_text(k.age(now)),
                _short(kind, KIND_W),
            )
        )
    return table_lines(rows, widths=(STATUS_W, key_w, owner_w, HOSTS_W, AGE_W), right=(3, 4), sep=" ")


def _prose(text: object, indent: str, first: str = "") -> list[str]:
    """``text`` as safe prose wrapped to the table width; a long word (a path, an ARN) is never broken."""
    return textwrap.wrap(
        safe_text(text),
        TABLE_WIDTH,
        initial_indent=indent + first,
        subsequent_indent=indent + " " * len(first),
        break_long_words=False,
        break_on_hyphens=False,
    ) or [indent + first.rstrip()]


def _suggestion_lines(s: Mapping[str, Any]) -> list[str]:
    """A suggestion in full: its summary and steps as prose, its commands whole (``$ …``, one a line, never cut,
    so they paste), its clean-up in order (prose as prose, commands as commands)."""
    source = safe_text(s.get("hostname") or s.get("host_id") or "?")
    out = [f"  replace with {safe_text(s.get('kind') or '?')} (suggested by host {source}):"]
    if s.get("summary"):
        out += _prose(s["summary"], "    ")
    for n, step in enumerate(s.get("steps") or [], 1):
        out += _prose(step, "    ", f"{n}. ")
    out += [f"    $ {safe_text(cmd)}" for cmd in s.get("commands") or []]
    cleanup = list(s.get("cleanup") or [])
    if cleanup:
        out.append("    then retire the key:")
    for line in cleanup:
        text = safe_text(line)
        out += _prose(text, "    ") if _PROSE.match(text) else [f"    $ {text}"]
    return out


def _details(k: FleetKey, now: datetime) -> list[str]:
    out = [
        f"{safe_text(k.key_id)}  {safe_text(k.status)}, severity {safe_text(k.severity)}, on {len(k.hosts)} host(s)",
        f"  first seen {safe_text(k.first_seen)} ({age_text(k.age(now))} ago), last seen {safe_text(k.last_seen)}",
    ]
    out.append(f"  owner: {safe_text(k.owner_arn or '-')} (account {safe_text(k.account_id or '?')})")
    if k.deactivated_at:
        out.append(f"  deactivated {safe_text(k.deactivated_at)} by {safe_text(k.deactivated_by or '?')}")
    out += [
        f"  at {safe_text(loc.hostname or loc.host_id)} ({safe_text(loc.host_kind)}): {safe_text(loc.place)}"
        for loc in k.locations
    ]
    if k.suggestions:
        out += _suggestion_lines(k.suggestions[0])
        if len(k.suggestions) > 1:
            out.append(f"  ({len(k.suggestions) - 1} other host(s) suggest differently: see --format json)")
    return out


TABLE_KEYS = 300  # key lines in the default table (the most urgent); --details lists every key
TABLE_HOSTS = 50  # host lines in the default table's coverage (silent ones first); --details lists every host


def coverage_summary(report: FleetReport) -> str:
    """One line: hosts by state, then the agent versions (the most common first)."""
    states = Counter(row.coverage.state for row in report.hosts)
    versions = Counter(row.coverage.agent_version or "unknown" for row in report.hosts).most_common()
    shown = ", ".join(f"{safe_text(v)} x{n}" for v, n in versions[:4])
    more = f", {len(versions) - 4} more" if len(versions) > 4 else ""
    by_state = ", ".join(f"{states[s]} {s}" for s in (OK, SILENT, NO_HEARTBEAT) if states[s]) or "none"
    return f"{len(report.hosts)} host(s): {by_state}; agent versions: {shown or '-'}{more}"


def write_table(report: FleetReport, out: TextIO, *, details: bool = False) -> None:
    """One line per key (most urgent first, at most TABLE_KEYS), the hosts' coverage (a summary line, then the
    hosts: all of them in a small fleet, else the silent ones first, at most TABLE_HOSTS), the totals; ``details``:
    every key and host, and each key in full after the table (locations, owner ARN, the suggestion with its steps
    and whole commands)."""
    s = report.summary()
    keys = table_order(report.keys)
    shown = keys if details else keys[:TABLE_KEYS]
    lines = _key_lines(shown, report.generated_at)
    if len(shown) < len(keys):
        lines.append(
            f"... {len(keys) - len(shown)} more key(s), less urgent: --details (or --format csv) lists every key"
        )
    if details:
        for k in keys:
            lines += ["", *_details(k, report.generated_at)]
    hosts = (
        list(report.hosts)
        if details or len(report.hosts) <= TABLE_HOSTS
        else [row for row in report.hosts if row.silent or row.coverage.errors][:TABLE_HOSTS]
    )
    lines += [
        "",
        f"HOST COVERAGE (silent = no heartbeat for {report.silent_after.total_seconds() / 3600:g} h)",
        coverage_summary(report),
    ]
    rows = [("HOST", "KIND", "AGENT", "LAST HEARTBEAT", "KEYS", "LIVE", "STATE")]
    for row in hosts:
        h = row.coverage
        state = h.state.upper() if row.silent else h.state
        if h.errors:
            state += f", {len(h.errors)} error(s)"
        heartbeat = f"{h.last_heartbeat[:16]}Z" if h.last_heartbeat else None  # to the minute
        rows.append(
            (
                _short(h.hostname, 22),
                _short(h.kind, 11),
                _short(h.agent_version, 10),
                _short(heartbeat, 17),
                str(row.keys),
                str(row.live_keys),
                state,
            )
        )
    lines += table_lines(rows, widths=(22, 11, 10, 17, 4, 4), right=(4, 5), sep=" ")
    if len(hosts) < len(report.hosts):
        lines.append(
            f"... {len(report.hosts) - len(hosts)} more host(s) ({len(hosts)} shown: the silent and those "
            "with errors first): --details lists every host"
        )
    lines += [
        "",
        f"{s['keys']} key(s): {s['live_keys']} live, {s['deactivated_keys']} deactivated; in "
        f"{s['locations']} place(s) on {s['hosts_with_keys']} host(s)",
        f"{s['hosts']} host(s) known, {s['silent_hosts']} silent; generated {timeutil.iso(report.generated_at)}"
        + ("" if details else "; --details: each key in full"),
    ]
    out.write("\n".join(lines) + "\n")


def _indented(text: str, pad: str) -> str:
    return text.replace("\n", "\n" + pad)


def write_json(report: FleetReport, stream: TextIO) -> None:
    """:meth:`FleetReport.to_dict` as JSON, written one key and one host at a time (never whole in memory): the
    document's own fields indented, each key and each host on one line of its own (compact: the encoder's fast
    path, and a file that ``grep`` and ``jq -c`` take a key at a time)."""
    stream.write("{\n")
    for name, value in report.header().items():
        stream.write(f"  {json.dumps(name)}: {_indented(dumps_json(value, indent=2, nested_in=1), '  ')},\n")
    sections: tuple[tuple[str, Iterable[FleetKey] | Iterable[HostRow]], ...] = (
        ("keys", report.keys),
        ("hosts", report.hosts),
    )
    for i, (name, items) in enumerate(sections):
        stream.write(f"  {json.dumps(name)}: [")
        sep = "\n    "
        for item in items:
            stream.write(sep + dumps_json(item.to_dict(), nested_in=2))  # in the document and its list
            sep = ",\n    "
        stream.write(("]" if sep == "\n    " else "\n  ]") + ("," if i < len(sections) - 1 else "") + "\n")
    stream.write("}\n")


def render_report(report: FleetReport, fmt: str, stream: TextIO, *, details: bool = False) -> None:
    """``report`` in ``fmt``; ``details`` (table only: the other formats always carry everything) adds each key in
    full after the one-line-per-key table."""
    if fmt == "json":
        write_json(report, stream)
    elif fmt == "csv":
        write_csv(report, stream)
    elif fmt == "table":
        write_table(report, stream, details=details)
    elif fmt == "html":
        from keysweep.central.html_report import render_html

        stream.write(render_html(report))
    else:
        raise ValueError(f"unknown report format {fmt!r}")
