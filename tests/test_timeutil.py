"""keysweep.timeutil: the one place UTC times are written and read."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from keysweep import timeutil
from keysweep.timeutil import UTC

MOMENT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def test_iso_writes_utc_with_z_from_any_zone_or_a_timestamp() -> None:
    assert timeutil.iso(MOMENT) == "2026-01-02T03:04:05Z"
    assert timeutil.iso(MOMENT, "milliseconds") == "2026-01-02T03:04:05.678Z"
    assert timeutil.iso(MOMENT.replace(microsecond=0), "auto") == "2026-01-02T03:04:05Z"
    assert timeutil.iso(MOMENT, "auto") == "2026-01-02T03:04:05.678901Z"
    tokyo = MOMENT.astimezone(timezone(timedelta(hours=9)))
    assert timeutil.iso(tokyo) == "2026-01-02T03:04:05Z"
    assert timeutil.iso(MOMENT.timestamp(), "milliseconds") == "2026-01-02T03:04:05.678Z"
    assert timeutil.iso(0) == "1970-01-01T00:00:00Z"


def test_now_is_aware_utc() -> None:
    before = datetime.now(UTC)
    now = timeutil.now()
    assert now.utcoffset() == timedelta(0) and before <= now <= datetime.now(UTC)
    text = timeutil.now_iso()
    assert text.endswith("Z") and len(text) == len("2026-01-02T03:04:05Z")
    assert abs((timeutil.parse(text) - now).total_seconds()) < 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02T03:04:05Z", MOMENT.replace(microsecond=0)),
        ("2026-01-02T03:04:05z", MOMENT.replace(microsecond=0)),
        ("2026-01-02T03:04:05.678901Z", MOMENT),
        ("2026-01-02T03:04:05.6789012345Z", MOMENT),  # digits past microseconds are dropped
        ("2026-01-02T03:04:05.5Z", MOMENT.replace(microsecond=500000)),
        ("2026-01-02T03:04:05.678+00:00", MOMENT.replace(microsecond=678000)),
        ("2026-01-02T12:04:05+09:00", MOMENT.replace(microsecond=0)),
        ("2026-01-02T12:04:05+0900", MOMENT.replace(microsecond=0)),
        ("2026-01-01T22:04:05-05", MOMENT.replace(microsecond=0)),
        ("2026-01-02 03:04:05", MOMENT.replace(microsecond=0)),  # no zone: UTC
        ("2026-01-02T03:04", MOMENT.replace(second=0, microsecond=0)),
        ("2026-01-02", datetime(2026, 1, 2, tzinfo=UTC)),
        ("  2026-01-02T03:04:05Z\n", MOMENT.replace(microsecond=0)),
    ],
)
def test_parse_reads_what_agents_aws_and_people_write(text: str, expected: datetime) -> None:
    parsed = timeutil.parse(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-01-02T25:00:00Z",
        "2026-01-02T03:04:05Zjunk",
        "20260102T030405Z",
        "2026-01-02T03:04:05+1",
    ],
)
def test_parse_refuses_anything_else_naming_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="not an ISO-8601 time"):
        timeutil.parse(text)


def test_what_iso_writes_parse_reads_back() -> None:
    for spec in ("seconds", "milliseconds", "auto"):
        assert timeutil.iso(timeutil.parse(timeutil.iso(MOMENT, spec)), spec) == timeutil.iso(MOMENT, spec)
