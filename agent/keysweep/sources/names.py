"""Names read from the system (paths, archive members, executables) made safe for every output."""

from __future__ import annotations


def readable(text: str) -> str:
    """``text`` with undecodable bytes (Python's surrogate escapes) shown as ``\\xNN``: never a lone surrogate,
    which no UTF-8 output could write."""
    if text.isascii():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that was not an escaped byte
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")
