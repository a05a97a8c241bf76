"""Micro-benchmark of the detector alone (no file system): MB/s per buffer shape, against a bare key-id regex.

    .venv/bin/python bench/detect_micro.py [--mb 64] [--seed 1] [--cpu]

Shapes: plain text without keys, binary noise, base64-heavy text, UTF-16 text, and text with a key pair every
64 KiB. Prints one line per shape: keysweep MB/s, the bare `re` MB/s, their ratio, and findings. Speed goals
live here as ratios, never as asserts in tests.
"""

from __future__ import annotations

import argparse
import base64
import io
import random
import re
import string
import time
from collections.abc import Callable

from keysweep.detect import Detector
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Location
from keysweep.ruleset import load_ruleset

_BARE = re.compile(rb"(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}")
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _text(rng: random.Random, size: int) -> bytes:
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randrange(2, 10))) for _ in range(2000)] + [
        "=",
        ":",
        "{",
        "}",
        "AWS",
        "Access",
        "Key",
        "Config",
        "QUERY",
        "Flag",
        "Bucket",
        "2026",
        "ID",
    ]
    out: list[str] = []
    n = 0
    while n < size:
        line = " ".join(rng.choice(words) for _ in range(rng.randrange(3, 14))) + "\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def _shapes(rng: random.Random, size: int) -> dict[str, bytes]:
    text = _text(rng, size)
    with_keys = bytearray(text)
    for off in range(1000, len(with_keys) - 200, 64 * 1024):
        kid = "AKIA" + "".join(rng.choice(_B32) for _ in range(16))
        secret = "".join(rng.choice(string.ascii_letters + string.digits + "/+") for _ in range(39)) + "7"
        pair = f"\naws_access_key_id={kid}\naws_secret_access_key={secret}\n".encode()
        with_keys[off : off + len(pair)] = pair
    return {
        "text": text,
        "binary": rng.randbytes(size),
        "base64": base64.encodebytes(rng.randbytes(size * 3 // 4))[:size],
        "utf16": text[: size // 2].decode().encode("utf-16-le"),
        "text+keys": bytes(with_keys),
    }


def _rate(
    fn: Callable[[bytes], object], data: bytes, repeat: int = 3, clock: Callable[[], float] = time.perf_counter
) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        fn(data)
        best = min(best, clock() - t0)
    return len(data) / best / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=64, help="size of each buffer shape in MB")
    ap.add_argument("--chunk", type=int, default=2 * 1024 * 1024, help="scan in chunks of this many bytes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--cpu",
        action="store_true",
        help="time this process's CPU seconds, best of 5, not wall time (steadier on a busy machine)",
    )
    args = ap.parse_args()
    clock, repeat = (time.process_time, 5) if args.cpu else (time.perf_counter, 3)
    rng = random.Random(args.seed)
    detector = Detector(load_ruleset(), Fingerprinter(b"bench-fingerprint-key"))
    loc = Location(kind="file", path="/bench")

    def keysweep(data: bytes) -> int:
        return len(detector.scan_stream(io.BytesIO(data).read, location=loc, chunk_size=args.chunk))

    print(f"{'shape':10} {'keysweep MB/s':>14} {'bare re MB/s':>13} {'ratio':>6} {'findings':>9}")
    for name, data in _shapes(rng, args.mb * 1024 * 1024).items():
        found = keysweep(data)
        ours = _rate(keysweep, data, repeat, clock)
        bare = _rate(lambda d: _BARE.findall(d), data, repeat, clock)
        print(f"{name:10} {ours:14.0f} {bare:13.0f} {ours / bare:6.2f} {found:9d}")


if __name__ == "__main__":
    main()
