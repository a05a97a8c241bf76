"""Keyed fingerprints and redaction: how a key or secret is named without ever being stored.

Every fingerprint is HMAC-SHA256 under a key that is either the organisation-wide key from the configuration
(so the fleet can match the same secret across hosts) or a random per-installation key persisted with mode 0600
in the state directory. A plain hash is never used: a secret fingerprint must not be brute-forceable from a
dictionary of leaked keys, nor comparable across organisations.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from keysweep import statedir
from keysweep.errors import ConfigError
from keysweep.models import Location

ENV_KEY = "KEYSWEEP_FINGERPRINT_KEY"
KEY_FILE = "fingerprint.key"
_KEY_BYTES = 32
_MIN_ORG_KEY = 16
_FP_HEX = 32  # 128 bits shown: collision-free for any fleet, short enough to read


def default_state_dir() -> Path:
    """The user's default state directory: $XDG_STATE_HOME/keysweep, else ~/.local/state/keysweep."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "keysweep"


class Fingerprinter:
    """Computes keyed fingerprints. Holds the HMAC key only; ``repr`` does not show it."""

    __slots__ = ("_key", "source")

    def __init__(self, key: bytes, *, source: str = "configured") -> None:
        if not key:
            raise ValueError("fingerprint key must not be empty")
        self._key = bytes(key)
        self.source = source  # configured | installation | per-run

    def __repr__(self) -> str:
        return "Fingerprinter(<key>)"

    def _mac(self, *parts: str) -> str:
        msg = "\x00".join(parts).encode("utf-8", "surrogatepass")
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:_FP_HEX]

    def key_fingerprint(self, key_id: str, secret: str | None) -> str:
        """Fingerprint of a key: id and secret when paired, the id alone otherwise."""
        if secret is None:
            return self._mac("key-id", key_id)
        return self._mac("key-pair", key_id, secret)

    def secret_fingerprint(self, secret: str) -> str:
        return self._mac("secret", secret)

    def finding_fingerprint(self, host_id: str, location: Location, key_fp: str) -> str:
        """Names one key at one place on one host (stable across scans; the line may move, the place does not)."""
        return self._mac("finding", host_id, location.identity(), key_fp)

    @classmethod
    def from_config(cls, org_key: str | None, state_dir: Path | None, *, per_run: bool = False) -> Fingerprinter:
        """The key from $KEYSWEEP_FINGERPRINT_KEY, else ``org_key``, else the per-installation key in ``state_dir``
        (created on first use, mode 0600; ``state_dir`` defaults to :func:`default_state_dir`), else with
        ``per_run`` a random key for this run only (nothing is written: fingerprints then match only within it)."""
        configured = os.environb.get(ENV_KEY.encode()) or (
            org_key.encode("utf-8", "surrogateescape") if org_key else None
        )
        if configured:
            if len(configured) < _MIN_ORG_KEY:
                raise ConfigError(
                    f"fingerprint key: must be at least {_MIN_ORG_KEY} characters (got {len(configured)})"
                )
            return cls(configured, source="configured")
        if per_run:
            return cls(secrets.token_bytes(_KEY_BYTES), source="per-run")
        return cls(
            _installation_key(state_dir if state_dir is not None else default_state_dir()), source="installation"
        )


def _installation_key(state_dir: Path) -> bytes:
    state_dir = statedir.prepare(state_dir)
    path = state_dir / KEY_FILE
    for _ in range(3):
        try:
            fd = statedir.open_file(path, os.O_WRONLY, exclusive=True, secret=True)
        except FileExistsError:
            key = _read_key(state_dir, path)
            if key is not None:
                return key
            continue  # moved aside: create a new one
        except statedir.CorruptStateFile:
            continue
        except OSError as exc:
            raise ConfigError(f"fingerprint key file {path}: cannot create ({exc.strerror})") from None
        key = secrets.token_bytes(_KEY_BYTES)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return key
    raise ConfigError(f"fingerprint key file {path}: cannot create a usable key")


def _read_key(state_dir: Path, path: Path) -> bytes | None:
    """The key in ``path``; None when it was not a usable key file and has been moved aside."""
    data = b""
    for _ in range(50):  # another process may have just created it: a short file is retried once the writer is done
        try:
            fd = statedir.open_file(path, os.O_RDONLY, create=False, secret=True)
        except statedir.CorruptStateFile as exc:
            statedir.quarantine(state_dir, path, str(exc))
            return None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"fingerprint key file {path}: cannot read ({exc.strerror})") from None
        try:
            data = os.read(fd, _KEY_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) == _KEY_BYTES:
            return data
        if len(data) > _KEY_BYTES:
            break
        time.sleep(0.01)
    statedir.quarantine(state_dir, path, f"{len(data)} bytes, expected {_KEY_BYTES}")
    return None


def redact(secret: str | None) -> str | None:
    """At most four leading characters and an ellipsis; short values show nothing."""
    if secret is None:
        return None
    if len(secret) < 16:
        return "…"
    return secret[:4] + "…"
