"""The same question asked of an organisation trail in S3 through Athena (longer than LookupEvents' 90 days,
every account at once, data events too). The query is plain SQL over the standard CloudTrail table, so a team can
also run it in Athena or CloudTrail Lake themselves (``keysweep trail --print-query``)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from keysweep.cloud.session import AWS_ERRORS, error_reason
from keysweep.cloud.trail import KeyUsage
from keysweep.errors import ConfigError, KeysweepError
from keysweep.retry import Backoff, BoundedWait

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_KEY = re.compile(r"^A[A-Z0-9]{15,127}$")
COLUMNS = ("key_id", "ip", "user_agent", "event_source", "events", "first", "last")


def query(table: str, key_ids: Sequence[str], start: datetime) -> str:
    """The SQL: per key, address, user agent and event source, the event count and first/last time."""
    if not _TABLE.match(table):
        raise ConfigError(f"--trail-table {table!r}: a table name ([database.]table, letters, digits, _)")
    keys = sorted({k for k in key_ids if _KEY.match(k)})
    in_list = ", ".join(f"'{k}'" for k in keys) or "''"
    return (
        "SELECT useridentity.accesskeyid AS key_id, sourceipaddress AS ip, useragent AS user_agent,\n"
        "       eventsource AS event_source, count(*) AS events, min(eventtime) AS first, max(eventtime) AS last\n"
        f"FROM {table}\n"
        f"WHERE useridentity.accesskeyid IN ({in_list})\n"
        f"  AND eventtime >= '{start.strftime('%Y-%m-%dT%H:%M:%SZ')}'\n"
        "GROUP BY 1, 2, 3, 4"
    )


def run(
    athena: Any, workgroup: str, sql: str, *, max_wait: float = 600.0, sleep: Callable[[float], None] = time.sleep
) -> Iterator[dict[str, str]]:
    """Rows of ``sql`` run in ``workgroup`` (its output location and limits apply), as dicts by column name."""
    qid = athena.start_query_execution(QueryString=sql, WorkGroup=workgroup)["QueryExecutionId"]
    wait = BoundedWait(Backoff(0.5, 10.0, "none"), max_wait, sleep=sleep)
    while True:
        state = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Status"]
        if state["State"] == "SUCCEEDED":
            break
        if state["State"] in ("FAILED", "CANCELLED"):
            raise KeysweepError(f"Athena query {qid} {state['State'].lower()}: {state.get('StateChangeReason', '')}")
        if not wait.pause():
            raise KeysweepError(f"Athena query {qid} not finished after {wait.waited:.0f} s")
    header: list[str] | None = None
    rows = (
        r
        for page in athena.get_paginator("get_query_results").paginate(QueryExecutionId=qid)
        for r in (page.get("ResultSet") or {}).get("Rows") or ()
    )
    for row in rows:
        values = [c.get("VarCharValue", "") for c in row.get("Data", [])]
        if header is None:
            header = values
            continue
        yield dict(zip(header, values))


def collect(athena: Any, workgroup: str, table: str, usages: Sequence[KeyUsage], start: datetime) -> None:
    """Add what the trail table says about each key to its usage (one query for all keys)."""
    by_key = {u.key_id: u for u in usages}
    try:
        for row in run(athena, workgroup, query(table, list(by_key), start)):
            u = by_key.get(row.get("key_id", ""))
            if u is not None:
                u.add(
                    row.get("ip") or "unknown",
                    row.get("first", ""),
                    row.get("user_agent", ""),
                    row.get("event_source", ""),
                    int(row.get("events") or 0),
                    row.get("last"),
                )
    except AWS_ERRORS as exc:
        raise KeysweepError(f"Athena workgroup {workgroup}: {error_reason(exc)}") from None
