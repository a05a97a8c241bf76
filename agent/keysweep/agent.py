"""The resident daemon: periodic sweeps with splay, real-time watching, signals, governance, JSON logs.

SIGTERM/SIGINT: the current step stops at the next file (its progress is already in the state), the spool is
flushed, exit 0. SIGHUP: configuration and rules are reloaded; a broken new configuration is logged and the agent
keeps running on the old one.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from keysweep import __version__, textsafe, timeutil
from keysweep.config import AgentConfig, load_config
from keysweep.errors import ExitCode, KeysweepError, describe
from keysweep.governance import CpuPacer, apply_priority
from keysweep.status import write_prometheus, write_status
from keysweep.sweep import Pipeline, SweepResult
from keysweep.watch import WatchCoverage, Watcher, hot_paths

log = logging.getLogger(__name__)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ts, level, event, then the record's ``fields``.

    keysweep's own records name an event (``log.info("sweep.finished", extra={"fields": {...}})``); a plain
    message from a library becomes event = logger name with the text in ``message``.
    """

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        doc: dict[str, Any] = {
            "ts": timeutil.iso(record.created, "milliseconds"),
            "level": record.levelname.lower(),
        }
        if isinstance(fields, dict):
            doc["event"] = str(record.msg)
            doc.update(fields)
        else:
            doc["event"] = record.name
            doc["message"] = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            doc["error"] = describe(exc)
        return textsafe.dumps_json(doc)


def setup_logging(level: str, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)


class Agent:
    def __init__(self, config: AgentConfig, *, config_path: Path | None = None, once: bool = False) -> None:
        self.config = config
        self.config_path = config_path
        self.once = once
        self.pipeline: Pipeline | None = None
        self.watcher: Watcher | None = None
        self._stop = threading.Event()
        self.pacer = self._pacer(config)
        self._reload = threading.Event()
        self._wake = threading.Event()
        self._pipeline_lock = threading.RLock()
        self._last: SweepResult | None = None
        self._next_sweep: float | None = None
        self._agent_errors: dict[str, int] = {}
        self._state = "starting"
        self._final_coverage: WatchCoverage | None = None  # what was watched, kept for the last status

    def _pacer(self, config: AgentConfig) -> CpuPacer:
        r = config.resources
        return CpuPacer(r.max_cpu_percent, max_rss_mb=r.max_rss_mb, sleep=self._stop.wait)

    # --- signals --------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload.set()
        else:
            self._stop.set()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def should_stop(self) -> bool:
        self.pacer.tick()
        return self._stop.is_set()

    # --- pieces ---------------------------------------------------------------------------------------------
    def _start_watch(self) -> None:
        cfg = self.config
        if self.once or not cfg.watch.enabled:
            return
        hot = hot_paths(cfg.watch, host_prefix=cfg.scan.host_prefix)
        self.watcher = Watcher(hot, self._on_watch, debounce=cfg.watch.debounce, max_watches=cfg.watch.max_watches)
        self.watcher.start()

    def _stop_watch(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def _on_watch(self, paths: list[str]) -> None:
        with self._pipeline_lock:
            pipeline = self.pipeline
            if pipeline is None or self._stop.is_set():
                return
            pipeline.scan_paths(paths, should_stop=self._stop.is_set)
            self._write_status()

    def _write_status(self) -> None:
        pipeline = self.pipeline
        last = self._last
        coverage = self.watcher.coverage if self.watcher else (self._final_coverage or WatchCoverage(enabled=False))
        errors = dict(last.errors) if last else {}
        for k, v in self._agent_errors.items():
            errors[k] = errors.get(k, 0) + v
        status: dict[str, Any] = {
            "pid": os.getpid(),
            "version": __version__,
            "state": self._state,
            "config": self.config.source,
            "updated_at": timeutil.iso(time.time()),
            "next_sweep_at": timeutil.iso(self._next_sweep) if self._next_sweep and not self.once else None,
            "last_sweep": last.summary() if last else None,
            "findings": len(last.findings) if last else 0,
            "findings_by_status": dict(last.findings_by_status) if last else {},
            "watch_scans": pipeline.watch_scans if pipeline else 0,
            "spool_depth": pipeline.spool_depth() if pipeline else 0,
            "watch": coverage.to_dict(),
            "errors": errors,
        }
        try:
            write_status(self.config.state_dir, status)
            if self.config.status.prometheus_file:
                write_prometheus(self.config.status.prometheus_file, status)
        except OSError as exc:
            log.error("status.write_failed", extra={"fields": {"error": str(exc)}})

    def _reload_config(self) -> bool:
        """Load the configuration file again; on any error keep the running configuration. Returns True on success."""
        try:
            new = load_config(self.config_path)
            new_pipeline = Pipeline(new)
        except KeysweepError as exc:
            self._agent_errors["config_reload_failed"] = self._agent_errors.get("config_reload_failed", 0) + 1
            log.error(
                "config.reload_failed", extra={"fields": {"error": str(exc), "keeping": "previous configuration"}}
            )
            return False
        self._stop_watch()
        with self._pipeline_lock:
            old, self.pipeline, self.config = self.pipeline, new_pipeline, new
        if old is not None:
            old.close()
        self.pacer = self._pacer(new)
        log.info(
            "config.reloaded",
            extra={
                "fields": {
                    "config": new.source,
                    "rules_digest": new_pipeline.ruleset.digest[:12],
                    "state_invalidated": new_pipeline.file_state.invalidated,
                }
            },
        )
        self._start_watch()
        return True

    def _schedule_next(self, *, after: float | None = None) -> None:
        s = self.config.schedule
        base = time.time() if after is None else after
        self._next_sweep = base + s.interval + random.uniform(0, s.splay)

    def _sweep(self) -> SweepResult:
        assert self.pipeline is not None
        self._state = "sweeping"
        self._write_status()
        self.pacer.reset()
        result = self.pipeline.sweep(
            should_stop=self.should_stop,
            full_reread_every=self.config.schedule.full_reread_every,
            pace=self.pacer.tick,
        )
        self.pacer.sample_memory()
        result.peak_rss = self.pacer.peak_rss
        self._last = result
        self._state = "idle"
        self._write_status()
        return result

    # --- the loop -------------------------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.config
        prio = apply_priority(cfg.resources.nice, cfg.resources.ionice_idle)
        self.pipeline = Pipeline(cfg)
        last = self.pipeline.last_sweep_finished()  # also checks the status file (a bad one is moved aside)
        log.info(
            "agent.started",
            extra={
                "fields": {
                    "pid": os.getpid(),
                    "version": __version__,
                    "config": cfg.source,
                    "state_dir": cfg.state_dir,
                    "nice": prio.nice,
                    "ionice": prio.ionice,
                    "once": self.once,
                    "interval_s": cfg.schedule.interval,
                    "splay_s": cfg.schedule.splay,
                }
            },
        )
        found_any = False
        try:
            self._start_watch()
            if self.once:
                found_any = bool(self._sweep().findings)
                return int(ExitCode.FINDINGS if found_any else ExitCode.CLEAN)
            self._first_schedule(last)
            self._write_status()
            while not self._stop.is_set():
                if self._reload.is_set():
                    self._reload.clear()
                    if self._reload_config() and self.pipeline and self.pipeline.file_state.invalidated:
                        self._next_sweep = time.time()
                    self._write_status()
                    continue
                delay = (self._next_sweep or 0) - time.time()
                if delay > 0:
                    self._wake.wait(min(delay, 60.0))
                    self._wake.clear()
                    continue
                try:
                    result = self._sweep()
                except Exception as exc:  # a bug on one sweep must not end the agent; the next one resumes
                    self._agent_errors["sweep_failed"] = self._agent_errors.get("sweep_failed", 0) + 1
                    log.error("sweep.failed", exc_info=exc, extra={"fields": {"next": "after the interval"}})
                    if isinstance(exc, sqlite3.DatabaseError):  # damaged under us: checked (and rebuilt) on reopen
                        self._reopen_state()
                    self._state = "idle"
                    self._schedule_next()
                    self._write_status()
                    continue
                if not result.interrupted:
                    self._schedule_next()
                self._write_status()
            return int(ExitCode.CLEAN)
        finally:
            self._shutdown()

    def _reopen_state(self) -> None:
        try:
            with self._pipeline_lock:
                if self.pipeline is not None:
                    self.pipeline.reopen_state()
        except Exception as exc:  # noqa: BLE001 - the next sweep tries again
            log.error("state.reopen_failed", exc_info=exc, extra={"fields": {"next": "after the interval"}})

    def _first_schedule(self, last: float | None) -> None:
        """Sweep soon after start when a sweep was interrupted or is overdue; otherwise keep the rhythm."""
        assert self.pipeline is not None
        if self.pipeline.file_state.interrupted() or last is None:
            self._next_sweep = time.time() + (
                0 if self.pipeline.file_state.interrupted() else random.uniform(0, self.config.schedule.splay)
            )
        elif time.time() - last >= self.config.schedule.interval:
            self._next_sweep = time.time() + random.uniform(0, self.config.schedule.splay)
        else:
            self._schedule_next(after=last)

    def _shutdown(self) -> None:
        self._state = "stopping"
        if self._stop.is_set():
            log.info("agent.stopping", extra={"fields": {"reason": "signal"}})
        if self.watcher is not None:
            self._final_coverage = self.watcher.coverage
        self._stop_watch()
        flushed: dict[str, Any] = {}
        if self.pipeline is not None:
            flushed = self.pipeline.flush()
        self._state = "stopped"
        self._write_status()
        if self.pipeline is not None:
            self.pipeline.close()
        log.info("agent.stopped", extra={"fields": flushed})


def run_agent(config_path: str | None, *, once: bool = False) -> int:
    """Entry point of ``keysweep agent``: load the configuration (errors name key and value), then run."""
    path = Path(config_path) if config_path else None
    config = load_config(path)
    setup_logging(config.logging.level)
    agent = Agent(config, config_path=path, once=once)
    agent.install_signal_handlers()
    return agent.run()
