"""Walk the given paths and read every Terraform, CloudFormation and Terraform-state file found."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence

import yaml

from keysweep.iac import cloudformation, terraform, tfstate
from keysweep.iac.model import IacFinding, IacResult
from keysweep.sources.filesystem import Skip, open_regular, os_error_skip
from keysweep.sources.names import readable

MAX_FILE_BYTES = 32 * 1024 * 1024  # larger files are skipped ("too-large"): no template or state is near this
MAX_ERRORS_LISTED = 100
# provider binaries and registry module copies (.terraform), VCS data and JavaScript dependencies
SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".terraform", "node_modules"})

Reader = Callable[[bytes, str], Iterator[IacFinding]]


def scan_iac(paths: Sequence[str]) -> IacResult:
    """Every flagged resource under ``paths`` (files or directories; links are not followed)."""
    result = IacResult()
    for path in _files(paths, result):
        reader = _reader_for(path)
        if reader is None:
            continue
        try:
            data = _read(path)
        except Skip as skip:
            _count(result, path, skip.reason)
            continue
        result.files += 1
        try:
            result.findings.extend(reader(data, readable(path)))
        except (ValueError, yaml.YAMLError, RecursionError) as exc:
            _count(result, path, f"unparsable: {type(exc).__name__}")
    return result


def _count(result: IacResult, path: str, reason: str) -> None:
    result.skipped[reason.split(":")[0]] += 1
    if len(result.errors) < MAX_ERRORS_LISTED:
        result.errors.append((readable(path), reason))


def _files(paths: Iterable[str], result: IacResult) -> Iterator[str]:
    for top in paths:
        try:
            st = os.lstat(top)
        except OSError as exc:
            _count(result, top, os_error_skip(exc).reason)
            continue
        if stat.S_ISREG(st.st_mode):
            yield top
        elif stat.S_ISDIR(st.st_mode):
            yield from _walk(top, result)
        else:
            _count(result, top, "not-regular")


def _walk(top: str, result: IacResult) -> Iterator[str]:
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            _count(result, directory, os_error_skip(exc).reason)
            continue
        for entry in reversed(entries):
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in SKIP_DIRS:
                        stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False) and _reader_for(entry.path):
                    yield entry.path
            except OSError as exc:
                _count(result, entry.path, os_error_skip(exc).reason)


def _reader_for(path: str) -> Reader | None:
    name = os.path.basename(path).lower()
    if name.endswith(".tf"):
        return lambda data, shown: terraform.read_hcl(_text(data), shown)
    if name.endswith(".tf.json"):
        return lambda data, shown: terraform.read_tf_json(json.loads(data), shown)
    if name.endswith((".tfstate", ".tfstate.backup")):
        return lambda data, shown: tfstate.read_state(json.loads(data), shown)
    if name.endswith((".yaml", ".yml", ".json", ".template")):
        return _template
    return None


def _template(data: bytes, shown: str) -> Iterator[IacFinding]:
    if not any(marker in data for marker in cloudformation.MARKERS):
        return iter(())
    return cloudformation.read_template(_text(data), shown)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _read(path: str) -> bytes:
    fd, st = open_regular(path)
    try:
        if st.st_size > MAX_FILE_BYTES:
            raise Skip("too-large")
        chunks = []
        remaining = MAX_FILE_BYTES + 1
        while remaining > 0 and (chunk := os.read(fd, min(remaining, 1 << 20))):
            chunks.append(chunk)
            remaining -= len(chunk)
        if remaining <= 0:
            raise Skip("too-large")
        return b"".join(chunks)
    except OSError as exc:
        raise os_error_skip(exc) from None
    finally:
        os.close(fd)
