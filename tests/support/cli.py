"""Running keysweep's command line as a separate process, the way an operator does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def run_keysweep(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m keysweep ARGS`` with text output captured (``env``: the whole environment; None inherits)."""
    return subprocess.run(
        [sys.executable, "-m", "keysweep", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        cwd=cwd,
        timeout=timeout,
    )
