"""Seeded benchmark corpus: a host-like tree of ~100k files (~1 GiB by default) with planted key pairs and decoys.

    python bench/corpus.py [--size-mb 1024] [--files 100000] [--seed 1] [--out bench/out/corpus-1024m-s1]

The tree holds source code, configuration, logs, JSON, binaries and a 200 MB single-line log (scaled down with
``--size-mb``), the planted forms of tests/support/hosttree.py, pairs scattered through ordinary files, and
decoys (documentation examples, principal ids, ids inside longer runs, botocore example data). What a scan must
find is written beside the tree (``<out>.manifest.json``), never inside it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.hosttree import Keys, Planted, build_host_tree  # noqa: E402

BIG_LOG_SHARE = 200 / 1024  # the single-line log is 200 MB of a 1 GiB corpus
_WORDS = (
    "the request user service config error warning info debug value status return import class def self "
    "data path file name time start stop retry timeout connection host port token session cache queue "
    "worker thread process memory disk network bucket region account policy role instance cluster node"
).split()


def _text_pool(rng: random.Random, n: int, size: int) -> list[bytes]:
    """Blocks of text that look like code, config and logs (letters, digits, punctuation, newlines)."""
    pool = []
    for i in range(n):
        lines = []
        total = 0
        while total < size:
            kind = (i + len(lines)) % 4
            if kind == 0:
                line = f"2025-11-{rng.randint(1, 28):02d}T12:{rng.randint(0, 59):02d}:00Z INFO " + " ".join(
                    rng.choice(_WORDS) for _ in range(rng.randint(4, 14))
                )
            elif kind == 1:
                line = f"    {rng.choice(_WORDS)}_{rng.choice(_WORDS)} = {rng.choice(_WORDS)}({rng.randint(0, 9999)})"
            elif kind == 2:
                line = json.dumps({rng.choice(_WORDS): rng.choice(_WORDS), "id": rng.getrandbits(64)})
            else:
                line = f"{rng.choice(_WORDS).upper()}_{rng.choice(_WORDS).upper()}={rng.getrandbits(48):x}"
            lines.append(line)
            total += len(line) + 1
        pool.append(("\n".join(lines) + "\n").encode()[:size])
    return pool


def _size(rng: random.Random, mean: int) -> int:
    return max(64, min(int(rng.lognormvariate(0, 1.1) * mean / 1.83), 40 * mean))


def generate(out: Path, *, size_mb: int = 1024, files: int = 100_000, seed: int = 1) -> dict[str, object]:
    rng = random.Random(seed)
    keys = Keys(rng)
    out.mkdir(parents=True, exist_ok=True)
    tree = build_host_tree(out / "host", seed=seed)
    planted: list[Planted] = [
        Planted(p.form, f"host/{p.path}", p.key_id, p.has_secret, p.kind, p.member, p.profile) for p in tree.planted
    ]
    decoys = list(tree.decoy_ids)

    total = size_mb << 20
    big = int(total * BIG_LOG_SHARE)
    # the single-line log: one pair in the middle of a line of 200 MB
    k, s = keys.key_id(), keys.secret()
    log = out / "var/log/huge/app-oneline.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    chunk = b"".join(
        b'{"ts":"2025-11-01T00:00:00Z","level":"info","msg":"request served","ms":12},' for _ in range(8192)
    )
    with open(log, "wb") as fh:
        written = 0
        half = big // 2
        while written < half:
            fh.write(chunk)
            written += len(chunk)
        fh.write(f'{{"aws_access_key_id":"{k}","aws_secret_access_key":"{s}"}},'.encode())
        while written < big:
            fh.write(chunk)
            written += len(chunk)
    planted.append(Planted("200 MB single-line log", "var/log/huge/app-oneline.log", k, True))

    pool = _text_pool(rng, 64, 256 << 10)
    binary = [rng.randbytes(256 << 10) for _ in range(8)]
    remaining = total - big
    mean = max(256, remaining // files)
    dirs = [f"srv/app{i % 40}/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}" for i in range(files // 25 + 1)]
    ext_text = (".py", ".js", ".yaml", ".json", ".conf", ".log", ".md", ".txt", ".sh", ".properties")
    plant_every = max(files // 200, 1)
    decoy_every = max(files // 100, 1)
    for i in range(files):
        d = out / dirs[i % len(dirs)]
        if i % len(dirs) == i:
            d.mkdir(parents=True, exist_ok=True)
        n = _size(rng, mean)
        is_binary = i % 10 == 9
        src = binary[i % len(binary)] if is_binary else pool[i % len(pool)]
        off = rng.randrange(0, len(src) - 64)
        body = bytearray()
        while len(body) < n:
            take = src[off : off + n - len(body)]
            body += take
            off = 0
        name = f"f{i:06d}" + (".bin" if is_binary else ext_text[i % len(ext_text)])
        rel = f"{dirs[i % len(dirs)]}/{name}"
        if i % plant_every == 0:
            k, s = keys.key_id(), keys.secret()
            form = i // plant_every % 3
            if form == 0:
                snippet = f"\nAWS_ACCESS_KEY_ID={k}\nAWS_SECRET_ACCESS_KEY={s}\n"
            elif form == 1:
                snippet = f'\n{{"accessKeyId": "{k}", "secretAccessKey": "{s}"}}\n'
            else:
                snippet = f"\naws_access_key_id: {k}\naws_secret_access_key: {s}\n"
            at = rng.randrange(0, len(body))
            nl = body.find(b"\n", at)
            at = len(body) if nl < 0 else nl
            body[at:at] = snippet.encode()
            planted.append(Planted("scattered", rel, k, True))
        elif i % decoy_every == 1:
            aida = keys.key_id("AIDA")
            run = keys.key_id()
            body += (
                f'\n"UserId": "{aida}"\n# example: AKIAIOSFODNN7EXAMPLE\nid={run}X9\n'
                f"b64={base64.b64encode(os.urandom(30)).decode()}\n"
            ).encode()
            decoys += [aida, run]
        (out / rel).write_bytes(bytes(body))
    manifest = {
        "size_mb": size_mb,
        "files": files,
        "seed": seed,
        "planted": [asdict(p) for p in planted],
        "decoys": sorted(set(decoys)),
    }
    Path(str(out) + ".manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def ensure(out: Path, *, size_mb: int, files: int, seed: int) -> dict[str, object]:
    """The manifest of an existing corpus with these parameters, generating it when missing."""
    mpath = Path(str(out) + ".manifest.json")
    if mpath.exists():
        m = json.loads(mpath.read_text())
        if (m["size_mb"], m["files"], m["seed"]) == (size_mb, files, seed) and out.is_dir():
            return m
    return generate(out, size_mb=size_mb, files=files, seed=seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    out = a.out or Path(__file__).resolve().parent / "out" / f"corpus-{a.size_mb}m-{a.files}f-s{a.seed}"
    m = ensure(out, size_mb=a.size_mb, files=a.files, seed=a.seed)
    print(f"{out}: {len(m['planted'])} planted, {len(m['decoys'])} decoys")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
