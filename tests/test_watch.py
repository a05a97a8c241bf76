"""The hot-path watcher on real inotify: changes reach the callback debounced, filtered, and what cannot be
watched is reported as left to the periodic sweep."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from keysweep.config import WatchConfig
from keysweep.watch import HotPath, Watcher, home_dirs, hot_paths


class Seen:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self._cond = threading.Condition()

    def __call__(self, paths: list[str]) -> None:
        with self._cond:
            self.batches.append(paths)
            self._cond.notify_all()

    @property
    def paths(self) -> list[str]:
        return [p for b in self.batches for p in b]

    def wait_for(self, path: Path, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while str(path) not in self.paths:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def start_watcher(seen: Seen) -> Iterator:
    watchers: list[Watcher] = []

    def start(hot: list[HotPath], **kw: object) -> Watcher:
        w = Watcher(hot, seen, debounce=kw.pop("debounce", 0.2), **kw)  # type: ignore[arg-type]
        w.start()
        watchers.append(w)
        return w

    yield start
    for w in watchers:
        w.stop()


@pytest.mark.timeout(30)
def test_file_written_in_watched_directory_is_reported(tmp_path: Path, seen: Seen, start_watcher) -> None:
    app = tmp_path / "app"
    (app / "conf" / "deep").mkdir(parents=True)
    w = start_watcher([HotPath(str(app))])
    assert w.coverage.watched and not w.coverage.unwatched
    target = app / "conf" / "deep" / "settings.env"
    target.write_text("AWS_ACCESS_KEY_ID=...\n")
    assert seen.wait_for(target)


@pytest.mark.timeout(30)
def test_watched_file_filters_its_siblings(tmp_path: Path, seen: Seen, start_watcher) -> None:
    home = tmp_path / "home"
    home.mkdir()
    start_watcher([HotPath(str(home / ".bashrc"))])
    (home / "notes.txt").write_text("not hot\n")
    (home / ".bashrc").write_text("export AWS_ACCESS_KEY_ID=...\n")
    assert seen.wait_for(home / ".bashrc")
    time.sleep(0.5)
    assert str(home / "notes.txt") not in seen.paths


@pytest.mark.timeout(30)
def test_path_that_does_not_exist_yet_is_picked_up(tmp_path: Path, seen: Seen, start_watcher) -> None:
    home = tmp_path / "home"
    home.mkdir()
    w = start_watcher([HotPath(str(home / ".aws"))])
    assert str(home / ".aws") in w.coverage.pending
    (home / ".aws").mkdir()
    time.sleep(0.3)  # the new directory is watched from now on; earlier files are enqueued too
    creds = home / ".aws" / "credentials"
    creds.write_text("[default]\naws_access_key_id = ...\n")
    assert seen.wait_for(creds)
    assert any(item["path"] == str(home / ".aws") for item in w.coverage.watched)


@pytest.mark.timeout(30)
def test_nested_missing_path_and_file_created_with_directory(tmp_path: Path, seen: Seen, start_watcher) -> None:
    start_watcher([HotPath(str(tmp_path / "srv" / "app" / "conf"))])
    conf = tmp_path / "srv" / "app" / "conf"
    conf.mkdir(parents=True)
    target = conf / "app.env"
    target.write_text("x\n")
    assert seen.wait_for(target)


@pytest.mark.timeout(30)
def test_bursts_of_writes_are_debounced(tmp_path: Path, seen: Seen, start_watcher) -> None:
    d = tmp_path / "d"
    d.mkdir()
    start_watcher([HotPath(str(d))], debounce=0.4)
    target = d / "history"
    with open(target, "a") as fh:
        for i in range(20):
            fh.write(f"line {i}\n")
            fh.flush()
            time.sleep(0.01)
    assert seen.wait_for(target)
    time.sleep(0.8)
    assert seen.paths.count(str(target)) == 1


@pytest.mark.timeout(30)
def test_watch_budget_leaves_the_rest_to_the_sweep(tmp_path: Path, seen: Seen, start_watcher) -> None:
    big, small = tmp_path / "big", tmp_path / "small"
    for i in range(10):
        (big / f"sub{i}").mkdir(parents=True)
    small.mkdir()
    w = start_watcher([HotPath(str(big)), HotPath(str(small))], max_watches=5)
    cov = w.coverage.to_dict()
    assert [u["path"] for u in cov["unwatched"]] == [str(big)]
    assert "watch budget exhausted" in cov["unwatched"][0]["reason"]
    assert [x["path"] for x in cov["watched"]] == [str(small)]
    assert cov["watches_used"] <= 5
    (small / "a").write_text("x")
    assert seen.wait_for(small / "a")


@pytest.mark.timeout(30)
def test_failing_callback_does_not_stop_watching(tmp_path: Path, start_watcher) -> None:
    calls: list[list[str]] = []

    def flaky(paths: list[str]) -> None:
        calls.append(paths)
        if len(calls) == 1:
            raise RuntimeError("scan failed")

    d = tmp_path / "d"
    d.mkdir()
    w = Watcher([HotPath(str(d))], flaky, debounce=0.1)
    w.start()
    try:
        (d / "one").write_text("1")
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
        (d / "two").write_text("2")
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [str(d / "two")] in calls
    finally:
        w.stop()


def test_hot_paths_from_the_host_password_database(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "home" / "alice").mkdir(parents=True)
    (host / "root").mkdir()
    (host / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "alice:x:1000:1000::/home/alice:/bin/bash\n"
        "ghost:x:1001:1001::/home/ghost:/bin/sh\n"  # home does not exist on the host
        "daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n"
    )
    assert sorted(home_dirs(str(host))) == [str(host / "home" / "alice"), str(host / "root")]
    paths = {h.path for h in hot_paths(WatchConfig(paths=("/opt/app/conf",)), host_prefix=str(host))}
    assert str(host / "home" / "alice" / ".aws") in paths
    assert str(host / "home" / "alice" / ".bash_history") in paths
    assert str(host / "root" / ".zshrc") in paths
    assert str(host / "etc" / "environment") in paths
    assert str(host / "etc" / "profile.d") in paths
    assert str(host / "etc" / "systemd" / "system") in paths
    assert str(host / "opt" / "app" / "conf") in paths
    assert not any("ghost" in p for p in paths)
    only_config = {h.path for h in hot_paths(WatchConfig(homes=False, system_paths=False, paths=("/x",)))}
    assert only_config == {"/x"}


@pytest.mark.timeout(30)
def test_a_thread_of_the_observer_that_dies_is_replaced_and_watching_goes_on(
    tmp_path: Path, seen: Seen, start_watcher, capfd: pytest.CaptureFixture[str]
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "before.env").write_text("x\n")
    w = start_watcher([HotPath(str(app))])

    def crash() -> None:  # as watchdog's inotify reader did under churn (KeyError in _remove_watch_internally)
        raise KeyError(b"/gone/dir4")

    t = threading.Thread(target=crash, name="Thread-1")
    t.start()
    t.join()
    assert seen.wait_for(app)  # each watched directory is scanned whole: the gap's events were lost
    deadline = time.monotonic() + 10
    while w.coverage.restarts == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert w.coverage.restarts == 1 and w.coverage.watched and w._observer.is_alive()
    after = app / "after.env"
    after.write_text("y\n")
    assert seen.wait_for(after)  # the new observer sees new events
    assert "Traceback" not in capfd.readouterr().err  # an event in the log, never a raw traceback


@pytest.mark.timeout(30)
def test_events_lost_to_an_inotify_overflow_make_the_watched_directories_scanned(
    tmp_path: Path, seen: Seen, start_watcher
) -> None:
    import logging

    app = tmp_path / "app"
    app.mkdir()
    start_watcher([HotPath(str(app))])
    # what watchdog logs (and only logs) when the kernel's event queue overflowed
    logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed; filesystem events were lost")
    assert seen.wait_for(app)  # scanned whole: any file in it may have changed unseen
