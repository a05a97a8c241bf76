"""A streaming reader of tar headers (ustar, GNU, pax) that holds at most ``MAX_HEADER`` bytes of any header.

Python's ``tarfile`` reads a GNU long name (``././@LongLink``) or a pax header whole into memory, whatever size
it declares: a 1 MB ``.tar.gz`` whose first header claims a 4 GB name takes 4 GB. Here every header block and
every data byte is read through the caller's ``read`` (which charges the archive budget), a long name or pax
header larger than ``MAX_HEADER`` raises :class:`HeaderTooLong` before any of it is kept, and member data is
handed out as a bounded stream, never read whole.

Regular members only (``0``, ``\\0``, ``7``, GNU sparse ``S`` whose stored data is read as it is); links,
directories and devices carry no data; the data of other types is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from keysweep.readfull import read_full

MAX_HEADER = 64 * 1024  # a GNU long name/link or a pax header past this is refused (PATH_MAX is 4096)
BLOCK = 512
_SKIP_READ = 64 * 1024
_REGULAR = frozenset(b"07\0S")
_NO_DATA = frozenset(b"123456")  # hard and symbolic links, devices, directories, FIFOs: size is ignored
_LONG_NAME, _LONG_LINK, _PAX, _PAX_GLOBAL, _SPARSE = ord("L"), ord("K"), ord("x"), ord("g"), ord("S")
_PAX_USED = frozenset({b"path", b"size"})


class TarFormatError(Exception):
    """Not a tar stream, or one that stops being one (bad checksum, truncated)."""


class HeaderTooLong(Exception):
    """A long-name or pax header larger than ``MAX_HEADER``; ``size`` is what it declared."""

    def __init__(self, size: int) -> None:
        super().__init__(f"tar header of {size} bytes")
        self.size = size


@dataclass(frozen=True)
class TarMember:
    name: bytes
    size: int


class _Data:
    """``read(n)`` over one member's data: never past its end; what is left unread is skipped after."""

    def __init__(self, read: Callable[[int], bytes], size: int) -> None:
        self._read = read
        self.left = size

    def read(self, n: int = -1, /) -> bytes:
        if self.left <= 0:
            return b""
        want = self.left if n < 0 else min(n, self.left)
        data = self._read(min(want, _SKIP_READ * 16))
        if not data:
            raise TarFormatError("member data truncated")
        self.left -= len(data)
        return data


def _skip(read: Callable[[int], bytes], n: int) -> None:
    while n > 0:
        data = read(min(n, _SKIP_READ))
        if not data:
            raise TarFormatError("truncated")
        n -= len(data)


def _number(field: bytes) -> int:
    """An octal number, or GNU base-256 (first byte 0x80) for sizes past 8 GiB."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        raise TarFormatError("negative number")
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarFormatError("bad number") from None


def _checksum_ok(block: bytes) -> bool:
    try:
        want = _number(block[148:156])
    except TarFormatError:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32  # the checksum field counted as spaces
    if want == unsigned:
        return True
    blank = block[:148] + b" " * 8 + block[156:]
    return want == unsigned - 256 * sum(1 for b in blank if b > 127)  # some old tars summed signed chars


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    """``"%d %s=%s\\n"`` records, the length counting the whole record."""
    out: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 24)
        if space < 0:
            if data[pos:].strip(b"\0") == b"":
                break
            raise TarFormatError("bad pax record")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError("bad pax record") from None
        end = pos + length
        record = data[space + 1 : end]
        if length <= space - pos or end > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError("bad pax record")
        key, value = record[:-1].split(b"=", 1)
        out[key] = value
        pos = end
    return out


def _long_header(read: Callable[[int], bytes], size: int) -> bytes:
    if size > MAX_HEADER:
        raise HeaderTooLong(size)
    data = read_full(read, size + (-size % BLOCK))
    if len(data) < size:
        raise TarFormatError("truncated header")
    return data[:size]


def members(read: Callable[[int], bytes]) -> Iterator[tuple[TarMember, _Data]]:
    """Each regular member of the tar stream ``read`` and a reader of its data (valid until the next one).

    Raises :class:`TarFormatError` when the stream is not tar or breaks off, :class:`HeaderTooLong` at a
    header over ``MAX_HEADER`` (the rest of the archive cannot be told apart from it)."""
    global_pax: dict[bytes, bytes] = {}
    pax: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    first = True
    while True:
        block = read_full(read, BLOCK)
        if len(block) < BLOCK or block.count(0) == BLOCK:
            if first and len(block) < BLOCK:
                raise TarFormatError("empty or truncated")
            return  # end-of-archive marker (or a stream that ends between members)
        if not _checksum_ok(block):
            raise TarFormatError("bad header checksum")
        first = False
        typeflag = block[156]
        size = _number(block[124:136])
        if typeflag in (_LONG_NAME, _LONG_LINK):
            data = _long_header(read, size)
            if typeflag == _LONG_NAME:
                long_name = data.split(b"\0", 1)[0]
            continue
        if typeflag in (_PAX, _PAX_GLOBAL):
            records = _pax_records(_long_header(read, size))
            # only what is used is kept: headers repeated without a member between them add nothing up
            kept = {k: v for k, v in records.items() if k in _PAX_USED}
            (global_pax if typeflag == _PAX_GLOBAL else pax).update(kept)
            continue
        values = {**global_pax, **pax}
        pax = {}
        if b"size" in values:
            try:
                size = int(values[b"size"])
            except ValueError:
                raise TarFormatError("bad pax size") from None
            if size < 0:
                raise TarFormatError("bad pax size")
        name = values.get(b"path") or long_name or _ustar_name(block)
        long_name = None
        if typeflag in _NO_DATA:
            continue
        if typeflag == _SPARSE and block[482]:  # old GNU sparse: extension blocks follow the header
            while True:
                ext = read_full(read, BLOCK)
                if len(ext) < BLOCK:
                    raise TarFormatError("truncated sparse header")
                if not ext[504]:
                    break
        member = _Data(read, size)
        if typeflag in _REGULAR:
            yield TarMember(name, size), member
        _skip(read, member.left + (-size % BLOCK))


def _ustar_name(block: bytes) -> bytes:
    name = block[:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\0":  # POSIX ustar: a prefix (GNU uses these bytes for times)
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            return prefix + b"/" + name
    return name
