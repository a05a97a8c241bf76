"""Being gentle with the host: lowest CPU priority, idle IO class, an optional CPU budget, a memory watch."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)

_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13
_MAX_PAUSE = 30.0
_SYS_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "i686": 289, "armv7l": 314}


@dataclass(frozen=True)
class PriorityResult:
    nice: int
    ionice: str  # "idle", "unchanged" or "failed: <reason>"


def _ioprio_idle() -> str:
    """Put this process in the idle IO class (per thread in Linux: call before starting threads, they inherit it)."""
    try:
        psutil.Process().ionice(psutil.IOPRIO_CLASS_IDLE)
        return "idle"
    except (AttributeError, psutil.Error, OSError) as exc:
        reason = str(exc)
    nr = _SYS_IOPRIO_SET.get(os.uname().machine)
    if nr is None:
        return f"failed: {reason}"
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.syscall(nr, _IOPRIO_WHO_PROCESS, 0, _IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT) != 0:
        return f"failed: {os.strerror(ctypes.get_errno())}"
    return "idle"


def apply_priority(nice: int, ionice_idle: bool) -> PriorityResult:
    """Lower CPU priority to ``nice`` (never raises it) and, when asked, the IO class to idle."""
    current = os.nice(0)
    if nice > current:
        current = os.nice(nice - current)
    io = _ioprio_idle() if ionice_idle else "unchanged"
    return PriorityResult(nice=current, ionice=io)


class CpuPacer:
    """Keeps this process's CPU use under ``max_percent`` of one core by sleeping in proportion to CPU used.

    ``tick()`` is cheap enough to call per file: it looks at the clocks at most every ``period`` seconds.
    Memory is watched on the same tick: above ``max_rss_mb`` the garbage collector runs and a warning is logged
    once per sweep (the hard limit belongs to the service manager, e.g. systemd's MemoryMax).
    """

    def __init__(
        self,
        max_percent: float | None,
        *,
        max_rss_mb: int = 0,
        period: float = 0.05,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.max_fraction = (max_percent / 100.0) if max_percent else None
        self._sleep = sleep  # e.g. a stop event's wait, so a pause ends at once on SIGTERM
        self.max_rss = max_rss_mb * 1024 * 1024
        self.period = period
        self.slept = 0.0
        self.peak_rss = 0
        self._proc = psutil.Process()
        self._lock = threading.Lock()
        self._warned = False
        self._next_rss_check = 0.0
        self.reset()

    def reset(self) -> None:
        self._wall0 = time.monotonic()
        self._cpu0 = time.process_time()
        self._warned = False

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._wall0 < self.period:
            return
        with self._lock:
            if now >= self._next_rss_check:
                self._check_memory()
                self._next_rss_check = now + 1.0
            if self.max_fraction is None:
                self._wall0, self._cpu0 = now, time.process_time()
                return
            cpu = time.process_time() - self._cpu0
            wall = now - self._wall0
            # sleeping long enough that cpu / (wall + pause) == budget
            pause = cpu / self.max_fraction - wall
            if pause > 0:
                pause = min(pause, _MAX_PAUSE)
                self._sleep(pause)
                self.slept += pause
            self._wall0, self._cpu0 = time.monotonic(), time.process_time()

    def sample_memory(self) -> None:
        with self._lock:
            self._check_memory()

    def _check_memory(self) -> None:
        try:
            rss = self._proc.memory_info().rss
        except psutil.Error:
            return
        self.peak_rss = max(self.peak_rss, rss)
        if self.max_rss and rss > self.max_rss:
            gc.collect()
            if not self._warned:
                self._warned = True
                log.warning(
                    "memory.over_budget", extra={"fields": {"rss_mb": rss >> 20, "max_rss_mb": self.max_rss >> 20}}
                )
