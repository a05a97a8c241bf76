from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from keysweep.report.spool import Spool, SpoolFull

pytestmark = pytest.mark.timeout(60)


def _body(i: int, pad: int = 0) -> str:
    return json.dumps({"n": i, "pad": "p" * pad})


def test_messages_are_private_ordered_and_removed_only_when_asked(tmp_path):
    spool = Spool(tmp_path / "spool")
    for i in range(5):
        entry = spool.put(_body(i), kind="finding", message_id=f"m{i}")
        assert entry.path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    entries = spool.entries()
    assert [json.loads(spool.read(e))["n"] for e in entries] == [0, 1, 2, 3, 4]
    spool.remove(entries[:2])
    again = Spool(tmp_path / "spool")  # a restart sees exactly what is left
    assert [json.loads(again.read(e))["n"] for e in again.entries()] == [2, 3, 4]
    st = again.status()
    assert (st.depth, st.bytes) == (3, sum(len(_body(i)) for i in (2, 3, 4)))


def test_interrupted_writes_are_cleaned_and_unreadable_files_quarantined(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.put(_body(1), kind="finding", message_id="ok")
    partial = tmp_path / "spool" / ".00000000000000000001-f-1-1-x.msg.abc123.tmp"
    partial.write_text('{"n": ')
    bad = tmp_path / "spool" / "00000000000000000002-f-1-2-bad.msg"
    bad.write_bytes(b"\xff\xfe not ascii")
    spool = Spool(tmp_path / "spool")
    assert not partial.exists()
    bodies = [spool.read(e) for e in spool.entries()]
    assert bodies.count(None) == 1 and _body(1) in bodies
    [aside] = (tmp_path / "corrupt").iterdir()  # kept for a human, not deleted
    assert aside.name.startswith(bad.name + ".") and aside.read_bytes() == b"\xff\xfe not ascii"
    assert aside.stat().st_mode & 0o777 == 0o600
    assert spool.status().corrupt == 1 and spool.status().depth == 1


def test_heartbeats_are_coalesced_and_give_way_to_findings_which_are_never_dropped(tmp_path):
    spool = Spool(tmp_path / "spool", max_messages=4, max_heartbeats=2, warn_ratio=0.75)
    for i in range(3):
        spool.put(_body(i), kind="heartbeat", message_id=f"h{i}")
    assert [e.kind for e in spool.entries()] == ["heartbeat", "heartbeat"]
    assert spool.status().coalesced == 1
    spool.put(_body(10), kind="finding", message_id="f0")
    spool.put(_body(11), kind="finding", message_id="f1")
    assert spool.status().filling and spool.status().full
    spool.put(_body(12), kind="finding", message_id="f2")  # evicts the oldest heartbeat
    spool.put(_body(13), kind="finding", message_id="f3")  # and the last one
    assert [e.kind for e in spool.entries()] == ["finding"] * 4
    with pytest.raises(SpoolFull):
        spool.put(_body(14), kind="finding", message_id="f4")
    with pytest.raises(SpoolFull):
        spool.put(_body(15), kind="heartbeat", message_id="h9")
    assert [json.loads(spool.read(e))["n"] for e in spool.entries()] == [10, 11, 12, 13]
    spool.count("refused", 2)
    restarted = Spool(tmp_path / "spool", max_messages=4)
    assert (restarted.status().coalesced, restarted.status().refused) == (3, 2)  # counts survive restarts


def test_byte_bound(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=3000)
    spool.put(_body(0, 1000), kind="finding", message_id="a")
    spool.put(_body(1, 1000), kind="finding", message_id="b")
    with pytest.raises(SpoolFull, match="not spooled"):
        spool.put(_body(2, 1000), kind="finding", message_id="c")
    assert spool.status().depth == 2


def test_only_one_sender_at_a_time(tmp_path):
    spool = Spool(tmp_path / "spool")
    other = Spool(tmp_path / "spool")
    with spool.locked() as first:
        with other.locked() as second:
            assert first is True and second is False
    with other.locked() as later:
        assert later is True


_WRITER = r"""
import json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from keysweep.report.spool import Spool
spool = Spool(Path({d!r}), max_messages=10**6, max_bytes=10**9)
i = 0
while True:
    spool.put(json.dumps({{"n": i, "pad": "p" * 20000}}), kind="finding", message_id=f"m{{i}}")
    i += 1
    if i == 5:
        print("ready", flush=True)
"""


def test_kill_9_while_writing_leaves_only_whole_messages(tmp_path):
    d = tmp_path / "spool"
    code = _WRITER.format(root=str(Path(__file__).resolve().parents[1]), d=str(d))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == b"ready"
    time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    spool = Spool(d)
    entries = spool.entries()
    assert len(entries) >= 5
    numbers = [json.loads(spool.read(e))["n"] for e in entries]  # every file is a whole message
    assert numbers == list(range(len(numbers)))
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
