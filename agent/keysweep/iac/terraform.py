"""Terraform configuration (HCL ``*.tf`` and ``*.tf.json``): resource blocks that create keys or users."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from keysweep.iac.model import KIND_ACCESS_KEY, KIND_IAM_USER, IacFinding

FLAGGED_TYPES = {"aws_iam_access_key": KIND_ACCESS_KEY, "aws_iam_user": KIND_IAM_USER}

# block labels may be quoted or bare identifiers: resource "aws_iam_user" "x" {  /  resource aws_iam_user x {
_RESOURCE = re.compile(r'\s*resource\s+"?([A-Za-z0-9_-]+)"?\s+"?([A-Za-z0-9_-]+)"?\s*\{')
_HEREDOC = re.compile(r"<<-?\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")
_BLOCK_COMMENT = re.compile(r"/\*.*?\*/")


def read_hcl(text: str, path: str) -> Iterator[IacFinding]:
    """Flagged ``resource`` blocks of an HCL file; comments and heredoc bodies never count."""
    in_comment = False
    heredoc: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        if heredoc is not None:
            if raw.strip() == heredoc:
                heredoc = None
            continue
        line = raw
        if in_comment:
            end = line.find("*/")
            if end < 0:
                continue
            line, in_comment = line[end + 2 :], False
        line = _BLOCK_COMMENT.sub(" ", line)
        start = line.find("/*")
        if start >= 0:
            line, in_comment = line[:start], True
        line = re.split(r"#|//", line, maxsplit=1)[0]
        if (m := _RESOURCE.match(line)) and m.group(1) in FLAGGED_TYPES:
            yield IacFinding(FLAGGED_TYPES[m.group(1)], "terraform", f"{m.group(1)}.{m.group(2)}", path, number)
        if h := _HEREDOC.search(line):
            heredoc = h.group(1)


def read_tf_json(document: Any, path: str) -> Iterator[IacFinding]:
    """Flagged resources of a ``*.tf.json`` document (``resource`` is an object or a list of objects)."""
    if not isinstance(document, Mapping):
        return
    blocks = document.get("resource")
    for block in blocks if isinstance(blocks, list) else [blocks]:
        if not isinstance(block, Mapping):
            continue
        for rtype, kind in FLAGGED_TYPES.items():
            named = block.get(rtype)
            if isinstance(named, Mapping):
                for name in named:
                    yield IacFinding(kind, "terraform", f"{rtype}.{name}", path)
