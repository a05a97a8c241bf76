"""Encoded views of a buffer where a key can hide: base64 blobs, UTF-16 text, percent-encoding.

Everything here runs only where the prefilter already hit, on bounded slices, never over whole buffers.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_SET = frozenset(B64_ALPHABET)
B64_MAX_RUN = 16 * 1024  # a key hidden in base64 lives in a value or file of modest size; longer runs are cut
_PERCENT_RE = re.compile(rb"%(2[FfBb]|3[Dd])")
_PERCENT_MAP = {b"2f": b"/", b"2b": b"+", b"3d": b"="}


def base64_forms(keyword: bytes) -> list[tuple[bytes, int]]:
    """The base64 text a keyword turns into at each of the three byte alignments.

    Returns (form, first) pairs: ``form`` is the run of base64 characters fixed by the keyword alone, and
    ``first`` the index of its first character in the encoding of ``(alignment padding) + keyword``. A hit at
    text position ``h`` means the base64 quanta of that blob start at positions congruent to ``h - first``
    modulo 4.
    """
    forms = []
    nbits = 8 * len(keyword)
    for align in range(3):
        encoded = base64.b64encode(b"\0" * align + keyword + b"\0\0\0")
        lo, hi = 8 * align, 8 * align + nbits
        idx = [i for i in range(len(encoded)) if 6 * i >= lo and 6 * i + 6 <= hi]
        forms.append((encoded[idx[0] : idx[-1] + 1], idx[0]))
    return forms


def base64_utf16_forms(keyword: bytes, first_bytes: frozenset[int]) -> list[tuple[bytes, int]]:
    """Base64 forms of the keyword as UTF-16LE text (PowerShell ``-EncodedCommand``), one per alignment.

    For each alignment the form is taken from the shortest suffix of the UTF-16 text whose base64 starts with
    one of ``first_bytes`` (the prefilter's existing first bytes), so these forms add no prefilter pass.
    """
    text = keyword.decode("ascii").encode("utf-16-le")
    forms = []
    for align in range(3):
        for start in range(len(text) - 4):
            form, first = base64_forms(text[start:])[(align + start) % 3]
            if form[0] in first_bytes and len(form) >= 6:
                forms.append((form, first))
                break
    return forms


def utf16_form(keyword: bytes) -> bytes:
    """The keyword as UTF-16 minus the trailing NUL: matches both little- and big-endian text."""
    return keyword.decode("ascii").encode("utf-16-le")[:-1]


def base64_run(buf: bytes, pos: int) -> tuple[int, int]:
    """The run of base64 characters around ``pos`` (at most B64_MAX_RUN on each side)."""
    start = pos
    limit = max(0, pos - B64_MAX_RUN)
    while start > limit and buf[start - 1] in _B64_SET:
        start -= 1
    end = pos
    limit = min(len(buf), pos + B64_MAX_RUN)
    while end < limit and buf[end] in _B64_SET:
        end += 1
    return start, end


def decode_base64_run(buf: bytes, start: int, end: int, grid: int) -> tuple[int, bytes] | None:
    """Decode buf[start:end] from the first position congruent to ``grid`` mod 4; returns (text start, bytes)."""
    s = start + ((grid - start) % 4)
    chunk = buf[s:end]
    extra = len(chunk) % 4
    if extra == 1:
        chunk = chunk[:-1]
    elif extra:
        chunk += b"=" * (4 - extra)
    try:
        return s, base64.b64decode(chunk)
    except (binascii.Error, ValueError):
        return None


def decode_base64_value(value: bytes) -> bytes | None:
    """A whole base64 token (with optional '=' padding) decoded, or None when it is not valid base64."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def percent_decode(value: bytes) -> bytes:
    """Undo the percent-encoding that URLs apply to '/', '+' and '=' (the only non-alphanumerics of keys)."""
    return _PERCENT_RE.sub(lambda m: _PERCENT_MAP[m.group(1).lower()], value)


def utf16_regions(hits: Iterable[int], size: int, radius: int) -> list[tuple[int, int]]:
    """Merge windows of ``radius`` bytes around UTF-16 keyword hits into even-length regions keeping each
    hit's parity (so ASCII characters decode in the right phase)."""
    regions: list[tuple[int, int]] = []
    for h in sorted(hits):
        lo = max(0, h - radius)
        lo += (h - lo) % 2
        hi = min(size, h + radius)
        hi -= (hi - lo) % 2
        if regions and lo <= regions[-1][1] and (lo - regions[-1][0]) % 2 == 0:
            regions[-1] = (regions[-1][0], max(regions[-1][1], hi))
        else:
            regions.append((lo, hi))
    return regions


def decode_utf16(buf: bytes, lo: int, hi: int) -> bytes:
    """UTF-16LE region as one byte per character ('?' for anything outside Latin-1): view position i is
    buffer position lo + 2*i."""
    return buf[lo:hi].decode("utf-16-le", errors="replace").encode("latin-1", errors="replace")
