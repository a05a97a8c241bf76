"""Exit codes and the exception classes that carry them.

1 always means "found problems", never "error" (a caller's script can rely on it).
"""

from __future__ import annotations

import enum
import re

# anything that could be a secret access key or a session token (40+ base64 characters in a row)
_SECRET_LIKE = re.compile(r"[A-Za-z0-9/+=]{40,}")


class ExitCode(enum.IntEnum):
    CLEAN = 0
    FINDINGS = 1
    USAGE = 2
    RUNTIME = 3
    INTERRUPTED = 130


class KeysweepError(Exception):
    """Base of every error keysweep raises on purpose. Messages never hold a secret."""

    exit_code: ExitCode = ExitCode.RUNTIME


class ConfigError(KeysweepError):
    """A configuration file, option or rule file is invalid; the message names the file and the key."""

    exit_code = ExitCode.USAGE


class RuleError(ConfigError):
    """A detection rule file is invalid."""


class SourceError(KeysweepError):
    """A source could not be read (the scan goes on; this is counted, not fatal)."""


class DeliveryError(KeysweepError):
    """A report could not be delivered (it stays in the spool)."""


class StoreError(KeysweepError):
    """The central store failed."""


def describe(exc: BaseException, limit: int = 500) -> str:
    """``Type: message`` of an unexpected exception, on one line, for stderr and logs: any run of 40 or more
    base64 characters (a secret access key, a session token) is replaced by ``[redacted]``."""
    from keysweep.textsafe import safe_text

    text = _SECRET_LIKE.sub("[redacted]", f"{type(exc).__name__}: {exc}")
    return safe_text(text)[:limit]
