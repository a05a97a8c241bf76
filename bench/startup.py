"""keysweep's start-up CPU: interleaved runs of one command under several ``PYTHONPATH``\\ s.

    python bench/startup.py [--runs 10] [--label=PATH ...] [-- scan DIR --format json]

Each variant is a label and a ``PYTHONPATH`` (``-`` for this checkout as installed), e.g. an export of another
commit: ``git archive main | tar -x -C /tmp/before && ln -s /tmp/before/rules /tmp/before/agent/keysweep/rules``.
The variants take turns (so a neighbour's load hits them alike) after one untimed warm-up round; each figure is
the user + system CPU of the process and the children it reaped (``wait4``), and its wall time. The default
command scans an empty directory: everything keysweep does before it reads a file. Bytecode is as the variants
have it (``python -m compileall -q DIR`` to compile it, as an installation does).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> int:
    argv = sys.argv[1:]
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("variants", nargs="*", metavar="LABEL=PYTHONPATH", help="default: this=- (this checkout)")
    a = ap.parse_args(argv)
    variants = [v.split("=", 1) for v in a.variants] or [["this", "-"]]
    with tempfile.TemporaryDirectory() as empty:
        command = command or ["scan", empty, "--format", "json"]
        cpu: dict[str, list[float]] = {label: [] for label, _ in variants}
        wall: dict[str, list[float]] = {label: [] for label, _ in variants}
        for round_ in range(a.runs + 1):
            for label, path in variants:
                env = dict(os.environ)
                if path != "-":
                    env["PYTHONPATH"] = path
                started = time.perf_counter()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "keysweep", *command],
                    env=env,
                    cwd=tempfile.gettempdir(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                _, _, usage = os.wait4(proc.pid, 0)
                if round_:  # the first round warms the page cache
                    cpu[label].append(usage.ru_utime + usage.ru_stime)
                    wall[label].append(time.perf_counter() - started)
    print(f"keysweep {' '.join(command)}: {a.runs} interleaved runs, load average {os.getloadavg()[0]:.1f}")
    for label, xs in cpu.items():
        print(
            f"{label:>12}  CPU-s best {min(xs):.3f} mean {statistics.mean(xs):.3f} median {statistics.median(xs):.3f}"
            f"  wall best {min(wall[label]):.3f} s mean {statistics.mean(wall[label]):.3f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
