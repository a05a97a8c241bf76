"""Host coverage from the heartbeats: who checked in, when, with which agent version, and who went silent.

A host is ``ok`` when its last heartbeat is at most ``silent_after`` old, ``silent`` when it is older, and
``no-heartbeat`` when it sent findings but never a heartbeat (an agent that crashes before the end of its sweeps,
or a one-off ``keysweep scan --queue-url``). The default threshold, 24 hours, is twice the agent's default daily
re-report; fleets sweeping more often should pass about twice their sweep interval.

A heartbeat dated later than now (plus the clock skew the collector allows) proves nothing: the host is ``silent``.
The collector already clamps message times to the queue's, so only a store filled some other way holds one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from keysweep import timeutil
from keysweep.central.records import CLOCK_SKEW, HostRecord

DEFAULT_SILENT_AFTER = timedelta(hours=24)

OK, SILENT, NO_HEARTBEAT = "ok", "silent", "no-heartbeat"


@dataclass(frozen=True)
class HostCoverage:
    host_id: str
    hostname: str
    kind: str
    agent_version: str | None
    state: str  # ok | silent | no-heartbeat
    last_heartbeat: str | None
    last_message_at: str
    silent_for_s: float | None  # seconds since the last heartbeat (None without one)
    files_scanned: int | None
    errors: tuple[str, ...]
    spool_filling: bool

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "errors": list(self.errors)}


@dataclass(frozen=True)
class Coverage:
    generated_at: str
    silent_after_s: float
    hosts: tuple[HostCoverage, ...]

    @property
    def by_state(self) -> Counter[str]:
        return Counter(h.state for h in self.hosts)

    @property
    def by_agent_version(self) -> Counter[str]:
        return Counter(h.agent_version or "unknown" for h in self.hosts)

    @property
    def silent(self) -> tuple[HostCoverage, ...]:
        return tuple(h for h in self.hosts if h.state != OK)

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "silent_after_s": self.silent_after_s,
            "by_state": dict(sorted(self.by_state.items())),
            "by_agent_version": dict(sorted(self.by_agent_version.items())),
            "hosts": [h.to_dict() for h in self.hosts],
        }


def host_coverage(
    hosts: Iterable[HostRecord], *, now: datetime | None = None, silent_after: timedelta = DEFAULT_SILENT_AFTER
) -> Coverage:
    """Coverage of ``hosts`` at ``now``; the silent and heartbeat-less hosts first, longest silent first."""
    now = now or timeutil.now()
    rows = []
    for host in hosts:
        if host.last_heartbeat is None:
            state, silent_for = NO_HEARTBEAT, None
        elif timeutil.parse(host.last_heartbeat) > now + CLOCK_SKEW:  # dated in the future: it cannot pin the host "ok"
            state, silent_for = SILENT, None
        else:
            silent_for = max(0.0, (now - timeutil.parse(host.last_heartbeat)).total_seconds())
            state = SILENT if silent_for > silent_after.total_seconds() else OK
        stats = (host.last_sweep or {}).get("stats") or {}
        rows.append(
            HostCoverage(
                host_id=host.host_id,
                hostname=host.hostname,
                kind=host.kind,
                agent_version=host.agent_version,
                state=state,
                last_heartbeat=host.last_heartbeat,
                last_message_at=host.last_message_at,
                silent_for_s=silent_for,
                files_scanned=stats.get("files_scanned"),
                errors=host.errors,
                spool_filling=bool((host.spool or {}).get("filling")),
            )
        )
    order = {NO_HEARTBEAT: 0, SILENT: 1, OK: 2}
    rows.sort(key=lambda h: (order[h.state], -(h.silent_for_s or 0.0), h.hostname, h.host_id))
    return Coverage(generated_at=timeutil.iso(now), silent_after_s=silent_after.total_seconds(), hosts=tuple(rows))
