"""Telling keysweep's own use of a key from real use.

Any signed request counts as a key's last use in IAM, keysweep's ``sts:GetCallerIdentity`` verification too
(after one verification, ``GetAccessKeyLastUsed`` shows service ``sts``). The fleet store keeps the verifications'
times, so a last use by ``sts`` at, or within :data:`KEYSWEEP_USE_WINDOW` after, a verification of that key is
keysweep's: the audit and the deactivation check treat it as no use at all, and say so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from keysweep.central.fleet_report import parse_time
from keysweep.central.records import FindingRecord

# IAM records a use within minutes; the window also absorbs clock skew between the agent and AWS
KEYSWEEP_USE_WINDOW = timedelta(minutes=15)


# statuses only an answer to a request signed with the found key gives (records stored before request ids)
SIGNED_STATUSES = frozenset({"live", "invalid", "wrong_secret", "expired"})


def _signed(status: object, request_id: object) -> bool:
    """Whether an observation came from a request signed with the found key: one that has a request id, or a
    status only such an answer gives. ``skipped`` (identify-only, disabled, …) and ``canary`` never signed."""
    return bool(request_id) or status in SIGNED_STATUSES


def signed_stamps(rec: FindingRecord) -> list[str]:
    """The times of one record's observations that signed a request with its key (each status run's first and
    last observation, the latest check's too), as recorded and without repeats; the SQLite store keeps them in a
    column of their own."""
    stamps: list[object] = []
    if rec.verification and _signed(rec.status, rec.verification.get("request_id")):
        stamps.append(rec.verified_at)
    for entry in rec.verification_history:
        if _signed(entry.get("status"), entry.get("request_id")):
            stamps.append(entry.get("at"))
        if _signed(entry.get("status"), entry.get("last_request_id")):
            stamps.append(entry.get("last_at"))
    return list(dict.fromkeys(stamp for stamp in stamps if isinstance(stamp, str)))


def stamp_times(stamps_by_key: Iterable[tuple[str, Iterable[str]]]) -> dict[str, list[datetime]]:
    """key id -> the parsed times of its (key id, :func:`signed_stamps`) pairs, sorted and without repeats."""
    times: dict[str, set[datetime]] = defaultdict(set)
    for key_id, stamps in stamps_by_key:
        for stamp in stamps:
            when = parse_time(stamp)
            if when is not None:
                times[key_id].add(when)
    return {k: sorted(v) for k, v in times.items()}


def verification_times(records: Iterable[FindingRecord]) -> dict[str, list[datetime]]:
    """key id -> every time the fleet signed a request with it that the store kept (each status run's first and
    last observation); observations that signed nothing are left out, so they can never explain a use."""
    return stamp_times((rec.key_id, signed_stamps(rec)) for rec in records)


def keysweep_use(last_used: object, service: object, verified: Sequence[datetime]) -> datetime | None:
    """The verification that explains ``last_used`` (a last use by ``sts`` just after it), else None."""
    if not isinstance(last_used, datetime) or str(service or "").lower() != "sts":
        return None
    for at in reversed(verified):
        if at - timedelta(minutes=1) <= last_used <= at + KEYSWEEP_USE_WINDOW:
            return at
    return None
