"""keysweep's scan benchmark against ripgrep 14 and plain Python, in the same run, on a host-like tree.

    python bench/run.py [--quick | --size-mb 1024 --files 100000] [--seed 1] [--workers 0] [--repeat 3]

The tree is bench/corpus.py's (generated once, kept in bench/out/). The page cache is warmed first (one untimed
pass of each tool); then the tools take turns for ``--repeat`` rounds (so a neighbour's load hits them alike) and
each figure is the median of its runs. For each tool: wall seconds, CPU-seconds (user + system of the process and
the children it reaped, from ``getrusage``), CPU-seconds per GB read, peak RSS (the largest process, from
``wait4``; for keysweep also sampled over its whole process tree), and the CPU spent per file: the CPU-seconds
beyond a run on an empty directory (start-up: interpreter, imports, rules) divided by the files, over the whole
tree and over its ``node_modules`` trees (small files only). ripgrep is the PyPI wheel of ripgrep 14 (the
``bench`` extra: ``pip install -e '.[bench]'``), found beside this Python first, then on PATH. Results go to
bench/out/results.json.

Targets: keysweep >= 0.5x ripgrep's speed (wall, same run), peak RSS < 80 MB, recall 100 % on the planted pairs,
0 decoys reported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench import corpus  # noqa: E402
from tests.support.hosttree import FINGERPRINT_KEY, finding_identity  # noqa: E402

RG_PATTERN = r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}"
RG_MAJOR = "14"


class _MemoryWatch(threading.Thread):
    """Peak RSS of the largest process and peak PSS/RSS summed over a process and its children."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss_process = 0
        self.peak_rss_tree = 0
        self.peak_pss_tree = 0
        self.done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        tick = 0
        procs = [root]
        while not self.done.is_set():
            # RSS (statm) is cheap; PSS reads smaps, which takes the memory-map lock the workers' page faults
            # need: sampled rarely so the measurement does not slow what it measures. Finding the children
            # scans every process on the host (~1 ms): done every 50 ms, not at each 10 ms sample
            full = tick % 25 == 0
            if tick % 5 == 0:
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    pass
            tick += 1
            try:
                rss = pss = 0
                for p in procs:
                    try:
                        info = p.memory_full_info() if full else p.memory_info()
                    except psutil.Error:
                        continue
                    rss += info.rss
                    pss += getattr(info, "pss", 0)
                    self.peak_rss_process = max(self.peak_rss_process, info.rss)
                self.peak_rss_tree = max(self.peak_rss_tree, rss)
                self.peak_pss_tree = max(self.peak_pss_tree, pss)
            except psutil.Error:
                pass
            self.done.wait(0.01)


def _timed(cmd: list[str], *, watch: bool = False, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``: wall seconds, CPU-seconds (it and its reaped children), peak RSS of its largest process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO)
        mem = _MemoryWatch(proc.pid) if watch else None
        if mem is not None:
            mem.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.seek(0)
        err.seek(0)
        res: dict[str, Any] = {
            "seconds": seconds,
            "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "returncode": proc.returncode,
            "stdout": out.read(),
            "stderr": err.read(),
        }
    if mem is not None:
        mem.done.set()
        mem.join()
        res.update(peak_rss_tree_mb=mem.peak_rss_tree / 2**20, peak_pss_tree_mb=mem.peak_pss_tree / 2**20)
    return res


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    mid = dict(sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2])
    mid["all_seconds"] = [round(r["seconds"], 3) for r in runs]
    for k in ("peak_rss_mb", "peak_rss_tree_mb", "peak_pss_tree_mb"):
        if k in mid:
            mid[k] = max(r[k] for r in runs)
    mid["seconds"] = statistics.median(r["seconds"] for r in runs)
    mid["cpu_seconds"] = statistics.median(r["cpu_seconds"] for r in runs)
    return mid


def _interleaved(cmds: dict[str, tuple[list[str], dict[str, Any]]], repeat: int) -> dict[str, dict[str, Any]]:
    """Each round runs every command once; the median per command."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cmds}
    for _ in range(repeat):
        for name, (cmd, kw) in cmds.items():
            runs[name].append(_timed(cmd, **kw))
    return {name: _median(r) for name, r in runs.items()}


def _tree_size(*roots: Path) -> tuple[int, int]:
    size = files = 0
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for n in names:
                size += os.lstat(os.path.join(dirpath, n)).st_size
                files += 1
    return size, files


def find_rg() -> str | None:
    """ripgrep from the ``bench`` extra's wheel (beside this Python), else from PATH."""
    beside = Path(sys.executable).parent / "rg"
    return str(beside) if beside.exists() else shutil.which("rg")


def _rg_version(rg: str) -> str:
    out = subprocess.run([rg, "--version"], capture_output=True, text=True, check=False).stdout
    return out.split("\n", 1)[0].strip()


def _compile_bytecode() -> None:
    """keysweep as it is installed: pip, the deb/rpm and the image compile its bytecode at install. A checkout run
    with PYTHONDONTWRITEBYTECODE set (or from a read-only tree) would otherwise compile every module from source in
    every run: ~0.1 CPU-s of serial start-up that no installation pays."""
    import compileall

    import keysweep

    compileall.compile_dir(Path(keysweep.__file__).parent, quiet=1)


def _figures(run: dict[str, Any], empty: dict[str, Any], size: int, files: int) -> dict[str, Any]:
    beyond_startup = max(0.0, run["cpu_seconds"] - empty["cpu_seconds"])
    return {
        "seconds": round(run["seconds"], 3),
        "all_seconds": run["all_seconds"],
        "cpu_seconds": round(run["cpu_seconds"], 3),
        "cpu_seconds_per_gb": round(run["cpu_seconds"] / (size / 1e9), 3),
        "mb_per_s": round(size / run["seconds"] / 1e6, 1),
        "peak_rss_mb": round(run["peak_rss_mb"], 1),
        "startup_cpu_seconds": round(empty["cpu_seconds"], 3),
        "cpu_us_per_file": round(beyond_startup / files * 1e6, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument(
        "--quick", action="store_true", help=f"the quick tree: {corpus.QUICK[0]} MB, {corpus.QUICK[1]} files"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0, help="keysweep --workers (0: one per CPU)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    size_mb, nfiles_param = corpus.QUICK if a.quick else (a.size_mb, a.files)

    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    root = corpus.default_out(size_mb, nfiles_param, a.seed)
    t0 = time.perf_counter()
    manifest = corpus.ensure(root, size_mb=size_mb, files=nfiles_param, seed=a.seed)
    print(f"corpus: {root} ({time.perf_counter() - t0:.1f} s to prepare)", file=sys.stderr)
    size, nfiles = _tree_size(root)
    small = sorted(root.glob("srv/*/node_modules"))
    small_size, small_files = _tree_size(*small)
    empty = out_dir / "empty"
    empty.mkdir(exist_ok=True)

    rg = find_rg()
    if rg is None:
        print("rg not found: pip install -e '.[bench]' (ripgrep 14 from its wheel)", file=sys.stderr)
        return 2
    rg_version = _rg_version(rg)
    if not rg_version.startswith(f"ripgrep {RG_MAJOR}."):
        print(f"{rg} is {rg_version!r}, not ripgrep {RG_MAJOR} (pip install -e '.[bench]')", file=sys.stderr)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYSWEEP_"))}
    env["KEYSWEEP_FINGERPRINT_KEY"] = FINGERPRINT_KEY
    findings_file = out_dir / "keysweep-findings.json"

    def ks(*paths: Path, output: Path = findings_file) -> list[str]:
        return [
            sys.executable,
            "-m",
            "keysweep",
            "scan",
            *map(str, paths),
            "--format",
            "json",
            "--output",
            str(output),
            "--workers",
            str(a.workers),
        ]

    def rg_cmd(*paths: Path) -> list[str]:
        return [rg, "-uuu", "-a", "-c", "--no-messages", "-e", RG_PATTERN, *map(str, paths)]

    scratch = out_dir / "keysweep-scratch.json"
    ks_env = {"env": env}
    cmds: dict[str, tuple[list[str], dict[str, Any]]] = {
        "keysweep": (ks(root), {"watch": True, "env": env}),
        "rg": (rg_cmd(root), {}),
        "python": ([sys.executable, str(HERE / "baseline.py"), str(root)], {}),
        "keysweep-small": (ks(*small, output=scratch), ks_env),
        "rg-small": (rg_cmd(*small), {}),
        "keysweep-empty": (ks(empty, output=scratch), ks_env),
        "rg-empty": (rg_cmd(empty), {}),
        "python-empty": ([sys.executable, str(HERE / "baseline.py"), str(empty)], {}),
    }
    _compile_bytecode()
    for cmd, kw in cmds.values():  # warm the page cache
        _timed(cmd, **kw)
    timed = _interleaved(cmds, a.repeat)
    ks_run = timed["keysweep"]
    if ks_run["returncode"] not in (0, 1):
        print(ks_run["stderr"].decode(errors="replace"), file=sys.stderr)
        return 2
    doc = json.loads(findings_file.read_text())
    summary = doc["summary"]

    results: dict[str, Any] = {
        "corpus": {
            "path": str(root),
            "bytes": size,
            "files": nfiles,
            "small_files_subtrees": {"paths": [str(p) for p in small], "bytes": small_size, "files": small_files},
            "seed": a.seed,
            "planted": len(manifest["planted"]),  # type: ignore[arg-type]
            "decoys": len(manifest["decoys"]),  # type: ignore[arg-type]
        },
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "page_cache": "warm",
        "ripgrep_version": rg_version,
    }
    ks_fig = _figures(ks_run, timed["keysweep-empty"], size, nfiles)
    ks_fig.update(
        command=" ".join(cmds["keysweep"][0]),
        peak_rss_sum_process_tree_mb=round(ks_run["peak_rss_tree_mb"], 1),
        peak_pss_process_tree_mb=round(ks_run["peak_pss_tree_mb"], 1),
        small_files_cpu_us_per_file=_figures(timed["keysweep-small"], timed["keysweep-empty"], small_size, small_files)[
            "cpu_us_per_file"
        ],
        files_scanned=summary["files_scanned"],
        bytes_scanned=summary["bytes_scanned"],
        archives_scanned=summary["archives_scanned"],
        archive_members_scanned=summary["archive_members_scanned"],
        skipped=summary["skipped"],
        errors=summary["errors"],
    )
    rg_fig = _figures(timed["rg"], timed["rg-empty"], size, nfiles)
    rg_fig.update(
        command=" ".join(cmds["rg"][0]),
        small_files_cpu_us_per_file=_figures(timed["rg-small"], timed["rg-empty"], small_size, small_files)[
            "cpu_us_per_file"
        ],
    )
    py_fig = _figures(timed["python"], timed["python-empty"], size, nfiles)
    py_fig["command"] = " ".join(cmds["python"][0])
    results.update(keysweep=ks_fig, ripgrep=rg_fig, python_baseline=py_fig)

    expected = {(p["kind"], p["path"], p["member"], p["key_id"], p["has_secret"]) for p in manifest["planted"]}  # type: ignore[index, union-attr]
    got = {finding_identity(root, f) for f in doc["findings"]}
    decoy_ids = set(manifest["decoys"])  # type: ignore[arg-type]
    found_ids = {f["key_id"] for f in doc["findings"]}
    results["accuracy"] = {
        "planted": len(expected),
        "found": len(expected & got),
        "recall": round(len(expected & got) / len(expected), 4),
        "missing": sorted(map(list, expected - got))[:20],  # type: ignore[arg-type]
        "decoys_reported": sorted(found_ids & decoy_ids),
        "unexpected_findings": sorted(map(list, got - expected))[:20],  # type: ignore[arg-type]
    }
    ratios = {
        "wall_vs_ripgrep": round(timed["rg"]["seconds"] / ks_run["seconds"], 3),
        "cpu_vs_ripgrep": round(timed["rg"]["cpu_seconds"] / ks_run["cpu_seconds"], 3),
        "wall_vs_python_baseline": round(timed["python"]["seconds"] / ks_run["seconds"], 3),
    }
    results["ratio"] = ratios
    results["targets"] = {
        "half_of_ripgrep": ratios["wall_vs_ripgrep"] >= 0.5,
        "peak_rss_under_80mb": ks_fig["peak_rss_mb"] < 80,
        "recall_100": results["accuracy"]["recall"] == 1.0,
        "zero_decoys": not results["accuracy"]["decoys_reported"] and not results["accuracy"]["unexpected_findings"],
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0 if all(results["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
