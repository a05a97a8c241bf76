"""Deployment packages behind a pre-signed URL (Lambda's ``Code.Location``, a layer's ``Content.Location``).

The package is streamed into a spooled temporary file (memory up to 8 MiB, then the system's temp directory,
never beside anything scanned) and never past ``max_bytes``. When keysweep's own environment names an S3
endpoint (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``: a private endpoint or the test emulator) the S3 URL is
fetched path-style through it. URLs are never logged: a pre-signed URL is a short-lived credential.
"""

from __future__ import annotations

import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import IO

from keysweep.aws import service_endpoint

_CHUNK = 1024 * 1024
_VIRTUAL_HOST = re.compile(r"^(?P<bucket>.+?)\.s3[.-](?:[a-z0-9-]+\.)?amazonaws\.com(?:\.cn)?$")


class PackageError(Exception):
    """The package could not be fetched; ``reason`` is short and safe to report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _through_endpoint(url: str) -> str:
    endpoint = service_endpoint("s3")
    if not endpoint:
        return url
    parts = urllib.parse.urlsplit(url)
    m = _VIRTUAL_HOST.match(parts.hostname or "")
    path = f"/{m.group('bucket')}{parts.path}" if m else parts.path
    return endpoint.rstrip("/") + path + (f"?{parts.query}" if parts.query else "")


def fetch(url: str | None, *, max_bytes: int, timeout: float = 30.0) -> tuple[IO[bytes], int]:
    """(file positioned at 0, size) of the package at ``url``."""
    if not url or not url.startswith(("https://", "http://")):
        raise PackageError("no-package-location")
    out = tempfile.SpooledTemporaryFile(max_size=8 * _CHUNK)  # noqa: SIM115 - handed to the caller, who closes it
    size = 0
    try:
        with urllib.request.urlopen(_through_endpoint(url), timeout=timeout) as resp:  # noqa: S310 - https/http only
            while chunk := resp.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise PackageError("package-too-large")
                out.write(chunk)
    except PackageError:
        out.close()
        raise
    except urllib.error.HTTPError as exc:
        out.close()
        raise PackageError(f"package-http-{exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        out.close()
        raise PackageError(f"package-unreachable ({type(exc).__name__})") from None
    out.seek(0)
    return out, size
