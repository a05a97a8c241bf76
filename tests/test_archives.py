"""Archives: formats by magic, nesting to a depth limit, zip bombs stopped by the budget, never extracted to disk."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tarfile
import zipfile
from pathlib import Path

import pytest
from keysweep.sources.archives import sniff

from tests.support.hosttree import scan_paths

KEY = "AKIASP2TPHJSQH3FJRUX"
SECRET = "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"
PAIR = f"AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY={SECRET}\n".encode()


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _tar(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _only(tmp_path: Path, **opts: object) -> list[tuple[str, str | None, bool]]:
    result = scan_paths(tmp_path, **opts)
    return [(f.location.kind, f.location.member, f.has_secret) for f in result.findings]


@pytest.mark.parametrize(
    "name,data,member",
    [
        ("lib.jar", _zip({"conf/a.env": PAIR}), "conf/a.env"),
        ("stored.whl", _zip({"pkg/a.env": PAIR}, zipfile.ZIP_STORED), "pkg/a.env"),
        ("backup.tar", _tar({"etc/a.env": PAIR}), "etc/a.env"),
        ("backup.tgz", _tar({"etc/a.env": PAIR}, "w:gz"), "etc/a.env"),
        ("backup.tar.bz2", _tar({"etc/a.env": PAIR}, "w:bz2"), "etc/a.env"),
        ("backup.tar.xz", _tar({"etc/a.env": PAIR}, "w:xz"), "etc/a.env"),
        ("app.log.gz", gzip.compress(PAIR), "app.log"),
        ("app.log.bz2", bz2.compress(PAIR), "app.log"),
        ("app.log.xz", lzma.compress(PAIR), "app.log"),
        ("no-extension", _zip({"x/a.env": PAIR}), "x/a.env"),  # by magic, not by name
    ],
)
def test_formats_by_magic(tmp_path: Path, name: str, data: bytes, member: str) -> None:
    (tmp_path / name).write_bytes(data)
    assert _only(tmp_path) == [("archive", member, True)]


def test_sniff() -> None:
    assert sniff(_zip({"a": b"x"})) == "zip"
    assert sniff(gzip.compress(b"x")) == "gzip"
    assert sniff(_tar({"a": b"x"})) == "tar"
    assert sniff(b"BZh9" + b"\0" * 10) == "bz2"
    assert sniff(b"PKZIP is a name\n") is None
    assert sniff(b"hello") is None
    assert sniff(b"PK\x05\x06" + b"\0" * 18) == "zip"  # an empty zip: its end record only
    assert sniff(lzma.compress(b"x")) == "xz"
    assert sniff(b"\x1f\x8b\x07") is None  # gzip's magic with a method other than deflate
    assert sniff(b"BZhx" + b"\0" * 253 + b"ustar") == "tar"  # not bzip2 (no block size digit): a tar's header
    assert sniff(b"\x1f\x8b\x08" + b"\0" * 254 + b"ustar") == "gzip"  # the magic first
    assert sniff(b"x" * 257 + b"usta") is None


def test_nesting_to_the_depth_limit(tmp_path: Path) -> None:
    level3 = _zip({"deep.env": PAIR})
    level2 = _tar({"l3.zip": level3}, "w:gz")
    level1 = _zip({"l2.tgz": level2})
    (tmp_path / "outer.zip").write_bytes(level1)
    assert _only(tmp_path) == [("archive", "l2.tgz!l3.zip!deep.env", True)]
    # with depth 2 the innermost zip is scanned as raw bytes: deflated, so nothing is found, and it says so
    result = scan_paths(tmp_path, archive_max_depth=2)
    assert result.findings == []
    assert result.stats.skipped["archive-depth"] == 1
    # depth 0: archives are plain bytes
    (tmp_path / "outer.zip").unlink()
    (tmp_path / "plain.zip").write_bytes(_zip({"a.env": PAIR}, zipfile.ZIP_STORED))
    assert _only(tmp_path, archive_max_depth=0) == [("file", None, True)]


@pytest.mark.timeout(60)
def test_zip_bomb_is_stopped_by_the_ratio_limit(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.env", PAIR)
        with z.open("zeros.bin", "w") as w:
            block = b"\0" * (1 << 20)
            for _ in range(200):  # 200 MiB of zeros, ~200 KiB compressed
                w.write(block)
    (tmp_path / "bomb.zip").write_bytes(buf.getvalue())
    result = scan_paths(tmp_path)
    assert result.stats.skipped["archive-ratio"] == 1
    assert result.stats.bytes_scanned < 64 << 20  # stopped early, well before 200 MiB
    # what came before the limit is kept
    assert [f.key_id for f in result.findings] == [KEY]


@pytest.mark.timeout(60)
def test_total_expanded_bytes_limit(tmp_path: Path) -> None:
    import os

    data = os.urandom(3 << 20)  # incompressible: the ratio stays ~1
    (tmp_path / "big.tgz").write_bytes(_tar({"r.bin": data, "later.env": PAIR}, "w:gz"))
    result = scan_paths(tmp_path, archive_max_bytes=1 << 20)
    assert result.stats.skipped["archive-too-large"] == 1
    assert result.findings == []
    assert _only(tmp_path) == [("archive", "later.env", True)]


def test_corrupt_archives_are_counted_and_still_scanned_as_bytes(tmp_path: Path) -> None:
    good = _zip({"a.env": PAIR}, zipfile.ZIP_STORED)
    (tmp_path / "truncated.zip").write_bytes(good[:-30])  # central directory cut off
    result = scan_paths(tmp_path)
    # not a readable zip: its bytes (a stored member) are scanned as a file
    assert [(f.location.kind, f.key_id) for f in result.findings] == [("file", KEY)]
    (tmp_path / "truncated.zip").unlink()
    (tmp_path / "broken.gz").write_bytes(gzip.compress(PAIR * 1000)[:200])
    result = scan_paths(tmp_path)
    assert result.stats.errors["archive-corrupt"] == 1


def test_gzip_read_whole_or_streamed_alike(tmp_path: Path) -> None:
    """A small gzip file is inflated in one call; what it reports is what the streamed reader reports: several
    members as one, a damaged checksum counted as corrupt, a tar inside still opened as a tar."""
    filler = b"INFO request served\n" * 200
    (tmp_path / "a.log.2.gz").write_bytes(gzip.compress(filler + PAIR))
    (tmp_path / "b.log.gz").write_bytes(gzip.compress(filler) + gzip.compress(PAIR))  # two members
    (tmp_path / "c.tgz").write_bytes(_tar({"etc/a.env": PAIR}, "w:gz"))
    result = scan_paths(tmp_path)
    assert sorted((f.location.path.rsplit("/", 1)[1], f.location.member, f.has_secret) for f in result.findings) == [
        ("a.log.2.gz", "a.log.2", True),
        ("b.log.gz", "b.log", True),
        ("c.tgz", "etc/a.env", True),
    ]
    assert result.stats.archives_scanned == 3
    assert result.stats.archive_members_scanned == 3
    assert result.stats.files_scanned == 3
    assert result.stats.bytes_scanned == len(filler + PAIR) * 2 + len(PAIR)  # what the members hold
    damaged = bytearray(gzip.compress(filler + PAIR))
    damaged[-8] ^= 0xFF  # the CRC of the member's data
    for p in tmp_path.iterdir():
        p.unlink()
    (tmp_path / "d.log.gz").write_bytes(bytes(damaged))
    result = scan_paths(tmp_path)
    assert result.stats.errors["archive-corrupt"] == 1


def test_a_gzip_file_read_whole_is_counted_as_read_with_or_without_a_key(tmp_path: Path) -> None:
    """A log read whole whose bytes hold nothing to look at is counted as one archive and member of its bytes,
    as one holding a key is; one naming more keys than a place may report counts the rest, as streamed."""
    from keysweep.detect import MAX_KEYS_PER_PLACE

    from tests.support.planted import planted_key

    quiet = b"INFO request served in 3 ms\n" * 300
    (tmp_path / "quiet.log.1.gz").write_bytes(gzip.compress(quiet))
    (tmp_path / "key.log.2.gz").write_bytes(gzip.compress(quiet + PAIR))
    result = scan_paths(tmp_path)
    assert [(f.location.member, f.has_secret) for f in result.findings] == [("key.log.2", True)]
    stats = result.stats
    assert (stats.files_scanned, stats.archives_scanned, stats.archive_members_scanned) == (2, 2, 2)
    assert stats.bytes_scanned == 2 * len(quiet) + len(PAIR)
    for p in tmp_path.iterdir():
        p.unlink()
    ids = [planted_key(i).key_id for i in range(MAX_KEYS_PER_PLACE + 7)]
    (tmp_path / "ids.log.1.gz").write_bytes(gzip.compress("".join(f"request by {k}\n" for k in ids).encode()))
    result = scan_paths(tmp_path)
    assert len(result.findings) == MAX_KEYS_PER_PLACE
    assert result.stats.skipped["too-many-keys"] == 7


def test_an_archive_held_whole_by_the_first_read_reports_what_one_read_again_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archive the first read held whole is read from those bytes; one larger than that read is read from the
    file again: the same findings, counts and refusals either way (formats, nesting, damage, two gzip members)."""
    import random

    from keysweep.sources import filesystem

    noise = random.Random(14).randbytes(3000)  # incompressible: every file below is larger than one 2 KiB read
    files = {
        "lib.jar": _zip({"n.bin": noise, "conf/a.env": PAIR, "inner.zip": _zip({"deep.env": PAIR})}),
        "stored.zip": _zip({"a.env": PAIR, "n.bin": noise}, zipfile.ZIP_STORED),
        "plain.tar": _tar({"etc/a.env": PAIR}),
        "backup.tar.bz2": _tar({"n.bin": noise, "etc/b.env": PAIR}, "w:bz2"),
        "backup.tar.xz": _tar({"n.bin": noise, "etc/c.env": PAIR}, "w:xz"),
        "two.log.gz": gzip.compress(noise) + gzip.compress(PAIR),
        "truncated.zip": _zip({"n.bin": noise, "a.env": PAIR}, zipfile.ZIP_STORED)[:-30],
        "broken.tgz": _tar({"n.bin": noise, "etc/a.env": PAIR}, "w:gz")[:2500],
    }
    for name, data in files.items():
        assert len(data) > 2048, name
        (tmp_path / name).write_bytes(data)

    def outcome() -> tuple[list[tuple[str, str | None, int | None, bool]], dict[str, int], tuple[int, ...]]:
        result = scan_paths(tmp_path)
        s = result.stats
        found = sorted(
            (f.location.path or "", f.location.member, f.location.line, f.has_secret) for f in result.findings
        )
        counts = (s.files_scanned, s.archives_scanned, s.archive_members_scanned, s.bytes_scanned)
        return found, {**s.errors, **s.skipped}, counts

    whole = outcome()
    assert [member for _path, member, _line, _secret in whole[0]] == [
        "etc/b.env",
        "etc/c.env",
        "conf/a.env",
        "inner.zip!deep.env",
        "etc/a.env",
        "a.env",
        None,
        "two.log",
    ]
    assert whole[1] == {"archive-corrupt": 1}  # broken.tgz; truncated.zip is no zip: its bytes are scanned
    monkeypatch.setattr(filesystem, "CHUNK_SIZE", 2048)  # no file held whole by its first read
    assert outcome() == whole


def test_encrypted_member_is_counted(tmp_path: Path) -> None:
    data = bytearray(_zip({"secret.env": PAIR}, zipfile.ZIP_STORED))
    # set the "encrypted" flag bit in the local and central headers
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        at = data.find(sig)
        flag_at = at + (6 if sig == b"PK\x03\x04" else 8)
        data[flag_at] |= 1
    (tmp_path / "enc.zip").write_bytes(bytes(data))
    result = scan_paths(tmp_path)
    assert result.stats.skipped["archive-encrypted"] == 1


@pytest.mark.timeout(60)
def test_zip_with_too_many_members_is_skipped_before_its_directory_is_loaded(tmp_path: Path) -> None:
    from keysweep.sources import archives

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("a.env", PAIR)
        for i in range(archives.MAX_ZIP_MEMBERS):
            z.writestr(f"{i}", b"")
    (tmp_path / "many.zip").write_bytes(buf.getvalue())
    result = scan_paths(tmp_path)
    assert result.stats.skipped["archive-too-many-members"] == 1
    # its bytes are scanned as they are: the stored member is still found
    assert [(f.location.kind, f.key_id) for f in result.findings] == [("file", KEY)]
    # nested in a tar: the same, as a member
    (tmp_path / "many.zip").unlink()
    (tmp_path / "outer.tar").write_bytes(_tar({"lib/many.zip": buf.getvalue()}))
    result = scan_paths(tmp_path)
    assert result.stats.skipped["archive-too-many-members"] == 1
    assert [(f.location.kind, f.location.member) for f in result.findings] == [("archive", "lib/many.zip")]


def test_unreadable_nested_zip_is_scanned_as_bytes_whole(tmp_path: Path) -> None:
    # zip magic, then 3 MiB, the pair, 1 MiB more, and no zip structure: nothing read while trying may be lost
    fake = b"PK\x03\x04" + b"x" * (3 << 20) + b"\n" + PAIR + b"y" * (1 << 20)
    (tmp_path / "outer.tar").write_bytes(_tar({"lib/broken.zip": fake}))
    result = scan_paths(tmp_path)
    assert result.stats.errors["archive-corrupt"] == 1
    assert [(f.location.member, f.key_id, f.has_secret) for f in result.findings] == [("lib/broken.zip", KEY, True)]


def test_undecodable_member_names_are_reported_readably(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as t:
        info = tarfile.TarInfo("caf\xe9.env")  # written as the byte 0xe9: not UTF-8
        info.size = len(PAIR)
        t.addfile(info, io.BytesIO(PAIR))
    (tmp_path / "latin.tar").write_bytes(buf.getvalue())
    result = scan_paths(tmp_path)
    assert [f.location.member for f in result.findings] == ["caf\\xe9.env"]
    json.dumps([f.to_dict() for f in result.findings], ensure_ascii=False).encode("utf-8")


def test_nested_zip_over_the_memory_bound_is_scanned_as_bytes(tmp_path: Path) -> None:
    from keysweep.sources import archives

    big = _zip({"a.env": PAIR, "pad.bin": b"\0" * (archives.NESTED_ZIP_MAX + 1)}, zipfile.ZIP_STORED)
    (tmp_path / "outer.tar").write_bytes(_tar({"lib/big.jar": big}))
    result = scan_paths(tmp_path)
    assert result.stats.skipped["nested-archive-too-large"] == 1
    # stored, so its bytes still show the pair
    assert [(f.location.member, f.key_id) for f in result.findings] == [("lib/big.jar", KEY)]


# --- tar headers and zip directories: bounded before they are read -------------------------------------------


def _header(name: bytes, size: int, typeflag: bytes, magic: bytes = b"ustar  \0") -> bytes:
    """One tar header block (GNU magic by default), checksummed."""
    h = bytearray(512)
    h[: len(name)] = name
    h[100:108] = b"0000644\0"
    h[124:136] = b"%011o\0" % size
    h[156:157] = typeflag
    h[257:265] = magic
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _entry(name: bytes, data: bytes, typeflag: bytes = b"0") -> bytes:
    return _header(name, len(data), typeflag) + data + b"\0" * (-len(data) % 512)


class _Zeros:
    """``n`` bytes of a repeated byte as a gzip stream, produced piece by piece (no n-byte buffer)."""

    @staticmethod
    def gzip(parts: list[bytes | tuple[bytes, int]]) -> bytes:
        import zlib

        comp = zlib.compressobj(6, zlib.DEFLATED, 31)
        out = []
        for p in parts:
            if isinstance(p, tuple):
                byte, n = p
                block = byte * (1 << 20)
                while n > 0:
                    out.append(comp.compress(block[: min(n, len(block))]))
                    n -= len(block)
            else:
                out.append(comp.compress(p))
        out.append(comp.flush())
        return b"".join(out)


@pytest.mark.parametrize("typeflag", [b"L", b"x"])
def test_an_over_long_tar_header_is_refused_before_it_is_read(tmp_path: Path, typeflag: bytes) -> None:
    from keysweep.sources import tarstream

    size = 256 << 20  # 256 MiB of header in a ~250 KiB .tar.gz; tarfile would have held all of it
    data = _Zeros.gzip(
        [
            _entry(b"first.env", PAIR),
            _header(b"././@LongLink" if typeflag == b"L" else b"./PaxHeaders/x", size, typeflag),
            (b"a", size),
            _entry(b"after.env", PAIR.replace(KEY.encode(), b"AKIAXYZDQCEN4B6JSJQI")),
            b"\0" * 1024,
        ]
    )
    assert len(data) < 1 << 20
    (tmp_path / "bomb.tar.gz").write_bytes(data)
    result = scan_paths(tmp_path)
    assert result.stats.skipped["archive-header-too-large"] == 1
    # what came before it is kept; nothing after it can be told apart from the header, so the tar stops there
    assert [(f.location.member, f.key_id) for f in result.findings] == [("first.env", KEY)]
    assert result.stats.bytes_scanned < tarstream.MAX_HEADER + (1 << 20)


def test_a_long_header_within_the_bound_names_its_member(tmp_path: Path) -> None:
    long_name = "d/" * 200 + "creds.env"  # 409 characters: a GNU long name, and a pax path
    members = {long_name: PAIR, "caf\u00e9/\u2603.env": PAIR}
    for fmt, name in (
        (tarfile.GNU_FORMAT, "gnu.tar"),
        (tarfile.PAX_FORMAT, "pax.tar"),
        (tarfile.USTAR_FORMAT, "ustar.tar"),
    ):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
            for n, data in members.items():
                if fmt == tarfile.USTAR_FORMAT:
                    n = "p/" * 60 + n.rsplit("/", 1)[-1]  # ustar: 120 characters of directories in its prefix
                info = tarfile.TarInfo(n)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        (tmp_path / name).write_bytes(buf.getvalue())
    got = sorted((f.location.path.rsplit("/", 1)[-1], f.location.member) for f in scan_paths(tmp_path).findings)
    ustar = "p/" * 60
    assert got == sorted(
        [
            ("gnu.tar", long_name),
            ("gnu.tar", "caf\u00e9/\u2603.env"),
            ("pax.tar", long_name),
            ("pax.tar", "caf\u00e9/\u2603.env"),
            ("ustar.tar", ustar + "creds.env"),
            ("ustar.tar", ustar + "\u2603.env"),
        ]
    )


def test_a_pax_size_overrides_the_header_size(tmp_path: Path) -> None:
    # what a writer does for members over 8 GiB: the real size in the pax header, the ustar field left at 0
    record = b"size=%d\n" % len(PAIR)
    record = b"%d " % (len(record) + 3) + record
    tar = (
        _header(b"./PaxHeaders/a", len(record), b"x", b"ustar\x0000")
        + record
        + b"\0" * (-len(record) % 512)
        + _header(b"a.env", 0, b"0", b"ustar\x0000")
        + PAIR
        + b"\0" * (-len(PAIR) % 512)
        + _entry(b"b.txt", b"after\n")
        + b"\0" * 1024
    )
    (tmp_path / "big.tar").write_bytes(tar)
    result = scan_paths(tmp_path)
    assert [(f.location.member, f.has_secret) for f in result.findings] == [("a.env", True)]
    assert result.stats.archive_members_scanned == 2 and not result.stats.errors


def test_tar_headers_are_charged_to_the_budget(tmp_path: Path) -> None:
    # 10,000 directory entries: 5 MB of headers and no data at all, then a member
    dirs = b"".join(_header(b"d%d/" % i, 0, b"5") for i in range(10_000))
    (tmp_path / "dirs.tar.gz").write_bytes(gzip.compress(dirs + _entry(b"late.env", PAIR) + b"\0" * 1024))
    result = scan_paths(tmp_path, archive_max_bytes=1 << 20)
    assert result.stats.skipped["archive-too-large"] == 1 and result.findings == []
    assert _only(tmp_path) == [("archive", "late.env", True)]


def test_a_tar_that_breaks_off_keeps_what_came_before(tmp_path: Path) -> None:
    tar = _entry(b"a.env", PAIR) + _entry(b"b.env", b"x" * 2000)
    (tmp_path / "cut.tar").write_bytes(tar[:-1000])
    result = scan_paths(tmp_path)
    assert result.stats.errors["archive-corrupt"] == 1
    assert [f.location.member for f in result.findings] == ["a.env"]
    (tmp_path / "cut.tar").write_bytes(tar[:148] + b"0000001\0" + tar[156:])  # its first header's checksum is wrong
    # not even one member: the file is scanned as the bytes it is (the pair is still in the clear)
    result = scan_paths(tmp_path)
    assert [(f.location.kind, f.key_id) for f in result.findings] == [("file", KEY)]


def test_an_over_long_header_in_a_nested_tar_ends_only_that_tar(tmp_path: Path) -> None:
    inner = _entry(b"in.env", PAIR) + _header(b"././@LongLink", 1 << 20, b"L") + b"a" * (1 << 20)
    (tmp_path / "outer.zip").write_bytes(_zip({"lib/inner.tar": inner, "z.env": PAIR}))
    result = scan_paths(tmp_path)
    assert result.stats.skipped["archive-header-too-large"] == 1
    assert sorted(f.location.member for f in result.findings) == ["lib/inner.tar!in.env", "z.env"]


def _lie(data: bytes, declared: int) -> bytes:
    """The zip with its end record and zip64 end record both declaring ``declared`` members."""
    import struct

    out = bytearray(data)
    eocd = out.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", out, eocd + 8, declared, declared)
    z64 = out.rfind(b"PK\x06\x06", 0, eocd)
    assert z64 >= 0  # zipfile writes zip64 end records past 65,535 members
    struct.pack_into("<QQ", out, z64 + 24, declared, declared)
    return bytes(out)


@pytest.mark.timeout(120)
def test_a_zip_whose_end_record_lies_about_its_member_count_is_not_opened(tmp_path: Path) -> None:
    from keysweep.sources import archives

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("a.env", PAIR)
        for i in range(max(archives.MAX_ZIP_MEMBERS, 65_536)):
            z.writestr(f"{i:x}", b"")
    lying = _lie(buf.getvalue(), 10)
    assert zipfile._EndRecData(io.BytesIO(lying))[zipfile._ECD_ENTRIES_TOTAL] == 10  # type: ignore[attr-defined]
    (tmp_path / "lying.zip").write_bytes(lying)
    result = scan_paths(tmp_path)
    assert result.stats.skipped["archive-too-many-members"] == 1
    assert [(f.location.kind, f.key_id) for f in result.findings] == [("file", KEY)]  # scanned as bytes


@pytest.mark.timeout(120)
def test_a_zip_directory_larger_than_the_bound_is_not_opened(tmp_path: Path) -> None:
    from keysweep.sources import archives

    name_len = 1000
    count = archives.MAX_ZIP_DIRECTORY // (46 + name_len) + 1  # well under the member limit
    assert count < archives.MAX_ZIP_MEMBERS
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("a.env", PAIR)
        for i in range(count):
            z.writestr(f"{i:0{name_len}d}", b"")
    (tmp_path / "wide.zip").write_bytes(buf.getvalue())
    result = scan_paths(tmp_path)
    assert result.stats.skipped["archive-directory-too-large"] == 1
    assert [(f.location.kind, f.key_id) for f in result.findings] == [("file", KEY)]


def test_keys_are_capped_per_archive_and_the_rest_counted(tmp_path: Path) -> None:
    from keysweep.detect import MAX_KEYS_PER_PLACE

    from tests.support.planted import planted_key

    ids = [planted_key(i).key_id for i in range(MAX_KEYS_PER_PLACE + 20)]
    members = {f"m{i}.log": f"id {kid}\n".encode() for i, kid in enumerate(ids)}  # one bare id per member
    members["zz.env"] = PAIR
    (tmp_path / "many.tgz").write_bytes(_tar(members, "w:gz"))
    result = scan_paths(tmp_path)
    assert result.stats.skipped["too-many-keys"] == 20
    assert sum(1 for f in result.findings if not f.has_secret) == MAX_KEYS_PER_PLACE
    # the real pair after them is still found: paired keys have a pool of their own
    assert [(f.location.member, f.key_id) for f in result.findings if f.has_secret] == [("zz.env", KEY)]


def _xz_declaring(data: bytes, dict_props: int) -> bytes:
    """``data`` as .xz compressed with a 1 MiB dictionary, its block header then declaring a larger one."""
    import struct
    import zlib

    xz = lzma.compress(data, format=lzma.FORMAT_XZ, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}])
    size = (xz[12] + 1) * 4
    header = bytearray(xz[12 : 12 + size])
    at = header.find(b"\x21\x01")  # the LZMA2 filter and its one property byte: the dictionary size
    header[at + 2] = dict_props
    struct.pack_into("<I", header, size - 4, zlib.crc32(bytes(header[:-4])))
    return xz[:12] + bytes(header) + xz[12 + size :]


def test_an_xz_declaring_a_huge_dictionary_is_not_decoded(tmp_path: Path) -> None:
    from keysweep.sources import archives

    # 38: a 2 GiB dictionary, which liblzma fills as it decodes (lzma.LZMAFile has no memory limit)
    (tmp_path / "huge-dict.log.xz").write_bytes(_xz_declaring(PAIR + b"\0" * (4 << 20), 38))
    result = scan_paths(tmp_path)
    assert result.stats.skipped["archive-memory-limit"] == 1 and result.findings == []
    # within the limit (16 MiB, the dictionary of xz -7) it is decoded as usual
    assert archives.XZ_MEMLIMIT > 16 << 20
    (tmp_path / "huge-dict.log.xz").write_bytes(_xz_declaring(PAIR + b"\0" * (4 << 20), 24))
    assert _only(tmp_path) == [("archive", "huge-dict.log", True)]
    # nested in a tar: only that member is skipped
    (tmp_path / "huge-dict.log.xz").unlink()
    (tmp_path / "outer.tar").write_bytes(_tar({"a.xz": _xz_declaring(PAIR, 38), "b.env": PAIR}))
    result = scan_paths(tmp_path)
    assert result.stats.skipped["archive-memory-limit"] == 1
    assert [f.location.member for f in result.findings] == ["b.env"]


def test_an_lzma_zip_member_declaring_a_huge_dictionary_is_not_decoded(tmp_path: Path) -> None:
    data = bytearray(_zip({"big.env": PAIR + b"\0" * 100_000, "b.env": PAIR}, zipfile.ZIP_LZMA))
    at = 30 + len("big.env") + 5  # the first member's data: version, properties size, lc/lp/pb, dictionary
    assert data[:4] == b"PK\x03\x04"
    data[at : at + 4] = (2 << 30).to_bytes(4, "little")  # 2 GiB; zipfile gives liblzma no memory limit
    (tmp_path / "lzma.zip").write_bytes(bytes(data))
    result = scan_paths(tmp_path)
    assert result.stats.skipped["archive-memory-limit"] == 1
    assert [f.location.member for f in result.findings] == ["b.env"]


@pytest.mark.timeout(180)
def test_zips_nested_in_zips_share_the_member_bound(tmp_path: Path) -> None:
    from keysweep.sources import archives

    def many(n: int, extra: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for name, data in extra.items():
                z.writestr(name, data)
            for i in range(n):
                z.writestr(f"{i:x}", b"")
        return buf.getvalue()

    half = archives.MAX_ZIP_MEMBERS // 2
    inner = many(half + 10, {"inner.env": PAIR})  # fits alone; with its parent open, the two do not
    assert len(inner) < archives.NESTED_ZIP_MAX
    (tmp_path / "outer.zip").write_bytes(many(half, {"lib/inner.zip": inner}))
    result = scan_paths(tmp_path)
    assert result.stats.skipped["archive-too-many-members"] == 1
    # the inner zip is scanned as the bytes it is (stored: its pair is in the clear), the outer one opened
    assert [(f.location.member, f.key_id) for f in result.findings] == [("lib/inner.zip", KEY)]
