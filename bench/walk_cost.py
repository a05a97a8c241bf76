"""What one version of keysweep's files walk costs next to another: wall and CPU seconds of `keysweep scan`.

    python bench/walk_cost.py --before /path/to/old/agent [--after /path/to/new/agent] [--size-mb 256]
        [--files 25000] [--repeat 5]

Generates a tree with bench/corpus.py (kept in bench/out/), then runs `keysweep scan TREE` with this checkout's
code and with the code under ``--before`` (put first on PYTHONPATH; e.g. an export of an older commit:
``git archive COMMIT | tar -x -C /tmp/old``, then ``--before /tmp/old/agent``), taking turns, in three modes:
one process, two workers sharing the walk, and ``--state-dir`` (a fresh state each run: the main process walks
and sends batches of files). Each figure is the median of ``--repeat`` runs, after one untimed run each (warm page
cache). CPU is user + system time of the scan and its worker processes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench import corpus  # noqa: E402
from tests.support.hosttree import FINGERPRINT_KEY  # noqa: E402

MODES = {"workers-1": ["--workers", "1"], "workers-2": ["--workers", "2"], "state-dir": ["--workers", "2", "STATE"]}


def _run(tree: Path, mode: list[str], pythonpath: str | None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and findings of one scan."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYSWEEP_"))}
    env["KEYSWEEP_FINGERPRINT_KEY"] = FINGERPRINT_KEY
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    with tempfile.TemporaryDirectory() as state:
        args = [a if a != "STATE" else "--state-dir" for a in mode] + ([state] if "STATE" in mode else [])
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "keysweep", "scan", str(tree), "--format", "json", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
        )
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"scan failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, len(json.loads(proc.stdout)["findings"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="the older code's package directory (its 'agent' folder)")
    ap.add_argument("--after", help="the newer code's package directory (default: this checkout)")
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--files", type=int, default=25_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    tree = HERE / "out" / f"walk-tree-{args.size_mb}mb-{args.files}"
    tree.parent.mkdir(parents=True, exist_ok=True)
    corpus.ensure(tree, size_mb=args.size_mb, files=args.files, seed=args.seed)
    versions = {"before": args.before, "after": args.after}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for mode, flags in MODES.items():
        runs: dict[str, list[tuple[float, float, int]]] = {v: [] for v in versions}
        for pp in versions.values():
            _run(tree, flags, pp)  # warm-up, untimed
        for _ in range(args.repeat):
            for v, pp in versions.items():
                runs[v].append(_run(tree, flags, pp))
        for v, rs in runs.items():
            results.setdefault(mode, {})[v] = {
                "wall_s": round(statistics.median(r[0] for r in rs), 3),
                "cpu_s": round(statistics.median(r[1] for r in rs), 3),
                "findings": rs[0][2],
            }
        b, a = results[mode]["before"], results[mode]["after"]
        print(
            f"{mode:10s} before wall {b['wall_s']:.2f}s cpu {b['cpu_s']:.2f}s | after wall {a['wall_s']:.2f}s "
            f"cpu {a['cpu_s']:.2f}s | findings {b['findings']} / {a['findings']}",
            flush=True,
        )
    out = HERE / "out" / "walk_cost.json"
    out.write_text(json.dumps({"tree": str(tree), "repeat": args.repeat, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
