"""Where the files engine's CPU goes: the main process (walk, batches, answers) against the workers (open, read,
detect), per file, for a stateless scan of a tree.

    python bench/engine_split.py TREE [--workers 2] [--repeat 5] [--main-only]

Runs the files source (``run_scan``, sources=files, no file cache) in this process ``--repeat`` times after one
untimed run (warm page cache) and prints the run with the least CPU: the main process's CPU-seconds (``getrusage``
of this process) and the workers' (of its reaped children), each in microseconds per file scanned. ``--workers 1``
reads in this process (then everything is the main process's); the start-up (imports, rules) is not counted. The
machine's load average is printed beside: CPU-seconds move less with it than wall time, but they do move.
``--main-only`` times the main process's share alone, without workers: the walk, the batches, and pickling each
batch and unpickling it (as the pipe does), per file walked.
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from keysweep.detect import Detector  # noqa: E402
from keysweep.scan import ScanContext, ScanOptions, ScanStats, run_scan  # noqa: E402
from keysweep.sources import file_engine  # noqa: E402

from tests.support.hosttree import make_detector  # noqa: E402


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _main_share(options: ScanOptions, detector: Detector) -> int:
    """The main process's work for one stateless scan with workers, the workers left out: files walked."""
    scan = file_engine.FilesScan(ScanContext(options, detector, ScanStats(), lambda: False))
    n = 0
    with scan.dirs:
        for batch in file_engine._batches(scan._candidates(), whole=False):
            pickle.loads(pickle.dumps(batch))
            if isinstance(batch, file_engine.ReadFiles):
                n += len(batch.files)
            else:
                n += sum(len(lst.names) for lst in batch.listings)
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--main-only", action="store_true", help="the main process's share alone (no workers)")
    a = ap.parse_args()
    if a.main_only:
        options = ScanOptions(paths=(str(a.tree),), sources=("files",), workers=2)
        detector = make_detector()
        _main_share(options, detector)  # warm the page cache
        best, n = float("inf"), 0
        for _ in range(a.repeat):
            c0 = time.process_time()
            n = _main_share(options, detector)
            best = min(best, time.process_time() - c0)
        print(f"tree {a.tree}: {n} files; main process's share, least CPU of {a.repeat}: {best:.3f} s", end=" ")
        print(f"({best / max(1, n) * 1e6:.2f} us/file); load average {os.getloadavg()[0]:.1f}")
        return 0
    detector = make_detector()
    options = ScanOptions(paths=(str(a.tree),), sources=("files",), workers=a.workers)
    run_scan(options, detector)  # warm the page cache
    runs = []
    for _ in range(a.repeat):
        main0, kids0, wall0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
        result = run_scan(options, detector)
        wall = time.perf_counter() - wall0
        runs.append((_cpu(resource.RUSAGE_SELF) - main0, _cpu(resource.RUSAGE_CHILDREN) - kids0, wall, result))
    main_s, kids_s, wall, result = min(runs, key=lambda r: r[0] + r[1])
    n = max(1, result.stats.files_scanned)
    print(f"tree {a.tree}: {result.stats.files_scanned} files, {len(result.findings)} findings, workers {a.workers}")
    print(f"least CPU of {a.repeat}: main {main_s:.3f} s ({main_s / n * 1e6:.1f} us/file)")
    print(f"  workers {kids_s:.3f} s ({kids_s / n * 1e6:.1f} us/file)")
    print(f"  total {main_s + kids_s:.3f} s ({(main_s + kids_s) / n * 1e6:.1f} us/file), wall {wall:.2f} s")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
