"""The agent's status: written after every sweep (and watch change) as JSON in the state directory, rendered
as text or JSON by ``keysweep status``, and optionally as a Prometheus textfile-collector file for node_exporter."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from keysweep import statedir, textsafe, timeutil
from keysweep.atomicfile import atomic_write
from keysweep.sources.names import readable

STATUS_FILE = "status.json"


def write_status(state_dir: str | Path, status: Mapping[str, Any]) -> None:
    data = textsafe.dumps_json(status, indent=1, sort_keys=True) + "\n"
    atomic_write(Path(state_dir) / STATUS_FILE, data.encode(), mode=0o600)


def _valid(doc: Any) -> dict[str, Any]:
    statedir.require(isinstance(doc, dict), "not an object")
    for key, kind in (("last_sweep", dict), ("errors", dict), ("watch", dict), ("findings_by_status", dict)):
        statedir.require(doc.get(key) is None or isinstance(doc[key], kind), f"{key}: not an object")
    return dict(doc)


def read_status(state_dir: str | Path, *, quarantine: bool = False) -> dict[str, Any] | None:
    """The status file; None when there is none. A bad one reads as ``status_file_unreadable`` — or, for the agent
    that owns it (``quarantine``), is moved aside to be rewritten."""
    path = Path(state_dir) / STATUS_FILE
    if quarantine:
        return statedir.load_json(path.parent, path, _valid)
    try:
        return _valid(json.loads(statedir.read_file(path, viewer=True)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, statedir.CorruptStateFile):
        return {"errors": {"status_file_unreadable": 1}}


def health_problems(status: Mapping[str, Any] | None, *, now: float, max_overdue: float) -> list[str]:
    """Why the agent that wrote ``status`` looks unhealthy (empty when it looks healthy): no status, its process
    gone, or its next sweep overdue by more than ``max_overdue`` seconds while it is not sweeping."""
    if status is None:
        return ["no status written yet"]
    if "status_file_unreadable" in (status.get("errors") or {}):
        return ["status file unreadable"]
    problems = []
    pid = status.get("pid")
    if not isinstance(pid, int) or not psutil.pid_exists(pid):
        problems.append(f"agent process {pid} is not running")
    due = status.get("next_sweep_at")
    if due and status.get("state") != "sweeping":
        overdue = now - timeutil.parse(due).timestamp()
        if overdue > max_overdue:
            problems.append(f"next sweep was due at {due}, {overdue:.0f} s ago")
    return problems


def render_text(status: Mapping[str, Any]) -> str:
    sweep = status.get("last_sweep") or {}
    watch = status.get("watch") or {}
    lines = [
        f"agent:            pid {status.get('pid', '-')}, version {status.get('version', '-')}, "
        f"state {status.get('state', '-')}, updated {status.get('updated_at', '-')}",
    ]
    if sweep:
        lines += [
            f"last sweep:       #{sweep.get('number')} finished {sweep.get('finished_at')} "
            f"in {sweep.get('duration_s', 0):.2f}s{' (interrupted)' if sweep.get('interrupted') else ''}"
            f"{' (full re-read)' if sweep.get('full_reread') else ''}",
            f"scanned:          {sweep.get('files_scanned', 0)} files, {sweep.get('bytes_scanned', 0)} bytes read, "
            f"{sweep.get('files_cached', 0)} unchanged files from state",
        ]
    else:
        lines.append("last sweep:       none yet")
    if status.get("next_sweep_at"):
        lines.append(f"next sweep:       {status['next_sweep_at']}")
    by_status = status.get("findings_by_status") or {}
    summary = ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())) or "none"
    lines.append(f"findings:         {status.get('findings', 0)} ({summary})")
    lines.append(f"spool depth:      {status.get('spool_depth', 0)}")
    if watch:
        lines.append(
            f"watch:            {'on' if watch.get('enabled') else 'off'}, {len(watch.get('watched', []))} paths "
            f"watched, {len(watch.get('unwatched', []))} left to the periodic sweep"
        )
        for item in watch.get("unwatched", []):
            lines.append(f"  not watched:    {item.get('path')} ({item.get('reason')})")
    errors = status.get("errors") or {}
    lines.append("errors:           " + (", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none"))
    return "\n".join(lines) + "\n"


def _escape(value: object) -> str:
    return readable(str(value)).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# (metric, help, type, field of the last sweep's status)
_SWEEP_METRICS = (
    ("last_sweep_timestamp_seconds", "Unix time the last sweep finished.", "gauge", "finished_ts"),
    ("last_sweep_duration_seconds", "Duration of the last sweep.", "gauge", "duration_s"),
    ("last_sweep_files_scanned", "Files read by the last sweep.", "gauge", "files_scanned"),
    ("last_sweep_files_cached", "Unchanged files answered from state by the last sweep.", "gauge", "files_cached"),
    ("last_sweep_bytes_scanned", "Bytes read by the last sweep.", "gauge", "bytes_scanned"),
    ("sweeps_total", "Sweeps run by this state directory.", "counter", "number"),
)


def render_prometheus(status: Mapping[str, Any]) -> str:
    """The node_exporter textfile format (``keysweep_*`` metrics)."""
    sweep = status.get("last_sweep") or {}
    watch = status.get("watch") or {}
    out: list[str] = []

    def metric(name: str, help_text: str, kind: str, samples: list[tuple[Mapping[str, object], float]]) -> None:
        out.append(f"# HELP keysweep_{name} {help_text}")
        out.append(f"# TYPE keysweep_{name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            out.append(f"keysweep_{name}{{{lab}}} {value}" if lab else f"keysweep_{name} {value}")

    for name, help_text, kind, field in _SWEEP_METRICS:
        metric(name, help_text, kind, [({}, float(sweep.get(field, 0)))])
    by_status = status.get("findings_by_status") or {}
    metric(
        "findings",
        "Findings of the last sweep by verification status.",
        "gauge",
        [({"status": k}, float(v)) for k, v in sorted(by_status.items())] or [({"status": "none"}, 0.0)],
    )
    metric("spool_depth", "Messages waiting in the spool.", "gauge", [({}, float(status.get("spool_depth", 0)))])
    metric(
        "watch_paths",
        "Hot paths by watch state.",
        "gauge",
        [
            ({"state": "watched"}, float(len(watch.get("watched", [])))),
            ({"state": "unwatched"}, float(len(watch.get("unwatched", [])))),
        ],
    )
    errors = status.get("errors") or {}
    metric(
        "errors",
        "Errors of the last sweep by reason.",
        "gauge",
        [({"reason": k}, float(v)) for k, v in sorted(errors.items())] or [({"reason": "none"}, 0.0)],
    )
    return "\n".join(out) + "\n"


def write_prometheus(path: str | Path, status: Mapping[str, Any]) -> None:
    atomic_write(Path(path), render_prometheus(status).encode(), mode=0o644)
