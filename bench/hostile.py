"""Hostile inputs: peak RSS of the whole keysweep process tree and MB/s for each (issue 9, items 5-7).

    python bench/hostile.py [--scale 1.0] [--only NAME ...] [--kill-mb 1500] [--workers 0]

Each case is generated in a temp dir and scanned by ``keysweep scan DIR --format json`` as a subprocess;
RSS is summed over the process and its children (bench/run.py's memory watch). A run whose tree passes
``--kill-mb`` is killed and reported as such (so the "before" numbers of a memory bug cannot take the host
down). ``--scale`` multiplies every size (0.1 for a quick look). MB/s is the input file's size over wall time
(for archives: the archive's size on disk; the bytes expanded are in ``expanded_mb``); ``mb_per_cpu_s`` divides
by the CPU time of the scan and its workers instead, which a busy host does not distort.

Target: peak RSS <= 80 MB for every case; >= 20 MB/s for the dense logs.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import lzma
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.run import _MemoryWatch  # noqa: E402

KEY = "AKIASP2TPHJSQH3FJRUX"
SECRET = "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"
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_MB = 1_000_000


def _tar_header(name: bytes, size: int, typeflag: bytes) -> bytes:
    h = bytearray(512)
    h[0 : len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[156:157] = typeflag
    h[257:265] = b"ustar  \0"  # GNU magic
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 512)


def _gzip_stream(path: Path, parts: Callable[[], Any]) -> None:
    """gzip of the concatenated byte strings ``parts()`` yields, streamed to ``path``."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    with path.open("wb") as out:
        for part in parts():
            out.write(comp.compress(part))
        out.write(comp.flush())


def _pair_member() -> list[bytes]:
    body = f"AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY={SECRET}\n".encode()
    return [_tar_header(b"etc/app.env", len(body), b"0"), body, _pad(len(body)), b"\0" * 1024]


def tar_longname(path: Path, size: int) -> None:
    """A .tar.gz whose first header is a GNU long name (``././@LongLink``) of ``size`` bytes, then a member."""

    def parts() -> Any:
        yield _tar_header(b"././@LongLink", size, b"L")
        block = b"a" * (1 << 20)
        left = size
        while left > 0:
            yield block[: min(left, len(block))]
            left -= len(block)
        yield _pad(size)
        yield from _pair_member()

    _gzip_stream(path / "longname.tar.gz", parts)


def tar_pax(path: Path, size: int) -> None:
    """A .tar.gz whose first header is a pax header of ``size`` bytes (one huge ``comment`` record)."""
    body_len = size - len(" comment=\n") - 10
    record_len = body_len + len(" comment=\n")
    record_len += len(str(record_len + 10))
    prefix = b"%d comment=" % record_len

    def parts() -> Any:
        yield _tar_header(b"./PaxHeaders/x", record_len, b"x")
        yield prefix
        block = b"a" * (1 << 20)
        left = record_len - len(prefix) - 1
        while left > 0:
            yield block[: min(left, len(block))]
            left -= len(block)
        yield b"\n"
        yield _pad(record_len)
        yield from _pair_member()

    _gzip_stream(path / "pax.tar.gz", parts)


def _write_lines(path: Path, size: int, line: Callable[[int], bytes], encoding: str | None = None) -> None:
    with path.open("wb") as out:
        written = i = 0
        batch: list[bytes] = []
        while written < size:
            text = line(i)
            if encoding:
                text = text.decode("ascii").encode(encoding)
            batch.append(text)
            written += len(text)
            i += 1
            if len(batch) >= 10_000:
                out.write(b"".join(batch))
                batch = []
        out.write(b"".join(batch))


def _same_key_line(i: int) -> bytes:
    return b"2026-12-03T10:%02d:%02dZ INFO GET /api/items/%d key=%s secret=%s status=200\n" % (
        i // 60 % 60,
        i % 60,
        i,
        KEY.encode(),
        SECRET.encode(),
    )


def dense_same_key(path: Path, size: int) -> None:
    """An application log with the same key id and secret on every line."""
    _write_lines(path / "app.log", size, _same_key_line)


def distinct_ids(path: Path, size: int) -> None:
    """One distinct key id per line (21 bytes a line: 500,000 ids in 10.5 MB)."""
    rng = random.Random(9)

    def line(_i: int) -> bytes:
        return ("AKIA" + "".join(rng.choice(_B32) for _ in range(16)) + "\n").encode()

    _write_lines(path / "ids.log", size, line)


def dense_base64(path: Path, size: int) -> None:
    """Every line carries a base64 payload that holds the key id and its secret."""

    def line(i: int) -> bytes:
        payload = json.dumps({"request": i, "aws_access_key_id": KEY, "aws_secret_access_key": SECRET}).encode()
        return b"2026-12-03T10:00:00Z DEBUG payload=" + base64.b64encode(payload) + b"\n"

    _write_lines(path / "b64.log", size, line)


def dense_utf16(path: Path, size: int) -> None:
    """The dense same-key log as UTF-16LE (a Windows application's log)."""
    _write_lines(path / "utf16.log", size, _same_key_line, encoding="utf-16-le")


def zip_lying_end(path: Path, members: int) -> None:
    """A zip of ``members`` empty members whose end record and zip64 end record both declare 10."""
    out = path / "lying.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("app.env", f"AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY={SECRET}\n")
        for i in range(members - 1):
            z.writestr(hashlib.md5(str(i).encode()).hexdigest(), b"")
    data = bytearray(out.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, eocd + 8, 10, 10)
    z64 = data.rfind(b"PK\x06\x06", 0, eocd)
    if z64 >= 0:
        struct.pack_into("<QQ", data, z64 + 24, 10, 10)
    out.write_bytes(bytes(data))


def xz_huge_dictionary(path: Path, size: int) -> None:
    """A log as .xz compressed with a 1 MiB dictionary whose block header declares 2 GiB (liblzma fills the
    declared dictionary as it decodes)."""
    rng = random.Random(3)
    comp = lzma.LZMACompressor(
        format=lzma.FORMAT_XZ, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20, "preset": 1}]
    )
    parts, written = [], 0
    while written < size:
        lines = b"".join(
            b"2026-12-03T10:00:00Z GET /items/%08x status=200 bytes=%d\n" % (rng.getrandbits(32), rng.getrandbits(16))
            for _ in range(10_000)
        )
        parts.append(comp.compress(lines))
        written += len(lines)
    xz = b"".join(parts) + comp.flush()
    head = (xz[12] + 1) * 4
    header = bytearray(xz[12 : 12 + head])
    at = header.find(b"\x21\x01")  # the LZMA2 filter's one property byte: its dictionary size
    header[at + 2] = 38  # 2 GiB
    struct.pack_into("<I", header, head - 4, zlib.crc32(bytes(header[:-4])))
    (path / "app.log.xz").write_bytes(xz[:12] + bytes(header) + xz[12 + head :])


# name -> (generator, its size argument at scale 1, what the size counts)
CASES: dict[str, tuple[Callable[[Path, int], None], int]] = {
    "tar-longname-bomb": (tar_longname, 1 << 30),
    "tar-pax-bomb": (tar_pax, 1 << 30),
    "dense-same-key-log": (dense_same_key, 100 * _MB),
    "distinct-ids-log": (distinct_ids, 10_500_000),
    "dense-base64-log": (dense_base64, 50 * _MB),
    "dense-utf16-log": (dense_utf16, 50 * _MB),
    "zip-lying-end-record": (zip_lying_end, 200_000),
    "xz-huge-dictionary": (xz_huge_dictionary, 100 * _MB),
}


def _run(target: Path, out: Path, workers: int, kill_mb: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYSWEEP_"))}
    env["KEYSWEEP_FINGERPRINT_KEY"] = "keysweep-hostile-benchmark"
    cmd = [
        sys.executable,
        "-m",
        "keysweep",
        "scan",
        str(target),
        "--format",
        "json",
        "--output",
        str(out),
        "--workers",
        str(workers),
    ]
    started = time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO)
    mem = _MemoryWatch(proc.pid)
    mem.start()
    killed = False
    while proc.poll() is None:
        if mem.peak_rss_tree > kill_mb * 2**20:
            killed = True
            for child in _children(proc.pid):
                child.kill()
            proc.kill()
            break
        time.sleep(0.02)
    _err = proc.communicate()[1]
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the scan and its workers, once reaped
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    mem.done.set()
    mem.join()
    res: dict[str, Any] = {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "returncode": proc.returncode,
        "peak_rss_tree_mb": round(mem.peak_rss_tree / 2**20, 1),
        "killed_over_mb": kill_mb if killed else None,
    }
    if not killed and proc.returncode not in (0, 1):
        res["stderr"] = _err.decode(errors="replace")[-500:]
    return res


def _children(pid: int) -> list[Any]:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--only", nargs="*", choices=sorted(CASES), default=None)
    ap.add_argument("--kill-mb", type=int, default=1500)
    ap.add_argument("--workers", type=int, default=0, help="keysweep --workers (0: one per CPU)")
    a = ap.parse_args()
    results = {}
    for name in a.only or CASES:
        make, size = CASES[name]
        with tempfile.TemporaryDirectory(prefix=f"keysweep-{name}-") as tmp:
            target = Path(tmp) / "tree"
            target.mkdir()
            make(target, max(1, int(size * a.scale)))
            nbytes = sum(p.stat().st_size for p in target.iterdir())
            res = _run(target, Path(tmp) / "out.json", a.workers, a.kill_mb)
            res["input_mb"] = round(nbytes / _MB, 2)
            res["mb_per_s"] = round(nbytes / _MB / res["seconds"], 1) if res["seconds"] else None
            res["mb_per_cpu_s"] = round(nbytes / _MB / res["cpu_seconds"], 1) if res["cpu_seconds"] else None
            if res["killed_over_mb"] is None and (Path(tmp) / "out.json").exists():
                doc = json.loads((Path(tmp) / "out.json").read_text())
                s = doc["summary"]
                res["findings"] = len(doc["findings"])
                res["paired"] = sum(1 for f in doc["findings"] if f["has_secret"])
                res["skipped"] = s["skipped"]
                res["errors"] = s["errors"]
                res["expanded_mb"] = round(s["bytes_scanned"] / _MB, 2)
            res["rss_ok"] = res["peak_rss_tree_mb"] <= 80 and res["returncode"] in (0, 1)
        results[name] = res
        print(json.dumps({name: res}), flush=True)
    ok = all(r["rss_ok"] for r in results.values())
    print(json.dumps({"all_under_80mb": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
