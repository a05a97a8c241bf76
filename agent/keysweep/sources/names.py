"""Names read from the system (paths, archive members, executables) made safe for every output: the sources'
name for :func:`keysweep.textsafe.readable`."""

from __future__ import annotations

from keysweep.textsafe import readable

__all__ = ["readable"]
