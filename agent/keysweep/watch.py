"""Real-time watching of the hot paths where keys land (inotify through watchdog), debounced.

Hot paths: every home directory's ``.aws/`` and shell rc/history files, ``/etc/environment``,
``/etc/systemd/system``, ``/etc/profile.d`` and the configured application paths. A file is watched through its
directory (filtered to the file's name); a path that does not exist yet is watched through its nearest existing
parent until it appears. The inotify watch budget (``watch.max_watches`` and the kernel's
``fs.inotify.max_user_watches``) is respected: what cannot be watched is left to the periodic sweep and listed in the
coverage (status and log).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from keysweep.config import WatchConfig
from keysweep.sources.aws_files import home_files

log = logging.getLogger(__name__)

# watchdog warns each time a recursive watch meets a directory it already watches, quoting every watched path:
# a user who makes a deep tree in a watched directory would fill the log quadratically (and a full stderr
# pipe would stall the watcher). The watch is reused either way: nothing to say.
warnings.filterwarnings("ignore", message="Callback with id .* already exists for watch", category=RuntimeWarning)

SHELL_FILES = (
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".bash_history",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zsh_history",
    ".histfile",
    ".envrc",
    ".env",
    ".config/fish/config.fish",
    ".local/share/fish/fish_history",
)
SYSTEM_PATHS = ("/etc/environment", "/etc/systemd/system", "/etc/profile.d")
_MAX_WAIT = 1.0  # a file that keeps changing is still scanned at least this often
_NEW_DIR_FILES = 1000  # files scanned at once when a watched directory appears


@dataclass(frozen=True)
class HotPath:
    path: str
    recursive: bool = True  # for directories


def home_dirs(host_prefix: str | None = None) -> list[str]:
    """Existing home directories of the host's accounts (as the AWS-files source finds them), under ``host_prefix``."""
    homes: list[str] = []
    for f in home_files(host_prefix):
        home = os.path.dirname(os.path.dirname(f.path))  # <home>/.aws/credentials
        shown = os.path.dirname(os.path.dirname(f.shown))
        if shown in ("", "/") or shown.startswith(("/proc", "/dev", "/sys", "/nonexistent")):
            continue
        if home not in homes and os.path.isdir(home):
            homes.append(home)
    return homes


def hot_paths(cfg: WatchConfig, *, host_prefix: str | None = None) -> list[HotPath]:
    def on_host(p: str) -> str:
        return os.path.join(host_prefix, p.lstrip("/")) if host_prefix else p

    out: list[HotPath] = []
    if cfg.homes:
        for home in home_dirs(host_prefix):
            out.append(HotPath(os.path.join(home, ".aws")))
            out += [HotPath(os.path.join(home, name)) for name in SHELL_FILES]
    if cfg.system_paths:
        out += [HotPath(on_host(p)) for p in SYSTEM_PATHS]
    out += [HotPath(on_host(p)) for p in cfg.paths]
    return out


def kernel_watch_limit() -> int | None:
    try:
        return int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    except (OSError, ValueError):
        return None


def _count_dirs(path: str, limit: int) -> int:
    """Directories under ``path`` (itself included), counting no further than ``limit + 1``."""
    count, stack = 0, [path]
    while stack and count <= limit:
        d = stack.pop()
        count += 1
        try:
            with os.scandir(d) as it:
                stack += [e.path for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
    return count


@dataclass
class _Spec:
    directory: str
    recursive: bool
    names: set[str] | None  # only these children; None = everything
    targets: list[str] = field(default_factory=list)  # the hot paths this watch serves


@dataclass
class WatchCoverage:
    enabled: bool = False
    watched: list[dict[str, Any]] = field(default_factory=list)
    unwatched: list[dict[str, str]] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # hot paths that do not exist yet (parent watched)
    watches_used: int = 0
    watch_budget: int = 0
    restarts: int = 0  # times the kernel-event reader died and was started again

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "watched": self.watched,
            "unwatched": self.unwatched,
            "pending": self.pending,
            "watches_used": self.watches_used,
            "watch_budget": self.watch_budget,
            "restarts": self.restarts,
        }


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher, spec: _Spec) -> None:
        self.watcher = watcher
        self.spec = spec

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("deleted", "opened", "closed_no_write"):
            return
        path = os.fsdecode(event.dest_path or event.src_path)
        if not self.spec.recursive and self.spec.names is not None:
            if os.path.dirname(path) != self.spec.directory or os.path.basename(path) not in self.spec.names:
                return
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                self.watcher._directory_appeared(path)
            return
        self.watcher._enqueue(path)


class Watcher:
    """Watches hot paths and calls ``on_change(paths)`` with files that changed, after ``debounce`` seconds of quiet."""

    def __init__(
        self,
        hot: Sequence[HotPath],
        on_change: Callable[[list[str]], None],
        *,
        debounce: float = 0.3,
        max_watches: int = 8192,
    ) -> None:
        self.hot = list(hot)
        self.on_change = on_change
        self.debounce = debounce
        limit = kernel_watch_limit()
        self.budget = min(max_watches, limit) if limit else max_watches
        self.coverage = WatchCoverage(enabled=True, watch_budget=self.budget)
        self._observer: Any = None
        self._scheduled: dict[tuple[str, bool], _Spec] = {}
        self._failed: set[str] = set()
        self._pending: dict[str, tuple[float, float]] = {}  # path -> (first event, last event)
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._plan_lock = threading.Lock()
        self._broken: str | None = None  # why the observer's threads died (watchdog can raise under churn)

    # --- planning -------------------------------------------------------------------------------------------
    def _plan(self) -> tuple[dict[tuple[str, bool], _Spec], list[str]]:
        specs: dict[tuple[str, bool], _Spec] = {}
        missing: list[str] = []
        for hp in self.hot:
            path = os.path.normpath(hp.path)
            if os.path.isdir(path):
                key = (path, hp.recursive)
                spec = specs.setdefault(key, _Spec(path, hp.recursive, None))
                spec.names = None
                spec.targets.append(path)
                continue
            if not os.path.lexists(path):
                missing.append(path)
            child, parent = os.path.basename(path), os.path.dirname(path)
            while parent != os.path.dirname(parent) and not os.path.isdir(parent):
                child, parent = os.path.basename(parent), os.path.dirname(parent)
            if not os.path.isdir(parent):
                continue
            spec = specs.setdefault((parent, False), _Spec(parent, False, set()))
            if spec.names is not None:
                spec.names.add(child)
            spec.targets.append(path)
        return specs, missing

    def _apply_plan(self) -> list[str]:
        """Schedule what the plan adds; returns directories newly watched."""
        with self._plan_lock:
            specs, missing = self._plan()
            added: list[str] = []
            for key, spec in specs.items():
                if key in self._scheduled:
                    old = self._scheduled[key]
                    if old.names is not None and spec.names != old.names:
                        old.names = None if spec.names is None else old.names | spec.names
                    continue
                if spec.directory in self._failed:
                    continue
                needed = _count_dirs(spec.directory, self.budget) if spec.recursive else 1
                left = self.budget - self.coverage.watches_used
                if needed > left:
                    self._fallback(spec, f"watch budget exhausted (needs {needed} watches, {max(left, 0)} left)")
                    continue
                try:
                    self._observer.schedule(_Handler(self, spec), spec.directory, recursive=spec.recursive)
                except OSError as exc:
                    reason = (
                        "inotify watch limit reached (fs.inotify.max_user_watches)"
                        if exc.errno == errno.ENOSPC
                        else f"cannot watch: {exc.strerror or exc}"
                    )
                    self._fallback(spec, reason)
                    continue
                self._scheduled[key] = spec
                self.coverage.watches_used += needed
                self.coverage.watched.append(
                    {
                        "path": spec.directory,
                        "recursive": spec.recursive,
                        "watches": needed,
                        "names": sorted(spec.names) if spec.names is not None else None,
                    }
                )
                added.append(spec.directory)
            self.coverage.pending = missing
            return added

    def _fallback(self, spec: _Spec, reason: str) -> None:
        self._failed.add(spec.directory)
        self.coverage.unwatched.append({"path": spec.directory, "reason": reason})
        log.warning(
            "watch.fallback",
            extra={"fields": {"path": spec.directory, "reason": reason, "covered_by": "periodic sweep"}},
        )

    def _directory_appeared(self, path: str) -> None:
        if not any(m == path or m.startswith(path + os.sep) for m in self.coverage.pending):
            return
        for directory in self._apply_plan():
            self._enqueue_tree(directory)

    def _enqueue_tree(self, directory: str) -> None:
        count = 0
        for root, _dirs, files in os.walk(directory):
            for name in files:
                self._enqueue(os.path.join(root, name))
                count += 1
                if count >= _NEW_DIR_FILES:
                    return

    # --- events ---------------------------------------------------------------------------------------------
    def _enqueue(self, path: str) -> None:
        now = time.monotonic()
        with self._cond:
            first = self._pending.get(path, (now, now))[0]
            self._pending[path] = (first, now)
            self._cond.notify()

    def _due(self, now: float) -> list[str]:
        return [
            p for p, (first, last) in self._pending.items() if now - last >= self.debounce or now - first >= _MAX_WAIT
        ]

    def _run(self) -> None:
        while True:
            if self._broken is not None:
                self._restart_observer()
            with self._cond:
                while not self._stop and self._broken is None:
                    now = time.monotonic()
                    due = self._due(now)
                    if due:
                        for p in due:
                            del self._pending[p]
                        break
                    if self._pending:
                        wake = min(
                            min(last + self.debounce, first + _MAX_WAIT) for first, last in self._pending.values()
                        )
                        self._cond.wait(max(wake - now, 0.01))
                    else:
                        self._cond.wait()
                if self._stop:
                    return
                if self._broken is not None:
                    continue
            try:
                self.on_change(sorted(due))
            except Exception as exc:  # a failing scan of changed files must not stop the watching
                log.error("watch.scan_failed", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})

    # --- lost events ------------------------------------------------------------------------------------------
    def _events_lost(self) -> None:
        """The kernel's event queue overflowed (a flood of changes): each watched directory is scanned whole, since
        any file in it may have changed unseen (unchanged files cost one stat with state)."""
        for watched in list(self.coverage.watched):
            self._enqueue(watched["path"])

    # --- a dying observer -------------------------------------------------------------------------------------
    def _thread_failed(self, args: threading.ExceptHookArgs) -> None:
        """Any uncaught exception of another thread of the agent is one of the observer's (the watcher's own loop
        and the verifier's pool catch theirs): logged as an event, never a raw traceback, and the observer is
        started again by the watcher's loop."""
        frame = args.exc_traceback
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        at = f"{os.path.basename(frame.tb_frame.f_code.co_filename)}:{frame.tb_lineno}" if frame else "?"
        reason = f"{args.exc_type.__name__} at {at}"
        log.error(
            "watch.thread_failed",
            extra={"fields": {"thread": args.thread.name if args.thread else None, "error": reason}},
        )
        if args.thread is not self._thread:
            with self._cond:
                self._broken = reason
                self._cond.notify_all()

    def _restart_observer(self) -> None:
        """A new observer with every watch scheduled again; each watched directory is queued whole (events of the
        gap were lost; a directory scan walks it, and its unchanged files cost one stat with state)."""
        reason, self._broken = self._broken, None
        old, self._observer = self._observer, None
        # a broken observer may fail, or hang, when stopped: never in this loop, which must go on scanning
        threading.Thread(target=_stop_quietly, args=(old,), name="keysweep-watch-stop", daemon=True).start()
        with self._plan_lock:
            self._scheduled.clear()
            self._failed.clear()
            self.coverage.watched.clear()
            self.coverage.unwatched.clear()
            self.coverage.watches_used = 0
            self.coverage.restarts += 1
        self._start_observer()
        added = self._apply_plan()
        log.warning(
            "watch.restarted",
            extra={"fields": {"reason": reason, "watched": len(added), "restarts": self.coverage.restarts}},
        )
        for directory in added:
            self._enqueue(directory)

    def _start_observer(self) -> None:
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.start()

    # --- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> WatchCoverage:
        self._previous_excepthook = threading.excepthook
        threading.excepthook = self._thread_failed
        self._overflow = _OverflowHandler(self._events_lost)
        logging.getLogger("watchdog.observers").addHandler(self._overflow)
        self._start_observer()
        self._thread = threading.Thread(target=self._run, name="keysweep-watch", daemon=True)
        self._thread.start()
        self._apply_plan()
        log.info(
            "watch.started",
            extra={
                "fields": {
                    "watched": len(self.coverage.watched),
                    "unwatched": len(self.coverage.unwatched),
                    "pending": len(self.coverage.pending),
                    "watches_used": self.coverage.watches_used,
                    "watch_budget": self.budget,
                }
            },
        )
        return self.coverage

    def stop(self) -> None:
        if threading.excepthook == self._thread_failed:
            threading.excepthook = self._previous_excepthook
        if getattr(self, "_overflow", None) is not None:
            logging.getLogger("watchdog.observers").removeHandler(self._overflow)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)


def _stop_quietly(observer: Any) -> None:
    try:
        observer.stop()
    except Exception:  # noqa: BLE001 - it is dropped either way
        pass


class _OverflowHandler(logging.Handler):
    """watchdog says only in its log that the inotify queue overflowed and events were lost."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in str(record.msg).lower():
            self._on_overflow()
