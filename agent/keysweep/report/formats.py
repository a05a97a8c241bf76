"""Findings on a stream: ``table`` for people, ``json``/``jsonl`` for programs, ``sarif`` for code-scanning tools.

JSON: ``{"findings": [Finding.to_dict(), ...], "summary": {...}}``; JSONL: one ``Finding.to_dict()`` per line.
No format ever shows more of a secret than ``Finding.secret_redacted``. Names from the scanned system (paths,
members, executables, variables) are written through :mod:`keysweep.textsafe`: no control or bidi character
reaches a terminal or a parser, and the JSON is strictly standard.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TextIO

from keysweep.models import Finding, describe_location
from keysweep.textable import table_lines
from keysweep.textsafe import dump_json, dumps_json, safe_text

FORMATS = ("table", "json", "jsonl", "sarif")
TABLE_WIDTH = 100  # columns a table fits in
# skips that leave a file (or an archive member) unread or partly read: with the errors, an incomplete scan
UNREAD_REASONS = (
    "too-large",
    "archive-too-large",
    "archive-ratio",
    "archive-encrypted",
    "archive-unsupported",
    "archive-depth",
    "nested-archive-too-large",
)


class ScanSummary(Protocol):
    """Anything that describes the scan as a JSON-able mapping (e.g. ``scan.ScanStats``)."""

    def to_dict(self) -> dict[str, Any]: ...


def render(
    findings: Sequence[Finding],
    fmt: str,
    stream: TextIO,
    *,
    summary: ScanSummary | Mapping[str, Any] | None = None,
) -> None:
    """Write ``findings`` to ``stream`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "table":
        stream.write(render_table(findings))
    elif fmt == "json":
        doc = {"findings": [f.to_dict() for f in findings], "summary": summary_dict(findings, summary)}
        dump_json(doc, stream)
    elif fmt == "jsonl":
        for f in findings:
            stream.write(dumps_json(f.to_dict(), compact=True))
            stream.write("\n")
    elif fmt == "sarif":
        from keysweep.report.sarif import write_sarif

        write_sarif(findings, stream, summary=summary_dict(findings, summary))
    else:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")


def summary_dict(findings: Sequence[Finding], summary: ScanSummary | Mapping[str, Any] | None) -> dict[str, Any]:
    """Counts over the findings, merged with the scan's own summary (files, bytes, skips) when given."""
    base: dict[str, Any] = {}
    if summary is not None:
        base.update(summary if isinstance(summary, Mapping) else summary.to_dict())
    base["findings"] = len(findings)
    base["with_secret"] = sum(1 for f in findings if f.has_secret)
    base["distinct_keys"] = len({f.key_id for f in findings})
    base["by_severity"] = dict(Counter(f.severity for f in findings))
    base["by_location_kind"] = dict(Counter(f.location.kind for f in findings))
    statuses = Counter(f.verification.status for f in findings if f.verification is not None)
    if statuses:
        base["by_verification"] = dict(statuses)
    if "errors" in base and "skipped" in base:  # a scan's own summary
        base["incomplete"] = incomplete(base)
        base.pop("error_details", None)
        base.pop("unread_details", None)
    return base


def incomplete(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What the scan could not read, from its summary (``ScanStats.to_dict()``): ``count`` (every error and every
        skip that left content unread), ``places`` (``{"reason", "path"}``, with ``error``, the exception's type, for an
    internal error; the first ones kept) and ``not_listed``
        (the count of the rest, and of those without a place)."""
    skipped = summary.get("skipped") or {}
    count = sum((summary.get("errors") or {}).values()) + sum(skipped.get(r, 0) for r in UNREAD_REASONS)
    places = [dict(d) for d in [*(summary.get("error_details") or ()), *(summary.get("unread_details") or ())]]
    return {"count": count, "places": places, "not_listed": max(0, count - len(places))}


def render_table(findings: Sequence[Finding]) -> str:
    if not findings:
        return "No AWS access keys found.\n"
    header = ("SEVERITY", "KEY ID", "ACCOUNT", "SECRET", "STATUS", "LOCATION")
    rows = [header]
    for f in findings:
        secret = f.secret_redacted or ("-" if not f.has_secret else "yes")
        if f.has_session_token:
            secret += " +token"
        status = f.verification.status if f.verification else "-"
        where = describe_location(f.location)
        if f.example is not None:  # kept by --include-examples
            where += f"  (example: {f.example})"
        rows.append((f.severity, f.key_id, f.account_id or "-", secret, status, safe_text(where)))
    # a long place goes on its own line under its row, whole (a path that is cut cannot be used)
    lines = table_lines(rows, fold_over=TABLE_WIDTH)
    return "\n".join(lines) + f"\n\n{len(findings)} finding(s)\n"
