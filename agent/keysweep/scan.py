"""One scan: each source in turn — process environments, every user's AWS files, then the files walk.

Order matters: environments name extra AWS files; the AWS-files source records what it read so the walk does
not report the same file twice (they tell each other through the :class:`ScanContext`). A source that fails is
counted and the others still run. The same key at the same place is reported once; the allowlist is applied
last. The shared types live in :mod:`keysweep.scan_types` (re-exported here); the files walk's engine, with its
worker processes, in :mod:`keysweep.sources.file_engine`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from keysweep.models import Finding
from keysweep.scan_types import (
    SOURCES,
    FileCache,
    ScanContext,
    ScanOptions,
    ScanResult,
    ScanStats,
    Source,
)
from keysweep.sources.aws_files import AwsFilesSource
from keysweep.sources.file_engine import FilesSource
from keysweep.sources.processes import ProcessesSource

if TYPE_CHECKING:
    from keysweep.detect import Detector

__all__ = [
    "SOURCES",
    "FileCache",
    "ScanContext",
    "ScanOptions",
    "ScanResult",
    "ScanStats",
    "Source",
    "dedupe",
    "run_scan",
]

# in the order they run (see the module's docstring)
SOURCE_ORDER: tuple[Source, ...] = (ProcessesSource(), AwsFilesSource(), FilesSource())


def run_scan(
    options: ScanOptions,
    detector: Detector,
    *,
    file_cache: FileCache | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[ScanStats], None] | None = None,
) -> ScanResult:
    started = time.monotonic()
    stats = ScanStats()
    stop = should_stop or (lambda: False)
    ctx = ScanContext(options, detector, stats, stop, file_cache, progress)
    findings: list[Finding] = []
    for source in SOURCE_ORDER:
        if source.name not in options.sources or stop():
            continue
        with _source_guard(source.name, stats):
            for f in source.scan(ctx):  # what was found before a failure still counts
                findings.append(f)
                stats.findings_by_source[source.name] += 1
    stats.interrupted = stop()
    findings = dedupe(findings)
    if options.allowlist is not None:
        findings, stats.suppressed = options.allowlist.apply(findings)
    stats.duration_seconds = time.monotonic() - started
    return ScanResult(findings=findings, stats=stats)


@contextlib.contextmanager
def _source_guard(name: str, stats: ScanStats) -> Iterator[None]:
    """A source that fails unexpectedly is counted (``source-failed``, path ``source:NAME``); the others run."""
    try:
        yield
    except Exception as exc:
        stats.fail("source-failed", f"source:{name}", exc)


def dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per key, secret and place (a place is a file, archive member, profile, variable of one
    executable/unit/container — not a line); an id-only finding yields to a paired one at the same place.
    Sorted by place for stable output."""
    best: dict[tuple[str, str, str | None], Finding] = {}
    for f in findings:
        k = (f.key_id, f.location.identity(), f.secret_fingerprint)
        old = best.get(k)
        if old is None or (f.has_session_token and not old.has_session_token):
            best[k] = f
    paired = {(k[0], k[1]) for k, f in best.items() if f.has_secret}
    out = [f for k, f in best.items() if f.has_secret or (k[0], k[1]) not in paired]
    out.sort(key=_order)
    return out


def _order(f: Finding) -> tuple[Any, ...]:
    loc = f.location
    return (loc.kind, loc.path or "", loc.member or "", loc.pid or 0, loc.profile or "", loc.line or 0, f.key_id)
