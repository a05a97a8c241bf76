"""A child process's wall time, CPU time and its own peak RSS.

``wait4``'s ``ru_maxrss`` of a child started straight from a large process is at least that process's RSS when it
forked: Linux carries the pre-``exec`` image's high-water mark over into the child's (a 13 MB ``python -c pass``
measures 618 MB from a parent holding 600 MB). A benchmark that builds a fleet in memory and then times the
command in a child would report the parent's size. So the command is started by a small launcher process, whose
own child is measured: that child forks from a few MB only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_LAUNCHER = r"""
import json, os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "peak_rss_kb": usage.ru_maxrss, "exit": os.waitstatus_to_exitcode(status)}))
"""


def timed_child(cmd: list[str], out: Path | None = None) -> dict[str, Any]:
    """Run ``cmd`` (its standard output discarded); its wall seconds, CPU seconds (user + system), peak RSS in MB
    and exit code, the end of its stderr when it failed, and the size of ``out`` when it wrote it."""
    started = time.perf_counter()
    launcher = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], capture_output=True, text=True, check=False)
    if launcher.returncode != 0 or not launcher.stdout.strip():
        raise RuntimeError(f"launcher failed: {launcher.stderr.strip()[-300:]}")
    measured = json.loads(launcher.stdout.strip().splitlines()[-1])
    result: dict[str, Any] = {
        "wall_s": round(measured["wall_s"], 2),
        "cpu_s": round(measured["cpu_s"], 2),
        "peak_rss_mb": round(measured["peak_rss_kb"] / 1024),
        "exit": measured["exit"],
        "launcher_overhead_s": round(time.perf_counter() - started - measured["wall_s"], 2),
    }
    if measured["exit"] not in (0, 1):
        result["error"] = launcher.stderr.strip()[-300:]
    if out is not None and out.exists():
        result["output_bytes"] = out.stat().st_size
    return result
