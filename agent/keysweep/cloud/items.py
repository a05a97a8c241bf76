"""What a service reader yields: one field of one resource, as text or as a package archive."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from keysweep.cloud.session import Target


@dataclass(frozen=True)
class Resource:
    """A control-plane resource: ``arn`` (or its id where it has no ARN) and the role it runs with, if any."""

    service: str
    arn: str
    region: str
    account: str
    role_arn: str | None = None


@dataclass(frozen=True)
class Item:
    """Bytes to scan from one resource.

    ``field`` names where they come from; for a block of variables (``NAME=value`` lines) ``line_fields`` maps
    each variable's first line to its name, so a finding names its variable. ``archive`` is a package (a zip)
    of ``size`` bytes, scanned member by member within the archive budgets, instead of ``data``.
    """

    resource: Resource
    field: str
    data: bytes = b""
    line_fields: tuple[tuple[int, str], ...] = ()
    archive: IO[bytes] | None = None
    size: int = 0

    def field_at(self, line: int | None) -> str:
        if not self.line_fields:
            return self.field
        lines = [first for first, _ in self.line_fields]
        i = max(bisect.bisect_right(lines, line or 1) - 1, 0)
        return self.line_fields[i][1]


@dataclass(frozen=True)
class Reader:
    """One kind of resource of one service in one account and region (``service`` names it in findings and
    skips; ``what`` says what it reads)."""

    service: str
    what: str
    read: Callable[[Target], Iterator[Item]]


def variables_item(resource: Resource, pairs: Iterable[tuple[str, str]], prefix: str = "") -> Item | None:
    """One item for a set of variables, one ``NAME=value`` line each, so a key id and its secret in sibling
    variables still pair; None when there are none."""
    parts: list[str] = []
    line_fields: list[tuple[int, str]] = []
    line = 1
    for name, value in pairs:
        if value is None:
            continue
        text = f"{name}={value}\n"
        parts.append(text)
        line_fields.append((line, prefix + name))
        line += text.count("\n")
    if not parts:
        return None
    data = "".join(parts).encode("utf-8", "surrogateescape")
    return Item(resource, prefix.rstrip("/") or "environment", data, tuple(line_fields))


def name_value_pairs(entries: Iterable[dict[str, str]] | None) -> list[tuple[str, str]]:
    """``[{"name": …, "value": …}]`` (ECS, Batch, CodeBuild) as pairs."""
    return [(str(e.get("name", "")), str(e["value"])) for e in entries or () if e.get("value") is not None]
