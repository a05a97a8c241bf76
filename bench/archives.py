"""The CPU of a tree's archives alone: its zips (jars, wars, wheels), tars and ``.tar.gz``, and apart its other gzip
files (rotated logs, man pages), each group scanned in one process.

    python bench/archives.py TREE [--repeat 3]

Lists the files of TREE whose first bytes make them a container (``archives.sniff``; a gzip file counts as an
archive when a tar is inside it), then for each group runs the files source on those paths (``run_scan``,
``--workers 1``) once untimed (warm page cache) and ``--repeat`` times, and prints the least CPU-seconds
(``getrusage`` of this process), the files, members and expanded bytes, and a digest of the findings (rule, key,
place, line, pairing, never a secret or a per-run fingerprint) to compare two versions by. Start-up is not
counted. The load average is printed beside: CPU-seconds move less with it than wall time, but they do move.
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
from keysweep.scan import ScanOptions, ScanResult, run_scan  # noqa: E402
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


def digest(result: ScanResult) -> str:
    rows = sorted(
        repr((f.rule, f.key_id, f.location, f.has_secret, f.pairing, f.has_session_token, f.severity))
        for f in result.findings
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
            f"digest {digest(result)}; errors {dict(s.errors)}"
        )
    print("load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
