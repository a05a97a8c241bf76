"""Encoded views of a buffer where a key can hide: base64 blobs (wrapped, URL-safe), UTF-16 text, percent-encoding,
quoted-printable.

Everything here runs only where the prefilter already hit, on bounded slices, never over whole buffers.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

B64_MAX_RUN = 16 * 1024  # a key hidden in base64 lives in a value or file of modest size; longer runs are cut
_B64_RUN_RE = re.compile(rb"[A-Za-z0-9+/_-]+")  # standard and URL-safe (RFC 4648 section 5) alphabets
_URL_SAFE = bytes.maketrans(b"-_", b"+/")
_WRAP_MAX = 1024  # widest wrapped line considered (tools wrap at 64 or 76)
_WRAP_LINE_RE = re.compile(rb"[ \t]{0,64}([A-Za-z0-9+/]{1,1024}={0,2})[ \t]*\r?(?:\n|\Z)")
_PERCENT_RE = re.compile(rb"%(2[FfBb]|3[Dd])")
_ESCAPE_RE = re.compile(rb"%([0-9A-Fa-f]{2})")
_QP_ESCAPE_RE = re.compile(rb"=(?:([0-9A-F]{2})|[ \t]*\r?\n)")  # RFC 2045: upper-case hex; soft line breaks
_QP_HEX_RE = re.compile(rb"=[0-9A-F]{2}")
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
    """The run of base64 characters (either alphabet) around ``pos`` (at most B64_MAX_RUN on each side)."""
    ahead = _B64_RUN_RE.match(buf, pos, min(len(buf), pos + B64_MAX_RUN))
    back = 256  # most runs are short: look a little way back first, not the whole bound (a copy per hit)
    while True:
        floor = max(0, pos - back)
        behind = _B64_RUN_RE.match(buf[floor:pos][::-1])
        length = behind.end() if behind else 0
        if length < pos - floor or floor == 0 or back >= B64_MAX_RUN:
            break
        back = min(back * 8, B64_MAX_RUN)
    return pos - length, ahead.end() if ahead else pos


def wrapped_base64(buf: bytes, pos: int) -> tuple[bytes, list[int], list[int]] | None:
    """The block of wrapped base64 lines around ``pos`` (the ``base64`` tool's 76 columns, PEM's 64, MIME parts
    of mail, …; indentation allowed): every line the same length, a multiple of 4, the last one possibly shorter
    (or padded with ``=``). ``pos`` may be on any of its lines, the last one included.

    Returns (the lines' text joined, each line's offset in it, each line's offset in ``buf``), or None when
    ``pos`` is not inside such a block of at least two lines. At most B64_MAX_RUN bytes either side.
    """
    floor = max(0, pos - _WRAP_MAX - 70)
    start = buf.rfind(b"\n", floor, pos) + 1
    if start == 0 and floor > 0:
        return None  # a line longer than any wrapping
    line = _WRAP_LINE_RE.match(buf, start)
    if line is None or line.end(1) < pos:
        return None
    n = len(line.group(1))
    prev = _full_line_before(buf, start)
    if prev is not None and (len(prev.group(1)) > n or line.group(1).endswith(b"=")):
        width, last = len(prev.group(1)), True  # pos is on the block's last line
    else:
        width, last = n, False
    if width % 4 or width < 16 or (not last and line.group(1).endswith(b"=")) or n > width:
        return None
    lines = [line]
    lo = start
    while pos - lo < B64_MAX_RUN:  # earlier lines of the same width
        m = _full_line_before(buf, lo)
        if m is None or len(m.group(1)) != width:
            break
        lines.insert(0, m)
        lo = m.start()
    at = line.end()
    while not last and at - pos < B64_MAX_RUN:  # later lines of the same width, then one shorter last line
        m = _WRAP_LINE_RE.match(buf, at)
        if m is None or len(m.group(1)) > width:
            break
        lines.append(m)
        at = m.end()
        if len(m.group(1)) < width or m.group(1).endswith(b"="):
            break
    if len(lines) < 2:
        return None
    text_offsets, buf_offsets, total = [], [], 0
    for m in lines:
        text_offsets.append(total)
        buf_offsets.append(m.start(1))
        total += len(m.group(1))
    return b"".join(m.group(1) for m in lines), text_offsets, buf_offsets


def _full_line_before(buf: bytes, start: int) -> re.Match[bytes] | None:
    """The wrapped base64 line ending right before ``start`` (a line start), unless it ends with padding."""
    if start == 0:
        return None
    prev_start = buf.rfind(b"\n", max(0, start - 1 - _WRAP_MAX - 70), start - 1) + 1
    m = _WRAP_LINE_RE.match(buf, prev_start)
    if m is None or m.end() != start or m.group(1).endswith(b"="):
        return None
    return m


def decode_base64_run(buf: bytes, start: int, end: int, grid: int) -> tuple[int, bytes] | None:
    """Decode buf[start:end] from the first position congruent to ``grid`` mod 4; returns (text start, bytes).
    The URL-safe alphabet (``-_``, padding optional: JWTs, URLs) decodes too."""
    s = start + ((grid - start) % 4)
    chunk = buf[s:end]
    if b"-" in chunk or b"_" in chunk:
        chunk = chunk.translate(_URL_SAFE)
    extra = len(chunk) % 4
    if extra == 1:
        chunk = chunk[:-1]
    elif extra:
        chunk += b"=" * (4 - extra)
    try:
        return s, binascii.a2b_base64(chunk)  # what base64.b64decode does, without its argument checks
    except (binascii.Error, ValueError):
        return None


def decode_base64_value(value: bytes) -> bytes | None:
    """A whole base64 token (with optional '=' padding) decoded, or None when it is not valid base64."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def percent_view(buf: bytes, lo: int, hi: int) -> tuple[bytes, list[int]]:
    """buf[lo:hi] with every ``%XX`` escape decoded (URL-encoded JSON or forms), and for each decoded byte its
    offset in ``buf``."""
    return _unescaped_view(buf, lo, hi, _ESCAPE_RE)


def quoted_printable_view(buf: bytes, lo: int, hi: int) -> tuple[bytes, list[int]]:
    """buf[lo:hi] decoded as quoted-printable (mail bodies, RFC 2045): ``=XX`` escapes decoded, soft line breaks
    (``=`` at a line's end) removed; for each decoded byte its offset in ``buf``."""
    return _unescaped_view(buf, lo, hi, _QP_ESCAPE_RE)


def _unescaped_view(buf: bytes, lo: int, hi: int, escape: re.Pattern[bytes]) -> tuple[bytes, list[int]]:
    """buf[lo:hi] with each match of ``escape`` replaced by the byte its hex group names (nothing when the group
    did not take part), and each output byte's offset in ``buf``."""
    out = bytearray()
    offsets: list[int] = []
    pos = lo
    for m in escape.finditer(buf, lo, hi):
        s = m.start()
        out += buf[pos:s]
        offsets.extend(range(pos, s))
        if m.group(1) is not None:
            out.append(int(m.group(1), 16))
            offsets.append(s)
        pos = m.end()
    out += buf[pos:hi]
    offsets.extend(range(pos, hi))
    return bytes(out), offsets


def ends_with_escape(buf: bytes, pos: int) -> bool:
    """True when the three bytes before ``pos`` are a ``%XX`` escape."""
    return pos >= 3 and _ESCAPE_RE.match(buf, pos - 3, pos) is not None


def ends_with_qp_escape(buf: bytes, pos: int) -> bool:
    """True when the three bytes before ``pos`` are a quoted-printable ``=XX`` escape (``=3D``: an encoded '=')."""
    return pos >= 3 and _QP_HEX_RE.match(buf, pos - 3, pos) is not None


def soft_line_break(buf: bytes, lo: int, hi: int) -> bool:
    """A quoted-printable soft line break (``=`` ending a line) in buf[lo:hi]."""
    return buf.find(b"=\n", lo, hi) >= 0 or buf.find(b"=\r\n", lo, hi) >= 0


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
