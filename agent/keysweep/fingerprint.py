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

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("fingerprint key must not be empty")
        self._key = bytes(key)

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
    def from_config(cls, org_key: str | None, state_dir: Path | None) -> Fingerprinter:
        """The key from $KEYSWEEP_FINGERPRINT_KEY, else ``org_key``, else the per-installation key in ``state_dir``
        (created on first use, mode 0600; ``state_dir`` defaults to :func:`default_state_dir`)."""
        configured = os.environ.get(ENV_KEY) or org_key
        if configured:
            if len(configured) < _MIN_ORG_KEY:
                raise ConfigError(
                    f"fingerprint key: must be at least {_MIN_ORG_KEY} characters (got {len(configured)})"
                )
            return cls(configured.encode("utf-8"))
        return cls(_installation_key(state_dir if state_dir is not None else default_state_dir()))


def _installation_key(state_dir: Path) -> bytes:
    path = state_dir / KEY_FILE
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"state dir {state_dir}: cannot create ({exc.strerror})") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return _read_key(path)
    except OSError as exc:
        raise ConfigError(f"fingerprint key file {path}: cannot create ({exc.strerror})") from None
    key = secrets.token_bytes(_KEY_BYTES)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def _read_key(path: Path) -> bytes:
    # another process may have just created it: a short file is retried once the writer is done
    for _ in range(50):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
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
    raise ConfigError(f"fingerprint key file {path}: expected {_KEY_BYTES} bytes; remove it to create a new key")


def redact(secret: str | None) -> str | None:
    """At most four leading characters and an ellipsis; short values show nothing."""
    if secret is None:
        return None
    if len(secret) < 16:
        return "…"
    return secret[:4] + "…"
