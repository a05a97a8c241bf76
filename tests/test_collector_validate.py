"""The collector's schema check agrees with the reference jsonschema validator; the handler classifies bodies."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from keysweep.central.handler import MessageHandler, Outcome
from keysweep.central.store import open_store
from keysweep.central.validate import SchemaError, Validator, message_validator

from tests.support import messages as M

REFERENCE = jsonschema.Draft202012Validator(M.schema())
ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    1.5,
    -3,
    "",
    "x",
    "AKIA",
    [],
    {},
    ["s"],
    {"a": 1},
    "2026-11-28T10:00:00Z",
    "f" * 200,
    10**20,
]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*path, i))


def _mutants(message: dict[str, Any], rng: random.Random) -> Iterator[dict[str, Any]]:
    for path in _paths(message):
        if not path:
            continue
        parent_path, last = path[:-1], path[-1]
        for value in [*rng.sample(ODD_VALUES, 5), "__delete__"]:
            m = copy.deepcopy(message)
            parent = m
            for p in parent_path:
                parent = parent[p]
            if value == "__delete__":
                if isinstance(parent, dict):
                    del parent[last]
                else:
                    parent.pop(last)
            else:
                parent[last] = value
            yield m


@pytest.mark.parametrize("kind", ["finding", "heartbeat", "unverified"])
def test_agrees_with_jsonschema_on_every_mutation(kind: str) -> None:
    base = {
        "finding": M.finding_message(),
        "heartbeat": M.heartbeat_message(),
        "unverified": M.finding_message(status=None),
    }[kind]
    ours = message_validator()
    checked = rejected = 0
    for mutant in _mutants(base, random.Random(kind)):
        expected = not REFERENCE.is_valid(mutant)
        assert bool(ours.errors(mutant)) == expected, (mutant, list(REFERENCE.iter_errors(mutant))[:1])
        assert ours.is_valid(mutant) is not expected, mutant
        # the detailed walk (what names the broken rules) agrees too, not only the yes/no test in front of it
        walked: list[str] = []
        ours._check(mutant, "$", walked)
        assert bool(walked) == expected, mutant
        checked += 1
        rejected += expected
    assert checked > 200 and rejected > 50


def test_validator_refuses_keywords_it_does_not_implement() -> None:
    with pytest.raises(SchemaError, match="unsupported"):
        Validator({"type": "object", "properties": {"a": {"type": "string", "uniqueItems": True}}})
    with pytest.raises(SchemaError):
        Validator({"$ref": "https://example.com/other.json"})
    Validator(M.schema())  # the shipped schema uses only what is implemented


def test_errors_name_the_field_not_the_value() -> None:
    m = M.finding_message()
    m["finding"]["key_id"] = "AKIA-SOMETHING-SECRET-LOOKING"
    errors = message_validator().errors(m)
    assert errors == ["$.finding.key_id: does not match the schema's pattern"]


@pytest.fixture
def handler(tmp_path: Path) -> MessageHandler:
    return MessageHandler(open_store(str(tmp_path / "fleet.db")))


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        ("", Outcome.MALFORMED),
        ("{", Outcome.MALFORMED),
        ("[1, 2]", Outcome.MALFORMED),
        ('"text"', Outcome.MALFORMED),
        ("[" * 50000 + "]" * 50000, Outcome.MALFORMED),
        ('{"schema_version": NaN}', Outcome.MALFORMED),
        ('{"schema_version": 2, "type": "finding"}', Outcome.UNKNOWN_VERSION),
        ('{"schema_version": 0}', Outcome.UNKNOWN_VERSION),
        ('{"schema_version": "1"}', Outcome.MALFORMED),
        ('{"schema_version": true}', Outcome.MALFORMED),
        ("{}", Outcome.MALFORMED),
        (b"\xff\xfe not utf-8", Outcome.MALFORMED),
    ],
)
def test_bad_bodies_are_classified(handler: MessageHandler, body: str, outcome: Outcome) -> None:
    result = handler.handle(body)
    assert result.outcome is outcome
    assert result.reason and len(result.reason) < 300
    assert list(handler.store.iter_findings()) == []


def test_unparsable_time_is_malformed(handler: MessageHandler) -> None:
    m = M.finding_message()
    m["finding"]["verification"]["checked_at"] = "last tuesday"
    assert handler.handle(json.dumps(m)).outcome is Outcome.MALFORMED
    m = M.finding_message()
    m["sent_at"] = "2026-13-45T99:00:00Z"
    assert handler.handle(json.dumps(m)).outcome is Outcome.MALFORMED


def test_too_large_body_is_malformed(handler: MessageHandler) -> None:
    m = M.finding_message()
    m["suggestion"]["terraform"] = "x" * (1024 * 1024)
    assert handler.handle(json.dumps(m)).outcome is Outcome.MALFORMED


def test_good_bodies_are_applied_once(handler: MessageHandler) -> None:
    finding, heartbeat = json.dumps(M.finding_message()), json.dumps(M.heartbeat_message())
    first = handler.handle(finding)
    assert (first.outcome, first.kind, first.changed) == (Outcome.OK, "finding", True)
    again = handler.handle(finding.encode())
    assert (again.outcome, again.changed) == (Outcome.OK, False)
    assert handler.handle(heartbeat).kind == "heartbeat"
    extra = M.finding_message()
    extra["finding"]["future_field"] = {"added": "by a newer agent"}  # stored objects take no unknown fields
    refused = handler.handle(json.dumps(extra))
    assert refused.outcome is Outcome.MALFORMED and refused.reason == "$.finding.<key>: not allowed"
