"""Reading YAML configuration, rule and allowlist files with errors that name the file and the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from keysweep.errors import ConfigError

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster to start


def parse_yaml(text: str | bytes, *, source: str, error: type[ConfigError] = ConfigError) -> Any:
    """The document in ``text``; a syntax error raises ``error`` naming ``source``, the line and the column."""
    try:
        return yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise error(f"{source}: not valid YAML{where}: {problem}") from None


def read_yaml(path: str | Path, *, source: str | None = None, error: type[ConfigError] = ConfigError) -> Any:
    """The document in the file at ``path``; unreadable or invalid files raise ``error`` naming it."""
    name = source or str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{name}: cannot read ({exc.strerror})") from None
    return parse_yaml(raw, source=name, error=error)
