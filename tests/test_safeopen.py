"""open_beneath: a path someone else named, resolved inside a root one component at a time, never opening a FIFO
or device, never leaving the root, following a link only when root or the real file's owner made it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from keysweep.sources.filesystem import Skip
from keysweep.sources.safeopen import MAX_LINK_HOPS, open_beneath

from tests.support.fifo_writer import fifo_with_blocked_writer

ALICE, BOB = 41000, 41001


def _read(root: Path | str, path: str, cwd: str = "/") -> tuple[str, bytes, bool]:
    opened = open_beneath(str(root), path, cwd=cwd)
    try:
        return opened.path, os.read(opened.fd, 100), opened.followed_links
    finally:
        os.close(opened.fd)


def _reason(root: Path | str, path: str, cwd: str = "/") -> str:
    with pytest.raises(Skip) as info:
        _read(root, path, cwd)
    return info.value.reason


def _file(p: Path, text: str, uid: int = 0) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    os.chown(p, uid, uid)
    return p


def _link(p: Path, target: str, uid: int = 0) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.symlink_to(target)
    os.lchown(p, uid, uid)
    return p


def test_plain_file_and_relative_path_from_cwd(tmp_path: Path) -> None:
    _file(tmp_path / "app/creds", "app")
    assert _read(tmp_path, "/app/creds") == ("/app/creds", b"app", False)
    assert _read(tmp_path, "creds", cwd="/app") == ("/app/creds", b"app", False)
    (tmp_path / "app/sub").mkdir()
    assert _read(tmp_path, "./sub/../creds", cwd="/app") == ("/app/creds", b"app", False)


def test_dot_dot_never_climbs_above_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _file(root / "etc/creds", "inside")
    _file(tmp_path / "etc/creds", "outside")
    assert _read(root, "/../../../../etc/creds")[:2] == ("/etc/creds", b"inside")
    assert _read(root, "../../../etc/creds", cwd="/")[:2] == ("/etc/creds", b"inside")


def test_links_resolve_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    host_file = _file(tmp_path / "host/creds", "host")  # the same absolute path exists outside the root only
    _link(root / "abs", str(host_file))
    _link(root / "rel", "../" * 20 + str(host_file).lstrip("/"))
    assert _reason(root, "/abs") == "vanished"
    assert _reason(root, "/rel") == "vanished"
    _file(root / str(host_file).lstrip("/"), "inside")
    assert _read(root, "/abs") == (str(host_file), b"inside", True)
    assert _read(root, "/rel") == (str(host_file), b"inside", True)


def test_directory_links_and_dot_dot_after_a_link_follow_the_real_parent(tmp_path: Path) -> None:
    _file(tmp_path / "real/dir/creds", "x")
    _file(tmp_path / "real/other", "o")
    _link(tmp_path / "home/u/.aws", "/real/dir")
    assert _read(tmp_path, "/home/u/.aws/creds") == ("/real/dir/creds", b"x", True)
    assert _read(tmp_path, "/home/u/.aws/../other") == ("/real/other", b"o", True)


def test_fifo_is_never_opened_directly_or_through_a_link(tmp_path: Path) -> None:
    with fifo_with_blocked_writer(tmp_path / "fifo") as writer:
        _link(tmp_path / "to-fifo", "/fifo")
        assert _reason(tmp_path, "/fifo") == "not-regular"
        assert _reason(tmp_path, "/to-fifo") == "not-regular"
        assert not writer.released.wait(0.2)


def test_devices_are_never_opened(tmp_path: Path) -> None:
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a device node outside /dev
    _link(tmp_path / "home/.aws/credentials", "/null")
    assert _reason(tmp_path, "/null") == "not-regular"
    assert _reason(tmp_path, "/home/.aws/credentials") == "not-regular"


@pytest.mark.parametrize(
    "target", ["/dev/ptmx", "/proc/self/environ", "/sys/kernel/uevent_seqnum", "/tmp/../proc/1/environ"]
)
def test_dev_proc_and_sys_are_never_entered(target: str, tmp_path: Path) -> None:
    link = _link(tmp_path / "credentials", target)
    assert _reason("/", str(link)) == "pseudo-fs"
    assert _reason("/", target) == "pseudo-fs"


def test_link_owned_by_another_user_than_the_files_owner_is_not_followed(tmp_path: Path) -> None:
    _file(tmp_path / "home/bob/.aws/credentials", "bob's", uid=BOB)
    _link(tmp_path / "home/alice/.aws/credentials", "/home/bob/.aws/credentials", uid=ALICE)
    _link(tmp_path / "home/alice/.aws/config", "/home/bob/.aws", uid=ALICE)  # a directory link, same rule
    assert _reason(tmp_path, "/home/alice/.aws/credentials") == "symlink-other-owner"
    _link(tmp_path / "home/alice/bob-aws", "/home/bob/.aws", uid=ALICE)
    assert _reason(tmp_path, "/home/alice/bob-aws/credentials") == "symlink-other-owner"
    # root's links (an administrator's /home -> /srv/home) and the owner's own links are followed
    _link(tmp_path / "admin-link", "/home/bob/.aws/credentials", uid=0)
    _link(tmp_path / "home/bob/mine", ".aws/credentials", uid=BOB)
    assert _read(tmp_path, "/admin-link")[:2] == ("/home/bob/.aws/credentials", b"bob's")
    assert _read(tmp_path, "/home/bob/mine")[:2] == ("/home/bob/.aws/credentials", b"bob's")
    # a chain is judged link by link: one foreign link in it is enough to refuse
    _link(tmp_path / "chain", "/home/alice/.aws/credentials", uid=0)
    assert _reason(tmp_path, "/chain") == "symlink-other-owner"


def test_loops_directories_and_missing_parents(tmp_path: Path) -> None:
    _link(tmp_path / "a", "/b")
    _link(tmp_path / "b", "/a")
    assert _reason(tmp_path, "/a") == "symlink-loop"
    chain = [_link(tmp_path / f"l{i}", f"/l{i + 1}") for i in range(MAX_LINK_HOPS + 1)]
    _file(tmp_path / f"l{MAX_LINK_HOPS + 1}", "end")
    assert _reason(tmp_path, str(chain[0].relative_to(tmp_path))) == "symlink-loop"
    _file(tmp_path / "f", "x")
    assert _reason(tmp_path, "/f/below") == "not-a-directory"
    assert _reason(tmp_path, "/") == "not-regular"
    (tmp_path / "d").mkdir()
    assert _reason(tmp_path, "/d") == "not-regular"
    assert _reason(tmp_path, "/nope/creds") == "vanished"


_PART = st.sampled_from(["..", ".", "a", "b", "l1", "l2", "creds", "", "outside"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    links=st.lists(
        st.tuples(st.sampled_from(["l1", "l2", "a/l1", "a/b/l2"]), st.lists(_PART, max_size=4), st.booleans()),
        max_size=4,
        unique_by=lambda t: t[0],
    ),
    path=st.lists(_PART, min_size=1, max_size=6),
    absolute=st.booleans(),
)
@example(links=[("l1", ["outside"], True)], path=["l1"], absolute=True)
@example(links=[("a/l1", ["..", "..", "..", "outside"], False)], path=["l1"], absolute=False)
def test_no_link_or_dot_dot_ever_leaves_the_root(tmp_path_factory, links, path, absolute) -> None:
    base = tmp_path_factory.mktemp("jail")
    outside = base / "outside"
    _file(outside, "OUTSIDE")
    root = base / "root"
    _file(root / "a/b/creds", "inside")
    _file(root / "creds", "inside")
    for where, parts, from_top in links:
        target = "/".join(parts) or "."
        if from_top:
            target = str(base) + "/" + target  # an absolute host path: must resolve inside the root instead
        _link(root / where, target)
    named = ("/" if absolute else "") + "/".join(path)
    try:
        opened = open_beneath(str(root), named, cwd="/a")
    except Skip:
        return
    try:
        real = os.readlink(f"/proc/self/fd/{opened.fd}")
        assert real.startswith(str(root) + "/"), (named, real)
        assert real == str(root) + opened.path
        assert os.read(opened.fd, 20) == b"inside"
    finally:
        os.close(opened.fd)
