"""UTC times, once for the whole project: the current time, ISO-8601 text out (``2026-01-02T03:04:05Z``) and in.

Every time keysweep writes (reports, SQS messages, state and status files, logs) is UTC with a ``Z``. Parsing
accepts what agents, AWS and people write — ``Z`` or an offset, any number of fraction digits, a space instead of
``T``, a bare date — the same way on every supported Python (3.9's ``datetime.fromisoformat`` takes none of
``Z``, a 2-digit fraction or ``+0000``); a time without a zone is UTC.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

UTC = timezone.utc

_ISO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<clock>\d{2}:\d{2}(?::\d{2})?)(?:[.,](?P<fraction>\d+))?"
    r"(?P<zone>[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)


def now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def iso(when: datetime | float, timespec: str = "seconds") -> str:
    """``when`` (an aware datetime in any zone, or a POSIX timestamp) as UTC ISO-8601 ending in ``Z``.

    ``timespec`` as for :meth:`datetime.isoformat`: ``seconds`` (default), ``milliseconds``, ``auto`` (microseconds
    only when there are some), ...
    """
    moment = datetime.fromtimestamp(when, UTC) if isinstance(when, (int, float)) else when.astimezone(UTC)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def now_iso(timespec: str = "seconds") -> str:
    """The current time as UTC ISO-8601 ending in ``Z``."""
    return iso(now(), timespec)


def parse(text: str) -> datetime:
    """An ISO-8601 date or time as an aware datetime (no zone: UTC). Raises ValueError naming the text otherwise."""
    match = _ISO.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an ISO-8601 time: {text[:40]!r}")
    clock = match["clock"] or "00:00:00"
    fraction = (match["fraction"] or "")[:6].ljust(6, "0") if match["fraction"] else ""
    zone = match["zone"] or "+00:00"
    if zone in ("Z", "z"):
        zone = "+00:00"
    elif len(zone) == 5:  # +HHMM
        zone = f"{zone[:3]}:{zone[3:]}"
    elif len(zone) == 3:  # +HH
        zone += ":00"
    normal = f"{match['date']}T{clock}{'.' + fraction if fraction else ''}{zone}"
    try:
        return datetime.fromisoformat(normal)
    except ValueError:  # a field out of range (month 13, hour 25, ...)
        raise ValueError(f"not an ISO-8601 time: {text[:40]!r}") from None
