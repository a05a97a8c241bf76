"""Facts about AWS access key ids that need no network: type, owning account, documentation placeholders.

A key id is a four-letter prefix and 16 base32 characters (``A-Z``, ``2-7``). New-format ids carry the owning
account in their first 10 base32-decoded bytes; old ``AKIAI…``/``AKIAJ…`` ids do not.
"""

from __future__ import annotations

import base64
import re

KEY_PREFIXES: dict[str, str] = {
    "AKIA": "long-term",
    "ASIA": "temporary",
    "ABIA": "bearer",
    "ACCA": "context",
}

KEY_ID_LEN = 20
_KEY_ID_RE = re.compile(r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\Z")


def is_key_id(value: str) -> bool:
    """True for a syntactically valid access key id (any of the four key prefixes)."""
    return len(value) == KEY_ID_LEN and _KEY_ID_RE.match(value) is not None


def key_type(key_id: str) -> str | None:
    """ "long-term", "temporary", "bearer" or "context"; None for principal ids and anything that is not a key id."""
    if not is_key_id(key_id):
        return None
    return KEY_PREFIXES[key_id[:4]]


# the 5th character of a key id whose next 46 bits hold the account id (AWS-NOTES: Q–Z or 2–7)
_NEW_FORMAT_FIFTH = frozenset("QRSTUVWXYZ234567")


def decode_account(key_id: str) -> str | None:
    """The 12-digit account id encoded in a new-format key id, or None when the format does not carry it."""
    if not is_key_id(key_id):
        return None
    if key_id[4] not in _NEW_FORMAT_FIFTH:  # older formats (AKIAI…, AKIAJ…, …) carry no account
        return None
    raw = base64.b32decode(key_id[4:])  # 16 chars -> 10 bytes
    z = int.from_bytes(raw[:6], "big")
    account = (z & 0x7FFFFFFFFF80) >> 7
    return f"{account:012d}" if account < 10**12 else None


_PLACEHOLDER_WORDS = ("EXAMPLE", "XXXX", "ABCDEFGHIJ", "KEYID", "ACCESSKEY", "REDACTED", "DUMMY", "FAKE", "SAMPLE")


def is_example_key(key_id: str) -> bool:
    """True for documentation examples and obvious placeholders (``…EXAMPLE``, ``AKIAXXXXXXXXXXXXXXXX``, …).

    Structural only; the explicit list of documentation ids lives in rules/ignore.yaml.
    """
    return example_reason(key_id) is not None


def example_reason(key_id: str) -> str | None:
    """Why :func:`is_example_key` holds for this id (``placeholder key id (contains XXXX)``), else None."""
    body = key_id[4:]
    if key_id.endswith("EXAMPLE"):
        return "key id ends in EXAMPLE"
    if len(set(body)) <= 3:  # AKIAAAAAAAAAAAAAAAAA, AKIA2222222222222222, AKIAABABABABABABABAB
        return "placeholder key id (at most three distinct characters)"
    m = _PLACEHOLDER_RE.search(body)
    if m is None:
        return None
    if m.group() in _PLACEHOLDER_WORDS:
        return f"placeholder key id (contains {m.group()})"
    if m.group(1) is not None:
        return "placeholder key id (a run of one character)"
    return "placeholder key id (consecutive alphabet characters)"


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# one search per id (run on every id a scan finds): a placeholder word; a run of one repeated character
# (random base32 has a run of 6 with probability ~1e-6); ABCDEFGH… or 234567… style filler (8 or more
# consecutive alphabet steps)
_PLACEHOLDER_RE = re.compile(
    "|".join([*_PLACEHOLDER_WORDS, r"(.)\1{5}", *(_ALPHABET[k : k + 8] for k in range(len(_ALPHABET) - 7))])
)
