"""Incremental state on a tree of many small files: what ``--state-dir`` costs and what it saves.

    python bench/incremental.py [--files 100000] [--tree DIR] [--workers 0] [--repeat 3]

Four runs of the real CLI (``python -m keysweep scan``), each a fresh process, on the same tree with a warm page
cache: a stateless scan, a first sweep with an empty ``--state-dir``, and a re-sweep of the unchanged tree with that
state (twice: a stateless scan, then the re-sweep, ``--repeat`` rounds; each figure is the median). Reported per
run: wall seconds, CPU seconds (the process and its workers) and peak RSS (the largest process). Targets (issue
14): first stateful sweep <= 1.2x the stateless scan; re-sweep of the unchanged tree >= 10x faster than the
stateless scan.

``--in-process`` measures the re-sweep inside this process instead (start-up left out; least CPU of ``--repeat``
runs after a first sweep and one untimed re-sweep), beside what it is made of and the floors below it: the walk
alone (every directory opened, verified and listed), the walk with an ``lstat`` of every file (what a re-sweep by
this design cannot do without: a file rewritten in place changes only its own inode), and plain Python (an
``os.scandir`` walk by path with an ``lstat`` of every entry; an ``lstat`` of every file relative to its
directory's fd, nothing else).

Without ``--tree`` a host-like tree of ``--files`` small files is generated (nested package-like directories of
~4-40 files, sizes log-normal around 2 KiB, a few planted key pairs) under bench/out/, kept for the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_WORDS = (
    "lib site-packages node_modules src test util core api model view config data cache log doc "
    "share include bin etc var opt app service handler client server common internal"
).split()
_PAIR = "AWS_ACCESS_KEY_ID=AKIAXYZDQCEN4B6JSJQI\nAWS_SECRET_ACCESS_KEY=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\n"


def generate(root: Path, files: int, seed: int = 1) -> int:
    """``files`` small files in nested directories (a package tree's shape); returns the bytes written."""
    rng = random.Random(seed)
    text = "".join(
        f"{rng.choice(_WORDS)} = {rng.getrandbits(40):x}  # {rng.choice(_WORDS)}\n" for _ in range(4000)
    ).encode()
    written = 0
    made = 0
    dirs = 0
    while made < files:
        depth = rng.randint(2, 6)
        d = root.joinpath(*(f"{rng.choice(_WORDS)}{rng.randrange(40)}" for _ in range(depth)))
        d.mkdir(parents=True, exist_ok=True)
        dirs += 1
        for _ in range(min(files - made, rng.randint(4, 40))):
            size = max(32, min(int(rng.lognormvariate(7.6, 1.0)), 256 * 1024))
            start = rng.randrange(0, len(text) - 1)
            body = (text[start:] + text)[:size]
            if made % 20000 == 7:
                body += _PAIR.encode()
            (d / f"m{made:06d}.{rng.choice(('py', 'js', 'json', 'txt', 'cfg'))}").write_bytes(body)
            written += len(body)
            made += 1
    return written


def run(cmd: list[str]) -> dict[str, Any]:
    """Wall seconds, CPU seconds of the process and the workers it waited for, and its peak RSS (MB)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)}: exit {code}")
    summary = json.loads(out)["summary"]
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "scan_s": summary["duration_seconds"],
        "files_scanned": summary["files_scanned"],
        "files_cached": summary.get("files_cached", 0),
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(runs[-1])
    for k in ("wall_s", "cpu_s", "peak_rss_mb", "scan_s"):
        out[k] = statistics.median(r[k] for r in runs)
    return out


def _least_cpu(fn: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        c0 = time.process_time()
        fn()
        best = min(best, time.process_time() - c0)
    return best


def in_process(tree: Path, workers: int, repeat: int) -> None:
    """The re-sweep of an unchanged tree in this process, its parts and the floors (CPU-seconds, least of
    ``repeat``)."""
    sys.path.insert(0, str(HERE.parent))
    from keysweep.scan import ScanOptions, ScanStats, run_scan
    from keysweep.sources import filesystem
    from keysweep.sources.file_engine import _all_markers
    from keysweep.state import StateStore

    from tests.support.hosttree import make_detector

    options = ScanOptions(paths=(str(tree),), sources=("files",), workers=workers)
    detector = make_detector()
    work = Path(tempfile.mkdtemp(prefix="keysweep-incremental-"))
    cached: list[int] = []

    def sweep() -> None:
        with StateStore(work / "state", digest="bench") as store:
            plan = store.begin_sweep(1_000_000)
            result = run_scan(options, detector, file_cache=store)
            store.finish_sweep(plan, completed=True)
        cached.append(result.stats.files_cached)

    def walk(lstat_files: bool) -> None:
        with filesystem.DirCache() as dirs:
            for item in filesystem.iter_listings(options, ScanStats(), dirs=dirs):
                if lstat_files and isinstance(item, filesystem.Listing):
                    _all_markers(item, dirs)

    by_dir: dict[str, list[str]] = {}
    for dirpath, _dirs, names in os.walk(tree):
        by_dir[dirpath] = names

    def plain_walk() -> None:
        stack = [str(tree)]
        while stack:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    else:
                        e.stat(follow_symlinks=False)

    def plain_lstat() -> None:
        for d, names in by_dir.items():
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for name in names:
                    os.stat(name, dir_fd=fd, follow_symlinks=False)
            finally:
                os.close(fd)

    try:
        sweep()  # the first sweep, then one untimed re-sweep (warm)
        sweep()
        figures = [
            ("re-sweep, unchanged (run_scan)", _least_cpu(sweep, repeat)),
            ("  its walk alone (iter_listings)", _least_cpu(lambda: walk(False), repeat)),
            ("  its walk + lstat of every file", _least_cpu(lambda: walk(True), repeat)),
            ("plain Python: scandir walk + lstat", _least_cpu(plain_walk, repeat)),
            ("plain Python: lstat by dir fd only", _least_cpu(plain_lstat, repeat)),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    files = sum(len(n) for n in by_dir.values())
    print(
        f"{tree}: {files} files, {len(by_dir)} directories; in this process, least CPU of {repeat}; "
        f"load average {os.getloadavg()[0]:.1f}; {cached[-1]} files from the state"
    )
    for label, cpu in figures:
        print(f"{label:36s} {cpu:6.3f} CPU-s  {cpu / files * 1e6:5.2f} us/file")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--tree", type=Path, help="an existing tree to scan (default: generated under bench/out/)")
    ap.add_argument("--workers", type=int, default=0, help="keysweep --workers (0: one per CPU)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--in-process", action="store_true", help="the re-sweep in this process, its parts and floors")
    args = ap.parse_args()

    tree = args.tree or HERE / "out" / f"small-{args.files}f"
    if args.tree is None and not (tree / ".complete").exists():
        shutil.rmtree(tree, ignore_errors=True)
        t0 = time.monotonic()
        size = generate(tree, args.files)
        (tree / ".complete").write_text("")
        print(f"generated {tree}: {args.files} files, {size / 1048576:.0f} MiB in {time.monotonic() - t0:.0f}s")
    if args.in_process:
        in_process(tree, args.workers or os.cpu_count() or 1, args.repeat)
        return
    base = [sys.executable, "-m", "keysweep", "scan", str(tree), "--format", "json", "--workers", str(args.workers)]
    work = Path(tempfile.mkdtemp(prefix="keysweep-incremental-"))
    load_before = os.getloadavg()[0]
    try:
        run(base)  # warm the page cache
        stateless, first, again = [], [], []
        for i in range(args.repeat):
            state = work / f"state{i}"
            stateless.append(run(base))
            first.append(run([*base, "--state-dir", str(state)]))
            again.append(run([*base, "--state-dir", str(state)]))
        s, f, a = _median(stateless), _median(first), _median(again)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{args.repeat} rounds, medians; wall and CPU of the whole process (start-up included), scan: the scan's "
        f"own duration (summary.duration_seconds); load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} "
        "after (the other processes of the machine: wall times follow it, CPU-seconds much less)"
    )
    for name, r in (("stateless scan", s), ("first stateful sweep", f), ("re-sweep, unchanged", a)):
        print(
            f"{name:22s} wall {r['wall_s']:6.2f} s  cpu {r['cpu_s']:6.2f} s  scan {r['scan_s']:6.2f} s  "
            f"peak RSS {r['peak_rss_mb']:5.1f} MB  read {r['files_scanned']}, from state {r['files_cached']}"
        )
    print(
        f"first stateful sweep / stateless: {f['wall_s'] / s['wall_s']:.2f}x wall, "
        f"{f['cpu_s'] / s['cpu_s']:.2f}x cpu, {f['scan_s'] / s['scan_s']:.2f}x scan [target <= 1.2x]"
    )
    print(
        f"stateless / re-sweep: {s['wall_s'] / a['wall_s']:.1f}x wall, {s['cpu_s'] / a['cpu_s']:.1f}x cpu, "
        f"{s['scan_s'] / a['scan_s']:.1f}x scan [target >= 10x]"
    )


if __name__ == "__main__":
    main()
