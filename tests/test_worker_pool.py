"""The files engine's pool of forked workers: each holds its next task while it reads, a worker killed loses only
the task it was reading, and a task too large to wait in a pipe is not queued behind another. Real forked
workers, real files."""

from __future__ import annotations

import collections
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from keysweep.detect import Detector
from keysweep.models import Finding
from keysweep.scan import ScanOptions, ScanStats
from keysweep.sources import file_engine, filesystem
from keysweep.sources.mounts import MountTable

from tests.support.hosttree import Keys, make_detector
from tests.test_hostile_zoo import SECRET


def tasks_of(root: Path, per_task: int) -> list[file_engine.ReadFiles]:
    """The walk's files under ``root``, in tasks of ``per_task`` files, in name order."""
    opts = ScanOptions(paths=(str(root),), sources=("files",))
    items = sorted(filesystem.iter_files(opts, ScanStats(), mounts=MountTable([])), key=lambda item: item[0].path)
    return [file_engine.ReadFiles(items[i : i + per_task]) for i in range(0, len(items), per_task)]


def key_files(root: Path, n: int, seed: int) -> dict[str, str]:
    """``n`` files each holding its own key pair: key id by path."""
    ids = Keys(random.Random(seed))
    keys = sorted({ids.key_id() for _ in range(n)})
    assert len(keys) == n
    by_path = {}
    for i, key in enumerate(keys):
        path = root / f"f{i:03d}.env"
        path.write_text(f"AWS_ACCESS_KEY_ID={key}\nAWS_SECRET_ACCESS_KEY={SECRET}\n")
        by_path[str(path)] = key
    return by_path


@pytest.mark.timeout(60)
def test_each_worker_has_its_next_task_waiting_while_it_reads_and_the_walk_runs_only_one_task_ahead(
    tmp_path: Path,
) -> None:
    key_files(tmp_path, 40, seed=1)
    tasks = tasks_of(tmp_path, 2)
    taken = 0
    ahead: list[int] = []  # tasks taken from the walk and not answered yet, at each answer

    def walk() -> Iterator[file_engine.Task]:
        nonlocal taken
        for task in tasks:
            taken += 1
            yield task

    opts = ScanOptions(sources=("files",))
    answered = 0
    with file_engine.Pool(2, make_detector(), opts) as pool:
        for _reply in pool.run(walk()):
            ahead.append(taken - answered)
            answered += 1
    assert file_engine.IN_FLIGHT >= 2
    assert answered == len(tasks) == 20
    # when the first answer comes, each worker had its next task in its pipe, and one more was walked
    assert ahead[0] == 2 * file_engine.IN_FLIGHT + 1
    assert max(ahead) == 2 * file_engine.IN_FLIGHT + 1  # the walk never ran further ahead (bounded memory)


def poison_after(go: Path) -> Detector:
    """A detector that, in a worker, dies by SIGKILL (as by the OOM killer) on a buffer holding b"POISON" once
    ``go`` exists: the test decides when."""
    parent = os.getpid()

    class _Poisoned(Detector):
        def may_hold(self, buf: bytes) -> bool:
            return b"POISON" in buf or super().may_hold(buf)

        def scan(self, buf: bytes, **kw: Any) -> list[Finding]:
            if b"POISON" in buf and os.getpid() != parent:
                deadline = time.monotonic() + 20
                while not go.exists() and time.monotonic() < deadline:
                    time.sleep(0.005)
                os.kill(os.getpid(), signal.SIGKILL)
            return super().scan(buf, **kw)

    base = make_detector()
    return _Poisoned(base.ruleset, base.fingerprinter)


@pytest.mark.timeout(60)
def test_a_worker_killed_with_a_task_waiting_loses_only_the_task_it_was_reading(tmp_path: Path) -> None:
    """Tasks go out in turn (the first and third to one worker, the second and fourth to the other): the worker
    killed reading the first has the third waiting in its pipe, unread. Another worker reads that one; only the
    first task's files are lost, and no file is answered twice."""
    root, go = tmp_path / "tree", tmp_path / "go"
    root.mkdir()
    keys = key_files(root, 60, seed=2)
    (root / "f000-poison.txt").write_text("POISON\n")  # first in name order: in the first task
    tasks = tasks_of(root, 5)
    first = {ref.path for ref, _st in tasks[0].files}
    assert str(root / "f000-poison.txt") in first

    def walk() -> Iterator[file_engine.Task]:
        for i, task in enumerate(tasks):
            if i == 3:  # the third task is in the first worker's pipe: it may die now
                go.touch()
            yield task

    opts = ScanOptions(sources=("files",))
    found: collections.Counter[str] = collections.Counter()
    stats = ScanStats()
    with file_engine.Pool(2, poison_after(go), opts) as pool:
        for reply in pool.run(walk()):
            stats.merge(reply.stats)
            for outcome in reply.outcomes:
                assert isinstance(outcome, file_engine.FileDone) and outcome.findings is not None
                found.update(e.finding.key_id for e in outcome.findings)
    assert pool.respawned == 1
    assert pool.resent == 1  # the third task, which had waited in the dead worker's pipe
    assert sorted(pool.lost) == sorted(first)
    assert stats.files_scanned == 61 - len(first)
    assert found == collections.Counter(key for path, key in keys.items() if path not in first)  # each once


@pytest.mark.timeout(60)
def test_a_worker_that_died_idle_loses_nothing(tmp_path: Path) -> None:
    keys = key_files(tmp_path, 30, seed=3)
    tasks = tasks_of(tmp_path, 5)
    opts = ScanOptions(sources=("files",))
    found: collections.Counter[str] = collections.Counter()
    with file_engine.Pool(2, make_detector(), opts) as pool:
        idle = pool.workers[0].proc
        assert idle.pid is not None
        os.kill(idle.pid, signal.SIGKILL)
        idle.join(10)
        for reply in pool.run(iter(tasks)):
            for outcome in reply.outcomes:
                assert isinstance(outcome, file_engine.FileDone) and outcome.findings is not None
                found.update(e.finding.key_id for e in outcome.findings)
    assert pool.respawned == 1 and pool.lost == [] and pool.resent == 0
    assert found == collections.Counter(keys.values())


@pytest.mark.timeout(30)  # the deadlock this guards against would hang here
def test_a_task_larger_than_a_pipe_holds_waits_until_its_worker_has_answered(tmp_path: Path) -> None:
    """A task that would not fit in the pipe's buffer is not queued behind another: this process would wait to
    write it while the worker, answering the task before it at length, waits for this process to read."""
    name = "n" * 240
    for i in range(1200):  # ~300 KB of names a task, an answer for each file of ~300 KB: more than a pipe holds
        (tmp_path / f"{name}{i:04d}").write_text("nothing\n")
    tasks = [answering_all(task) for task in tasks_of(tmp_path, 1200)] * 3
    opts = ScanOptions(sources=("files",))
    answered = []
    with file_engine.Pool(1, make_detector(), opts) as pool:
        assert len(file_engine.ForkingPickler.dumps(tasks[0])) > 2 * pool.workers[0].room
        for reply in pool.run(iter(tasks)):
            answered.append(len(reply.outcomes))
    assert answered == [1200, 1200, 1200]


def answering_all(task: file_engine.ReadFiles) -> file_engine.ReadFiles:
    """The task answered for every file (as with a file cache): its answer holds each file's path."""
    return file_engine.ReadFiles(task.files, answer_all=True)
