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
