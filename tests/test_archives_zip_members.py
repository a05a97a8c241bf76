"""Zip members are read by the scanner's own reader (one inflate object over the raw member bytes), not through
``zipfile.ZipFile.open``: on any bytes it must read what ``zipfile`` reads and refuse what ``zipfile`` refuses,
and a scan must report the same, whatever the local headers, data descriptors or zip64 records say."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keysweep.sources import archives

from tests.support.hosttree import scan_paths

KEY = "AKIASP2TPHJSQH3FJRUX"
SECRET = "Ab3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"
PAIR = f"AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY={SECRET}\n".encode()

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class _OneWay(io.RawIOBase):
    """A stream zipfile cannot seek back in: it writes each member's sizes in a data descriptor after it."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.buf += b
        return len(b)


def _zip(members: list[tuple[str, bytes, int]], *, descriptors: bool = False, zip64: bool = False) -> bytes:
    out: io.BytesIO | _OneWay = _OneWay() if descriptors else io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data, method in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            with z.open(info, "w", force_zip64=zip64) as w:
                w.write(data)
    return bytes(out.buf) if isinstance(out, _OneWay) else out.getvalue()


def _outcome(read: object) -> tuple[str, bytes]:
    try:
        return "ok", read()  # type: ignore[operator]
    except archives._ZLIB_ERRORS:  # zlib's, or ISA-L's where it inflates
        return "damaged deflate data", b""
    except Exception as exc:  # noqa: BLE001  # the type is what is compared
        return type(exc).__name__, b""


def _ours(data: bytes, info: zipfile.ZipInfo, sizes: list[int]) -> tuple[str, bytes]:
    def read() -> bytes:
        member = archives._ZipMember(io.BytesIO(data), info)
        parts, i = [], 0
        while True:
            n = sizes[i % len(sizes)]
            i += 1
            chunk = member.read(n)
            if not chunk:
                return b"".join(parts)
            assert len(chunk) <= n
            parts.append(chunk)
            if len(chunk) < n:  # reads are whole: a short one is the end
                assert member.read(n) == b""
                return b"".join(parts)

    return _outcome(read)


def _theirs(data: bytes, info: zipfile.ZipInfo) -> tuple[str, bytes]:
    def read() -> bytes:
        with zipfile.ZipFile(io.BytesIO(data)) as zf, zf.open(info) as mf:
            return mf.read()

    return _outcome(read)


_MEMBERS = st.lists(
    st.tuples(
        st.text("abc/._", min_size=1, max_size=12),
        st.one_of(
            st.binary(max_size=2000),
            st.builds(lambda n, b: b * n, st.integers(1, 40_000), st.binary(min_size=1, max_size=8)),
        ),
        st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda m: m[0],
)
_MUTATION = st.tuples(st.sampled_from(["flip", "zero", "cut"]), st.floats(0, 1), st.integers(1, 255))


def _mutate(data: bytes, mutations: list[tuple[str, float, int]]) -> bytes:
    out = bytearray(data)
    for how, where, value in mutations:
        if not out:
            break
        at = min(int(where * len(out)), len(out) - 1)
        if how == "flip":
            out[at] ^= value
        elif how == "zero":
            out[at : at + value % 16 + 1] = bytes(len(out[at : at + value % 16 + 1]))
        else:  # cut a piece out of the middle: sizes and offsets now point at the wrong bytes
            del out[at : at + value]
    return bytes(out)


# the reader inflates with ISA-L where the `inflate` extra installs it, else with zlib: both are held to zipfile
_INFLATERS = [zlib] + ([archives._zlib] if archives._zlib is not zlib else [])


@pytest.fixture(params=_INFLATERS, ids=lambda lib: lib.__name__)
def inflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setattr(archives, "_zlib", request.param)
    return request.param  # type: ignore[no-any-return]


@_SETTINGS
@given(
    _MEMBERS,
    st.booleans(),
    st.booleans(),
    st.lists(_MUTATION, max_size=3),
    st.lists(st.integers(100, 70_000), min_size=1, max_size=4),
)
def test_a_member_reads_as_zipfile_reads_it(
    inflater: ModuleType,
    members: list[tuple[str, bytes, int]],
    descriptors: bool,
    zip64: bool,
    mutations: list[tuple[str, float, int]],
    sizes: list[int],
) -> None:
    """Same bytes, or the same refusal (bad CRC, truncated data, a header that disagrees with the directory,
    damaged deflate data), on well-formed and damaged zips, with data descriptors and zip64 records."""
    data = _mutate(_zip(members, descriptors=descriptors, zip64=zip64), mutations)
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except Exception:  # noqa: BLE001  # a directory zipfile cannot read: the scanner never gets to members
        return
    for info in infos:
        if info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            assert _ours(data, info, sizes) == _theirs(data, info), info


def _patch_central(data: bytes, name: bytes, offset: int, fmt: str, value: int) -> bytes:
    """Overwrite a field of the central directory entry of ``name`` (offsets as in the zip specification)."""
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        n = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + n] == name:
            out = bytearray(data)
            struct.pack_into(fmt, out, at + offset, value)
            return bytes(out)
        at = data.find(b"PK\x01\x02", at + 4)
    raise AssertionError(name)


def _members(tmp_path: Path) -> list[tuple[str | None, bool]]:
    result = scan_paths(tmp_path)
    return sorted((f.location.member, f.has_secret) for f in result.findings)


def test_data_descriptors_and_zip64_members_are_read(tmp_path: Path) -> None:
    filler = b"x = 1\n" * 50_000  # 300 KB: read in several pieces
    members = [("a.env", PAIR, zipfile.ZIP_DEFLATED), ("b.txt", filler + PAIR, zipfile.ZIP_STORED)]
    (tmp_path / "descriptors.jar").write_bytes(_zip(members, descriptors=True))
    (tmp_path / "zip64.jar").write_bytes(_zip(members, zip64=True))
    result = scan_paths(tmp_path)
    assert sorted((f.location.path.rsplit("/", 1)[1], f.location.member, f.location.line) for f in result.findings) == [
        ("descriptors.jar", "a.env", 1),
        ("descriptors.jar", "b.txt", 50_001),
        ("zip64.jar", "a.env", 1),
        ("zip64.jar", "b.txt", 50_001),
    ]
    assert not result.stats.errors


def test_sizes_in_a_local_header_are_not_read(tmp_path: Path) -> None:
    """The central directory's sizes count (as zipfile has it): a local header claiming 0 bytes changes nothing."""
    data = bytearray(_zip([("a.env", b"# config\n" * 1000 + PAIR, zipfile.ZIP_DEFLATED)]))
    struct.pack_into("<LL", data, 18, 0, 0)  # the local header's compressed and uncompressed sizes
    (tmp_path / "lying-local.zip").write_bytes(bytes(data))
    assert _members(tmp_path) == [("a.env", True)]


def test_a_member_larger_than_its_declared_size_is_refused_after_what_came_before(tmp_path: Path) -> None:
    """The directory says fewer bytes than the member inflates to: its data is cut there, the CRC then fails
    and the archive is counted as corrupt; members before it keep their findings."""
    data = _zip([("a.env", PAIR, zipfile.ZIP_DEFLATED), ("b.env", b"filler\n" * 100 + PAIR, zipfile.ZIP_DEFLATED)])
    (tmp_path / "short.zip").write_bytes(_patch_central(data, b"b.env", 24, "<L", 10))  # uncompressed size
    result = scan_paths(tmp_path)
    assert [f.location.member for f in result.findings] == ["a.env"]
    assert result.stats.errors["archive-corrupt"] == 1


def test_member_data_that_runs_past_the_end_of_the_file_is_refused(tmp_path: Path) -> None:
    data = _zip([("a.env", PAIR, zipfile.ZIP_STORED), ("b.env", PAIR, zipfile.ZIP_STORED)])
    data = _patch_central(data, b"b.env", 20, "<L", 1 << 30)  # compressed size
    (tmp_path / "truncated.zip").write_bytes(_patch_central(data, b"b.env", 24, "<L", 1 << 30))  # and uncompressed
    result = scan_paths(tmp_path)
    assert [f.location.member for f in result.findings] == ["a.env"]
    assert result.stats.errors["archive-corrupt"] == 1


def test_a_local_header_naming_another_member_is_refused(tmp_path: Path) -> None:
    """As zipfile refuses it before any member is read: the file is not opened as a zip, its bytes are scanned."""
    data = _zip([("a.env", PAIR, zipfile.ZIP_STORED)])
    (tmp_path / "renamed.zip").write_bytes(data.replace(b"a.env", b"b.env", 1))  # the local header's name only
    result = scan_paths(tmp_path)
    assert [(f.location.kind, f.location.member) for f in result.findings] == [("file", None)]
    assert result.stats.archive_members_scanned == 0


def test_a_damaged_crc_is_refused(tmp_path: Path) -> None:
    data = _zip([("a.env", PAIR, zipfile.ZIP_STORED)])
    crc = zipfile.ZipFile(io.BytesIO(data)).getinfo("a.env").CRC
    (tmp_path / "crc.zip").write_bytes(_patch_central(data, b"a.env", 16, "<L", crc ^ 1))
    result = scan_paths(tmp_path)
    assert result.findings == []
    assert result.stats.errors["archive-corrupt"] == 1


def test_a_member_with_an_empty_name_is_read(tmp_path: Path) -> None:
    (tmp_path / "noname.zip").write_bytes(_zip([("", PAIR, zipfile.ZIP_DEFLATED), ("dir/", b"", zipfile.ZIP_STORED)]))
    result = scan_paths(tmp_path)
    assert [(f.location.member, f.has_secret) for f in result.findings] == [("", True)]
    assert not result.stats.errors
    assert result.stats.archive_members_scanned == 1  # the directory entry is not a member to read


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(st.binary(max_size=3000), st.builds(lambda n, b: b * n, st.integers(1, 20_000), st.binary(min_size=1))),
    st.booleans(),
    st.lists(_MUTATION, max_size=3),
)
def test_a_gzip_file_read_whole_reports_what_the_stream_reports(
    tmp_path: Path, inflater: ModuleType, body: bytes, two_members: bool, mutations: list[tuple[str, float, int]]
) -> None:
    """Whichever inflater reads a whole gzip file (damaged ones included), the scan reports what the `gzip`
    module's stream reports: the same findings and counts (a file one refuses, the other reads to the same
    bytes or refuses too)."""
    data = gzip.compress(b"log line\n" + body + PAIR, mtime=0)
    if two_members:
        data += gzip.compress(PAIR, mtime=0)
    data = _mutate(data, mutations)
    for old in tmp_path.iterdir():
        old.unlink()
    (tmp_path / "app.log.1.gz").write_bytes(data)
    whole = scan_paths(tmp_path)
    small = archives.SMALL_GZIP_MAX
    try:
        archives.SMALL_GZIP_MAX = -1  # every gzip file through the stream reader
        streamed = scan_paths(tmp_path)
    finally:
        archives.SMALL_GZIP_MAX = small
    assert sorted((f.key_id, f.has_secret, f.location.line) for f in whole.findings) == sorted(
        (f.key_id, f.has_secret, f.location.line) for f in streamed.findings
    )
    assert (whole.stats.bytes_scanned, whole.stats.errors) == (streamed.stats.bytes_scanned, streamed.stats.errors)


def test_a_zip_of_a_later_version_than_zipfile_reads_is_scanned_as_bytes(tmp_path: Path) -> None:
    """zipfile refuses a directory entry needing zip version 6.4 or later: counted as unsupported and the file's
    bytes scanned (a stored key is still found), alone or nested in a tar."""
    data = bytearray(_zip([("a.env", PAIR, zipfile.ZIP_STORED)]))
    struct.pack_into("<H", data, data.find(b"PK\x01\x02") + 6, 64)  # version needed to extract: 6.4
    (tmp_path / "v64.zip").write_bytes(bytes(data))
    result = scan_paths(tmp_path)
    assert [(f.location.kind, f.key_id, f.has_secret) for f in result.findings] == [("file", KEY, True)]
    assert (dict(result.stats.skipped), dict(result.stats.errors)) == ({"archive-unsupported": 1}, {})
    (tmp_path / "v64.zip").unlink()
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        info = tarfile.TarInfo("lib/v64.zip")
        info.size = len(data)
        t.addfile(info, io.BytesIO(bytes(data)))
    (tmp_path / "outer.tar").write_bytes(tar.getvalue())
    result = scan_paths(tmp_path)
    assert [(f.location.member, f.has_secret) for f in result.findings] == [("lib/v64.zip", True)]
    assert (dict(result.stats.skipped), dict(result.stats.errors)) == ({"archive-unsupported": 1}, {})


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_members_either_side_of_one_read_report_the_same(tmp_path: Path, method: int) -> None:
    """A member under one read (read whole) and one over it (streamed in chunks) find their key at the same line
    and count every byte; names in UTF-8 and in cp437 (zip's two encodings) are checked and shown alike."""
    line = b"x" * 99 + b"\n"
    under = line * ((archives._READ - len(PAIR) - 1) // len(line))
    over = line * (archives._READ // len(line) + 1)
    members = [("small.env", under + PAIR, method), ("größer.env", over + PAIR, method)]
    (tmp_path / "sizes.zip").write_bytes(_zip(members))
    # a name in cp437 (no UTF-8 flag): zipfile writes "cafX.env" as ASCII, X becomes cp437's é (0x82) in both headers
    cp437 = _zip([("cafX.env", under + PAIR, method)]).replace(b"cafX.env", b"caf\x82.env")
    (tmp_path / "cp437.zip").write_bytes(cp437)
    result = scan_paths(tmp_path)
    lines = 1 + under.count(b"\n"), 1 + over.count(b"\n")
    assert sorted((f.location.member, f.location.line, f.has_secret) for f in result.findings) == sorted(
        [("small.env", lines[0], True), ("größer.env", lines[1], True), ("café.env", lines[0], True)]
    )
    assert len(under + PAIR) < archives._READ < len(over + PAIR)
    assert result.stats.bytes_scanned == 2 * len(under + PAIR) + len(over + PAIR)
    assert result.stats.archive_members_scanned == 3
    assert not result.stats.errors
