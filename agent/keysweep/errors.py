"""Exit codes and the exception classes that carry them.

1 always means "found problems", never "error" (a caller's script can rely on it).
"""

from __future__ import annotations

import enum


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


class VerificationError(KeysweepError):
    """Verification could not run as configured."""


class DeliveryError(KeysweepError):
    """A report could not be delivered (it stays in the spool)."""


class StoreError(KeysweepError):
    """The central store failed."""
