"""Checks a message against the shipped message JSON Schema, with no dependency beyond the standard library.

The collector and the Lambda function must run with keysweep's runtime dependencies only, so instead of the
``jsonschema`` package this interprets the subset of JSON Schema (2020-12) that message-v1.schema.json uses. Any
other validation keyword in the schema is refused when the schema is loaded (a test loads the shipped schema), so
a refinement of the schema can never be silently ignored. Error texts name the field path and the rule broken,
never the value (a malformed message may hold anything).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from keysweep.errors import KeysweepError
from keysweep.schemas import message_schema

MAX_ERRORS = 20

# keywords that only annotate (format is an annotation in 2020-12; times are checked by the handler)
_ANNOTATIONS = {"$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples", "format",
                "deprecated", "readOnly", "writeOnly"}
_VALIDATORS = {"type", "required", "properties", "additionalProperties", "items", "enum", "const", "pattern",
               "minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems", "maxProperties",
               "propertyNames", "$ref", "allOf", "anyOf", "oneOf", "not", "if", "then", "else"}
MAX_DEPTH = 12  # nesting of objects and arrays in a message (a genuine one reaches 8, in a policy document)


class SchemaError(KeysweepError):
    """The schema uses something this validator does not understand."""


def _is_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, int | float) and not (isinstance(value, float) and not math.isfinite(value))
    raise SchemaError(f"unknown JSON Schema type {name!r}")


def _same(a: Any, b: Any) -> bool:
    """JSON equality (1 == 1.0, but True != 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


class Validator:
    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        self._patterns: dict[str, re.Pattern[str]] = {}
        self._check_schema(schema, "#")

    def _check_schema(self, node: Any, where: str) -> None:
        if isinstance(node, bool):
            return
        if not isinstance(node, Mapping):
            raise SchemaError(f"{where}: a schema must be an object")
        unknown = set(node) - _ANNOTATIONS - _VALIDATORS
        if unknown:
            raise SchemaError(f"{where}: unsupported keyword(s) {sorted(unknown)}")
        for key in ("properties", "$defs"):
            for name, sub in (node.get(key) or {}).items():
                self._check_schema(sub, f"{where}/{key}/{name}")
        for key in ("items", "additionalProperties", "propertyNames", "not", "if", "then", "else"):
            if key in node and not isinstance(node[key], bool):
                self._check_schema(node[key], f"{where}/{key}")
        for key in ("allOf", "anyOf", "oneOf"):
            for i, sub in enumerate(node.get(key) or ()):
                self._check_schema(sub, f"{where}/{key}/{i}")
        if "pattern" in node:
            if node["pattern"].endswith("$"):
                # Python's $ also matches before a trailing newline: a bound must end with \Z
                raise SchemaError(f"{where}: pattern anchored with $ instead of \\Z")
            self._patterns[node["pattern"]] = re.compile(node["pattern"])
        if "$ref" in node:
            self._resolve(node["$ref"])

    def _resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            raise SchemaError(f"only local references are supported: {ref!r}")
        node: Any = self.schema
        for part in ref[2:].split("/"):
            if not isinstance(node, Mapping) or part not in node:
                raise SchemaError(f"unresolvable reference {ref!r}")
            node = node[part]
        return node  # type: ignore[no-any-return]

    def errors(self, instance: Any) -> list[str]:
        """Every rule ``instance`` breaks, as ``path: rule`` strings (at most MAX_ERRORS)."""
        out: list[str] = []
        self._validate(instance, self.schema, "$", out)
        return out[:MAX_ERRORS]

    def _validate(self, value: Any, schema: Any, path: str, out: list[str]) -> None:
        if schema is True:
            return
        if schema is False:
            out.append(f"{path}: not allowed")
            return
        if "$ref" in schema:
            self._validate(value, self._resolve(schema["$ref"]), path, out)
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_is_type(value, n) for n in names):
                out.append(f"{path}: must be of type {'/'.join(names)}")
                return
        if "const" in schema and not _same(value, schema["const"]):
            out.append(f"{path}: must be the constant {json.dumps(schema['const'])}")
        if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
            out.append(f"{path}: must be one of the schema's allowed values")
        if isinstance(value, str):
            if "minLength" in schema and len(value) < schema["minLength"]:
                out.append(f"{path}: shorter than {schema['minLength']}")
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                out.append(f"{path}: longer than {schema['maxLength']}")
            if "pattern" in schema and not self._patterns[schema["pattern"]].search(value):
                out.append(f"{path}: does not match the schema's pattern")
        if _is_type(value, "number"):
            if "minimum" in schema and value < schema["minimum"]:
                out.append(f"{path}: below {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                out.append(f"{path}: above {schema['maximum']}")
        if isinstance(value, list):
            if "minItems" in schema and len(value) < schema["minItems"]:
                out.append(f"{path}: fewer than {schema['minItems']} items")
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                out.append(f"{path}: more than {schema['maxItems']} items")
            if "items" in schema:
                for i, item in enumerate(value):
                    self._validate(item, schema["items"], f"{path}[{i}]", out)
        if isinstance(value, dict):
            if "maxProperties" in schema and len(value) > schema["maxProperties"]:
                out.append(f"{path}: more than {schema['maxProperties']} properties")
            if "propertyNames" in schema:
                for name in value:
                    self._validate(name, schema["propertyNames"], f"{path}.<key>", out)
            for name in schema.get("required", ()):
                if name not in value:
                    out.append(f"{path}: missing required field {name!r}")
            properties = schema.get("properties", {})
            for name, item in value.items():
                if name in properties:
                    self._validate(item, properties[name], f"{path}.{name}", out)
                elif "additionalProperties" in schema:
                    self._validate(item, schema["additionalProperties"], f"{path}.<key>", out)
        for sub in schema.get("allOf", ()):
            self._validate(value, sub, path, out)
        if "anyOf" in schema and not any(not self._sub_errors(value, s, path) for s in schema["anyOf"]):
            out.append(f"{path}: matches none of the allowed shapes")
        if "oneOf" in schema and sum(not self._sub_errors(value, s, path) for s in schema["oneOf"]) != 1:
            out.append(f"{path}: must match exactly one allowed shape")
        if "not" in schema and not self._sub_errors(value, schema["not"], path):
            out.append(f"{path}: matches a forbidden shape")
        if "if" in schema:
            branch = "then" if not self._sub_errors(value, schema["if"], path) else "else"
            if branch in schema:
                self._validate(value, schema[branch], path, out)

    def _sub_errors(self, value: Any, schema: Any, path: str) -> list[str]:
        errs: list[str] = []
        self._validate(value, schema, path, errs)
        return errs


def depth_error(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """Why ``value`` nests objects/arrays deeper than ``limit`` (None when it does not); iterative, so any depth
    is safe to check."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return f"nested deeper than {limit} levels"
        stack.extend((child, depth + 1) for child in children)
    return None


def parse_message(body: str | bytes) -> Any:
    """Strict JSON: NaN, Infinity and numbers that overflow to infinity (1e400) are refused with ValueError."""
    return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)


def _reject_constant(name: str) -> Any:
    raise ValueError("non-finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("non-finite number")
    return value


@lru_cache(maxsize=1)
def message_validator() -> Validator:
    """The validator for the shipped message schema (loaded once)."""
    return Validator(message_schema())
