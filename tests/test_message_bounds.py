"""One schema for agent and collector, with bounds: what a real scan sends is accepted, forged variants of it are
refused (lengths, control characters, trailing newlines, non-finite numbers, depth, unknown fields)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from keysweep.central.handler import MessageHandler, Outcome
from keysweep.central.validate import MAX_DEPTH, SchemaError, Validator, depth_error
from keysweep.fingerprint import Fingerprinter
from keysweep.models import HostContext
from keysweep.report.message import encode_message, finding_message, heartbeat_message
from keysweep.schemas import message_schema
from keysweep.suggest import suggest

from tests.support.hosttree import scan_paths
from tests.support.planted import planted_key

pytestmark = pytest.mark.timeout(60)

FP = Fingerprinter(b"b" * 32)
REFERENCE = jsonschema.Draft202012Validator(message_schema())
CONTEXT = HostContext(
    kind="ec2",
    hostname="web-1",
    host_id="i-0123456789abcdef0",
    instance_id="i-0123456789abcdef0",
    account_id="123456789012",
    region="eu-west-1",
)


def _classify(body: str) -> tuple[Outcome, str | None]:
    result, _ = MessageHandler(store=None).classify(body)  # type: ignore[arg-type]  # classify never stores
    return result.outcome, result.reason


def _real_messages(root: Path) -> list[str]:
    """The bodies an agent sends for a real scan of a tree with awkward file names."""
    names = [
        b"plain.env",
        b"latin1-\xe9\xff.env",
        b"ctl-\x01\x1b[2J.env",
        b"bidi-\xe2\x80\xae.env",
        b"deep/" * 60 + b"long-" + b"n" * 200 + b".env",
    ]
    for i, name in enumerate(names):
        path = os.path.join(os.fsencode(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        key = planted_key(i)
        with open(path, "wb") as fh:
            fh.write(f"aws_access_key_id = {key.key_id}\naws_secret_access_key = {key.secret}\n".encode())
    start = time.time()
    result = scan_paths(root)
    assert len(result.findings) == len(names)
    bodies = []
    for f in result.findings:
        ffp = FP.finding_fingerprint(CONTEXT.host_id, f.location, f.fingerprint)
        msg = finding_message(f, CONTEXT, finding_fingerprint=ffp, suggestion=suggest(f, CONTEXT), report_reason="new")
        bodies.append(encode_message(msg, 256 * 1024))
    hb = heartbeat_message(
        CONTEXT,
        stats=result.stats,
        findings=result.findings,
        started_at=start,
        finished_at=time.time(),
        spool={"depth": 0, "bytes": 0, "filling": False},
        errors=["scan: /proc/1/environ: permission denied\n(twice)"],
    )
    bodies.append(encode_message(hb, 256 * 1024))
    return bodies


def test_genuine_messages_from_a_real_scan_validate_on_both_sides(tmp_path: Path) -> None:
    bodies = _real_messages(tmp_path / "host")
    paths = []
    for body in bodies:
        REFERENCE.validate(json.loads(body))
        assert _classify(body) == (Outcome.OK, None)
        message = json.loads(body)
        if message["type"] == "finding":
            paths.append(message["finding"]["location"]["path"])
    # undecodable bytes arrive as \xNN text, never as lone surrogates
    assert any(p.endswith("latin1-\\xe9\\xff.env") for p in paths)


def _finding_body(tmp_path: Path) -> dict[str, Any]:
    return json.loads(_real_messages(tmp_path / "host")[0])


def _set(message: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = message
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return message


FORGED = {
    "host id of 3000 characters": ("host.host_id", "i-" + "a" * 2998),
    "host id with a control character": ("host.host_id", "i-0123\x1b[2J"),
    "host id with a trailing newline": ("host.host_id", "i-0123456789abcdef0\n"),
    "key id with a trailing newline": ("finding.key_id", "AKIAXYZDQCEN4B6JSJQI\n"),
    "fingerprint with a trailing newline": ("finding.finding_fingerprint", "a" * 32 + "\n"),
    "account with a trailing newline": ("finding.account_id", "123456789012\n"),
    "path over 4096 characters": ("finding.location.path", "/" + "p" * 4096),
    "path with a lone surrogate": ("finding.location.path", "/srv/\udcff.env"),
    "hostname over 256 characters": ("host.hostname", "h" * 257),
    "agent version with a newline": ("agent.version", "0.1\n"),
    "unknown field in a finding": ("finding.note", "extra"),
    "unknown field at the top": ("sender", "AROAEXAMPLE:i-0123456789abcdef0"),
    "unknown field in the location": ("finding.location.owner", "root"),
    "time from the far future as text": ("sent_at", "9999-12-31T23:59:59Z" + " " * 40),
    "too many commands": ("suggestion.commands", ["aws iam list-users"] * 65),
    "a huge line number": ("finding.location.line", 2**64),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_variants_of_a_genuine_message_are_refused(tmp_path: Path, case: str) -> None:
    field, value = FORGED[case]
    body = json.dumps(_set(_finding_body(tmp_path), field, value))
    outcome, reason = _classify(body)
    assert outcome is Outcome.MALFORMED, case
    assert reason and "\n" not in reason and "\x1b" not in reason


def test_non_finite_and_too_deep_values_are_refused(tmp_path: Path) -> None:
    genuine = json.dumps(_finding_body(tmp_path), separators=(",", ":"))
    assert '"line":1' in genuine
    assert _classify(genuine)[0] is Outcome.OK
    overflow = genuine[:-1] + ', "x": 1e400}'  # json.loads would make this float("inf")
    assert _classify(overflow) == (Outcome.MALFORMED, "body is not strict JSON (or holds a non-finite number)")
    for constant in ("NaN", "Infinity", "-Infinity"):
        assert _classify(genuine.replace('"line":1', f'"line":{constant}'))[0] is Outcome.MALFORMED
    deep = _finding_body(tmp_path)
    policy: dict[str, Any] = {"Version": "2012-10-17"}
    node = policy
    for _ in range(250):
        node["Statement"] = {}
        node = node["Statement"]
    deep["suggestion"]["trust_policy"] = policy
    assert _classify(json.dumps(deep)) == (Outcome.MALFORMED, "nested deeper than 12 levels")
    # the deepest genuine shape (a policy with conditions on lists) is well inside the bound
    deep["suggestion"]["trust_policy"] = {"Statement": [{"Condition": {"StringEquals": {"aws:x": ["a"]}}}]}
    assert _classify(json.dumps(deep))[0] is Outcome.OK


def test_patterns_must_be_anchored_with_backslash_z() -> None:
    with pytest.raises(SchemaError, match="anchored with \\$"):
        Validator({"type": "string", "pattern": "^[a-z]+$"})
    patterns = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.append(node["pattern"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(message_schema())
    assert patterns and all(p.startswith("^") and p.endswith("\\Z") for p in patterns)


def test_every_string_in_the_schema_has_a_length_bound() -> None:
    schema = message_schema()
    unbounded = []

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        merged = dict(node)
        while "$ref" in merged:
            target: Any = schema
            for part in merged.pop("$ref")[2:].split("/"):
                target = target[part]
            merged = {**target, **merged}
        return merged

    def walk(node: Any, where: str) -> None:
        if not isinstance(node, dict):
            return
        node = resolve(node)
        types = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
        if (
            "string" in types
            and "maxLength" not in node
            and "enum" not in node
            and not (node.get("pattern", "").endswith("}\\Z"))
        ):
            unbounded.append(where)
        for key in ("properties", "$defs"):
            for name, sub in (node.get(key) or {}).items():
                walk(sub, f"{where}.{name}")
        for key in ("items", "additionalProperties", "propertyNames"):
            walk(node.get(key), f"{where}.{key}")
        for i, sub in enumerate(node.get("anyOf") or ()):
            walk(sub, f"{where}|{i}")

    walk(schema, "$")
    # the two free-form base definitions are bounded wherever they are used
    assert sorted(unbounded) == ["$.id", "$.text"], unbounded


def test_every_field_the_agent_can_send_is_in_the_schema() -> None:
    """Stored objects refuse unknown fields, so a field added to a model must be added to the schema too."""
    import dataclasses

    from keysweep.models import Finding, Location, Verification
    from keysweep.report.spool import SpoolStatus
    from keysweep.suggest import Suggestion

    schema = message_schema()
    defs = schema["$defs"]

    def names(cls: type) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    assert names(Location) <= set(defs["location"]["properties"])
    assert names(Verification) <= set(defs["verification"]["properties"])
    assert names(HostContext) <= set(defs["host"]["properties"])
    assert names(SpoolStatus) <= set(defs["spool"]["properties"])
    finding = Finding(rule="r", key_id="AKIAXYZDQCEN4B6JSJQI", location=Location(kind="file"), fingerprint="a" * 32)
    sent = set(finding.to_dict()) | {"finding_fingerprint", "report_reason", "first_seen", "last_seen"}
    assert sent <= set(defs["finding"]["properties"])
    suggestion = Suggestion(kind="none", summary="", steps=(), commands=())
    assert set(suggestion.to_dict()) <= set(defs["suggestion"]["properties"])


def test_an_agentless_cloud_sweep_sends_what_the_collector_accepts() -> None:
    from keysweep.cloud.sweep import cloud_context
    from keysweep.models import Finding, Location

    context = cloud_context("123456789012", "eu-west-1")
    location = Location(
        kind="cloud",
        service="lambda",
        resource_arn="arn:aws:lambda:eu-west-1:123456789012:function:f",
        field="AWS_SECRET_ACCESS_KEY",
        region="eu-west-1",
        account="123456789012",
        role_arn="arn:aws:iam::123456789012:role/f",
    )
    finding = Finding(rule="r", key_id="AKIAXYZDQCEN4B6JSJQI", location=location, fingerprint="a" * 32)
    msg = finding_message(finding, context, finding_fingerprint="b" * 32, suggestion=None, report_reason="new")
    assert _classify(encode_message(msg, 256 * 1024)) == (Outcome.OK, None)


def test_counter_names_and_counts_beyond_the_bounds_are_cut_by_the_agent() -> None:
    stats = {"files_scanned": 3, "errors": {"e" * 300: 1, **{f"reason-{i}": i for i in range(80)}}}
    msg = heartbeat_message(CONTEXT, stats=stats, findings=[], started_at=0, finished_at=1, spool={})
    body = encode_message(msg, 256 * 1024)
    assert _classify(body) == (Outcome.OK, None)
    sent = json.loads(body)
    assert len(sent["sweep"]["stats"]["errors"]) == 64 and all(len(k) <= 128 for k in sent["sweep"]["stats"]["errors"])
    assert "sweep.stats.errors" in sent["truncated"]


def test_depth_bound_is_exact_and_any_depth_is_safe_to_check() -> None:
    def nested(levels: int) -> Any:
        value: Any = "x"
        for i in range(levels):
            value = [value] if i % 2 else {"a": value, "b": 1}
        return value

    assert depth_error(nested(MAX_DEPTH)) is None
    assert depth_error([1, {"a": nested(MAX_DEPTH - 1)}]) == f"nested deeper than {MAX_DEPTH} levels"
    assert depth_error(nested(MAX_DEPTH + 1)) == f"nested deeper than {MAX_DEPTH} levels"
    assert depth_error(nested(200_000)) == f"nested deeper than {MAX_DEPTH} levels"  # far past the recursion limit
    wide = {"a": [nested(MAX_DEPTH - 2) for _ in range(50)], "b": [[nested(MAX_DEPTH - 2)]], "c": "x"}
    assert depth_error(wide) == f"nested deeper than {MAX_DEPTH} levels"  # one deep branch among many shallow ones
    assert depth_error({**wide, "b": [nested(MAX_DEPTH - 2)]}) is None
    assert depth_error("x") is None and depth_error([]) is None and depth_error([], 0) is not None


def test_a_patterns_answers_for_repeated_strings_are_its_own() -> None:
    """The validator remembers a pattern's answer for a short string: each string still gets the answer of its own
    pattern and length bounds, the first time and again (also once the memory has been cleared)."""
    from keysweep.central import validate

    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9a-f]{4,8}\\Z", "maxLength": 6},
            "name": {"type": "string", "pattern": "^[a-z]+\\Z"},
        },
    }
    validator = Validator(schema)
    cases = [({"id": "abcd"}, True), ({"id": "abcdef01"}, False), ({"id": "ABCD"}, False), ({"name": "abcd"}, True)]
    cases += [
        ({"id": "abc1"}, True),
        ({"name": "abc1"}, False),
        ({"name": "ABCD"}, False),
        ({"name": "x" * 300}, True),
        ({"name": "x" * 300 + "1"}, False),
    ]
    for _ in range(2):
        assert [validator.is_valid(m) for m, _ in cases] == [ok for _, ok in cases]
    for n in range(validate._MEMO_SIZE + 10):  # past the memory's size: cleared, answers unchanged
        assert validator.is_valid({"id": f"{n:04x}"}) and not validator.is_valid({"name": f"a{n}"})
    assert [validator.is_valid(m) for m, _ in cases] == [ok for _, ok in cases]
    assert [bool(validator.errors(m)) for m, _ in cases] == [not ok for _, ok in cases]
