"""Reading a stream that may answer short: pipes, decompressors and archive members return fewer bytes than asked
before their end."""

from __future__ import annotations

from collections.abc import Callable


def read_full(read: Callable[[int], bytes], n: int) -> bytes:
    """Up to ``n`` bytes from ``read``, fewer only at the end of the stream."""
    data = read(n)
    if not data or len(data) >= n:
        return data
    parts = [data]
    have = len(data)
    while have < n:
        more = read(n - have)
        if not more:
            break
        parts.append(more)
        have += len(more)
    return b"".join(parts)
