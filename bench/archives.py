"""The CPU of a tree's archives alone: its zips (jars, wars, wheels), tars and ``.tar.gz``, and apart its other gzip
files (rotated logs, man pages), each group scanned in one process.

    python bench/archives.py TREE [--repeat 3]

Lists the files of TREE whose first bytes make them a container (``archives.sniff``; a gzip file counts as an
archive when a tar is inside it), then for each group runs the files source on those paths (``run_scan``,
``--workers 1``) once untimed (warm page cache) and ``--repeat`` times, and prints the least CPU-seconds
(``getrusage`` of this process), the files, members and expanded bytes, and a digest of the findings (rule, key,
place, line, pairing, never a secret or a per-run fingerprint) to compare two versions by. Start-up is not
counted. The load average is printed beside: CPU-seconds move less with it than wall time, but they do move.

Paths named on the command line cost more than the walk's files (a ``stat`` of each before the scan, an open
that resolves the whole path): the line ``as a worker reads them`` times the same files the way a worker of a
scan reads what the walk found (``scan_file`` on each, opened relative to its directory's fd, as
``file_engine`` does), with its CPU-seconds a file and the digest of its findings (the same as above).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from keysweep.detect import Detector  # noqa: E402
from keysweep.models import Finding  # noqa: E402
from keysweep.scan import ScanOptions, ScanResult, dedupe, run_scan  # noqa: E402
from keysweep.scan_types import ScanStats  # noqa: E402
from keysweep.sources import filesystem  # noqa: E402
from keysweep.sources.archives import sniff  # noqa: E402

from tests.support.hosttree import make_detector  # noqa: E402


def groups(tree: str) -> dict[str, list[str]]:
    """``archives`` (zip, tar, compressed tar) and ``gzip`` (a gzip file holding anything else)."""
    out: dict[str, list[str]] = {"archives": [], "gzip": []}
    for d, _dirs, files in os.walk(tree):
        for name in files:
            path = os.path.join(d, name)
            with open(path, "rb") as fh:
                head = fh.read(1024)
            kind = sniff(head)
            if kind == "gzip":
                with open(path, "rb") as fh:
                    inner = zlib.decompressobj(31).decompress(fh.read(1 << 20), 1024)
                out["archives" if sniff(inner) == "tar" else "gzip"].append(path)
            elif kind is not None:
                out["archives"].append(path)
    return out


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def digest(findings: list[Finding]) -> str:
    rows = sorted(
        repr((f.rule, f.key_id, f.location, f.has_secret, f.pairing, f.has_session_token, f.severity)) for f in findings
    )
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def measure(paths: list[str], detector: Detector, repeat: int) -> tuple[float, ScanResult]:
    options = ScanOptions(paths=tuple(paths), sources=("files",), workers=1)
    result = run_scan(options, detector)
    best = float("inf")
    for _ in range(repeat):
        start = _cpu()
        result = run_scan(options, detector)
        best = min(best, _cpu() - start)
    return best, result


def refs(paths: list[str]) -> list[filesystem.FileRef]:
    """The files as the walk hands them on: each in its directory (one ``Dir`` per directory), by name and inode."""
    dirs: dict[str, filesystem.Dir] = {}
    out = []
    for path in paths:
        parent, name = os.path.split(path)
        if parent not in dirs:
            dirs[parent] = filesystem.Dir.root(parent, os.stat(parent))
        out.append(filesystem.FileRef(path, dirs[parent], name, None, os.stat(path).st_ino))
    return out


def measure_worker(files: list[filesystem.FileRef], detector: Detector, repeat: int) -> tuple[float, list[Finding]]:
    """What a worker spends on these files: ``scan_file`` on each through one directory-fd cache."""
    options = ScanOptions(paths=(), sources=("files",), workers=1)

    def run() -> list[Finding]:
        found: list[Finding] = []
        stats = ScanStats()
        with filesystem.DirCache() as dirs:
            for ref in files:
                found += filesystem.scan_file(ref, None, detector, options, stats, dirs=dirs) or []
        return dedupe(found)

    findings = run()
    best = float("inf")
    for _ in range(repeat):
        start = _cpu()
        findings = run()
        best = min(best, _cpu() - start)
    return best, findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tree")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    detector = make_detector()
    for name, paths in groups(args.tree).items():
        if not paths:
            continue
        cpu, result = measure(paths, detector, args.repeat)
        s = result.stats
        print(
            f"{name}: {len(paths)} files, {s.archive_members_scanned} members, {s.bytes_scanned / 1e6:.1f} MB "
            f"expanded: {cpu:.3f} CPU-s (least of {args.repeat}); {len(result.findings)} findings, "
            f"digest {digest(result.findings)}; errors {dict(s.errors)}"
        )
        cpu, findings = measure_worker(refs(paths), detector, args.repeat)
        print(
            f"  as a worker reads them: {cpu:.3f} CPU-s, {cpu / len(paths) * 1e6:.1f} µs a file; digest {digest(findings)}"
        )
    print("load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
