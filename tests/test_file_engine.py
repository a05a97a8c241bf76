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
