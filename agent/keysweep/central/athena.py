"""Athena column types for the export: how a type is written in DDL, and a value made to fit it exactly.

A type is ``"string"``, ``"bigint"``, ``"double"``, ``"boolean"``, :class:`Array` or :class:`Struct`. The export's
rows are built with :func:`conform`, so every exported object holds exactly the fields its table's DDL names
(missing ones as null), and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

SCALARS = ("string", "bigint", "double", "boolean")


@dataclass(frozen=True)
class Array:
    item: AthenaType


@dataclass(frozen=True)
class Struct:
    fields: tuple[tuple[str, AthenaType], ...]


AthenaType = Union[str, Array, Struct]  # noqa: UP007 (a runtime alias: `|` of a str and classes is not a type)


def render(kind: AthenaType) -> str:
    """The type as Athena's DDL writes it: ``array<struct<`status`:string,`at`:string>>``."""
    if isinstance(kind, Array):
        return f"array<{render(kind.item)}>"
    if isinstance(kind, Struct):
        # field names quoted: some are reserved words of Athena's DDL (user, …)
        return "struct<" + ",".join(f"`{name}`:{render(t)}" for name, t in kind.fields) + ">"
    if kind not in SCALARS:
        raise ValueError(f"not an Athena type: {kind}")
    return kind


def conform(kind: AthenaType, value: Any) -> Any:
    """``value`` as ``kind`` holds it: a struct gets exactly its fields, a scalar of another type becomes null
    (a string column takes any scalar as text; anything else as its JSON text)."""
    if value is None:
        return None
    if isinstance(kind, Struct):
        if not isinstance(value, Mapping):
            return None
        return {name: conform(t, value.get(name)) for name, t in kind.fields}
    if isinstance(kind, Array):
        if not isinstance(value, (list, tuple)):
            return None
        return [conform(kind.item, v) for v in value]
    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, int, float)):
            return json.dumps(value)
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "bigint":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "double":
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    raise ValueError(f"not an Athena type: {kind}")


def from_schema(node: Mapping[str, Any], defs: Mapping[str, Any]) -> AthenaType | None:
    """The Athena type of a JSON Schema node of the message schema (None: a free-form object, left out)."""
    if "$ref" in node:
        return from_schema(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in node and "type" not in node:
        kinds = [k for k in (from_schema(n, defs) for n in node["anyOf"] if n.get("type") != "null") if k]
        return kinds[0] if len(set(map(render, kinds))) == 1 else "string"
    if "enum" in node or "const" in node:
        return "string"
    types = node.get("type")
    types = [t for t in (types if isinstance(types, list) else [types]) if t != "null"]
    kind = types[0] if len(types) == 1 else None
    if kind == "object":
        if "properties" not in node or node.get("additionalProperties") not in (None, False):
            return None
        fields = tuple(
            (name, t) for name, t in ((n, from_schema(p, defs)) for n, p in node["properties"].items()) if t is not None
        )
        return Struct(fields)
    if kind == "array":
        item = from_schema(node.get("items") or {}, defs)
        return Array(item) if item else None
    return {"string": "string", "integer": "bigint", "number": "double", "boolean": "boolean"}.get(kind or "")
