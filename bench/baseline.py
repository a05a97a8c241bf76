"""The plain-Python baseline: an os.scandir walk reading every file in 1 MiB pieces through one key-id regex.

python bench/baseline.py ROOT   ->  prints "<matches> <bytes> <files>"
"""

from __future__ import annotations

import os
import re
import sys

PATTERN = re.compile(rb"(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}")


def main(root: str) -> None:
    matches = size = files = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    with open(e.path, "rb") as fh:
                        while chunk := fh.read(1 << 20):
                            matches += len(PATTERN.findall(chunk))
                            size += len(chunk)
                    files += 1
    print(matches, size, files)


if __name__ == "__main__":
    main(sys.argv[1])
