#!/usr/bin/env python3
"""Merges per-interpreter installs of the same locked dependencies into lib/common and lib/cpXY.

    split-sites.py OUT SITE_cp311 SITE_cp312 ...   (each SITE_* directory's name ends in its tag, e.g. site-cp311)

A top-level entry (package, module or .dist-info) that is byte-for-byte the same in every site goes to OUT/common
once. One that differs is kept once per variant: in OUT/<tag> when a single interpreter has that variant (compiled
extensions), in OUT/<tag>-<tag>... when several share it (the pure-Python packages of one dependency lock, e.g.
cp39-cp310 for the older lock of 3.9 and 3.10). packaging/launch.py puts on the path OUT/<tag>, every OUT/*-* that
names the running interpreter's tag, and OUT/common. Console scripts (bin/) are dropped: /usr/bin/keysweep runs
packaging/launch.py instead.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path


def digest(path: Path) -> str:
    sha = hashlib.sha256()
    for item in sorted([path] if path.is_file() else path.rglob("*")):
        sha.update(str(item.relative_to(path.parent)).encode() + b"\0")
        if item.is_file():
            sha.update(item.read_bytes())
    return sha.hexdigest()


def tag(site: Path) -> str:
    return site.name.rsplit("-", 1)[1]


def split(out: Path, sites: list[Path]) -> dict[str, int]:
    names = {entry.name for site in sites for entry in site.iterdir()} - {"bin"}
    counts: dict[str, int] = {}
    for name in sorted(names):
        variants: dict[str, list[Path]] = {}  # digest -> the copies with that content, in the order of ``sites``
        for site in sites:
            if (site / name).exists():
                variants.setdefault(digest(site / name), []).append(site / name)
        targets = []
        for copies in variants.values():
            directory = "common" if len(copies) == len(sites) else "-".join(tag(c.parent) for c in copies)
            targets.append((copies[0], out / directory / name))
        for src, dst in targets:
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, symlinks=True)
            else:
                shutil.copy2(src, dst)
            counts[dst.parent.name] = counts.get(dst.parent.name, 0) + 1
    return counts


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: split-sites.py OUT SITE-cpXY [SITE-cpXY ...]")
    result = split(Path(sys.argv[1]), [Path(arg) for arg in sys.argv[2:]])
    print("split-sites: " + ", ".join(f"{dst}: {n} entries" for dst, n in sorted(result.items())))
