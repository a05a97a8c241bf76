"""Typed configuration sections: how an option is declared, and the one validator that reads them.

A section is a frozen dataclass deriving from :class:`Section`. Each field declares its rules with
:func:`option` (a unit, choices, a format, bounds, an absolute path); rules between fields go in the section's
``problems()``. :func:`read_section` turns a YAML mapping into the section and reports every bad key by its
dotted path and value: conversion errors read ``key: expected …, got <value as written>``, bounds
``key: must be …, got <converted value>``. The agent's file (``keysweep.config``) and each stage's own section
(``verify``, ``report``, ``context``) are read by this one validator.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from keysweep.errors import ConfigError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

S = TypeVar("S", bound="Section")


def parse_size(value: object) -> int:
    """``1048576``, ``"512k"``, ``"100MiB"``, ``"1G"`` → bytes (binary multiples)."""
    if isinstance(value, bool):
        raise ValueError("expected a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("expected a non-negative size")
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError("expected a size such as 1048576, 512KiB, 100MiB or 1GiB")
    mult = 1024 ** "bkmgt".index((m.group(2) or "b").lower())
    return int(float(m.group(1)) * mult)


def parse_duration(value: object) -> float:
    """``90``, ``"250ms"``, ``"30s"``, ``"15m"``, ``"6h"``, ``"1d"`` → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("expected a non-negative duration")
        return float(value)
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ValueError("expected a duration such as 30, 250ms, 30s, 15m, 6h or 1d")
    return float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "s").lower()]


def option(
    default: Any,
    *,
    kind: str | None = None,
    choices: tuple[str, ...] | None = None,
    valid: Callable[[Any], object] | None = None,  # a truthy result: valid (a regex match will do)
    expected: str | None = None,
    lo: float | None = None,
    hi: float | None = None,
    above: float | None = None,
    absolute: bool = False,
    one_item_list: bool = True,
    secret: bool = False,
) -> Any:
    """A section field with its rules.

    ``kind``: ``"size"`` (``512KiB`` → bytes) or ``"duration"`` (``15m`` → seconds). ``choices``: the allowed
    strings. ``valid``/``expected``: a format each value (each item of a list) must have, and how to name it in
    the error. ``lo``/``hi`` (inclusive) and ``above`` (exclusive): bounds of the converted number.
    ``absolute``: the path (each path of a list) must start with ``/``. ``one_item_list``: a single string is
    read as a one-item list. ``secret``: the value is never repeated in an error or a repr.
    """
    rules = {
        "kind": kind,
        "choices": choices,
        "valid": valid,
        "expected": expected,
        "lo": lo,
        "hi": hi,
        "above": above,
        "absolute": absolute,
        "one_item_list": one_item_list,
    }
    return dataclasses.field(
        default=default, repr=not secret, metadata={k: v for k, v in rules.items() if v is not None}
    )


class Section:
    """Base of a configuration section (a frozen dataclass). ``name`` is its key in the agent's file."""

    name: ClassVar[str] = ""

    def problems(self) -> list[str]:
        """Rules between fields, as ``key: message`` lines (keys relative to the section)."""
        return []

    @classmethod
    def from_mapping(cls: type[S], data: object, *, source: str | None = None) -> S:
        """Build the section from its mapping; :class:`ConfigError` names ``source``, the key and the value."""
        return read_section(cls, data, source=source)


def describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# typing.Union[A, B], and A | B where evaluated by Python 3.10 or later
_UNIONS = (typing.Union, getattr(types, "UnionType", typing.Union))


class _UnionOperator(ast.NodeTransformer):
    """``A | B`` in an annotation as ``Union[A, B]``: Python 3.9 cannot evaluate the operator on types."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if not isinstance(node.op, ast.BitOr):
            return node
        union = ast.Subscript(
            value=ast.Name(id="_Union", ctx=ast.Load()),
            slice=ast.Tuple(elts=[node.left, node.right], ctx=ast.Load()),
            ctx=ast.Load(),
        )
        return ast.copy_location(union, node)


def field_types(cls: type) -> dict[str, Any]:
    """The evaluated annotation of every field of the dataclass ``cls`` (``typing.get_type_hints``, also for
    ``X | None`` written under ``from __future__ import annotations`` on Python 3.9)."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        namespace = {**vars(sys.modules[klass.__module__]), "_Union": typing.Union}
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if isinstance(annotation, str):
                tree = ast.fix_missing_locations(_UnionOperator().visit(ast.parse(annotation, mode="eval")))
                annotation = eval(compile(tree, f"<annotation of {klass.__name__}.{name}>", "eval"), namespace)
            out[name] = annotation
    return out


def _boolean(value: object, rules: Mapping[str, Any]) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _integer(value: object, rules: Mapping[str, Any]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    return value


def _number(value: object, rules: Mapping[str, Any]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a number")
    return float(value)


def _text(value: object, rules: Mapping[str, Any]) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected {rules.get('expected') or 'a non-empty string'}")
    if "choices" in rules and value not in rules["choices"]:
        raise ValueError("expected one of " + ", ".join(rules["choices"]))
    if "valid" in rules and not rules["valid"](value):
        raise ValueError(f"expected {rules['expected']}")
    return value


_SCALARS: dict[Any, Callable[[object, Mapping[str, Any]], Any]] = {
    bool: _boolean,
    int: _integer,
    float: _number,
    str: _text,
}


def _convert(value: object, hint: Any, rules: Mapping[str, Any]) -> Any:
    """One value converted to the field's type, or ValueError saying what was expected."""
    if rules.get("kind") == "size":
        return parse_size(value)
    if rules.get("kind") == "duration":
        return parse_duration(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in _UNIONS:  # X | None
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, rules)
    if origin is tuple:  # tuple[X, ...]
        if isinstance(value, str) and rules.get("one_item_list", True):
            value = [value]
        if not isinstance(value, list):
            raise ValueError(f"expected {rules.get('expected') or 'a list'}")
        return tuple(_convert(v, args[0], rules) for v in value)
    return _SCALARS[hint](value, rules)


def _bounds(value: Any, rules: Mapping[str, Any]) -> str | None:
    """What the converted number must be, when it is not."""
    lo, hi, above = rules.get("lo"), rules.get("hi"), rules.get("above")
    if value is None or (lo is None and hi is None and above is None):
        return None
    if (lo is None or value >= lo) and (hi is None or value <= hi) and (above is None or value > above):
        return None
    if above is not None:
        return f"must be above {above:g}" + (f" and at most {hi:g}" if hi is not None else "")
    if lo is not None and hi is not None:
        return f"must be between {lo:g} and {hi:g}"
    if lo is not None:
        return "must be 0 or more" if lo == 0 else f"must be at least {lo:g}"
    return f"must be at most {hi:g}"


def _unknown_key(prefix: str, key: object, known: list[str]) -> str:
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
    return f"{prefix}{key}: unknown key{hint}"


def _field(
    cls: type, name: str, hint: Any, f: dataclasses.Field[Any], value: object, prefix: str, errors: list[str]
) -> Any:
    if isinstance(hint, type) and issubclass(hint, Section):
        return build(hint, value, f"{prefix}{name}.", errors)
    rules = f.metadata
    try:
        converted = _convert(value, hint, rules)
    except ValueError as exc:
        errors.append(f"{prefix}{name}: {exc}, got {describe(value) if f.repr else '<hidden>'}")
        return None
    problem = _bounds(converted, rules)
    if problem is not None:
        errors.append(f"{prefix}{name}: {problem}, got {converted!r}")
        return None
    if rules.get("absolute"):
        paths = converted if isinstance(converted, tuple) else (converted,)
        for i, path in enumerate(paths):
            if path is not None and not path.startswith("/"):
                where = f"{name}[{i}]" if isinstance(converted, tuple) else name
                errors.append(f"{prefix}{where}: must be an absolute path, got {path!r}")
                return None
    return converted


def build(cls: type[S], data: object, prefix: str, errors: list[str]) -> S:
    """The section from ``data``; each problem is appended to ``errors`` as ``prefix + key: message``, and the
    bad key keeps its default (so every problem of a file is found in one pass). Fields marked
    ``metadata={"internal": True}`` are not options."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        errors.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping of options, got {describe(data)}")
        return cls()
    hints = field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            errors.append(_unknown_key(prefix, key, list(fields)))
            continue
        before = len(errors)
        converted = _field(cls, key, hints[key], fields[key], value, prefix, errors)
        if len(errors) == before:
            values[key] = converted
    section = cls(**values)
    errors += [prefix + problem for problem in section.problems()]
    return section


def read_section(cls: type[S], data: object, *, source: str | None = None) -> S:
    """:func:`build` for one section under its own name; raises :class:`ConfigError` listing every problem."""
    errors: list[str] = []
    section = build(cls, data, f"{cls.name}." if cls.name else "", errors)
    if errors:
        where = f"{source}: " if source else ""
        raise ConfigError("\n".join(where + e for e in errors))
    return section


def option_paths(cls: type, prefix: str = "") -> list[str]:
    """Every option of a section as a dotted path, nested sections included (for documentation checks)."""
    out: list[str] = []
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        hint = hints[f.name]
        if isinstance(hint, type) and issubclass(hint, Section):
            out += option_paths(hint, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out
