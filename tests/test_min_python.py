"""Guardrail: the package (and the launcher the deb/rpm install) runs on Python 3.9, the oldest system Python the
packages support (Debian 11, RHEL 9, Amazon Linux 2023; docs/packaging.md). Tests and tools may use 3.11.

Two checks, each shown to fail on a 3.10+ feature:
- vermin (``--target=3.9- --no-tips --violations``): modules, members, keywords and syntax newer than 3.9
  (``datetime.UTC``, ``enum.StrEnum``, ``zip(strict=)``, ``match``, ``dataclass(slots=)``, ...);
- ``A | B`` on types evaluated at run time (``isinstance(x, int | float)``, a type alias at module level,
  ``except (A | B)``), which vermin cannot tell from a bitwise or: each operand is looked up in the imported
  module; annotations are left alone (``from __future__ import annotations`` keeps them unevaluated).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import pkgutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import keysweep
import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKED = [REPO / "agent" / "keysweep", REPO / "packaging" / "launch.py", REPO / "packaging" / "split-sites.py"]
_UNRESOLVED = object()


def vermin(*paths: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"]
    return subprocess.run(
        [*command, "--target=3.9-", "--no-tips", "--violations", "--no-parse-comments", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _resolve(node: ast.expr, namespace: dict[str, Any]) -> Any:
    """What ``node`` names in ``namespace`` when it is a plain name, attribute chain, None or subscript."""
    if isinstance(node, ast.Constant) and node.value is None:
        return type(None)
    if isinstance(node, ast.Name):
        return namespace.get(node.id, getattr(builtins, node.id, _UNRESOLVED))
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, namespace)
        return _UNRESOLVED if owner is _UNRESOLVED else getattr(owner, node.attr, _UNRESOLVED)
    if isinstance(node, ast.Subscript):  # tuple[int, str], dict[str, Any]: the generic's origin
        return _resolve(node.value, namespace)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _resolve(node.left, namespace), _resolve(node.right, namespace)
        return left if _is_type(left) and _is_type(right) else _UNRESOLVED
    return _UNRESOLVED


def _is_type(value: Any) -> bool:
    return isinstance(value, type) or type(value).__module__ == "typing"


def runtime_type_unions(source: str, namespace: dict[str, Any], name: str = "<module>") -> list[str]:
    """Every ``A | B`` outside annotations whose operands are types in ``namespace``, as ``name:line: text``."""
    tree = ast.parse(source)
    in_annotations: set[int] = set()
    for node in ast.walk(tree):
        for part in ("annotation", "returns"):
            value = getattr(node, part, None)
            if value is not None:
                in_annotations.update(id(n) for n in ast.walk(value))
        if isinstance(node, ast.arguments):
            for arg in [*node.posonlyargs, *node.args, *node.kwonlyargs, node.vararg, node.kwarg]:
                if arg is not None and arg.annotation is not None:
                    in_annotations.update(id(n) for n in ast.walk(arg.annotation))
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.BitOr)
            and id(node) not in in_annotations
            and _is_type(_resolve(node, namespace))
        ):
            found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return sorted(set(found))


def package_modules() -> list[types.ModuleType]:
    names = [m.name for m in pkgutil.walk_packages(keysweep.__path__, "keysweep.") if not m.name.endswith("__main__")]
    return [keysweep, *(importlib.import_module(n) for n in names)]


def test_vermin_finds_nothing_newer_than_python_3_9() -> None:
    out = vermin(*CHECKED)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Target versions not met" not in out.stdout, out.stdout


@pytest.mark.parametrize(
    ("code", "feature"),
    [
        ("def f(a, b):\n    return list(zip(a, b, strict=True))\n", "zip(strict)"),
        ("from datetime import UTC\n", "datetime.UTC"),
        ("import enum\nclass E(enum.StrEnum):\n    A = 'a'\n", "enum.StrEnum"),
        ("from dataclasses import dataclass\n@dataclass(slots=True)\nclass C:\n    a: int\n", "dataclass(slots)"),
        ("def f(x):\n    match x:\n        case 1:\n            return 2\n", "pattern matching"),
        ("import threading\nhook = threading.__excepthook__\n", "threading.__excepthook__"),
    ],
)
def test_vermin_check_fails_on_a_newer_feature(tmp_path: Path, code: str, feature: str) -> None:
    (tmp_path / "newer.py").write_text(code)
    out = vermin(tmp_path / "newer.py")
    assert out.returncode != 0
    assert feature in out.stdout and "Target versions not met:   3.9-" in out.stdout, out.stdout


def test_no_type_union_is_evaluated_at_run_time() -> None:
    found = []
    for module in package_modules():
        path = Path(module.__file__ or "")
        found += runtime_type_unions(path.read_text(), vars(module), str(path.relative_to(REPO)))
    assert found == [], "A | B on types fails on Python 3.9 (use (A, B) or Optional/Union):\n" + "\n".join(found)


def test_type_union_check_fails_on_run_time_unions_only() -> None:
    import os
    import socket

    source = (
        "from __future__ import annotations\n"
        "Alias = tuple[int, str | None]\n"
        "def f(x: int | None, *rest: str | bytes) -> str | None:\n"
        "    flags = os.O_RDONLY | os.O_DIRECTORY\n"
        "    mask = x | 4\n"
        "    try:\n"
        "        return isinstance(x, int | float)\n"
        "    except (socket.timeout | TimeoutError):\n"
        "        return None\n"
    )
    found = runtime_type_unions(source, {"os": os, "socket": socket}, "sample")
    assert found == ["sample:2: str | None", "sample:7: int | float", "sample:8: socket.timeout | TimeoutError"]


def test_config_reads_union_annotations_as_python_3_9_can() -> None:
    """The configuration loader evaluates its dataclasses' annotations: ``str | None`` written under
    ``from __future__ import annotations`` is read as ``Optional[str]`` (typing.get_type_hints fails on 3.9)."""
    import typing

    from keysweep.config import ScanConfig
    from keysweep.sections import field_types

    hints = field_types(ScanConfig)
    assert typing.get_origin(hints["host_prefix"]) is typing.Union
    assert typing.get_args(hints["host_prefix"]) == (str, type(None))
    assert hints["roots"] == tuple[str, ...]
    assert hints["workers"] is int
    sample = type("Sample", (), {"__annotations__": {"a": "int | str | None"}, "__module__": __name__})
    assert typing.get_args(field_types(sample)["a"]) == (int, str, type(None))
