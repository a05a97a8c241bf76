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
from collections.abc import Callable, Mapping
from functools import cached_property, lru_cache
from typing import Any

from keysweep.errors import KeysweepError
from keysweep.schemas import message_schema

MAX_ERRORS = 20

# keywords that only annotate (format is an annotation in 2020-12; times are checked by the handler)
_ANNOTATIONS = {
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "title",
    "description",
    "default",
    "examples",
    "format",
    "deprecated",
    "readOnly",
    "writeOnly",
}
_VALIDATORS = {
    "type",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "maxProperties",
    "propertyNames",
    "$ref",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
}
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
        return isinstance(value, (int, float)) and not (isinstance(value, float) and not math.isfinite(value))
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
        if self.is_valid(instance):
            return []
        out: list[str] = []
        self._check(instance, "$", out)
        return out[:MAX_ERRORS]

    def is_valid(self, instance: Any) -> bool:
        """Whether ``instance`` breaks no rule: the same answer as ``not errors(instance)``, without building the
        error texts and field paths, and stopping at the first broken rule (a collector's messages are valid)."""
        return self._ok(instance)

    @cached_property
    def _ok(self) -> Predicate:
        return self._predicate(self.schema, {})

    def _predicate(self, schema: Any, refs: dict[str, Predicate]) -> Predicate:
        """``schema`` compiled into one yes/no test: the rules of :meth:`_compile`, all of them or stopping early."""
        if schema is True:
            return lambda value: True
        if schema is False:
            return lambda value: False
        tests: list[Predicate] = []
        if "$ref" in schema:
            ref = schema["$ref"]
            if ref not in refs:
                box: list[Predicate] = []
                refs[ref] = lambda value: box[0](value)
                box.append(self._predicate(self._resolve(ref), refs))
            tests.append(refs[ref])
        if "type" in schema:
            tests.append(_type_ok(schema["type"] if isinstance(schema["type"], list) else [schema["type"]]))
        if "const" in schema:
            const = schema["const"]
            tests.append(lambda value: _same(value, const))
        if "enum" in schema:
            tests.append(_enum_ok(schema["enum"]))
        if any(k in schema for k in ("minLength", "maxLength", "pattern")):
            tests.append(
                _string_ok(
                    schema.get("minLength"), schema.get("maxLength"), self._patterns.get(schema.get("pattern", ""))
                )
            )
        if "minimum" in schema or "maximum" in schema:
            low, high = schema.get("minimum"), schema.get("maximum")
            tests.append(lambda value: not _is_type(value, "number") or _within(value, low, high))
        if any(k in schema for k in ("minItems", "maxItems", "items")):
            items = self._predicate(schema["items"], refs) if "items" in schema else None
            tests.append(_array_ok(schema.get("minItems"), schema.get("maxItems"), items))
        if any(
            k in schema for k in ("maxProperties", "propertyNames", "required", "properties", "additionalProperties")
        ):
            tests.append(self._object_ok(schema, refs))
        tests += [self._predicate(sub, refs) for sub in schema.get("allOf", ())]
        if "anyOf" in schema:
            any_of = [self._predicate(sub, refs) for sub in schema["anyOf"]]
            tests.append(_any_ok(any_of))
        if "oneOf" in schema:
            one_of = [self._predicate(sub, refs) for sub in schema["oneOf"]]
            tests.append(lambda value: sum(sub(value) for sub in one_of) == 1)
        if "not" in schema:
            forbidden = self._predicate(schema["not"], refs)
            tests.append(lambda value: not forbidden(value))
        if "if" in schema:
            tests.append(
                _if_ok(
                    self._predicate(schema["if"], refs),
                    self._predicate(schema["then"], refs) if "then" in schema else None,
                    self._predicate(schema["else"], refs) if "else" in schema else None,
                )
            )
        return _all_of(tests)

    def _object_ok(self, schema: Mapping[str, Any], refs: dict[str, Predicate]) -> Predicate:
        max_props = schema.get("maxProperties")
        names = self._predicate(schema["propertyNames"], refs) if "propertyNames" in schema else None
        required = tuple(schema.get("required", ()))
        properties = {name: self._predicate(sub, refs) for name, sub in schema.get("properties", {}).items()}
        extra = self._predicate(schema["additionalProperties"], refs) if "additionalProperties" in schema else None

        def ok(value: Any) -> bool:
            if not isinstance(value, dict):
                return True
            if max_props is not None and len(value) > max_props:
                return False
            if names is not None:
                for name in value:
                    if not names(name):
                        return False
            for name in required:
                if name not in value:
                    return False
            for name, item in value.items():
                sub = properties.get(name, extra)
                if sub is not None and not sub(item):
                    return False
            return True

        return ok

    @cached_property
    def _check(self) -> Check:
        """The schema compiled once into nested checks (a collector validates thousands of messages a second)."""
        return self._compile(self.schema, {})

    def _compile(self, schema: Any, refs: dict[str, Check]) -> Check:
        """A check of ``schema``: appends each rule the value breaks to ``out``, in the order of the keywords below."""
        if schema is True:
            return _nothing
        if schema is False:
            return _not_allowed
        steps: list[Check] = []
        if "$ref" in schema:
            steps.append(self._ref(schema["$ref"], refs))
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            steps.append(_type_check(names))
        if "const" in schema:
            steps.append(_const_check(schema["const"]))
        if "enum" in schema:
            steps.append(_enum_check(schema["enum"]))
        if any(k in schema for k in ("minLength", "maxLength", "pattern")):
            steps.append(_string_check(schema, self._patterns.get(schema.get("pattern", ""))))
        if "minimum" in schema or "maximum" in schema:
            steps.append(_number_check(schema.get("minimum"), schema.get("maximum")))
        if any(k in schema for k in ("minItems", "maxItems", "items")):
            items = self._compile(schema["items"], refs) if "items" in schema else None
            steps.append(_array_check(schema.get("minItems"), schema.get("maxItems"), items))
        if any(
            k in schema for k in ("maxProperties", "propertyNames", "required", "properties", "additionalProperties")
        ):
            steps.append(self._object_check(schema, refs))
        steps += [self._compile(sub, refs) for sub in schema.get("allOf", ())]
        if "anyOf" in schema:
            steps.append(_any_of([self._compile(sub, refs) for sub in schema["anyOf"]]))
        if "oneOf" in schema:
            steps.append(_one_of([self._compile(sub, refs) for sub in schema["oneOf"]]))
        if "not" in schema:
            steps.append(_not(self._compile(schema["not"], refs)))
        if "if" in schema:
            steps.append(
                _if(
                    self._compile(schema["if"], refs),
                    self._compile(schema["then"], refs) if "then" in schema else None,
                    self._compile(schema["else"], refs) if "else" in schema else None,
                )
            )
        return _sequence(steps)

    def _ref(self, ref: str, refs: dict[str, Check]) -> Check:
        """The check of a reference, compiled once; a reference inside itself resolves when first run."""
        if ref not in refs:
            box: list[Check] = []
            refs[ref] = lambda value, path, out: box[0](value, path, out)
            box.append(self._compile(self._resolve(ref), refs))
        return refs[ref]

    def _object_check(self, schema: Mapping[str, Any], refs: dict[str, Check]) -> Check:
        max_props = schema.get("maxProperties")
        names = self._compile(schema["propertyNames"], refs) if "propertyNames" in schema else None
        required = tuple(schema.get("required", ()))
        properties = {name: self._compile(sub, refs) for name, sub in schema.get("properties", {}).items()}
        extra = self._compile(schema["additionalProperties"], refs) if "additionalProperties" in schema else None

        def check(value: Any, path: str, out: list[str]) -> bool:
            if not isinstance(value, dict):
                return True
            if max_props is not None and len(value) > max_props:
                out.append(f"{path}: more than {max_props} properties")
            if names is not None:
                for name in value:
                    names(name, f"{path}.<key>", out)
            for name in required:
                if name not in value:
                    out.append(f"{path}: missing required field {name!r}")
            for name, item in value.items():
                sub = properties.get(name)
                if sub is not None:
                    sub(item, f"{path}.{name}", out)
                elif extra is not None:
                    extra(item, f"{path}.<key>", out)
            return True

        return check


# A check appends what ``value`` breaks to ``out``; False stops the checks after it (a value of the wrong type).
Check = Callable[[Any, str, list[str]], "bool | None"]
# A predicate answers whether ``value`` breaks no rule (what a check appends nothing for).
Predicate = Callable[[Any], bool]


def _all_of(tests: list[Predicate]) -> Predicate:
    if not tests:
        return lambda value: True
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda value: first(value) and second(value)

    def ok(value: Any) -> bool:
        for test in tests:
            if not test(value):
                return False
        return True

    return ok


def _enum_ok(allowed: list[Any]) -> Predicate:
    strings = frozenset(e for e in allowed if isinstance(e, str))

    def ok(value: Any) -> bool:
        if isinstance(value, str):
            return value in strings
        return any(_same(value, e) for e in allowed)

    return ok


def _any_ok(subs: list[Predicate]) -> Predicate:
    def ok(value: Any) -> bool:
        for sub in subs:
            if sub(value):
                return True
        return False

    return ok


def _within(size: Any, low: Any, high: Any) -> bool:
    return (low is None or size >= low) and (high is None or size <= high)


def _type_ok(names: list[str]) -> Predicate:
    for name in names:
        _is_type(None, name)  # refuses an unknown type name now, not on the first message
    plain = tuple(_PLAIN_TYPES[n] for n in names if n in _PLAIN_TYPES)
    numeric = [n for n in names if n not in _PLAIN_TYPES]
    if not numeric:
        return lambda value: isinstance(value, plain)
    return lambda value: isinstance(value, plain) or any(_is_type(value, n) for n in numeric)


_MEMO_CHARS, _MEMO_SIZE = 256, 2048  # a pattern's answers kept for short strings (bounded: cleared when full)


def _string_ok(low: Any, high: Any, pattern: re.Pattern[str] | None) -> Predicate:
    if pattern is None:
        return lambda value: not isinstance(value, str) or _within(len(value), low, high)
    search = pattern.search
    # a fleet's messages repeat their short strings (key ids, fingerprints, times, names): the answer for one is
    # looked up, not searched for again
    answers: dict[str, bool] = {}

    def ok(value: Any) -> bool:
        if not isinstance(value, str):
            return True
        if not _within(len(value), low, high):
            return False
        if len(value) > _MEMO_CHARS:
            return search(value) is not None
        answer = answers.get(value)
        if answer is None:
            if len(answers) >= _MEMO_SIZE:
                answers.clear()
            answer = answers[value] = search(value) is not None
        return answer

    return ok


def _array_ok(low: int | None, high: int | None, items: Predicate | None) -> Predicate:
    def ok(value: Any) -> bool:
        if not isinstance(value, list):
            return True
        if not _within(len(value), low, high):
            return False
        if items is not None:
            for item in value:
                if not items(item):
                    return False
        return True

    return ok


def _if_ok(condition: Predicate, then: Predicate | None, otherwise: Predicate | None) -> Predicate:
    def ok(value: Any) -> bool:
        branch = then if condition(value) else otherwise
        return branch is None or branch(value)

    return ok


def _nothing(value: Any, path: str, out: list[str]) -> bool:
    return True


def _not_allowed(value: Any, path: str, out: list[str]) -> bool:
    out.append(f"{path}: not allowed")
    return True


def _sequence(steps: list[Check]) -> Check:
    if not steps:
        return _nothing
    if len(steps) == 1:
        only = steps[0]

        def single(value: Any, path: str, out: list[str]) -> bool:
            only(value, path, out)
            return True

        return single

    def run(value: Any, path: str, out: list[str]) -> bool:
        for step in steps:
            if step(value, path, out) is False:
                break
        return True

    return run


_PLAIN_TYPES: dict[str, type] = {"object": dict, "array": list, "string": str, "null": type(None), "boolean": bool}


def _type_check(names: list[str]) -> Check:
    for name in names:
        _is_type(None, name)  # refuses an unknown type name now, not on the first message
    plain = tuple(_PLAIN_TYPES[n] for n in names if n in _PLAIN_TYPES)
    numeric = [n for n in names if n not in _PLAIN_TYPES]

    def check(value: Any, path: str, out: list[str]) -> bool:
        if isinstance(value, plain) or (numeric and any(_is_type(value, n) for n in numeric)):
            return True
        out.append(f"{path}: must be of type {'/'.join(names)}")
        return False

    return check


def _const_check(const: Any) -> Check:
    def check(value: Any, path: str, out: list[str]) -> bool:
        if not _same(value, const):
            out.append(f"{path}: must be the constant {json.dumps(const)}")
        return True

    return check


def _enum_check(allowed: list[Any]) -> Check:
    def check(value: Any, path: str, out: list[str]) -> bool:
        if not any(_same(value, e) for e in allowed):
            out.append(f"{path}: must be one of the schema's allowed values")
        return True

    return check


def _bounds(size: Any, low: Any, high: Any, path: str, out: list[str], below: str, above: str) -> None:
    """One schema minimum/maximum pair: ``below``/``above`` are messages with ``{}`` for the bound."""
    if low is not None and size < low:
        out.append(f"{path}: " + below.format(low))
    if high is not None and size > high:
        out.append(f"{path}: " + above.format(high))


def _string_check(schema: Mapping[str, Any], pattern: re.Pattern[str] | None) -> Check:
    low, high = schema.get("minLength"), schema.get("maxLength")

    def check(value: Any, path: str, out: list[str]) -> bool:
        if isinstance(value, str):
            _bounds(len(value), low, high, path, out, "shorter than {}", "longer than {}")
            if pattern is not None and not pattern.search(value):
                out.append(f"{path}: does not match the schema's pattern")
        return True

    return check


def _number_check(low: Any, high: Any) -> Check:
    def check(value: Any, path: str, out: list[str]) -> bool:
        if _is_type(value, "number"):
            _bounds(value, low, high, path, out, "below {}", "above {}")
        return True

    return check


def _array_check(low: int | None, high: int | None, items: Check | None) -> Check:
    def check(value: Any, path: str, out: list[str]) -> bool:
        if isinstance(value, list):
            _bounds(len(value), low, high, path, out, "fewer than {} items", "more than {} items")
            if items is not None:
                for i, item in enumerate(value):
                    items(item, f"{path}[{i}]", out)
        return True

    return check


def _passes(check: Check, value: Any, path: str) -> bool:
    errs: list[str] = []
    check(value, path, errs)
    return not errs


def _any_of(subs: list[Check]) -> Check:
    def check(value: Any, path: str, out: list[str]) -> bool:
        if not any(_passes(sub, value, path) for sub in subs):
            out.append(f"{path}: matches none of the allowed shapes")
        return True

    return check


def _one_of(subs: list[Check]) -> Check:
    def check(value: Any, path: str, out: list[str]) -> bool:
        if sum(_passes(sub, value, path) for sub in subs) != 1:
            out.append(f"{path}: must match exactly one allowed shape")
        return True

    return check


def _not(sub: Check) -> Check:
    def check(value: Any, path: str, out: list[str]) -> bool:
        if _passes(sub, value, path):
            out.append(f"{path}: matches a forbidden shape")
        return True

    return check


def _if(condition: Check, then: Check | None, otherwise: Check | None) -> Check:
    def check(value: Any, path: str, out: list[str]) -> bool:
        branch = then if _passes(condition, value, path) else otherwise
        if branch is not None:
            branch(value, path, out)
        return True

    return check


def depth_error(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """Why ``value`` nests objects/arrays deeper than ``limit`` (None when it does not); the walk stops one level
    below ``limit``, so any depth is safe to check."""
    return None if _within_depth(value, limit) else f"nested deeper than {limit} levels"


def _within_depth(node: Any, levels: int) -> bool:
    """Whether ``node`` nests at most ``levels`` objects/arrays (scalars nest none): level by level, each holding
    only the containers of the one above (no recursion, and no call per scalar)."""
    layer = [node] if isinstance(node, (dict, list)) else []
    while layer:
        if levels <= 0:
            return False
        levels -= 1
        below = []
        for container in layer:
            for child in container.values() if isinstance(container, dict) else container:
                if isinstance(child, (dict, list)):
                    below.append(child)
        layer = below
    return True


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
