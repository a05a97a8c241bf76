"""Files old enough for the incremental state to record them as unchanged."""

from __future__ import annotations

import time

from keysweep.scan_types import RACY_MARGIN_NS


def settle() -> None:
    """Wait until every file written so far has a ctime older than the racy margin
    (:func:`keysweep.scan_types.settled`): a file read sooner after its last change is, by design, read again by
    the next scan, which a test that expects it from the state must not depend on the timing of."""
    time.sleep(RACY_MARGIN_NS / 1e9 + 0.005)
