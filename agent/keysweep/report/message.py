"""Schema-v1 messages: one per finding, one heartbeat per sweep (``schemas/message-v1.schema.json``).

A message never holds a raw secret: findings are serialised through ``Finding.to_dict`` (which has no secret
field) and every encoded body is checked against the plaintext secrets of the findings it came from. Bodies that
exceed the queue's size limit are trimmed, largest optional parts first, and say so in ``truncated``.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from keysweep import __version__, timeutil
from keysweep.errors import DeliveryError
from keysweep.models import Finding, HostContext
from keysweep.schemas import message_schema
from keysweep.sources.names import readable
from keysweep.suggest import Suggestion
from keysweep.textsafe import safe_data

SCHEMA_VERSION = 1
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_TRUNCATION_MARK = "…[truncated]"
# optional parts emptied first when a body is too large: (path, value that keeps the schema valid)
_DROPPABLE: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("suggestion", "terraform"), None),
    (("suggestion", "scp"), None),
    (("suggestion", "trust_policy"), None),
    (("suggestion", "steps"), []),
    (("suggestion", "cleanup"), []),
    (("suggestion", "commands"), []),
    (("sweep", "stats", "skipped"), {}),
    (("sweep", "stats", "errors"), {}),
    (("sweep", "errors"), []),
    (("host", "errors"), []),
)


class MessageTooLarge(ValueError):
    """Even the trimmed message does not fit (only possible with an absurdly small limit)."""


class SecretInMessage(DeliveryError):
    """A body held a plaintext secret: it is refused, never spooled or sent."""


def _envelope(kind: str, context: HostContext, mode: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "type": kind,
        "message_id": uuid.uuid4().hex,
        "sent_at": timeutil.now_iso(),
        "agent": {"version": __version__, "mode": mode},
        "host": context.to_dict(),
    }


def finding_message(
    finding: Finding,
    context: HostContext,
    *,
    finding_fingerprint: str,
    suggestion: Suggestion | None,
    report_reason: str,
    first_seen: str | None = None,
    mode: str = "agent",
) -> dict[str, Any]:
    """The message for one finding (``finding_fingerprint`` names key × place × host: the store's primary key)."""
    msg = _envelope("finding", context, mode)
    body = finding.to_dict()
    # a derived field that is not a plausible account id must not get the whole finding rejected centrally
    if body.get("account_id") is not None and not _ACCOUNT.match(str(body["account_id"])):
        body["account_id"] = None
    body["finding_fingerprint"] = finding_fingerprint
    body["report_reason"] = report_reason
    body["last_seen"] = msg["sent_at"]
    if first_seen:
        body["first_seen"] = first_seen
    msg["finding"] = body
    msg["suggestion"] = (
        suggestion.to_dict() if suggestion else {"kind": "none", "summary": "", "steps": [], "commands": []}
    )
    return msg


def _stats_dict(stats: Any) -> dict[str, Any]:
    if stats is None:
        return {}
    raw = stats.to_dict() if hasattr(stats, "to_dict") else dict(stats)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping):
            out[key] = {str(k): int(v) for k, v in value.items() if isinstance(v, int)}
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
    return out


def heartbeat_message(
    context: HostContext,
    *,
    stats: Any,
    findings: Iterable[Finding],
    started_at: float,
    finished_at: float,
    spool: Mapping[str, Any],
    errors: Sequence[str] = (),
    mode: str = "agent",
    sweep_id: str | None = None,
) -> dict[str, Any]:
    """The per-sweep heartbeat: host, agent version, sweep stats and counts, errors, spool depth and filling."""
    msg = _envelope("heartbeat", context, mode)
    stats_d = _stats_dict(stats)
    stats_d["findings_by_status"] = dict(
        Counter(f.verification.status if f.verification else "unverified" for f in findings)
    )
    msg["sweep"] = {
        "sweep_id": sweep_id or msg["message_id"],
        "started_at": timeutil.iso(started_at),
        "finished_at": timeutil.iso(finished_at),
        "duration_s": round(max(0.0, finished_at - started_at), 3),
        "stats": stats_d,
        "errors": list(errors),
    }
    msg["spool"] = dict(spool)
    return msg


def _encode(msg: Mapping[str, Any]) -> str:
    # ASCII-only JSON: every character is one SQS allows; undecodable bytes of a path or an environment value are
    # written as \xNN, never as a lone surrogate the collector could not store
    data = safe_data(msg, text=readable)
    return json.dumps(data, ensure_ascii=True, separators=(",", ":"), sort_keys=True)


def _get(msg: Any, path: Sequence[str]) -> Any:
    cur = msg
    for part in path:
        if isinstance(cur, list):
            cur = cur[int(part)]
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return None
    return cur


def _longest_string(node: Any, path: tuple[str, ...] = ()) -> tuple[int, tuple[str, ...]]:
    best = (0, path)
    if isinstance(node, str):
        return len(node), path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if path == () and key in ("message_id", "type", "schema_version"):
            continue
        if key in ("finding_fingerprint", "fingerprint", "key_id", "host_id", "status", "kind"):
            continue
        cand = _longest_string(value, (*path, str(key)))
        if cand[0] > best[0]:
            best = cand
    return best


def _set(msg: dict[str, Any], path: Sequence[str], value: Any) -> None:
    cur: Any = msg
    for part in path[:-1]:
        cur = cur[int(part)] if isinstance(cur, list) else cur[part]
    last = path[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value


def _resolve(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """``schema`` with its ``$ref`` chain merged in (the referring node's own keywords win)."""
    merged = dict(schema)
    while "$ref" in merged:
        node: Any = message_schema()
        for part in merged.pop("$ref")[2:].split("/"):
            node = node[part]
        merged = {**node, **merged}
    return merged


def _fit(value: Any, schema: Mapping[str, Any], path: tuple[str, ...], trimmed: list[str]) -> Any:
    """``value`` cut to the schema's length bounds (strings, arrays, counters), each cut named in ``trimmed``."""
    schema = _resolve(schema)
    if value is not None and "anyOf" in schema:
        for branch in schema["anyOf"]:
            if _resolve(branch).get("type") != "null":
                value = _fit(value, branch, path, trimmed)
    if isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
        trimmed.append(".".join(path))
        return value[: max(0, schema["maxLength"] - len(_TRUNCATION_MARK))] + _TRUNCATION_MARK
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            trimmed.append(".".join(path))
            value = value[: schema["maxItems"]]
        items = schema.get("items")
        return [_fit(v, items, (*path, str(i)), trimmed) for i, v in enumerate(value)] if items else value
    if isinstance(value, dict):
        if len(value) > schema.get("maxProperties", len(value)):
            trimmed.append(".".join(path))
            value = dict(list(value.items())[: schema["maxProperties"]])
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        names = _resolve(schema.get("propertyNames") or {})
        out = {}
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, Mapping) else None)
            if key not in properties and len(key) > names.get("maxLength", len(key)):  # a counter's name, say
                trimmed.append(".".join((*path, "<key>")))
                key = key[: names["maxLength"]]
            out[key] = _fit(item, sub, (*path, key), trimmed) if sub is not None else item
        return out
    return value


def conform(msg: Mapping[str, Any]) -> dict[str, Any]:
    """``msg`` within every length bound of the message schema (the collector refuses anything longer); cut fields
    end with a marker and are listed in ``truncated``."""
    trimmed: list[str] = list(msg.get("truncated") or [])
    before = len(trimmed)
    out = _fit({k: v for k, v in msg.items() if k != "truncated"}, message_schema(), (), trimmed)
    if len(trimmed) > before or "truncated" in msg:
        out["truncated"] = trimmed
    return out  # type: ignore[no-any-return]


def encode_message(msg: Mapping[str, Any], max_bytes: int) -> str:
    """The JSON body of ``msg``, within the schema's bounds and trimmed to at most ``max_bytes``, with the trimmed
    fields listed in ``truncated``."""
    msg = conform(msg)
    body = _encode(msg)
    if len(body) <= max_bytes:
        return body
    work = copy.deepcopy(dict(msg))
    trimmed: list[str] = list(work.get("truncated") or [])
    reserve = 64  # room for the "truncated" list itself
    for path, empty in _DROPPABLE:
        if _get(work, path) in (None, empty):
            continue
        _set(work, path, empty)
        trimmed.append(".".join(path))
        work["truncated"] = trimmed
        body = _encode(work)
        if len(body) <= max_bytes:
            return body
    while len(body) > max_bytes:
        length, path = _longest_string(work)
        if length <= len(_TRUNCATION_MARK) + 8:
            raise MessageTooLarge(f"message does not fit in {max_bytes} bytes even trimmed")
        excess = len(body) - max_bytes + reserve + len(_TRUNCATION_MARK)
        _set(work, path, str(_get(work, path))[: max(8, length - excess)] + _TRUNCATION_MARK)
        name = ".".join(path)
        if name not in trimmed:
            trimmed.append(name)
        work["truncated"] = trimmed
        body = _encode(work)
    return body


def assert_no_secret(body: str, findings: Iterable[Finding]) -> None:
    """Raise if any plaintext secret or session token of ``findings`` appears in ``body`` (defence in depth)."""
    for f in findings:
        for secret in (f.secret, f.session_token):
            if secret is not None and secret.reveal() and secret.reveal() in body:
                raise SecretInMessage(f"refusing to emit a message holding the secret of key {f.key_id}")
