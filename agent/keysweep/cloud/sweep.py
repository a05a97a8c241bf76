"""One agentless sweep: every reader over every account and region, every item through the scan's detector.

Findings have the scan's shape with ``location.kind == "cloud"``; what could not be read is a :class:`Skip`
per service, account and region, and the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keysweep.cloud import autoscaling, awslambda, batch, cloudformation, codebuild, ec2, ecs, ssm
from keysweep.cloud import cloud_context as cloud_context  # re-exported: the queue's host context
from keysweep.cloud.items import Item, Reader
from keysweep.cloud.session import AWS_ERRORS, Skip, Target, error_reason
from keysweep.models import Finding, Location
from keysweep.scan import ScanOptions, ScanStats, dedupe
from keysweep.sources.archives import scan_archive

if TYPE_CHECKING:
    from keysweep.detect import Detector

WORKERS = 8  # account-regions read at once
# the priority order
READERS: tuple[Reader, ...] = (
    *awslambda.READERS,
    *ecs.READERS,
    *ec2.READERS,
    *autoscaling.READERS,
    *ssm.READERS,
    *cloudformation.READERS,
    *codebuild.READERS,
    *batch.READERS,
)


def _counter() -> Counter[str]:
    return Counter()


@dataclass
class CloudStats(ScanStats):
    """The scan's counters plus what the control plane gave: fields and packages read per service, accounts, regions,
    and every skip with its account, region and reason."""

    items_scanned: Counter[str] = field(default_factory=_counter)
    accounts: int = 0
    regions: int = 0
    skips: list[Skip] = field(default_factory=list)

    def skip(self, s: Skip) -> None:
        self.skips.append(s)
        self.skipped[f"{s.service}-unreadable"] += 1

    def merge(self, other: ScanStats) -> None:
        mine, self.skips = self.skips, []  # every skip is kept (the scan caps its lists of error details)
        super().merge(other)
        self.skips = mine + list(getattr(other, "skips", []))

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["items_scanned"] = dict(sorted(self.items_scanned.items()))
        d["skips"] = [s.to_dict() for s in self.skips]
        for name in ("files_scanned", "files_cached", "processes_scanned", "aws_files_scanned", "profiles"):
            d.pop(name, None)
        return d


@dataclass
class CloudResult:
    findings: list[Finding]
    stats: CloudStats


def scan_item(item: Item, detector: Detector, options: ScanOptions, stats: ScanStats) -> list[Finding]:
    r = item.resource
    base = Location(
        kind="cloud",
        service=r.service,
        resource_arn=r.arn,
        field=item.field,
        region=r.region,
        account=r.account,
        role_arn=r.role_arn,
    )
    if item.archive is not None:
        with item.archive:
            found = scan_archive(item.archive, "zip", r.arn, item.size, detector, options, stats)
            if found is None:  # not a zip after all: its bytes as they are
                item.archive.seek(0)
                found = detector.scan_stream(item.archive.read, location=base)
                stats.bytes_scanned += item.size
        return [
            dataclasses.replace(
                f,
                location=dataclasses.replace(
                    base,
                    member=f.location.member,
                    line=f.location.line,
                    offset=f.location.offset,
                    encoding=f.location.encoding,
                ),
            )
            for f in found
        ]
    stats.bytes_scanned += len(item.data)
    return [
        dataclasses.replace(f, location=dataclasses.replace(f.location, field=item.field_at(f.location.line)))
        for f in detector.scan(item.data, location=base)
    ]


def run_cloud(
    targets: Iterable[Target],
    detector: Detector,
    *,
    options: ScanOptions | None = None,
    readers: Sequence[Reader] = READERS,
    stats: CloudStats | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CloudResult:
    """Read every target with every reader; findings deduplicated as the scan does."""
    options = options or ScanOptions(sources=())
    stats = stats or CloudStats()
    stop = should_stop or (lambda: False)
    started = time.monotonic()
    findings: list[Finding] = []
    accounts: set[str] = set()
    regions: set[str] = set()
    for target in targets:
        accounts.add(target.account)
        regions.add(target.region)
        for reader in readers:
            if stop():
                break
            try:
                for item in reader.read(target):
                    stats.items_scanned[reader.service] += 1
                    found = scan_item(item, detector, options, stats)
                    stats.findings_by_source[reader.service] += len(found)
                    findings += found
            except AWS_ERRORS as exc:
                target.skip(reader.service, error_reason(exc))
        for s in target.skips:
            stats.skip(s)
    stats.accounts += len(accounts)
    stats.regions += len(regions)
    stats.interrupted = stop()
    stats.duration_seconds += time.monotonic() - started
    return CloudResult(dedupe(findings), stats)


def sweep_targets(
    targets: Sequence[Target],
    detector: Detector,
    *,
    should_stop: Callable[[], bool] | None = None,
    workers: int = WORKERS,
) -> list[tuple[Target, CloudResult]]:
    """Each account-region read by :func:`run_cloud` in its own thread, ``workers`` at a time: the work is
    waiting on AWS, and each API's limits are per account and region. Results in the order of ``targets``."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(run_cloud, [t], detector, should_stop=should_stop) for t in targets]
        return [(t, f.result()) for t, f in zip(targets, futures)]
