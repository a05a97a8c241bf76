"""Process environments: every ``/proc/PID/environ``, attributed to pid, user, executable, systemd unit and
container.

``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` are paired exactly; every other
variable is scanned as text. The scanner's own processes are skipped, and so are temporary credentials a
runtime hands its own workload (Lambda's execution role, an ECS task role, IRSA / Pod Identity): those are the
host's role credentials, the good case, counted as skipped ``host-role-credentials``.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from keysweep import keyid
from keysweep.models import Finding, Location
from keysweep.sources.aws_files import AwsFile
from keysweep.sources.names import readable

if TYPE_CHECKING:
    from keysweep.detect import Detector
    from keysweep.scan_types import ScanContext, ScanStats

PROC = "/proc"
MAX_ENVIRON = 2 * 1024 * 1024  # the kernel's default limit for argv and environment together at exec
_ID_VAR = "AWS_ACCESS_KEY_ID"
_SECRET_VAR = "AWS_SECRET_ACCESS_KEY"
_TOKEN_VARS = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# a runtime that gives its workload a role sets one of these; temporary keys beside them are that role's
_ROLE_RUNTIME_VARS = (
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)
_FILE_VARS = {"AWS_SHARED_CREDENTIALS_FILE": "aws-credentials", "AWS_CONFIG_FILE": "aws-config"}
_CONTAINER_ID = re.compile(r"(?:^|[/\-:])([0-9a-f]{64})(?:\.scope)?(?=$|/)")
_UNIT = re.compile(r"([^/]+\.(?:service|scope))(?=$|/)")


@dataclass(frozen=True)
class CgroupInfo:
    unit: str | None = None
    container_id: str | None = None


def parse_cgroup(text: str) -> CgroupInfo:
    """The systemd unit and container id (docker, containerd, cri-o, podman, kubepods) of a /proc/PID/cgroup."""
    unit = container = None
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        if container is None:
            m = _CONTAINER_ID.search(path)
            if m:
                container = m.group(1)
        units = [u for u in _UNIT.findall(path) if not _CONTAINER_ID.search("/" + u)]
        if units and (unit is None or line.startswith("0::")):
            unit = units[-1]
    return CgroupInfo(unit=unit, container_id=container)


def parse_environ(data: bytes) -> list[tuple[str, str]]:
    """``NAME=value`` items of a ``/proc/PID/environ`` (hostile bytes: anything the process wrote), in order.

    Decoded losslessly (undecodable bytes as surrogate escapes: a path re-encodes to the same bytes, and a key
    split by a bad byte is not glued together); items without ``=`` or with an empty name are ignored."""
    out = []
    for item in data.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name:
            out.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))
    return out


def read_environ(pid: int, limit: int = MAX_ENVIRON) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of a process's environment, cut after the last whole variable; and whether it was
    longer (a process started with a raised stack limit can have an environment of a quarter of it)."""
    with open(f"{PROC}/{pid}/environ", "rb") as fh:
        data = fh.read(limit + 1)  # a buffered read returns short only at the end
    if len(data) <= limit:
        return data, False
    return data[: data.rfind(b"\0", 0, limit) + 1], True


def _first_values(env: list[tuple[str, str]]) -> dict[str, str]:
    """Name -> value as ``getenv`` sees it: the first of duplicate names wins."""
    values: dict[str, str] = {}
    for k, v in env:
        values.setdefault(k, v)
    return values


class _Proc:
    """Attributes of one process, read lazily (most processes have nothing to report)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._location: Location | None = None

    def location(self) -> Location:
        if self._location is None:
            import psutil  # only for a process that holds a key: a scan of paths never loads it

            user = exe = None
            try:
                p = psutil.Process(self.pid)
                user = p.username()
                exe = readable(p.exe()) or None
            except (psutil.Error, OSError, KeyError):
                pass
            try:
                with open(f"{PROC}/{self.pid}/cgroup", encoding="utf-8", errors="replace") as fh:
                    cg = parse_cgroup(fh.read())
            except OSError:
                cg = CgroupInfo()
            self._location = Location(
                kind="process", pid=self.pid, user=user, exe=exe, unit=cg.unit, container_id=cg.container_id
            )
        return self._location


def scan_processes(
    detector: Detector,
    stats: ScanStats,
    *,
    exclude_pids: Iterable[int] = (),
) -> tuple[list[Finding], list[AwsFile]]:
    """Findings in every readable process environment, and the AWS files those environments name."""
    skip = {os.getpid(), *exclude_pids}
    findings: list[Finding] = []
    files: list[AwsFile] = []
    try:
        pids = sorted(int(d) for d in os.listdir(PROC) if d.isdigit())
    except OSError:
        stats.errors["proc-unreadable"] += 1
        return findings, files
    for pid in pids:
        if pid in skip:
            continue
        try:
            data, truncated = read_environ(pid)
        except (FileNotFoundError, ProcessLookupError):
            # ESRCH on a live pid: a kernel thread, which has no user environment
            stats.skipped["kernel-thread" if os.path.exists(f"{PROC}/{pid}") else "process-exited"] += 1
            continue
        except PermissionError:
            stats.errors["process-permission-denied"] += 1
            continue
        except OSError:
            stats.errors["process-unreadable"] += 1
            continue
        stats.processes_scanned += 1
        if truncated:
            stats.skipped["environ-truncated"] += 1  # the first MAX_ENVIRON bytes are still scanned
        if not data:
            continue  # kernel threads
        proc = _Proc(pid)
        env = parse_environ(data)
        findings.extend(_scan_env(env, proc, detector, stats))
        files.extend(_named_files(env, proc))
    return findings, files


def _scan_env(env: list[tuple[str, str]], proc: _Proc, detector: Detector, stats: ScanStats) -> list[Finding]:
    values = _first_values(env)
    key_id = values.get(_ID_VAR, "").strip()
    out: list[Finding] = []
    structured = keyid.key_type(key_id) is not None
    if structured:
        secret = values.get(_SECRET_VAR) or None
        token = next((values[v] for v in _TOKEN_VARS if values.get(v)), None)
        if keyid.key_type(key_id) == "temporary" and token and any(values.get(v) for v in _ROLE_RUNTIME_VARS):
            stats.skipped["host-role-credentials"] += 1
        elif detector.is_example_key(key_id) and not detector.include_examples:
            stats.skipped["example-key"] += 1
        else:
            loc = replace(proc.location(), variable=_ID_VAR)
            out.append(
                detector.make_finding(key_id, location=loc, secret=secret, session_token=token, pairing="environment")
            )
    handled = {_ID_VAR, _SECRET_VAR, *_TOKEN_VARS} if structured else set()
    rest = [(k, v) for k, v in env if k not in handled]
    if not rest:
        return out
    # one text buffer, one variable per line range, so ids and secrets in sibling variables still pair
    text_parts, first_lines, line = [], [], 1
    for k, v in rest:
        item = f"{k}={v}\n"
        text_parts.append(item)
        first_lines.append(line)
        line += item.count("\n")
    buf = "".join(text_parts).encode("utf-8", "surrogateescape")
    base = Location(kind="process", pid=proc.pid)
    found = detector.scan(buf, location=base)
    if not found:
        return out
    already = {f.key_id for f in out}
    where = proc.location()
    for f in found:
        if f.key_id in already:
            continue
        i = max(bisect.bisect_right(first_lines, f.location.line or 1) - 1, 0)
        loc = replace(where, variable=readable(rest[i][0]), encoding=f.location.encoding)
        out.append(replace(f, location=loc))
    return out


def _named_files(env: list[tuple[str, str]], proc: _Proc) -> list[AwsFile]:
    """AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE, to be resolved inside the process's own root (a container's
    ``/creds`` is the container's, and a link in it never leads out to the host) and from its own cwd."""
    values = _first_values(env)
    out = []
    for var, kind in _FILE_VARS.items():
        value = values.get(var, "").strip()
        if not value or value == os.devnull:
            continue
        if value.startswith("~") and values.get("HOME"):
            value = values["HOME"].rstrip("/") + value[1:]
        root = f"{PROC}/{proc.pid}/root"
        cwd = "/" if value.startswith("/") else _cwd_inside_root(proc.pid)
        where = proc.location()
        out.append(
            AwsFile(
                path=root + ("" if value.startswith("/") else "/<cwd>/") + value,
                shown=readable(value),
                kind=kind,
                user=where.user,
                root=root,
                inside=value,
                cwd=cwd,
                container_id=where.container_id,
            )
        )
    return out


def _cwd_inside_root(pid: int) -> str | None:
    """A process's working directory as a path inside its own root, or None (gone, or outside that root)."""
    try:
        root = os.readlink(f"{PROC}/{pid}/root")
        cwd = os.readlink(f"{PROC}/{pid}/cwd")
    except OSError:
        return None
    if root == "/":
        return cwd
    root = root.rstrip("/")
    if cwd == root:
        return "/"
    return cwd[len(root) :] if cwd.startswith(root + "/") else None


class ProcessesSource:
    """Every readable process environment as a :class:`keysweep.scan_types.Source`; the AWS files the
    environments name go to ``ctx.named_files`` for the AWS-files source."""

    name = "processes"

    def scan(self, ctx: ScanContext) -> Iterator[Finding]:
        found, named = scan_processes(ctx.detector, ctx.stats)
        ctx.named_files += named
        yield from found
