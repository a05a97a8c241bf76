#!/usr/bin/env python3
"""Builds the collector Lambda artefact: the keysweep package (code and message schema) in a zip.

The function needs nothing but boto3, which the Lambda Python runtime provides, so no dependency is bundled.
Usage: packaging/central/build-lambda.py [OUT.zip]   (default dist/keysweep-collector-lambda.zip)
The archive is reproducible: sorted entries, fixed timestamps and modes.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "agent" / "keysweep"
EPOCH = (1980, 1, 1, 0, 0, 0)


def build(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in PACKAGE.rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".json"))
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            info = zipfile.ZipInfo(str(path.relative_to(PACKAGE.parent)), EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist" / "keysweep-collector-lambda.zip"
    print(build(target))
