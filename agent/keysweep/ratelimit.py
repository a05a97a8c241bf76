"""Pacing for outbound calls: a global token bucket shared by worker threads, and per-key spacing.

Both hand out *reservations*: a caller takes the next free slot under a lock and then sleeps outside it, so
threads never busy-wait and the order of callers is the order of their slots.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, with bursts of at most ``burst``."""

    def __init__(
        self, rate: float, *, burst: float = 1.0, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = burst
        self._updated = clock()

    def reserve(self) -> float:
        """Take one token; return how long the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)


class KeySpacing:
    """Consecutive uses of the same key are at least ``interval`` seconds apart; different keys do not wait.

    Call :meth:`done` when a use has finished: the next use then waits ``interval`` from that moment, so the gap
    holds between one answer and the next request even when a request was late or slow.
    """

    def __init__(self, interval: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        if interval < 0:
            raise ValueError("interval must not be negative")
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next: dict[Hashable, float] = {}

    def reserve(self, key: Hashable) -> float:
        with self._lock:
            now = self._clock()
            slot = max(now, self._next.get(key, now))
            self._next[key] = slot + self.interval
            return slot - now

    def acquire(self, key: Hashable) -> None:
        wait = self.reserve(key)
        if wait > 0:
            self._sleep(wait)

    def done(self, key: Hashable) -> None:
        with self._lock:
            self._next[key] = max(self._next.get(key, 0.0), self._clock() + self.interval)
