"""The files engine's messages between the walk and the workers."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from keysweep.scan import ScanOptions, ScanStats
from keysweep.sources import file_engine, filesystem
from keysweep.sources.mounts import MountTable


def test_a_batch_crosses_the_pipe_as_it_was_sent(tmp_path: Path) -> None:
    """Files of one directory travel as its names and inodes; every other item as it is: what arrives equals
    what was sent, in order, whichever directory, stat or name each file has."""
    for d in ("a", "b", "a/c"):
        (tmp_path / d).mkdir(exist_ok=True)
    for name in ("a/1", "a/2", "b/1", "a/c/1", "a/3.env", "b/\udcff-undecodable"):
        (tmp_path / name).write_bytes(b"x")
    opts = ScanOptions(paths=(str(tmp_path),), sources=("files",))
    walked = list(filesystem.iter_files(opts, ScanStats(), mounts=MountTable([])))
    assert len(walked) == 6 and all(ref.dir is not None and st is None for ref, st in walked)
    named = tmp_path / "a" / "1"
    st = os.stat(named)
    ref = walked[0][0]
    odd = [
        (filesystem.FileRef.named(str(named), st), st),  # a file named on the command line
        (ref, os.stat(ref.path)),  # with its stat (a file cache)
        (ref._replace(dev=st.st_dev), None),  # its device known
    ]
    items = walked[:2] + odd + walked[2:] + walked[:1]
    for answer_all in (False, True):
        batch = file_engine.ReadFiles(items, answer_all=answer_all)
        back = pickle.loads(pickle.dumps(batch))
        assert back == batch
        assert [type(r) for r, _ in back.files] == [filesystem.FileRef] * len(items)
        assert len(pickle.dumps(batch)) < len(pickle.dumps(batch.files))  # smaller than the items themselves


def test_a_stateless_scan_cuts_directories_to_fill_batches_and_a_file_cache_keeps_them_whole(tmp_path: Path) -> None:
    """Without a file cache a directory's files may go in several batches (a worker killed loses at most one
    batch); a file cache decides on whole directories, so each listing then stays whole."""
    st = os.stat(tmp_path)
    d = filesystem.Dir.root(str(tmp_path), st)
    sizes = [300, 5, 127, 1, 128]
    listings = [
        filesystem.Listing(d.child(f"d{i}", st), [f"f{j}" for j in range(n)], list(range(n)), True)
        for i, n in enumerate(sizes)
    ]
    cut = list(file_engine._batches(iter(listings), whole=False))
    counts = [sum(len(lst.names) for lst in b.listings) for b in cut]  # type: ignore[union-attr]
    assert all(c <= file_engine.BATCH_FILES for c in counts) and sum(counts) == sum(sizes)
    assert counts[:-1] == [file_engine.BATCH_FILES] * (len(counts) - 1)  # every batch full but the last
    sent = [(lst.dir.path, name) for b in cut for lst in b.listings for name in lst.names]  # type: ignore[union-attr]
    assert sent == [(lst.dir.path, name) for lst in listings for name in lst.names]  # each file once, in order
    kept = list(file_engine._batches(iter(listings), whole=True))
    assert [lst for b in kept for lst in b.listings] == listings  # type: ignore[union-attr]
