"""Where the files engine's CPU goes: the main process (walk, batches, answers) against the workers (open, read,
detect), per file, for a stateless scan of a tree.

    python bench/engine_split.py TREE [--workers 2] [--repeat 5] [--main-only | --in-child]

Runs the files source (``run_scan``, sources=files, no file cache) in this process ``--repeat`` times after one
untimed run (warm page cache) and prints the run with the least CPU: the main process's CPU-seconds (``getrusage``
of this process) and the workers' (of its reaped children), each in microseconds per file scanned. ``--workers 1``
reads in this process (then everything is the main process's); the start-up (imports, rules) is not counted. Beside
each side's CPU: its minor page faults (copy-on-write after the fork among them) and context switches (voluntary:
it waited on a pipe; involuntary: it was preempted). The machine's load average is printed beside: CPU-seconds move
less with it than wall time, but they do move. ``--in-child`` runs each scan in a forked child of this process (the
child then forks the workers, if any): with ``--workers 1``, what being a fork child costs a scan by itself.
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


def _usage(who: int) -> tuple[float, int, int, int]:
    """CPU-seconds (user + system), minor faults, voluntary and involuntary context switches."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime, r.ru_minflt, r.ru_nvcsw, r.ru_nivcsw


def _since(before: tuple[float, int, int, int], who: int) -> tuple[float, int, int, int]:
    now = _usage(who)
    return now[0] - before[0], now[1] - before[1], now[2] - before[2], now[3] - before[3]


def _scan_in_child(options: ScanOptions, detector: Detector) -> int:
    """One scan in a forked child (its CPU is then this process's children's); the files it scanned."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, str(run_scan(options, detector).stats.files_scanned).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        n = int(f.read() or 0)
    os.waitpid(pid, 0)
    return n


def _line(who: str, u: tuple[float, int, int, int], n: int) -> str:
    cpu, faults, vol, invol = u
    return (
        f"{who} {cpu:.3f} s ({cpu / n * 1e6:.1f} us/file); minor faults {faults}, "
        f"context switches {vol} voluntary / {invol} involuntary"
    )


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
    ap.add_argument("--in-child", action="store_true", help="each scan in a forked child of this process")
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
        main0, kids0, wall0 = _usage(resource.RUSAGE_SELF), _usage(resource.RUSAGE_CHILDREN), time.perf_counter()
        if a.in_child:
            files, findings = _scan_in_child(options, detector), None
        else:
            result = run_scan(options, detector)
            files, findings = result.stats.files_scanned, len(result.findings)
        wall = time.perf_counter() - wall0
        runs.append(
            (_since(main0, resource.RUSAGE_SELF), _since(kids0, resource.RUSAGE_CHILDREN), wall, files, findings)
        )
    main_u, kids_u, wall, files, findings = min(runs, key=lambda r: r[0][0] + r[1][0])
    n = max(1, files)
    found = "" if findings is None else f", {findings} findings"
    print(f"tree {a.tree}: {files} files{found}, workers {a.workers}")
    print(f"least CPU of {a.repeat}: {_line('main', main_u, n)}")
    print(f"  {_line('forked child and its workers' if a.in_child else 'workers', kids_u, n)}")
    total = main_u[0] + kids_u[0]
    print(f"  total {total:.3f} s ({total / n * 1e6:.1f} us/file), wall {wall:.2f} s")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
