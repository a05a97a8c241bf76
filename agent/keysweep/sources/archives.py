"""Archives, streamed: zip (jar/whl/war/ear, detected by magic, not name), tar, gzip, bzip2, xz, nested.

Nothing is extracted to disk. Every byte read out of a container (tar headers and padding included) is charged to
a budget per top-level archive (total expanded bytes, and expansion ratio against the archive's size once past a
small floor), so a zip bomb stops with a counted reason after a bounded amount of work. Findings keep what was
found before a limit hit. What a parser would hold in memory is bounded before it reads it: tar headers by the
streaming reader in :mod:`keysweep.sources.tarstream`, a zip's central directory by its declared size and by
the entries it really holds (counted by walking it, not by trusting the end record).
"""

from __future__ import annotations

import _compression  # the stdlib's decompressing reader behind GzipFile, BZ2File and LZMAFile
import bz2
import gzip
import io
import lzma
import os
import struct
import zipfile
import zlib
from types import ModuleType
from typing import IO, TYPE_CHECKING, Protocol

from keysweep.detect import KeyCap, Place
from keysweep.models import Finding, Location
from keysweep.sources import tarstream
from keysweep.sources.names import readable

if TYPE_CHECKING:
    from keysweep.detect import Detector
    from keysweep.scan_types import ScanOptions, ScanStats

# ISA-L's inflate and CRC where the `inflate` extra (or the deb, rpm and image) installs it: zlib's output in
# about 60 % of zlib's CPU
_zlib: ModuleType = zlib
_ZLIB_ERRORS: tuple[type[Exception], ...] = (zlib.error,)
_INFLATE = f"zlib {zlib.ZLIB_RUNTIME_VERSION}"
try:
    import isal
    from isal import isal_zlib
except ImportError:  # without the extra, or no wheel for this platform
    pass
else:
    _zlib = isal_zlib
    _ZLIB_ERRORS = (zlib.error, isal_zlib.error)  # type: ignore[assignment]  # its stubs make it an instance
    _INFLATE = f"isal {getattr(isal, '__version__', 'unknown')}"


def inflate_engine() -> str:
    """What inflates gzip files and zip members, as the scan's summary says it (``inflate``): ``isal <version>``
    (ISA-L) or ``zlib <version>`` (the zlib Python runs on: same bytes out, more CPU)."""
    return _INFLATE


# a zip nested in another archive needs random access; it is read into memory only up to this size
NESTED_ZIP_MAX = 8 * 1024 * 1024
RATIO_FLOOR = 8 * 1024 * 1024  # below this many expanded bytes, any ratio is harmless
MAX_ZIP_MEMBERS = 50_000
# zipfile reads its central directory whole and keeps every entry: past this size (~50,000 entries with
# long names) the zip is scanned as bytes instead
MAX_ZIP_DIRECTORY = 8 * 1024 * 1024
# an .xz whose decoder needs more (its dictionary: xz -9 uses 64 MiB, the default -6 8 MiB) is scanned as bytes
XZ_MEMLIMIT = 33 * 1024 * 1024
_CD_ENTRY = struct.Struct("<4s24xHHH12x")  # central directory entry: signature, name/extra/comment lengths
_READ = 1024 * 1024
_COMPRESSED = ("gzip", "bz2", "xz")
_ARCHIVE_ERRORS: tuple[type[Exception], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarstream.TarFormatError,
    EOFError,
    *_ZLIB_ERRORS,
    lzma.LZMAError,
    gzip.BadGzipFile,
    ValueError,
    OSError,
)


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b\x08", b"BZh", b"\xfd7zXZ\x00")


def sniff(head: bytes) -> str | None:
    """The container format from the first bytes: zip, tar, gzip, bz2, xz; None for anything else."""
    if not head.startswith(_MAGIC):  # almost every file: one call, no slices
        return "tar" if head.startswith(b"ustar", 257) else None
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if head[:3] == b"BZh" and head[3:4].isdigit():
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[257:262] == b"ustar":
        return "tar"
    return None


class ArchiveLimit(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _NotOpened(Exception):
    """The container is not opened as one (its bytes are scanned as they are); the reason is counted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _ratio_cap(options: ScanOptions, archive_size: int) -> int:
    """The expanded bytes an archive of this size may give by the ratio bound (never fewer than RATIO_FLOOR)."""
    return max(RATIO_FLOOR, int(options.archive_max_ratio * max(archive_size, 1)))


class _Budget:
    def __init__(self, options: ScanOptions, archive_size: int) -> None:
        self.max_bytes = options.archive_max_bytes
        self.ratio_cap = _ratio_cap(options, archive_size)
        self.expanded = 0

    def charge(self, n: int) -> None:
        self.expanded += n
        if self.expanded > self.max_bytes:
            raise ArchiveLimit("archive-too-large")
        if self.expanded > self.ratio_cap:
            raise ArchiveLimit("archive-ratio")


class Prefixed:
    """A stream with already-read bytes put back in front (for sniffing without seeking)."""

    def __init__(self, head: bytes, rest: _Readable) -> None:
        self._head = head
        self._rest = rest

    def read(self, n: int = -1, /) -> bytes:
        if self._head:
            if n < 0 or n >= len(self._head):
                out, self._head = self._head, b""
                if n < 0:
                    return out + self._rest.read()
                more = self._rest.read(n - len(out)) if n > len(out) else b""
                return out + more
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._rest.read(n)


class _Charged:
    """Reads from a member stream, charging the budget before the bytes go anywhere."""

    def __init__(self, rest: _Readable, budget: _Budget) -> None:
        self._rest = rest
        self._budget = budget

    def read(self, n: int = -1, /) -> bytes:
        data = self._rest.read(n if n >= 0 else _READ)
        self._budget.charge(len(data))
        return data


class _Counted:
    def __init__(self, rest: _Readable) -> None:
        self._rest = rest
        self.bytes = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._rest.read(n)
        self.bytes += len(data)
        return data


def _decompressor(kind: str, raw: _Readable) -> io.BufferedIOBase:
    fh: IO[bytes] = raw  # type: ignore[assignment]
    if kind == "gzip":
        return gzip.GzipFile(fileobj=fh, mode="rb")
    if kind == "bz2":
        return bz2.BZ2File(fh, mode="rb")
    # what LZMAFile does, with liblzma's memory limit (LZMAFile has none: a 30 KB .xz may declare a 2 GiB
    # dictionary, which fills as it decodes)
    reader = _compression.DecompressReader(
        fh, lzma.LZMADecompressor, trailing_error=lzma.LZMAError, memlimit=XZ_MEMLIMIT
    )
    return io.BufferedReader(reader)  # type: ignore[arg-type]


def _check_zip_directory(fh: _Readable, room: int) -> int:
    """The number of entries zipfile will hold for this zip; :class:`_NotOpened` when that is too much: a
    directory declaring more than ``MAX_ZIP_DIRECTORY`` bytes, or holding more than ``room`` entries (counted
    by walking the directory as zipfile will, not taken from the end record, which may say anything).
    Leaves ``fh`` at 0; a zip zipfile cannot open at all is left for zipfile to refuse (0)."""
    seek = fh.seek  # type: ignore[attr-defined]
    try:
        # zipfile's own reading of the end records (zip64 included), so the numbers are the ones it will use
        end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]  # stable since Python 2; no public equivalent
    except OSError:
        return 0
    except AttributeError:  # a Python without it: nothing can be bounded
        raise _NotOpened("archive-unsupported") from None
    if not end:
        return 0
    size_cd = end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    if size_cd > MAX_ZIP_DIRECTORY:
        raise _NotOpened("archive-directory-too-large")
    location = end[zipfile._ECD_LOCATION]  # type: ignore[attr-defined]
    start = location - size_cd
    count = 0
    try:
        if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:  # type: ignore[attr-defined]
            # the directory ends where the zip64 end record starts: Python 3.9.2 (Debian 11) gives that record's
            # position as the location, later releases the position of the end record after it
            seek(location)
            if fh.read(4) != zipfile.stringEndArchive64:  # type: ignore[attr-defined]
                start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator  # type: ignore[attr-defined]
        if start >= 0:
            seek(start)
            total = 0
            while total < size_cd:
                entry = fh.read(_CD_ENTRY.size)
                if len(entry) < _CD_ENTRY.size:
                    break
                sig, n, m, k = _CD_ENTRY.unpack(entry)
                if sig != b"PK\x01\x02":
                    break
                count += 1
                if count > room:
                    raise _NotOpened("archive-too-many-members")
                seek(n + m + k, os.SEEK_CUR)
                total += _CD_ENTRY.size + n + m + k
    finally:
        seek(0)
    return count


def _zip_lzma_dictionary(fh: _Readable, info: zipfile.ZipInfo) -> int:
    """The dictionary size an LZMA-compressed zip member declares (zipfile decodes it raw, where liblzma takes
    no memory limit); 0 when its headers cannot be read (zipfile then refuses the member itself)."""
    seek = fh.seek  # type: ignore[attr-defined]
    pos = fh.tell()  # type: ignore[attr-defined]
    try:
        seek(info.header_offset)
        local = fh.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            return 0
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        seek(info.header_offset + 30 + name_len + extra_len)
        props = fh.read(9)  # version (2), size of the properties (2), lc/lp/pb (1), dictionary size (4)
        return int.from_bytes(props[5:9], "little") if len(props) == 9 else 0
    finally:
        seek(pos)


_ZIP_INFLATED = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_LOCAL = struct.Struct("<4s2xH18xHH")  # local file header: signature, flags, name and extra lengths
_RAW_READ = 256 * 1024  # compressed bytes read at a time


class _ZipMember:
    """``read(n)`` over one stored or deflated zip member: what ``zipfile.ZipFile.open`` and ``ZipExtFile``
    read and check, without their layers (a shared file, a buffered stream over ``read1``, 4 KiB reads).

    Like them: the local header's signature and name are checked against the central directory and its flags
    for encryption (``RuntimeError``) and unsupported features (``NotImplementedError``); the sizes used are
    the central directory's (data descriptors and a local header's sizes are not read); the data stops at the
    declared size, a deflate stream at its end; the CRC is checked once the data ends (``BadZipFile``), a
    file that ends early raises ``EOFError``. Reads are whole: ``read(n)`` returns ``n`` bytes unless the
    member ends."""

    def __init__(self, fh: _Readable, info: zipfile.ZipInfo) -> None:
        seek = fh.seek  # type: ignore[attr-defined]
        seek(info.header_offset)
        local = fh.read(_LOCAL.size)
        if len(local) != _LOCAL.size:
            raise zipfile.BadZipFile("Truncated file header")
        sig, flags, name_len, extra_len = _LOCAL.unpack(local)
        if sig != b"PK\x03\x04":
            raise zipfile.BadZipFile("Bad magic number for file header")
        name = fh.read(name_len)
        if info.flag_bits & 0x60:  # compressed patched data, strong encryption
            raise NotImplementedError("zip member feature")
        # an ASCII name reads the same in both encodings (cp437's decoder is a Python-level codec)
        text = name.decode("ascii") if name.isascii() else name.decode("utf-8" if flags & 0x800 else "cp437")
        if text != info.orig_filename:
            raise zipfile.BadZipFile(f"File name in directory {info.orig_filename!r} and header {name!r} differ.")
        if info.flag_bits & 1:
            raise RuntimeError("encrypted member")
        self._fh = fh
        self._pos = info.header_offset + _LOCAL.size + name_len + extra_len
        end = getattr(info, "_end_offset", None)  # where the next entry starts (zipfile since 3.11.8, 3.12.3)
        if end is not None and self._pos + info.compress_size > end:
            raise zipfile.BadZipFile(f"Overlapped entries: {info.orig_filename!r} (possible zip bomb)")
        self._compress_left = info.compress_size
        self._left = info.file_size
        self._inflate = _zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
        self._pending = b""  # read and checked, not yet returned
        self._crc = 0
        self._expected_crc = info.CRC
        self._eof = False

    def _raw(self, n: int) -> bytes:
        if self._compress_left <= 0:
            return b""
        fh = self._fh
        fh.seek(self._pos)  # type: ignore[attr-defined]
        data = fh.read(min(max(n, _RAW_READ), self._compress_left))
        if not data:
            raise EOFError
        self._pos += len(data)
        self._compress_left -= len(data)
        return data

    def _read1(self, n: int) -> bytes:
        """About ``n`` more bytes of the member (more when a stored read or the inflater's flush gives more)."""
        inflate = self._inflate
        if inflate is None:
            data = self._raw(n)
            self._eof = self._compress_left <= 0
        else:
            data = inflate.decompress(inflate.unconsumed_tail or self._raw(n), n)
            self._eof = inflate.eof or (self._compress_left <= 0 and not inflate.unconsumed_tail)
            if self._eof:
                data += inflate.flush()
        data = data[: self._left]
        self._left -= len(data)
        if self._left <= 0:
            self._eof = True
        self._crc = _zlib.crc32(data, self._crc)
        if self._eof and self._crc != self._expected_crc:
            raise zipfile.BadZipFile("Bad CRC-32 for a member")
        return data

    def read(self, n: int = -1, /) -> bytes:
        if n < 0:
            n = _READ
        parts = [self._pending]
        have = len(self._pending)
        while have < n and not self._eof:
            data = self._read1(n - have)
            parts.append(data)
            have += len(data)
        out = parts[-1] if have == len(parts[-1]) else b"".join(parts)  # one piece (most reads): no copy
        self._pending = out[n:]
        return out[:n]


def _strip_suffix(name: str) -> str:
    base = os.path.basename(name) or name
    for suffix in (".gz", ".tgz", ".bz2", ".xz", ".z"):
        if base.lower().endswith(suffix):
            stem = base[: -len(suffix)]
            return stem + ".tar" if suffix == ".tgz" else stem
    return base


class _ArchiveScan:
    def __init__(self, path: str, detector: Detector, options: ScanOptions, stats: ScanStats, size: int) -> None:
        self.path = path
        self.detector = detector
        self.options = options
        self.stats = stats
        self.budget = _Budget(options, size)
        self.cap = KeyCap()  # one for all members: an archive of many small files is one place's worth of keys
        self.opened = False  # a member was reached: the file is an archive, whatever fails later
        self.zip_entries = 0  # central directory entries held by the zips open now (nested ones included)
        self.findings: list[Finding] = []

    def container(self, fh: _Readable, kind: str, prefix: str, name: str, depth: int, charged: bool = False) -> None:
        """Scan every member of one container; ``depth`` is this container's nesting level (1 = on disk);
        ``charged``: ``fh`` already charges the budget for what is read from it."""
        self.stats.archives_scanned += 1
        if kind == "zip":
            self._zip(fh, prefix, depth)
        elif kind == "tar":
            self._tar(fh if charged else _Charged(fh, self.budget), prefix, depth)
        else:
            stream = _Charged(_decompressor(kind, fh), self.budget)
            try:
                head = stream.read(512)
            except lzma.LZMAError as exc:
                if "memory usage limit" in str(exc).lower():
                    raise _NotOpened("archive-memory-limit") from None
                raise
            body = Prefixed(head, stream)
            if sniff(head) == "tar":
                self._tar(body, prefix, depth)
            else:
                self.member(body, prefix + _strip_suffix(name), depth, charged=True)

    def _zip(self, fh: _Readable, prefix: str, depth: int) -> None:
        # zipfile holds its whole central directory in memory (~600 bytes a member): past the bounds, its
        # bytes are scanned as they are instead. A zip nested in a zip is open while its parent is, so the
        # member bound is on all the zips open at once
        entries = _check_zip_directory(fh, MAX_ZIP_MEMBERS - self.zip_entries)
        self.zip_entries += entries
        try:
            self._zip_members(fh, prefix, depth)
        finally:
            self.zip_entries -= entries

    def _zip_members(self, fh: _Readable, prefix: str, depth: int) -> None:
        try:
            zf = zipfile.ZipFile(fh)  # type: ignore[call-overload]  # fh is a real, seekable file
        except NotImplementedError:  # an entry needing a later zip version (> 6.3) than zipfile reads
            raise _NotOpened("archive-unsupported") from None
        with zf:
            for info in zf.infolist():
                if info.filename.endswith("/"):  # not is_dir(): it fails on an empty name
                    continue
                if info.compress_type == zipfile.ZIP_LZMA and _zip_lzma_dictionary(fh, info) > XZ_MEMLIMIT:
                    self.stats.skipped["archive-memory-limit"] += 1
                    continue
                try:
                    if info.compress_type in _ZIP_INFLATED:
                        member = _ZipMember(fh, info)
                        if info.file_size < _READ:  # most members: the whole of it in one read
                            self.opened = True  # a member was reached, whatever its read raises
                            data = member.read(_READ)
                            self.budget.charge(len(data))
                            self.whole(data, prefix + readable(info.filename), depth)
                        else:
                            self.member(member, prefix + readable(info.filename), depth)
                        continue
                    with zf.open(info) as mf:
                        self.member(mf, prefix + readable(info.filename), depth)
                except RuntimeError:  # encrypted member
                    self.stats.unread("archive-encrypted", f"{self.path}!{prefix}{readable(info.filename)}")
                except NotImplementedError:  # compression method zipfile cannot read
                    self.stats.unread("archive-unsupported", f"{self.path}!{prefix}{readable(info.filename)}")

    def _tar(self, fh: _Readable, prefix: str, depth: int) -> None:
        """The members of a tar stream whose reads are charged; an over-long header ends this tar (what
        follows it cannot be told apart), counted as ``archive-header-too-large``."""
        try:
            for m, data in tarstream.members(fh.read):
                self.member(data, prefix + readable(m.name.decode("utf-8", "surrogateescape")), depth, charged=True)
        except tarstream.HeaderTooLong:
            self.stats.skipped["archive-header-too-large"] += 1

    def whole(self, data: bytes, name: str, depth: int) -> None:
        """A member read whole (the archive marked opened, the bytes charged): what :meth:`member` makes of
        it, without its reads."""
        if sniff(data) is not None:  # a nested archive
            self.member(io.BytesIO(data), name, depth, charged=True)
        else:
            self._scan_whole(data, name)

    def _scan_whole(self, data: bytes, name: str) -> None:
        """A whole member that is no container: one buffer, what scan_stream would make of it (no Place or
        Location unless the native gate sees something in it)."""
        if self.detector.may_hold(data):
            place = Place(self.cap)
            location = Location(kind="archive", path=self.path, member=name)
            self.detector.scan(data, location=location, place=place)
            self.findings.extend(place.findings())
        self.stats.archive_members_scanned += 1
        self.stats.bytes_scanned += len(data)

    def member(self, fh: _Readable, name: str, depth: int, charged: bool = False) -> None:
        self.opened = True
        reader = fh if charged else _Charged(fh, self.budget)
        head = reader.read(_READ)
        kind = sniff(head)
        if kind is None and len(head) < _READ:
            more = reader.read(_READ - len(head))
            if not more:  # the whole member (most are small)
                self._scan_whole(head, name)
                return
            head += more
            kind = sniff(head)
        raw: _Readable = Prefixed(head, reader)
        if kind is not None:
            if depth < self.options.archive_max_depth:
                rest = self._nested(reader, head, kind, name, depth)
                if rest is None:
                    return
                raw = rest
            else:
                self.stats.unread("archive-depth", f"{self.path}!{name}")
        counted = _Counted(raw)
        location = Location(kind="archive", path=self.path, member=name)
        self.findings.extend(
            self.detector.scan_stream(counted.read, location=location, chunk_size=_READ, place=Place(self.cap))
        )
        self.stats.archive_members_scanned += 1
        self.stats.bytes_scanned += counted.bytes

    def _nested(self, reader: _Readable, head: bytes, kind: str, name: str, depth: int) -> _Readable | None:
        """Open a nested container. None when done; else the member's bytes, to be scanned as they are."""
        prefix = name + "!"
        if kind != "zip":
            try:
                self.container(Prefixed(head, reader), kind, prefix, name, depth + 1, charged=True)
            except ArchiveLimit:
                raise
            except _NotOpened as why:  # compressed: its raw bytes would show nothing
                self.stats.skipped[why.reason] += 1
            except _ARCHIVE_ERRORS:
                self.stats.errors["archive-corrupt"] += 1  # streamed: what was read is gone, the rest is skipped
            return None
        parts, size = [head], len(head)  # zip needs random access: in memory, bounded
        while size <= NESTED_ZIP_MAX:
            more = reader.read(_READ)
            if not more:
                break
            parts.append(more)
            size += len(more)
        data = b"".join(parts)
        del parts
        if size > NESTED_ZIP_MAX:
            self.stats.unread("nested-archive-too-large", f"{self.path}!{name}")
            return Prefixed(data, reader)
        try:
            self.container(io.BytesIO(data), "zip", prefix, name, depth + 1)  # BytesIO shares the bytes
        except ArchiveLimit:
            raise
        except _NotOpened as why:
            self.stats.skipped[why.reason] += 1
            return io.BytesIO(data)
        except _ARCHIVE_ERRORS:
            self.stats.errors["archive-corrupt"] += 1
            return io.BytesIO(data)
        return None


SMALL_GZIP_MAX = 4 * 1024 * 1024  # a gzip file read whole that expands to at most this is inflated in one call


def scan_small_gzip(
    data: bytes, path: str, detector: Detector, options: ScanOptions, stats: ScanStats
) -> list[Finding] | None:
    """A whole gzip file of one member holding plain bytes (a rotated log, a man page), inflated in one zlib
    call (the CRC and length checked) and scanned as its member: what :func:`scan_archive` would report, without
    its stream layers. None when it is anything else (several members, a tar, a nested archive, past the
    budget or :data:`SMALL_GZIP_MAX`, damaged): then :func:`scan_archive` reads it."""
    limit = min(SMALL_GZIP_MAX, options.archive_max_bytes, _ratio_cap(options, len(data)))  # the budget's bounds
    inflate = _zlib.decompressobj(wbits=31)
    try:
        out = inflate.decompress(data, limit + 1)
    except _ZLIB_ERRORS:
        return None
    if not inflate.eof or inflate.unused_data or len(out) > limit:
        return None
    kind = sniff(out)
    if kind is not None:
        if kind != "tar":
            return None
        # a small .tar.gz: its tar read from memory, not inflated a second time
        scan = _ArchiveScan(path, detector, options, stats, len(data))
        return _run(scan, io.BytesIO(out), "tar", os.path.basename(path))
    stats.archives_scanned += 1
    stats.archive_members_scanned += 1
    stats.bytes_scanned += len(out)
    if not detector.may_hold(out):  # almost every log: no Place, no Location, no detector pass
        return []
    place = Place()
    location = Location(kind="archive", path=path, member=_strip_suffix(os.path.basename(path)))
    detector.scan(out, location=location, place=place)
    if place.cap.over:
        stats.skipped["too-many-keys"] += place.cap.over
    return place.findings()  # what scan_stream returns for the member


def scan_archive(
    fh: IO[bytes],
    kind: str,
    path: str,
    size: int,
    detector: Detector,
    options: ScanOptions,
    stats: ScanStats,
) -> list[Finding] | None:
    """Scan an archive file's members. None when it cannot be opened as ``kind`` at all (scan it as bytes)."""
    return _run(_ArchiveScan(path, detector, options, stats, size), fh, kind, os.path.basename(path))


def _run(scan: _ArchiveScan, fh: _Readable, kind: str, name: str) -> list[Finding] | None:
    """The members of the top-level container ``fh``; None when it is not opened as ``kind`` at all."""
    stats, path = scan.stats, scan.path
    try:
        scan.container(fh, kind, "", name, 1)
    except ArchiveLimit as limit:
        stats.unread(limit.reason, path)  # partly scanned: the findings before the limit are kept
    except _NotOpened as why:
        stats.skipped[why.reason] += 1
        stats.archives_scanned -= 1
        return None
    except _ARCHIVE_ERRORS:
        if not scan.opened:
            stats.archives_scanned -= 1
            return None
        stats.errors["archive-corrupt"] += 1
    finally:
        if scan.cap.over:
            stats.skipped["too-many-keys"] += scan.cap.over
    return scan.findings
