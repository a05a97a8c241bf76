"""Every user's ``~/.aws/credentials`` and ``~/.aws/config``, parsed per profile so id, secret and token pair exactly.

Profiles that get credentials the good way (``credential_process``, SSO, ``role_arn``) are counted by kind; a
``role_arn`` profile whose ``source_profile`` holds static keys is not a finding itself — the source profile is,
once, where its keys are written. The SDK caches (``~/.aws/cli/cache``, ``sso/cache``, ``boto/cache``) hold the
host's own temporary role credentials and are not read (the files walk counts them as skipped).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import pwd
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from keysweep import keyid
from keysweep.models import Finding, Location
from keysweep.sources.names import readable

if TYPE_CHECKING:
    from keysweep.detect import Detector
    from keysweep.scan_types import ScanContext, ScanOptions, ScanStats

MAX_AWS_FILE = 1024 * 1024
_SECTION = re.compile(r"^\s*\[\s*([^\]]*?)\s*\]\s*(?:[#;].*)?$")
_ASSIGN = re.compile(r"^([A-Za-z0-9_.\-]+)\s*[=:]\s?(.*)$")
_NON_PROFILE_SECTIONS = frozenset({"sso-session", "services", "plugins", "preview", "cli"})


def aws_file_kind(path: str) -> str | None:
    """ "aws-credentials" / "aws-config" for a path named like the SDK's shared files, else None."""
    if path.endswith("/.aws/credentials"):
        return "aws-credentials"
    if path.endswith("/.aws/config"):
        return "aws-config"
    return None


@dataclass
class Profile:
    name: str
    line: int
    values: dict[str, tuple[str, int]] = field(default_factory=dict)  # lowercased key -> (value, line)

    def get(self, key: str) -> str | None:
        v = self.values.get(key)
        return v[0] if v and v[0] else None

    @property
    def kind(self) -> str:
        if "credential_process" in self.values:
            return "credential_process"
        if "sso_session" in self.values or "sso_start_url" in self.values:
            return "sso"
        if "role_arn" in self.values:
            return "role_arn"
        if "aws_access_key_id" in self.values:
            return "static"
        return "other"


def parse_profiles(text: str, kind: str) -> tuple[list[Profile], list[int]]:
    """Tolerant INI parsing as the AWS SDKs do it: keys case-insensitive, ``[profile x]`` in config files,
    indented lines are nested settings. Returns the profiles and the numbers of lines that made no sense."""
    profiles: list[Profile] = []
    malformed: list[int] = []
    current: Profile | None = None
    ignoring = False  # inside a section that holds no profile ([sso-session x], [services x])
    # lines end at "\n" only, as editors and the detector count them (str.splitlines also splits at \x0c, \x1e,
    # \x85, \u2028, …, which would shift every later line number)
    for n, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        m = _SECTION.match(raw)
        if m:
            name = m.group(1)
            ignoring = False
            if kind == "aws-config" and name.startswith("profile "):
                name = name[len("profile ") :].strip()
            elif kind == "aws-config" and name.split(" ", 1)[0] in _NON_PROFILE_SECTIONS:
                current, ignoring = None, True
                continue
            current = Profile(name=name, line=n)
            profiles.append(current)
            continue
        if ignoring or (raw[:1] in (" ", "\t") and current is not None):
            continue  # nested setting (e.g. "s3 =" followed by indented keys)
        a = _ASSIGN.match(line)
        if a is None or current is None:
            malformed.append(n)
            continue
        value = re.split(r"\s[#;]", a.group(2), maxsplit=1)[0].strip()
        current.values[a.group(1).lower()] = (value.strip("\"'"), n)
    return profiles, malformed


def scan_aws_text(
    data: bytes,
    shown: str,
    kind: str,
    detector: Detector,
    stats: ScanStats,
    *,
    user: str | None = None,
    place: Location | None = None,
) -> list[Finding]:
    """Findings of one AWS shared credentials/config file (``shown`` is the path as reported; ``place``, when
    given, is the file's location with every field but profile and line)."""
    place = place or Location(kind=kind, path=shown, user=user)
    text = data.decode("utf-8", "replace").lstrip("\ufeff")
    profiles, malformed = parse_profiles(text, kind)
    include_examples = bool(getattr(detector, "include_examples", False))
    findings: list[Finding] = []
    for p in profiles:
        stats.profiles[p.kind] += 1
        key_id = p.get("aws_access_key_id")
        if key_id is None:
            continue
        if keyid.key_type(key_id) is None:
            malformed.append(p.values["aws_access_key_id"][1])
            continue
        if keyid.is_example_key(key_id) and not include_examples:
            stats.skipped["example-key"] += 1
            continue
        token = p.get("aws_session_token") or p.get("aws_security_token")
        loc = dataclasses.replace(place, profile=p.name, line=p.values["aws_access_key_id"][1])
        findings.append(
            detector.make_finding(
                key_id,
                location=loc,
                secret=p.get("aws_secret_access_key"),
                session_token=token,
                pairing="profile",
                profile_kind=p.kind,
            )
        )
    if malformed:
        stats.errors["malformed-aws-file"] += 1
        known = {f.key_id for f in findings}
        for f in detector.scan(data, location=place):
            if f.key_id not in known:
                findings.append(f)
    return findings


@dataclass(frozen=True)
class AwsFile:
    """An AWS shared file to read, as a home or a process environment names it.

    ``inside`` is the path as named inside ``root`` (``/`` for this host, the host prefix, or a process's
    ``/proc/PID/root``; a relative path starts at ``cwd`` inside that root, None when unknown); ``path`` is the
    same place seen from here and ``shown`` as reported; ``user`` is whose home or process named it."""

    path: str
    shown: str
    kind: str
    user: str | None = None
    root: str = "/"
    inside: str | None = None  # None: ``path`` itself, with root "/"
    cwd: str | None = "/"
    container_id: str | None = None


def home_files(prefix: str | None = None) -> list[AwsFile]:
    """~/.aws/credentials and ~/.aws/config of every account in the password database, plus /root."""
    homes: dict[str, str | None] = {}
    for name, _uid, home in _accounts(prefix):
        if home and home.startswith("/") and home not in homes and not _pseudo_home(home):
            homes[home] = name
    homes.setdefault("/root", "root")
    root = (prefix.rstrip("/") or "/") if prefix else "/"
    out = []
    for home, user in homes.items():
        for base, kind in (("credentials", "aws-credentials"), ("config", "aws-config")):
            inside = home.rstrip("/") + "/.aws/" + base
            path = (prefix.rstrip("/") + inside) if prefix else inside
            out.append(AwsFile(path=path, shown=readable(inside), kind=kind, user=user, root=root, inside=inside))
    return out


def _pseudo_home(home: str) -> bool:
    """A system account's "home" in /dev, /proc or /sys (``/dev/null``) holds no AWS files: not even looked at."""
    from keysweep.sources.safeopen import PSEUDO_TOPS

    return home.strip("/").split("/", 1)[0] in PSEUDO_TOPS


def _accounts(prefix: str | None) -> list[tuple[str, int, str]]:
    """(name, uid, home) of every account: this host's password database, or the scanned host's own file."""
    if not prefix:
        return [(p.pw_name, p.pw_uid, p.pw_dir) for p in pwd.getpwall()]
    try:  # the scanned host's own password file, not the container's
        with open(os.path.join(prefix, "etc/passwd"), encoding="utf-8", errors="surrogateescape") as fh:
            rows = [line.rstrip("\n").split(":") for line in fh]
    except OSError:
        return []
    return [(r[0], int(r[2]), r[5]) for r in rows if len(r) >= 7 and r[2].isdigit()]


class _Owners:
    """User names of file owners: this host's names, or the scanned host's under a prefix; the number when none."""

    def __init__(self, prefix: str | None) -> None:
        self._names = {uid: name for name, uid, _ in reversed(_accounts(prefix))} if prefix else None

    def name(self, uid: int) -> str:
        if self._names is not None:
            return readable(self._names.get(uid, str(uid)))
        try:
            return readable(pwd.getpwuid(uid).pw_name)
        except KeyError:
            return str(uid)


SDK_CACHES = ("cli/cache", "sso/cache", "boto/cache")


def _count_cache_files(aws_dirs: Iterable[str]) -> int:
    n = 0
    for d in aws_dirs:
        for cache in SDK_CACHES:
            try:
                with os.scandir(os.path.join(d, cache)) as it:
                    n += sum(1 for e in it if e.is_file(follow_symlinks=False))
            except OSError:
                continue
    return n


def scan_aws_files(
    files: Iterable[AwsFile],
    detector: Detector,
    options: ScanOptions,
    stats: ScanStats,
    *,
    handled: set[tuple[int, int]],
    count_caches: bool = False,
) -> list[Finding]:
    """Read each file once (by device and inode, recorded in ``handled`` for the files walk to skip).

    Each is opened with :func:`keysweep.sources.safeopen.open_beneath` inside its root: never a FIFO or device,
    a link only when root or the real file's owner made it. A finding names the real file (after links) and its
    owner as ``user``; the path as named and the user who named it are kept where they differ.
    ``count_caches``: count the SDK credential caches beside each file as skipped (when no files walk will)."""
    from keysweep.sources.filesystem import Skip
    from keysweep.sources.safeopen import open_beneath

    files = list(files)
    findings: list[Finding] = []
    if count_caches:
        stats.skipped["host-role-credentials"] += _count_cache_files({os.path.dirname(f.path) for f in files})
    owners = _Owners(options.path_prefix)
    for f in files:
        try:
            if f.cwd is None and not (f.inside or f.path).startswith("/"):
                raise Skip("cwd-outside-root")
            opened = open_beneath(f.root, f.inside or f.path, cwd=f.cwd or "/")
        except Skip as skip:
            if skip.reason != "vanished":  # most accounts have no AWS files
                skip.count(stats, f.shown)
            continue
        try:
            st = opened.st
            ident = (st.st_dev, st.st_ino)
            if ident in handled:
                continue
            handled.add(ident)
            if st.st_size > MAX_AWS_FILE:
                stats.skipped["too-large"] += 1
                continue
            data = os.read(opened.fd, MAX_AWS_FILE + 1)
        except OSError as exc:
            stats.errors["io-error" if exc.errno == errno.EIO else "permission-denied"] += 1
            continue
        finally:
            os.close(opened.fd)
        stats.aws_files_scanned += 1
        owner = owners.name(st.st_uid)
        shown = readable(opened.path)
        place = Location(
            kind=f.kind,
            path=shown,
            user=owner,
            named_path=f.shown if f.shown != shown else None,
            named_by=f.user if f.user not in (None, owner) else None,
            container_id=f.container_id,
        )
        findings.extend(scan_aws_text(data, shown, f.kind, detector, stats, place=place))
    return findings


class AwsFilesSource:
    """Every user's AWS files (or those under the named paths) and the files process environments named, as a
    :class:`keysweep.scan_types.Source`; what it read is recorded in ``ctx.handled`` for the files walk."""

    name = "aws-files"

    def scan(self, ctx: ScanContext) -> Iterator[Finding]:
        options = ctx.options
        homes = _aws_files_under(options) if options.paths else home_files(options.path_prefix)
        yield from scan_aws_files(
            homes + ctx.named_files,
            ctx.detector,
            options,
            ctx.stats,
            handled=ctx.handled,
            count_caches="files" not in options.sources,
        )


def _aws_files_under(options: ScanOptions) -> list[AwsFile]:
    """With PATHs, the AWS files source reads only what they hold: a named file as an AWS file (``config`` by
    its name, else credentials); in a directory D, ``D/.aws/*`` and ``D/*/.aws/*`` (a home, or a directory of
    homes such as /home), or ``D/*`` when D is itself an ``.aws`` directory."""
    from keysweep.sources.filesystem import display_path  # it builds on this module

    out: list[AwsFile] = []
    for start in options.paths:
        start = os.path.abspath(start)
        if not os.path.isdir(start):
            kind = "aws-config" if os.path.basename(start) == "config" else "aws-credentials"
            out.append(AwsFile(start, display_path(start, options.path_prefix), kind))
            continue
        dirs = [start] if os.path.basename(start) == ".aws" else [os.path.join(start, ".aws")]
        if os.path.basename(start) != ".aws":
            with contextlib.suppress(OSError), os.scandir(start) as it:
                dirs += sorted(os.path.join(e.path, ".aws") for e in it if e.is_dir(follow_symlinks=False))
        for d in dirs:
            for base, kind in (("credentials", "aws-credentials"), ("config", "aws-config")):
                path = os.path.join(d, base)
                out.append(AwsFile(path, display_path(path, options.path_prefix), kind))
    return out
