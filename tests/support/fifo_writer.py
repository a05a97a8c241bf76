"""A FIFO with a writer blocked in ``open``: it stays blocked unless something opens the FIFO for reading.

The only faithful way to tell whether a scanner ever opened a FIFO (even non-blocking, even for an instant):
opening the read end releases a writer waiting in ``open(O_WRONLY)``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class BlockedWriter:
    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        self.released = threading.Event()
        self._thread = threading.Thread(target=self._open, daemon=True)

    def _open(self) -> None:
        fd = os.open(self.fifo, os.O_WRONLY)  # blocks until a reader opens the FIFO
        self.released.set()
        os.close(fd)

    def start(self) -> None:
        self._thread.start()
        # wait until the writer sleeps inside open(): only then does a later reader's open show
        assert self._thread.native_id is not None
        stat_file = Path(f"/proc/self/task/{self._thread.native_id}/stat")
        deadline = time.monotonic() + 5
        while stat_file.read_text().rsplit(")", 1)[1].split()[0] != "S":
            if time.monotonic() > deadline:
                raise RuntimeError("the FIFO writer did not block")
            time.sleep(0.005)

    def stop(self) -> None:
        if not self.released.is_set():  # let the writer go: open the read end ourselves
            fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
            self._thread.join(5)
            os.close(fd)
        self._thread.join(5)


@contextmanager
def fifo_with_blocked_writer(fifo: Path) -> Iterator[BlockedWriter]:
    """Make ``fifo`` and start a writer blocked on it; ``.released`` is set once anything opened it to read."""
    os.mkfifo(fifo)
    writer = BlockedWriter(fifo)
    writer.start()
    try:
        yield writer
    finally:
        writer.stop()
