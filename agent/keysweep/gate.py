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

import threading
from collections.abc import Callable, Sequence

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
    thread (a scratch may not be shared by threads scanning at once; forked workers get their own copy)."""

    def __init__(self, patterns: Sequence[bytes]) -> None:
        assert hyperscan is not None
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._db.compile(
            expressions=[hyperscan_pattern(p) for p in patterns],
            ids=list(range(len(patterns))),
            elements=len(patterns),
            flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(patterns),
        )
        self._local = threading.local()

    def __call__(self, buf: bytes) -> bool:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._db)
        try:
            self._db.scan(buf, match_event_handler=_halt, scratch=scratch)
        except hyperscan.ScanTerminated:
            return True
        return False


def build(patterns: Sequence[bytes]) -> Callable[[bytes], bool] | None:
    """A gate for these patterns, or None without Hyperscan (or when it cannot compile them: then the patterns
    run as they are)."""
    if hyperscan is None:
        return None
    try:
        return Gate(patterns)
    except hyperscan.error:
        return None


def engine(active: Callable[[bytes], bool] | None) -> str:
    """What passes over buffers ahead of the prefilter with this gate (from :func:`build`), as the scan's summary
    says it (``detection_gate``): ``hyperscan <version>``, or ``none`` (Hyperscan not installed, no wheel for this
    platform, or the patterns did not compile: the prefilter passes then run on every buffer, same findings)."""
    if active is None or hyperscan is None:
        return "none"
    return f"hyperscan {getattr(hyperscan, '__version__', 'unknown')}"
