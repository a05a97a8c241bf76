"""EC2 user data as the instance sees it: base64 decoded, gunzipped, and MIME multipart (cloud-init) split.

Each part is returned with a name; the detector itself still decodes base64 and percent-encoding inside them.
Decompression is bounded, so a gzip bomb in a launch template costs at most :data:`MAX_EXPANDED` bytes.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import zlib

MAX_EXPANDED = 16 * 1024 * 1024
_MAX_PARTS = 256


def decode_base64(value: str | bytes | None) -> bytes:
    """The API's base64 user data as bytes (not base64 at all: the value as it is)."""
    if not value:
        return b""
    raw = value.encode("ascii", "replace") if isinstance(value, str) else value
    try:
        return base64.b64decode(raw, validate=False)
    except (binascii.Error, ValueError):
        return raw


def gunzip(data: bytes, limit: int = MAX_EXPANDED) -> bytes | None:
    """``data`` decompressed when it is gzip (up to ``limit`` bytes); None when it is not."""
    if data[:2] != b"\x1f\x8b":
        return None
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        return d.decompress(data, limit)
    except zlib.error:
        return None


def parts(data: bytes) -> list[tuple[str, bytes]]:
    """(name, bytes) of every piece of user data: ``""`` for plain user data, part names for MIME multipart."""
    unzipped = gunzip(data)
    if unzipped is not None:
        data = unzipped
    head = data[:4096].lower()
    if b"content-type:" not in head or b"multipart/" not in head:
        return [("", data)]
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    out: list[tuple[str, bytes]] = []
    for i, part in enumerate(msg.walk()):
        if part.is_multipart():
            continue
        if len(out) >= _MAX_PARTS:
            break
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        payload = gunzip(payload) or payload
        name = part.get_filename() or part.get_content_type() or f"part-{i}"
        out.append((f"{name}#{i}", payload))
    return out or [("", data)]
