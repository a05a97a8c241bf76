"""A structural check of the Terraform (HCL) keysweep emits; with ``terraform`` on PATH, its own parser too."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence

_HEADER = re.compile(r'(resource|data) "([a-z0-9_]+)" "([A-Za-z_][A-Za-z0-9_-]*)" \{$')
_PAIRS = {"{": "}", "[": "]", "(": ")"}


def hcl_problems(text: str, *, names: Sequence[str] = ()) -> list[str]:
    """Why ``text`` is not well-formed Terraform (empty when it is), and which of ``names`` it does not mention."""
    problems: list[str] = []
    stack: list[str] = []
    seen: set[tuple[str, str]] = set()
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stack and stripped and not stripped.startswith("#"):
            m = _HEADER.match(stripped)
            if m is None:
                problems.append(f"line {number}: not a resource or data block: {stripped[:80]}")
            elif (m[1] + "." + m[2], m[3]) in seen:
                problems.append(f"line {number}: {m[2]}.{m[3]} defined twice")
            else:
                seen.add((m[1] + "." + m[2], m[3]))
        in_string = False
        i = 0
        while i < len(line):
            c = line[i]
            if in_string:
                if c == "\\":
                    i += 1
                elif c == '"':
                    in_string = False
                elif line.startswith("${", i) and not line.startswith("$${", i - 1 if i else 0):
                    problems.append(f"line {number}: unescaped ${{ in a string (Terraform would interpolate it)")
            elif c == '"':
                in_string = True
            elif c == "#":
                break
            elif c in _PAIRS:
                stack.append(_PAIRS[c])
            elif c in _PAIRS.values():
                if not stack or stack.pop() != c:
                    problems.append(f"line {number}: unbalanced {c}")
            i += 1
        if in_string:
            problems.append(f"line {number}: unterminated string")
    if stack:
        problems.append(f"unclosed {''.join(reversed(stack))} at the end")
    problems += [f"does not name {n}" for n in names if n not in text]
    terraform = shutil.which("terraform")
    if terraform and not problems:
        env = dict(os.environ, TF_CLI_CONFIG_FILE=os.devnull, CHECKPOINT_DISABLE="1")
        run = subprocess.run(
            [terraform, "fmt", "-no-color", "-"], input=text, capture_output=True, text=True, timeout=60, env=env
        )
        if run.returncode != 0:
            problems.append(f"terraform fmt: {run.stderr.strip()[:500]}")
    return problems
