"""The files walk and reader: lstat decisions, symlinks, mounts, excludes, chunking, sparse files, read-only."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from keysweep.scan import ScanOptions, ScanStats
from keysweep.sources import filesystem
from keysweep.sources.mounts import MountTable, parse_mountinfo

from tests.support.hosttree import make_detector, scan_paths

KEY = "AKIAXYZDQCEN4B6JSJQI"
SECRET = "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"
PAIR = f"aws_access_key_id={KEY}\naws_secret_access_key={SECRET}\n"


def _walk(root: Path, **opts: object) -> tuple[list[str], ScanStats]:
    stats = ScanStats()
    options = ScanOptions(paths=(str(root),), sources=("files",), **opts)  # type: ignore[arg-type]
    files = [ref.path for ref, _ in filesystem.iter_files(options, stats, mounts=MountTable([]))]
    return sorted(os.path.relpath(p, root) for p in files), stats


def test_symlinks_are_not_followed_by_default(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.env").write_text(PAIR)
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    outside.mkdir()
    (outside / "secret.env").write_text(PAIR)
    (tmp_path / "link-dir").symlink_to(outside)
    (tmp_path / "link-file").symlink_to(outside / "secret.env")
    (tmp_path / "loop").symlink_to(tmp_path)
    files, stats = _walk(tmp_path)
    assert files == ["real/a.env"]
    assert stats.skipped["symlink"] == 3


def test_follow_mode_follows_links_once_and_stops_at_loops(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.env").write_text(PAIR)
    (tmp_path / "d" / "up").symlink_to(tmp_path)  # loop back to the root
    (tmp_path / "d" / "self").symlink_to(tmp_path / "d")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    (tmp_path / "alias.env").symlink_to(tmp_path / "d" / "a.env")
    files, stats = _walk(tmp_path, follow_symlinks=True)
    assert files == ["alias.env", "d/a.env"]
    assert stats.skipped["symlink-loop"] == 2
    assert stats.skipped["broken-symlink"] == 1


def test_special_files_are_counted_and_never_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tmp_path / "sock"))
    try:
        (tmp_path / "ok.txt").write_text("nothing")
        files, stats = _walk(tmp_path)
    finally:
        s.close()
    assert files == ["ok.txt"]
    assert stats.skipped["fifo"] == 1 and stats.skipped["socket"] == 1


def test_excludes_match_names_and_paths(tmp_path: Path) -> None:
    for rel in ("a/keep.env", "a/x.log", "cache/deep/y.env", "b/cache/z.env"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    files, stats = _walk(tmp_path, excludes=("*.log", f"{tmp_path}/cache"))
    assert files == ["a/keep.env", "b/cache/z.env"]
    assert stats.skipped["excluded"] == 2


def test_mountinfo_parsing_unescapes_and_classifies() -> None:
    text = (
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        "25 24 0:23 / /run/secrets rw - tmpfs tmpfs rw\n"
        "40 27 0:40 / /mnt/my\\040share rw shared:7 - nfs4 srv:/x rw\n"
        "41 27 0:41 / /mnt/ssh rw - fuse.sshfs me@h:/ rw\n"
        "garbage line\n"
    )
    table = MountTable(parse_mountinfo(text))
    assert table.at("/proc").is_pseudo
    secrets = table.at("/run/secrets")
    assert secrets is not None and not secrets.is_pseudo and not secrets.is_network
    share = table.at("/mnt/my share")
    assert share is not None and share.is_network and share.fstype == "nfs4"
    assert table.at("/mnt/ssh").is_network
    assert table.containing("/mnt/my share/deep/file") is share


def test_pseudo_and_network_mounts_are_not_entered(tmp_path: Path) -> None:
    for d in ("proc-like", "nfs", "tmp-secrets"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "k.env").write_text(PAIR)
    mounts = MountTable(
        parse_mountinfo(
            f"1 0 0:1 / {tmp_path}/proc-like rw - proc proc rw\n"
            f"2 0 0:2 / {tmp_path}/nfs rw - nfs srv:/ rw\n"
            f"3 0 0:3 / {tmp_path}/tmp-secrets rw - tmpfs tmpfs rw\n"
        )
    )
    stats = ScanStats()
    opts = ScanOptions(paths=(str(tmp_path),), sources=("files",), skip_network_fs=True)
    files = sorted(os.path.relpath(ref.path, tmp_path) for ref, _ in filesystem.iter_files(opts, stats, mounts=mounts))
    assert files == ["tmp-secrets/k.env"]
    assert stats.skipped["pseudo-fs"] == 1 and stats.skipped["network-fs"] == 1
    # without --skip-network-fs the network mount is walked
    opts = ScanOptions(paths=(str(tmp_path),), sources=("files",))
    files = sorted(
        os.path.relpath(ref.path, tmp_path) for ref, _ in filesystem.iter_files(opts, ScanStats(), mounts=mounts)
    )
    assert files == ["nfs/k.env", "tmp-secrets/k.env"]


def test_host_prefix_is_walked_and_stripped_from_reported_paths(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "etc" / "app").mkdir(parents=True)
    (host / "etc" / "app" / "a.env").write_text(PAIR)
    (host / "proc").mkdir()
    (host / "proc" / "fake.env").write_text(PAIR)  # the host's /proc is never walked
    from keysweep.scan import run_scan

    result = run_scan(ScanOptions(roots=("/",), sources=("files",), workers=1, path_prefix=str(host)), make_detector())
    assert [f.location.path for f in result.findings] == ["/etc/app/a.env"]
    assert result.stats.skipped["pseudo-fs"] == 1


def test_key_across_chunk_boundaries_found_once_with_right_line(tmp_path: Path) -> None:
    chunk = filesystem.CHUNK_SIZE
    filler = b"x" * 99 + b"\n"
    body = bytearray()
    while len(body) < chunk - 10:
        body += filler
    lines_before = body.count(b"\n")
    body = body[: chunk - 10]  # the id straddles the first chunk boundary
    lines_before = body.count(b"\n")
    body += PAIR.encode()
    while len(body) < 3 * chunk:
        body += filler
    (tmp_path / "big.log").write_bytes(bytes(body))
    result = scan_paths(tmp_path)
    assert len(result.findings) == 1
    f = result.findings[0]
    assert f.key_id == KEY and f.has_secret
    assert f.location.line == lines_before + 1
    assert result.stats.bytes_scanned == len(body)


@pytest.mark.timeout(60)
def test_single_line_file_larger_than_a_chunk(tmp_path: Path) -> None:
    pos = 5 * filesystem.CHUNK_SIZE + 123
    with open(tmp_path / "one-line.log", "wb") as fh:
        fh.write(b"a" * pos + b" " + PAIR.replace("\n", " ").encode() + b" " + b"b" * filesystem.CHUNK_SIZE)
    result = scan_paths(tmp_path)
    assert [(f.key_id, f.has_secret, f.location.line) for f in result.findings] == [(KEY, True, 1)]
    assert result.findings[0].location.offset == pos + 1 + len("aws_access_key_id=")


@pytest.mark.timeout(60)
def test_sparse_file_reads_only_data(tmp_path: Path) -> None:
    p = tmp_path / "sparse.img"
    with open(p, "wb") as fh:
        fh.truncate(1 << 30)
        fh.seek(700 << 20)
        fh.write(PAIR.encode())
    st = p.stat()
    if st.st_blocks * 512 > (16 << 20):
        pytest.skip("filesystem does not keep holes")
    capped = scan_paths(tmp_path)  # default cap 256 MiB
    assert capped.findings == [] and capped.stats.skipped["too-large"] == 1
    result = scan_paths(tmp_path, max_file_size=2 << 30)
    assert [f.key_id for f in result.findings] == [KEY]
    assert result.stats.bytes_scanned < (16 << 20)  # only the data extent was read


def test_undecodable_names_are_reported_readably(tmp_path: Path) -> None:
    d = os.fsencode(tmp_path) + b"/caf\xe9-\xff"
    os.mkdir(d)
    with open(d + b"/k\x80.env", "wb") as fh:
        fh.write(PAIR.encode())
    result = scan_paths(tmp_path)
    assert len(result.findings) == 1
    path = result.findings[0].location.path
    assert path == f"{tmp_path}/caf\\xe9-\\xff/k\\x80.env"
    path.encode("utf-8")  # no lone surrogates: every output format can write it


def test_scanning_changes_nothing_in_the_tree(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    f = tmp_path / "d" / "k.env"
    f.write_text(PAIR)
    names = sorted(tmp_path.rglob("*"))
    for p in [tmp_path, *names]:  # atime not after mtime: a plain read would update it even under relatime
        os.utime(p, (1_000_000_000, 1_000_000_000))

    def times() -> dict[Path, tuple[int, int]]:
        return {p: (p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in [tmp_path, *names]}

    before = times()
    assert len(scan_paths(tmp_path, workers=2).findings) == 1
    assert times() == before  # neither files nor directories: O_NOATIME on both
    assert sorted(tmp_path.rglob("*")) == names


def test_sdk_credential_caches_are_skipped_as_host_role_credentials(tmp_path: Path) -> None:
    for cache in ("cli/cache", "sso/cache", "boto/cache"):
        d = tmp_path / "home/u/.aws" / cache
        d.mkdir(parents=True)
        (d / "abc.json").write_text('{"Credentials": {"AccessKeyId": "ASIAXYZDQCEN4B6JSJQI"}}')
    result = scan_paths(tmp_path)
    assert result.findings == []
    assert result.stats.skipped["host-role-credentials"] == 3


def _only_file(root: Path) -> tuple[filesystem.FileRef, os.stat_result | None]:
    opts = ScanOptions(paths=(str(root),), sources=("files",))
    (item,) = filesystem.iter_files(opts, ScanStats(), mounts=MountTable([]))
    return item


def test_vanishing_replaced_and_unopenable_files_are_counted(tmp_path: Path) -> None:
    opts = ScanOptions(paths=(str(tmp_path),), sources=("files",))
    p = tmp_path / "gone.env"
    p.write_text(PAIR)
    ref, st = _only_file(tmp_path)
    stats = ScanStats()
    with filesystem.DirCache() as dirs:
        # another file renamed over it after the walk: not the inode the walk saw
        (tmp_path / "other").write_text(PAIR)
        os.rename(tmp_path / "other", p)
        assert filesystem.scan_file(ref, st, make_detector(), opts, stats, dirs=dirs) is None
        assert stats.skipped["replaced"] == 1
        p.unlink()
        assert filesystem.scan_file(ref, st, make_detector(), opts, stats, dirs=dirs) is None
        assert stats.skipped["vanished"] == 1
        # swapped for a symlink after the walk: O_NOFOLLOW refuses it
        p.symlink_to(tmp_path)
        assert filesystem.scan_file(ref, st, make_detector(), opts, stats, dirs=dirs) is None
        assert stats.skipped["symlink"] == 1
        # swapped for a FIFO: opened non-blocking, refused by fstat, no hang
        p.unlink()
        os.mkfifo(p)
        assert filesystem.scan_file(ref, st, make_detector(), opts, stats, dirs=dirs) is None
        assert stats.skipped["not-regular"] == 1
    assert stats.files_scanned == 0 and stats.errors == {}


def _listed_subdir(root: Path) -> tuple[filesystem.Walker, filesystem.Dir]:
    opts = ScanOptions(paths=(str(root),), sources=("files",))
    walker = filesystem.Walker(opts, ScanStats(), MountTable([]), set(), None, False, filesystem.DirCache())
    st = os.stat(root)
    subdirs: list[filesystem.Dir] = []
    list(walker.list_dir(filesystem.Dir.root(str(root), st), subdirs))
    (sub,) = subdirs
    walker.dirs.close()  # the next open goes down the chain again, as in a worker that never saw it
    return walker, sub


def test_a_directory_replaced_by_a_symlink_after_listing_is_skipped_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "mine.env").write_text(PAIR)
    private = tmp_path / "private"
    private.mkdir()
    (private / "root-only.env").write_text(PAIR)
    walker, sub = _listed_subdir(root)
    os.rename(root / "sub", root / "sub.old")
    (root / "sub").symlink_to(private)  # what an attacker swaps in between the listing and the open
    assert list(walker.list_dir(sub, [])) == []
    assert walker.stats.skipped["replaced"] == 1
    # and a file seen in it before the swap is not read through the link either
    ref = filesystem.FileRef(f"{root}/sub/root-only.env", sub, "root-only.env", None, 0)
    stats = ScanStats()
    with filesystem.DirCache() as dirs:
        assert filesystem.scan_file(ref, None, make_detector(), walker.options, stats, dirs=dirs) is None
    assert stats.skipped["replaced"] == 1 and stats.files_scanned == 0


def test_a_directory_replaced_by_another_directory_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    walker, sub = _listed_subdir(root)
    os.rename(root / "sub", root / "sub.old")
    (root / "sub").mkdir()  # a new inode under the same name
    (root / "sub" / "k.env").write_text(PAIR)
    assert list(walker.list_dir(sub, [])) == []
    assert walker.stats.skipped["replaced"] == 1


def test_deep_tree_is_walked_with_a_bounded_number_of_open_fds(tmp_path: Path) -> None:
    d = tmp_path
    for i in range(200):
        d = d / f"d{i}"
    d.mkdir(parents=True)
    (d / "bottom.env").write_text(PAIR)
    for i in range(0, 200, 40):  # side branches, walked after the deep descent: reopened by their chains
        (tmp_path.joinpath(*[f"d{j}" for j in range(i)]) / "side").mkdir()
        (tmp_path.joinpath(*[f"d{j}" for j in range(i)]) / "side" / "s.env").write_text(PAIR)
    opts = ScanOptions(paths=(str(tmp_path),), sources=("files",))
    before = len(os.listdir("/proc/self/fd"))
    most = 0
    stats = ScanStats()
    found = []
    with filesystem.DirCache(cap=8) as dirs:
        for ref, st in filesystem.iter_files(opts, stats, mounts=MountTable([]), dirs=dirs):
            most = max(most, len(os.listdir("/proc/self/fd")) - before)
            assert filesystem.scan_file(ref, st, make_detector(), opts, stats, dirs=dirs)
            found.append(os.path.basename(ref.path))
    assert sorted(found) == ["bottom.env"] + ["s.env"] * 5
    assert most <= 8 + 2  # the cache, the listing's own fd, listdir's own
    assert stats.skipped == {} and stats.errors == {}


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a link owned by another user)")
def test_a_watched_path_through_a_users_link_to_a_root_only_directory_is_not_read(tmp_path: Path) -> None:
    """A watcher's event names a path in a directory a user writes: ``~/.aws`` swapped for that user's link to
    a root-only directory never makes root read what is there (the operator naming the path still follows it)."""
    from keysweep.scan import run_scan

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "credentials").write_text(PAIR)
    home = tmp_path / "home" / "u"
    home.mkdir(parents=True)
    os.chown(home, 65534, 65534)
    (home / ".aws").symlink_to(private)
    os.lchown(home / ".aws", 65534, 65534)
    named = str(home / ".aws" / "credentials")
    detector = make_detector()
    watched = ScanOptions(paths=(named,), sources=("files",), workers=1, follow_named=False)
    result = run_scan(watched, detector)
    assert result.findings == [] and result.stats.files_scanned == 0
    assert result.stats.skipped["symlink-other-owner"] == 1
    os.lchown(home / ".aws", 0, 0)  # an administrator's link is followed
    assert [f.key_id for f in run_scan(watched, detector).findings] == [KEY]
    os.lchown(home / ".aws", 65534, 65534)
    operator = ScanOptions(paths=(named,), sources=("files",), workers=1)
    assert [f.key_id for f in run_scan(operator, detector).findings] == [KEY]


def test_a_file_naming_more_keys_than_a_place_may_report_counts_the_rest(tmp_path):
    from keysweep.detect import MAX_KEYS_PER_PLACE

    from tests.support.planted import planted_key

    ids = [planted_key(i).key_id for i in range(MAX_KEYS_PER_PLACE + 25)]
    small = tmp_path / "small" / "ids.log"
    small.parent.mkdir()
    small.write_text("".join(f"request by {k}\n" for k in ids))
    big = tmp_path / "big" / "ids.log"  # larger than one read: the streamed path
    big.parent.mkdir()
    big.write_text("".join(f"request by {k}\n" for k in ids) + "x" * (3 * 1024 * 1024) + "\n")
    for tree in (small.parent, big.parent):
        result = scan_paths(tree)
        assert len(result.findings) == MAX_KEYS_PER_PLACE
        assert result.stats.skipped["too-many-keys"] == 25


def test_a_directory_listed_in_parts_keeps_its_fd_while_the_cache_moves_on(tmp_path: Path) -> None:
    """A directory of more than LISTING_MAX entries comes in parts, and the walk pauses at each while readers
    open other directories through the same cache: its remaining entries (subdirectories met after the first part
    included) are still typed relative to that directory, never to whatever fd took its number."""
    big = tmp_path / "big"
    big.mkdir()
    for i in range(60):
        (big / f"sub{i:02d}").mkdir()
        (big / f"sub{i:02d}" / "k.env").write_text(PAIR)
    for i in range(filesystem.LISTING_MAX + 300):
        (big / f"f{i:05d}").write_bytes(b"")
    others = []
    for i in range(4):
        (tmp_path / f"other{i}").mkdir()
        others.append(filesystem.Dir.root(str(tmp_path / f"other{i}"), os.stat(tmp_path / f"other{i}")))
    opts = ScanOptions(paths=(str(big),), sources=("files",))
    stats = ScanStats()
    before = len(os.listdir("/proc/self/fd"))
    parts = files = 0
    subs = set()
    with filesystem.DirCache(cap=2) as dirs:
        for item in filesystem.iter_listings(opts, stats, mounts=MountTable([]), dirs=dirs):
            assert isinstance(item, filesystem.Listing)
            if item.dir.path == str(big):
                parts += 1
                assert not item.whole
                files += len(item.names)
                for other in others:  # a reader elsewhere: the cache closes what it held and reuses the numbers
                    dirs.fd(other)
            else:
                assert item.names == ["k.env"] and item.whole
                subs.add(os.path.basename(item.dir.path))
    assert parts >= 2 and files == filesystem.LISTING_MAX + 300
    assert subs == {f"sub{i:02d}" for i in range(60)}
    assert stats.skipped == {} and stats.errors == {}
    assert len(os.listdir("/proc/self/fd")) == before  # the fd the listing took over is closed with it


@pytest.mark.parametrize("host_prefix", [False, True])
def test_anchored_excludes_leave_exactly_their_files_when_directories_go_whole(
    tmp_path: Path, host_prefix: bool
) -> None:
    """The walk by directories matches excludes per file only in directories an anchored glob can reach (the
    agent's own state directory excluded, say): what it hands on is exactly what a match of every file leaves."""
    rels = [
        "top.env",
        "a/secret.env",
        "a/keep.env",
        "a/b/in-b.env",
        "a/b-not/kept.env",
        "c/x.log",
        "c/x.txt",
        "c/deeper/y.log",
        "d/x1.txt",
        "d/x12.txt",
        "e/f/g/deep.env",
        "var/lib/keysweep/state.sqlite",
        "var/lib/keysweep-other/kept.env",
    ]
    for rel in rels:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    at = "" if host_prefix else str(tmp_path)
    excludes = (f"{at}/a/secret.env", f"{at}/a/b", f"{at}/c/*.log", f"{at}/d/x?.txt", f"{at}/var/lib/keysweep/**")
    opts = ScanOptions(
        paths=(str(tmp_path),),
        sources=("files",),
        excludes=excludes,
        path_prefix=str(tmp_path) if host_prefix else None,
    )
    stats = ScanStats()
    walked = sorted(
        os.path.relpath(ref.path, tmp_path)
        for item in filesystem.iter_listings(opts, stats, mounts=MountTable([]))
        for ref in (item.refs() if isinstance(item, filesystem.Listing) else [item[0]])
    )
    pf = filesystem.PathFilter(excludes)
    expected = sorted(
        r for r in rels if not any(pf.excluded(str(p), opts.path_prefix) for p in _and_parents(tmp_path, r))
    )
    assert walked == expected
    assert "a/secret.env" not in walked and "d/x1.txt" not in walked and "a/b-not/kept.env" in walked
    assert "var/lib/keysweep-other/kept.env" in walked and "d/x12.txt" in walked
    assert not pf.may_match_in(str(tmp_path / "e" / "f"), opts.path_prefix)  # far from every glob: no match each
    assert pf.may_match_in(str(tmp_path / "a"), opts.path_prefix)


def _and_parents(root: Path, rel: str) -> list[Path]:
    p = root / rel
    return [p, *[q for q in p.parents if q != root and root in q.parents]]
