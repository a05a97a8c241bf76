"""The packages' dependency locks (packaging/requirements*.lock) as the tests read them."""

from __future__ import annotations

from pathlib import Path

PACKAGING = Path(__file__).resolve().parent.parent.parent / "packaging"


def locked(lock: str = "requirements.lock") -> dict[str, tuple[str, list[str]]]:
    """package (lower case) -> its pinned version and the sha256 hashes the lock allows."""
    text = (PACKAGING / lock).read_text().replace("\\\n", " ")
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec, *hashes = line.split("--hash=")
        name, _, version = spec.split(";")[0].strip().partition("==")
        pins[name.lower()] = (version, [h.strip() for h in hashes])
    return pins


def lock_version(lock: str, package: str) -> str:
    """The version ``lock`` pins ``package`` at; fails the test when it pins none."""
    pins = locked(lock)
    assert package in pins, f"{package} not in {lock}"
    return pins[package][0]
