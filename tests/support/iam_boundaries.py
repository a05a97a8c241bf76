"""User permissions boundaries for moto, which has none (no PutUserPermissionsBoundary, GetUser shows none).

A recording proxy in front of moto's IAM adds ``PermissionsBoundary`` to the ``GetUser`` answers of the users
given, exactly as IAM answers it; every other request goes to moto unchanged.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from tests.support.recording_proxy import Recorded, RecordingProxy, recording_proxy


def _boundary_xml(arn: str) -> bytes:
    return (
        b"<PermissionsBoundary><PermissionsBoundaryType>PermissionsBoundaryPolicy</PermissionsBoundaryType>"
        b"<PermissionsBoundaryArn>" + arn.encode() + b"</PermissionsBoundaryArn></PermissionsBoundary>"
    )


@contextmanager
def user_boundaries(upstream: str, boundaries: Mapping[str, str]) -> Iterator[RecordingProxy]:
    """A proxy to ``upstream`` (moto) under which user name -> boundary ARN holds for ``GetUser``."""

    def rewrite(request: Recorded, body: bytes) -> bytes:
        form = urllib.parse.parse_qs(request.body.decode("utf-8", "replace"))
        user = (form.get("UserName") or [""])[0]
        if form.get("Action") == ["GetUser"] and user in boundaries and b"</User>" in body:
            return body.replace(b"</User>", _boundary_xml(boundaries[user]) + b"</User>", 1)
        return body

    with recording_proxy(upstream, rewrite) as proxy:
        yield proxy
