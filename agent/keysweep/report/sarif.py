"""SARIF 2.1.0 output (validates against the OASIS sarif-schema-2.1.0.json).

Files and archive members become physical locations (``file://`` URIs, 1-based ``startLine``); processes and
other places without a file become logical locations. ``partialFingerprints`` carries the keyed key
fingerprint, so code-scanning tools group the same key across runs without ever seeing the secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import quote

from keysweep import __version__
from keysweep.errors import RuleError
from keysweep.models import Finding, Location, describe_location
from keysweep.ruleset import load_ruleset, most_severe
from keysweep.textsafe import dump_json

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
_SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.0", "low": "3.0", "info": "0.0"}


def to_sarif(findings: Sequence[Finding], *, summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    descriptions = _rule_descriptions()
    rule_ids = sorted({f.rule for f in findings})
    index = {rid: i for i, rid in enumerate(rule_ids)}
    rules = []
    for rid in rule_ids:
        severity = most_severe(*(f.severity for f in findings if f.rule == rid))
        rules.append(
            {
                "id": rid,
                "name": "".join(p.capitalize() for p in rid.split("-")),
                "shortDescription": {"text": descriptions.get(rid, rid)},
                "defaultConfiguration": {"level": _LEVEL.get(severity, "warning")},
                "properties": {
                    "tags": ["security", "secret", "aws"],
                    "security-severity": _SECURITY_SEVERITY.get(severity, "5.0"),
                },
            }
        )
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "keysweep",
                "version": __version__,
                "rules": rules,
            }
        },
        "results": [_result(f, index[f.rule]) for f in findings],
        "columnKind": "unicodeCodePoints",
    }
    if summary is not None:
        run["properties"] = {"summary": dict(summary)}
        unread = (summary.get("incomplete") or {}).get("places")
        if unread:  # what the scan could not read, where code-scanning tools show a run's problems
            run["invocations"] = [
                {"executionSuccessful": True, "toolExecutionNotifications": [_not_read(p) for p in unread]}
            ]
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def _not_read(place: Mapping[str, Any]) -> dict[str, Any]:
    """A warning naming one place the scan could not read, or read only in part, and why."""
    path = str(place.get("path") or "")
    note: dict[str, Any] = {
        "level": "warning",
        "descriptor": {"id": str(place.get("reason") or "unread")},
        "message": {"text": f"not read or partly read: {place.get('reason')}"},
    }
    if path and not path.startswith("source:"):
        member = path.split("!", 1)  # an archive member: the archive on disk is the artifact
        note["locations"] = [{"physicalLocation": {"artifactLocation": {"uri": _uri(member[0])}}}]
        if len(member) > 1:
            note["locations"][0]["properties"] = {"member": member[1]}
    return note


def write_sarif(findings: Sequence[Finding], stream: TextIO, *, summary: Mapping[str, Any] | None = None) -> None:
    dump_json(to_sarif(findings, summary=summary), stream)


def _result(f: Finding, rule_index: int) -> dict[str, Any]:
    what = "AWS access key id with its secret access key" if f.has_secret else "AWS access key id"
    text = f"{what} {f.key_id}"
    if f.account_id:
        text += f" (account {f.account_id})"
    if f.verification is not None:
        text += f"; verification: {f.verification.status}"
    if f.example is not None:
        text += f"; example: {f.example}"
    result: dict[str, Any] = {
        "ruleId": f.rule,
        "ruleIndex": rule_index,
        "level": _LEVEL.get(f.severity, "warning"),
        "message": {"text": text},
        "locations": [_location(f.location)],
        "partialFingerprints": {"keysweepKeyFingerprint/v1": f.fingerprint},
        "properties": {k: v for k, v in f.to_dict().items() if v is not None and k != "location"},
    }
    return result


def _location(loc: Location) -> dict[str, Any]:
    props = {k: v for k, v in loc.to_dict().items() if k not in ("path", "line")}
    if loc.path:
        physical: dict[str, Any] = {"artifactLocation": {"uri": _uri(loc.path)}}
        if loc.line is not None and loc.member is None:
            physical["region"] = {"startLine": loc.line}
        out: dict[str, Any] = {"physicalLocation": physical}
        if loc.member:
            # a line inside an archive member is not a line of the archive: keep it in the properties
            if loc.line is not None:
                props["memberLine"] = loc.line
        out["properties"] = props
        return out
    if loc.kind == "cloud":
        return {"logicalLocations": [{"name": describe_location(loc), "kind": "resource"}], "properties": props}
    name = f"pid {loc.pid}" if loc.pid is not None else loc.kind
    if loc.variable:
        name += f" {loc.variable}"
    return {"logicalLocations": [{"name": name, "kind": loc.kind}], "properties": props}


def _uri(path: str) -> str:
    """file:// URI for absolute paths, a relative URI otherwise; undecodable bytes are percent-encoded."""
    quoted = quote(path, safe="/", errors="surrogateescape")
    return "file://" + quoted if path.startswith("/") else quoted


def _rule_descriptions() -> dict[str, str]:
    try:
        return {r.id: r.description for r in load_ruleset().rules}
    except RuleError:
        return {}
