"""Archives are attacker-written bytes: random and mutated tar, zip and gzip never escape the scanner, stay within
their budget, and the streaming tar reader agrees with ``tarfile`` on every well-formed archive."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from keysweep.sources import tarstream
from keysweep.sources.archives import sniff

from tests.support.hosttree import scan_paths

KEY = "AKIASP2TPHJSQH3FJRUX"
SECRET = "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"
PAIR = f"AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY={SECRET}\n".encode()
BUDGET = 256 * 1024
_READ = 1 << 20  # one member read may pass the budget before it is charged

_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_NAMES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=40),
    st.text("ab/", min_size=101, max_size=300),  # past ustar's 100 bytes: a GNU long name or a pax path
).map(lambda n: n.strip("/") or "x")
_MEMBERS = st.lists(
    st.tuples(
        _NAMES.filter(lambda n: n != "planted.env"),
        st.sampled_from(["file", "dir", "symlink"]),
        st.binary(max_size=3000),
    ),
    max_size=8,
    unique_by=lambda m: m[0],
)


def _tar(members: list[tuple[str, str, bytes]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as t:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "../" + name
            else:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return buf.getvalue()


@settings(max_examples=150, deadline=None)
@given(_MEMBERS, st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
def test_the_tar_reader_yields_what_tarfile_reads(members: list[tuple[str, str, bytes]], fmt: int) -> None:
    data = _tar(members, fmt)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|", encoding="utf-8", errors="surrogateescape") as t:
        expected = [(m.name, t.extractfile(m).read()) for m in t if m.isreg()]  # type: ignore[union-attr]
    got = [(m.name.decode("utf-8", "surrogateescape"), r.read()) for m, r in tarstream.members(io.BytesIO(data).read)]
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_the_tar_reader_on_any_bytes_raises_only_its_own_errors(data: bytes) -> None:
    try:
        for _member, reader in tarstream.members(io.BytesIO(data).read):
            while reader.read(1000):
                pass
    except (tarstream.TarFormatError, tarstream.HeaderTooLong):
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048), st.integers(0, 1 << 40))
def test_the_tar_reader_never_holds_more_than_a_header_bound(payload: bytes, declared: int) -> None:
    """Whatever size a long-name or pax header declares, no read asks for more than the bound."""
    header = bytearray(512)
    header[:13] = b"././@LongLink"
    header[124:136] = b"%011o\0" % min(declared, 0o77777777777)
    header[156:157] = b"L"
    header[257:265] = b"ustar  \0"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    src = io.BytesIO(bytes(header) + payload)
    asked: list[int] = []

    def read(n: int) -> bytes:
        asked.append(n)
        return src.read(n)

    try:
        for _m, reader in tarstream.members(read):
            reader.read()
    except (tarstream.TarFormatError, tarstream.HeaderTooLong):
        pass
    assert max(asked) <= max(tarstream.MAX_HEADER + 512, 16 * 64 * 1024)


def _zip(members: list[tuple[str, str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, _kind, data in members:
            z.writestr(name, data)
        z.writestr("planted.env", PAIR)
    return buf.getvalue()


def _containers(members: list[tuple[str, str, bytes]]) -> dict[str, bytes]:
    planted = [*members, ("planted.env", "file", PAIR)]
    tar = _tar(planted, tarfile.PAX_FORMAT)
    return {"a.tar": tar, "a.tgz": gzip.compress(tar), "a.zip": _zip(members), "a.log.gz": gzip.compress(PAIR)}


_MUTATION = st.tuples(
    st.sampled_from(["flip", "truncate", "insert", "zero"]), st.floats(0, 1), st.binary(min_size=1, max_size=64)
)


def _mutate(data: bytes, mutations: list[tuple[str, float, bytes]]) -> bytes:
    out = bytearray(data)
    for how, where, junk in mutations:
        at = int(where * len(out))
        if how == "flip" and out:
            out[min(at, len(out) - 1)] ^= junk[0] or 1
        elif how == "truncate":
            del out[at:]
        elif how == "insert":
            out[at:at] = junk
        else:
            out[at : at + len(junk)] = bytes(len(junk[: len(out) - at]))
    return bytes(out)


def _scan_one(tmp_path: Path, name: str, data: bytes):  # noqa: ANN202
    for old in tmp_path.iterdir():
        old.unlink()
    (tmp_path / name).write_bytes(data)
    return scan_paths(tmp_path, archive_max_bytes=BUDGET)


def _assert_contained(result, size: int) -> None:  # noqa: ANN001
    """Nothing escaped as an internal error, and no more was read than the file or the budget allows."""
    assert not result.stats.errors.get("internal-error"), result.stats.errors
    assert result.stats.bytes_scanned <= size + BUDGET + _READ


@_SETTINGS
@given(_MEMBERS, st.lists(_MUTATION, min_size=1, max_size=4), st.sampled_from(["a.tar", "a.tgz", "a.zip", "a.log.gz"]))
def test_mutated_archives_never_escape_the_scanner(
    tmp_path: Path, members: list[tuple[str, str, bytes]], mutations: list[tuple[str, float, bytes]], name: str
) -> None:
    data = _mutate(_containers(members)[name], mutations)
    result = _scan_one(tmp_path, name, data)
    _assert_contained(result, len(data))


@_SETTINGS
@given(_MEMBERS, st.sampled_from(["a.tar", "a.tgz", "a.zip", "a.log.gz"]))
def test_well_formed_archives_report_their_planted_pair(
    tmp_path: Path, members: list[tuple[str, str, bytes]], name: str
) -> None:
    # a member that only looks like a nested archive is an error by design (its streamed bytes are gone)
    assume(all(KEY.encode() not in d and sniff(d) is None for _n, _k, d in members))
    data = _containers(members)[name]
    result = _scan_one(tmp_path, name, data)
    _assert_contained(result, len(data))
    assert [(f.key_id, f.location.kind) for f in result.findings if f.has_secret] == [(KEY, "archive")]
    assert not result.stats.errors


_MAGIC = st.sampled_from(
    [
        b"PK\x03\x04",
        b"PK\x05\x06",
        b"\x1f\x8b\x08",
        b"BZh9",
        b"\xfd7zXZ\x00",
        b"\x1f\x8b\x08\x1c\0\0\0\0\0\x03",  # gzip with FEXTRA, FNAME and FCOMMENT set
    ]
)


@_SETTINGS
@given(_MAGIC, st.binary(max_size=4096), st.booleans())
def test_random_bytes_behind_an_archive_magic_never_escape_the_scanner(
    tmp_path: Path, magic: bytes, rest: bytes, as_tar: bool
) -> None:
    data = magic + rest
    if as_tar:  # the same bytes where a tar header would say "ustar"
        data = (data + bytes(512))[:257] + b"ustar\x0000" + data[265:]
    result = _scan_one(tmp_path, "x.bin", data)
    _assert_contained(result, len(data))


@pytest.mark.timeout(120)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(BUDGET // 512, 8 * BUDGET // 512), st.sampled_from([b"5", b"2", b"x", b"Z"]))
def test_headers_without_data_are_charged_until_the_budget_stops_them(
    tmp_path: Path, count: int, typeflag: bytes
) -> None:
    """Entries with no data (directories, links, empty pax headers, unknown types) cost budget like data does."""
    block = bytearray(512)
    block[:2] = b"d/"
    block[124:136] = b"%011o\0" % 0
    block[156:157] = typeflag
    block[257:265] = b"ustar  \0"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    tar = bytes(block) * count + bytes(1024)
    result = _scan_one(tmp_path, "h.tgz", gzip.compress(tar))
    if len(tar) > BUDGET:
        assert result.stats.skipped["archive-too-large"] == 1
    else:
        assert not result.stats.skipped and not result.stats.errors


def test_pax_headers_repeated_without_a_member_hold_no_more_than_one() -> None:
    """Thousands of global and per-file pax headers, each with a new large record, before one member: the
    reader keeps only the records it uses, so what it holds does not grow with them."""
    import tracemalloc

    def pax(typeflag: bytes, i: int) -> bytes:
        body = b"SCHILY.xattr.user.k%d=" % i + b"v" * 60_000 + b"\n"
        rec = b"%d " % (len(body) + 6) + body
        assert int(rec.split(b" ", 1)[0]) == len(rec)
        h = bytearray(512)
        h[:3] = b"pax"
        h[124:136] = b"%011o\0" % len(rec)
        h[156:157] = typeflag
        h[257:265] = b"ustar\x0000"
        h[148:156] = b" " * 8
        h[148:156] = b"%06o\0 " % sum(h)
        return bytes(h) + rec + bytes(-len(rec) % 512)

    def stream():  # noqa: ANN202
        for i in range(300):
            yield pax(b"g" if i % 2 else b"x", i)

    data = b"".join(stream()) + _tar([("a.env", "file", PAIR)], tarfile.USTAR_FORMAT)
    tracemalloc.start()
    got = [(m.name, r.read()) for m, r in tarstream.members(io.BytesIO(data).read)]
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert got == [(b"a.env", PAIR)]
    assert peak < 6 * tarstream.MAX_HEADER, peak  # one header, its records and their copies; not 300 of them
