"""One pass that says whether a buffer holds any prefilter match at all, with Hyperscan when it is installed.

Almost every file and chunk holds none. The detector's own prefilter is several ``re`` passes, one per first byte
of its forms (``re`` scans fast only behind a literal first byte): ~10 µs for a small file, 0.3–0.7 GB/s on
binaries, logs and base64. Hyperscan (the optional ``fast`` extra: ``pip install keysweep[fast]``) runs all of
the same patterns in one pass over the bytes (~3 µs a small file, 2–4 GB/s), so the passes run only on the rare
buffer where something matched. The answer is exact, not a heuristic: a buffer the gate passes over holds no match
of any of the patterns. Without Hyperscan (or on a platform it does not build for) there is no gate and the
passes run on everything, with the same results.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

try:
    import hyperscan
except ImportError:  # the optional accelerator is not installed
    hyperscan = None  # type: ignore[assignment]


def hyperscan_pattern(pattern: bytes) -> bytes:
    """A Python ``re`` pattern of bytes as Hyperscan takes it: a NUL-terminated C string, so every byte outside
    printable ASCII (escaped or not by ``re.escape``) written as ``\\xHH``."""
    out = bytearray()
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == 0x5C and i + 1 < len(pattern) and not 0x20 <= pattern[i + 1] < 0x7F:
            out += b"\\x%02x" % pattern[i + 1]
            i += 2
            continue
        out += bytes([c]) if 0x20 <= c < 0x7F else b"\\x%02x" % c
        i += 1
    return bytes(out)


def _halt(_id: int, _start: int, _end: int, _flags: int, _ctx: object) -> bool:
    return True  # the first match answers the question


class Gate:
    """``gate(buf)``: False only when no pattern matches anywhere in ``buf``. One Hyperscan scratch space per
    thread (a scratch may not be shared by threads scanning at once; forked workers get their own copy).

    The database compiles in a thread of its own (~40 ms of native code that releases the GIL: Hyperscan's
    compiler, most of it for the line-wrapped base64 forms), so a scan imports its engine and starts its walk
    meanwhile; the first call waits for it, and so does every fork (:func:`os.register_at_fork`), so a worker
    always inherits a finished database. A set of patterns Hyperscan cannot compile leaves a gate that passes
    every buffer (the same findings as without a gate; :func:`engine` then says ``none``).
    """

    def __init__(self, patterns: Sequence[bytes]) -> None:
        assert hyperscan is not None
        self._db: Any = None
        self._error: BaseException | None = None  # raised by the first call: a bug, not a pattern Hyperscan refused
        self._local = threading.local()
        self._compiling: threading.Thread | None = threading.Thread(
            target=self._compile, args=([hyperscan_pattern(p) for p in patterns],), name="keysweep-gate"
        )
        with _compiling_lock:
            _compiling.add(self)
        self._compiling.start()

    def _compile(self, expressions: list[bytes]) -> None:
        try:
            db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            db.compile(
                expressions=expressions,
                ids=list(range(len(expressions))),
                elements=len(expressions),
                flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(expressions),
            )
            self._db = db
        except hyperscan.error:
            pass  # no database: the gate passes every buffer
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that asks
            self._error = exc
        finally:
            with _compiling_lock:
                _compiling.discard(self)

    def _join(self) -> None:
        thread = self._compiling
        if thread is not None:
            thread.join()
            self._compiling = None

    def wait(self) -> bool:
        """Wait for the database; True when it compiled (the gate then filters), False when it did not."""
        self._join()
        if self._error is not None:
            raise self._error
        return self._db is not None

    def __call__(self, buf: bytes) -> bool:
        db = self._db
        if db is None:
            if not self.wait():
                return True  # no database: every buffer goes to the prefilter passes
            db = self._db
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(db)
        try:
            db.scan(buf, match_event_handler=_halt, scratch=scratch)
        except hyperscan.ScanTerminated:
            return True
        return False


# gates whose database is still compiling (each compiling thread removes its own): a fork waits for them (a thread
# does not survive into the child, and Hyperscan's compiler may hold its allocator's locks)
_compiling: set[Gate] = set()
_compiling_lock = threading.Lock()


def _before_fork() -> None:
    with _compiling_lock:
        pending = list(_compiling)
    for g in pending:
        g._join()


os.register_at_fork(before=_before_fork)


def build(patterns: Sequence[bytes]) -> Callable[[bytes], bool] | None:
    """A gate for these patterns (compiling in the background: :class:`Gate`), or None without Hyperscan."""
    if hyperscan is None:
        return None
    return Gate(patterns)


def engine(active: Callable[[bytes], bool] | None) -> str:
    """What passes over buffers ahead of the prefilter with this gate (from :func:`build`), as the scan's summary
    says it (``detection_gate``): ``hyperscan <version>``, or ``none`` (Hyperscan not installed, no wheel for this
    platform, or the patterns did not compile: the prefilter passes then run on every buffer, same findings)."""
    if active is None or hyperscan is None or (isinstance(active, Gate) and not active.wait()):
        return "none"
    return f"hyperscan {getattr(hyperscan, '__version__', 'unknown')}"
