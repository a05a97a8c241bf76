"""Seeded benchmark corpus: a tree shaped like a real host, with planted key pairs and decoys.

    python bench/corpus.py [--size-mb 1024] [--files 100000] [--seed 1] [--quick] [--out DIR]

~100k mostly small files (1 GiB by default; ``--quick``: 128 MB, 12,500 files), in the shares a server has them:
configuration under ``etc/``, application source, ``node_modules`` and ``site-packages`` trees (many files of a
few KB, ``.pyc`` and minified bundles among them), binaries and shared libraries, rotated logs (``x.log``,
``x.log.1``, ``x.log.2.gz`` …; 15 % of the files, most of them gzip members), man pages (gzip), archives (jars,
``.tar.gz`` backups), base64 blobs (Kubernetes secrets, cached payloads), a mail spool (mbox with MIME parts and
76-column base64 attachments) and one large single-line log. Key pairs are planted in the forms of
tests/support/hosttree.py and scattered through every kind of file (inside gzip logs, archives, mail and base64
too); decoys (documentation examples, principal ids, ids inside longer runs, botocore example data) must not be
reported. What a scan must find is written beside the tree (``<out>.manifest.json``), never inside it.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import marshal
import random
import sys
import tarfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.hosttree import Keys, Planted, build_host_tree  # noqa: E402

QUICK = (128, 12_500)  # --quick: size in MB, files

_WORDS = (
    "the request user service config error warning info debug value status return import class def self "
    "data path file name time start stop retry timeout connection host port token session cache queue "
    "worker thread process memory disk network bucket region account policy role instance cluster node "
    "handler client server message event record update delete create fetch parse render schema model view"
).split()


@dataclass(frozen=True)
class _Kind:
    """One kind of file: its share of the files and of the bytes on disk, and how its paths look."""

    name: str
    file_share: float
    byte_share: float


# shares of a host's files and bytes (the large single-line log and the mail spool are apart: BIG_LOG, MAIL)
KINDS = (
    _Kind("config", 0.04, 0.006),
    _Kind("source", 0.14, 0.09),
    _Kind("node_modules", 0.34, 0.14),
    _Kind("site_packages", 0.20, 0.12),
    _Kind("binary", 0.03, 0.20),
    _Kind("man", 0.04, 0.006),
    _Kind("log", 0.05, 0.10),  # x.log and x.log.1, plain
    _Kind("log_gz", 0.10, 0.035),  # x.log.2.gz …: 10 % of the files (with the plain ones 15 %)
    _Kind("base64", 0.02, 0.04),
    _Kind("archive", 0.003, 0.06),
    _Kind("doc", 0.037, 0.013),
)
BIG_LOG = 0.10  # one log of a single 100 MB line in a 1 GiB tree
MAIL = 0.04  # the mail spool's share of the bytes


def _rand_line(rng: random.Random, kind: str) -> str:
    w = rng.choice
    if kind == "py":
        return rng.choice(
            [
                f"def {w(_WORDS)}_{w(_WORDS)}(self, {w(_WORDS)}: str, {w(_WORDS)}: int = {rng.randint(0, 99)}) -> dict:",
                f"    {w(_WORDS)} = self.{w(_WORDS)}.get({w(_WORDS)!r}, {rng.randint(0, 999)})",
                f'    if not {w(_WORDS)}:\n        raise ValueError(f"{w(_WORDS)} {{{w(_WORDS)}}} is {w(_WORDS)}")',
                f"from {w(_WORDS)}.{w(_WORDS)} import {w(_WORDS).capitalize()}{w(_WORDS).capitalize()}",
                f"    # {' '.join(w(_WORDS) for _ in range(rng.randint(3, 12)))}",
                f"    return {{'{w(_WORDS)}': {w(_WORDS)}, 'id': 0x{rng.getrandbits(32):08x}}}",
                f"class {w(_WORDS).capitalize()}{w(_WORDS).capitalize()}(Base{w(_WORDS).capitalize()}):",
            ]
        )
    if kind == "js":
        return rng.choice(
            [
                f"function {w(_WORDS)}{w(_WORDS).capitalize()}({w(_WORDS)}, {w(_WORDS)}) {{",
                f"  const {w(_WORDS)} = require('{w(_WORDS)}-{w(_WORDS)}');",
                f"  if ({w(_WORDS)} === undefined) return {w(_WORDS)}.{w(_WORDS)}({rng.randint(0, 99)});",
                f"  module.exports.{w(_WORDS)} = {{ {w(_WORDS)}: {w(_WORDS)}, {w(_WORDS)}: '{w(_WORDS)}' }};",
                f"// {' '.join(w(_WORDS) for _ in range(rng.randint(3, 12)))}",
                "}",
            ]
        )
    if kind == "minjs":
        return "".join(
            f"var {w('abcdefghxyz')}{rng.randint(0, 99)}=function(e,t){{return e.{w(_WORDS)}(t,{rng.randint(0, 9)})}};"
            for _ in range(40)
        )
    if kind == "log":
        return (
            f"2026-11-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z {w(['INFO', 'INFO', 'INFO', 'WARN', 'DEBUG', 'ERROR'])} "
            f"[{w(_WORDS)}-{rng.randint(1, 16)}] 10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)} "
            f'"{w(["GET", "POST", "PUT"])} /{w(_WORDS)}/{w(_WORDS)}?id={rng.getrandbits(40):x} HTTP/1.1" '
            f"{w([200, 200, 200, 201, 304, 404, 500])} {rng.randint(50, 90000)} "
            f"req={rng.getrandbits(64):016x} {' '.join(w(_WORDS) for _ in range(rng.randint(0, 6)))}"
        )
    if kind == "conf":
        return rng.choice(
            [
                f"{w(_WORDS)}_{w(_WORDS)} = {w(_WORDS)}",
                f"{w(_WORDS)}: {rng.randint(0, 65535)}",
                f"[{w(_WORDS)}]",
                f'  {w(_WORDS)}.{w(_WORDS)}: "{w(_WORDS)}-{rng.getrandbits(24):06x}"',
                f"# {' '.join(w(_WORDS) for _ in range(rng.randint(3, 10)))}",
                f"{w(_WORDS).upper()}_{w(_WORDS).upper()}={rng.getrandbits(48):x}",
            ]
        )
    if kind == "json":
        return json.dumps(
            {
                w(_WORDS): w(_WORDS),
                "version": f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
                w(_WORDS): [w(_WORDS) for _ in range(rng.randint(0, 4))],
                "id": rng.getrandbits(53),
            }
        )
    return " ".join(w(_WORDS) for _ in range(rng.randint(6, 16))) + rng.choice([".", ",", ":", ""])  # prose


def _pool(rng: random.Random, kind: str, size: int) -> bytes:
    out: list[str] = []
    total = 0
    while total < size:
        line = _rand_line(rng, kind)
        out.append(line)
        total += len(line) + 1
    return ("\n".join(out) + "\n").encode()


def _binary_pool(rng: random.Random, size: int) -> bytes:
    """ELF-like bytes: random code, zero padding, symbol names and messages."""
    parts = [b"\x7fELF\x02\x01\x01" + bytes(9)]
    total = 16
    while total < size:
        r = rng.random()
        if r < 0.5:
            chunk = rng.randbytes(rng.randint(256, 4096))
        elif r < 0.7:
            chunk = bytes(rng.randint(64, 2048))
        else:
            chunk = b"\x00".join(_rand_line(rng, "prose").encode() for _ in range(rng.randint(2, 20)))
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)[:size]


class _Pools:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.text = {k: _pool(rng, k, 1 << 20) for k in ("py", "js", "minjs", "log", "conf", "json", "prose")}
        self.binary = _binary_pool(rng, 4 << 20)
        self.pyc = self._pyc()

    def _pyc(self) -> bytes:
        src = "\n".join(
            f"def f{i}(a, b={i}):\n    x = {_rand_line(self.rng, 'prose')!r}\n    return a + b\n" for i in range(3000)
        )
        return b"\xa7\r\r\n" + bytes(12) + marshal.dumps(compile(src, "m.py", "exec"))

    def take(self, src: bytes, n: int) -> bytearray:
        """``n`` bytes of ``src`` from a random offset (wrapping)."""
        off = self.rng.randrange(0, len(src) - 1)
        body = bytearray(src[off : off + n])
        while len(body) < n:
            body += src[: n - len(body)]
        return body


def _size(rng: random.Random, mean: int) -> int:
    """Lognormal sizes (most files small, a few large) with the given mean."""
    return max(32, min(int(rng.lognormvariate(0, 1.2) * mean / 2.05), 60 * mean))


def _snippet(rng: random.Random, k: str, s: str, style: str) -> str:
    return {
        "env": f"\nAWS_ACCESS_KEY_ID={k}\nAWS_SECRET_ACCESS_KEY={s}\n",
        "json": f'\n{{"accessKeyId": "{k}", "secretAccessKey": "{s}"}}\n',
        "yaml": f"\naws_access_key_id: {k}\naws_secret_access_key: {s}\n",
        "py": f"\n    client = boto3.client('s3', aws_access_key_id='{k}', aws_secret_access_key='{s}')\n",
        "log": f"\n2026-11-02T10:00:00Z DEBUG env AWS_ACCESS_KEY_ID={k} AWS_SECRET_ACCESS_KEY={s}\n",
    }[style]


def _insert(body: bytearray, at: int, data: bytes) -> None:
    nl = body.find(b"\n", at)
    at = len(body) if nl < 0 else nl
    body[at:at] = data


class _Tree:
    def __init__(self, out: Path, rng: random.Random) -> None:
        self.out = out
        self.rng = rng
        self.made: set[Path] = set()

    def write(self, rel: str, data: bytes) -> None:
        p = self.out / rel
        if p.parent not in self.made:
            p.parent.mkdir(parents=True, exist_ok=True)
            self.made.add(p.parent)
        p.write_bytes(data)


FILES_PER_DIR = 10  # a host's package and source trees hold ~10 files per directory


def _dir_of(rng: random.Random, kind: str, j: int, apps: int) -> str:
    """The j-th directory of a kind (package trees nest two or three levels)."""
    w = rng.choice
    a = f"app{j % apps}"
    return {
        "config": lambda: f"etc/{w(_WORDS)}{j}",
        "source": lambda: f"srv/{a}/src/{w(_WORDS)}{j // 8}/{w(_WORDS)}{j}",
        "node_modules": lambda: f"srv/{a}/node_modules/{w(_WORDS)}-{w(_WORDS)}{j // 3}" + w(["", "/lib", "/dist"]),
        "site_packages": lambda: (
            f"usr/lib/python3/site-packages/{w(_WORDS)}{j // 3}" + w(["", "/__pycache__", f"/{w(_WORDS)}"])
        ),
        "binary": lambda: w(["usr/bin", "usr/lib/x86_64-linux-gnu", "opt/tools/bin"]),
        "man": lambda: f"usr/share/man/man{1 + j % 8}",
        "doc": lambda: f"usr/share/doc/{w(_WORDS)}{j}",
        "base64": lambda: w([f"var/lib/{w(_WORDS)}{j}/cache", f"srv/k8s/{w(_WORDS)}{j}"]),
        "archive": lambda: w([f"opt/{w(_WORDS)}{j}/lib", "var/backups", f"srv/{a}/releases"]),
    }[kind]()


def _name_of(rng: random.Random, kind: str, d: str, i: int) -> str:
    w = rng.choice
    if kind == "node_modules":
        if d.endswith(("/lib", "/dist")):
            return f"{w(_WORDS)}{i}" + w([".js", ".js", ".d.ts", ".js.map", ".min.js"])
        return w(["package.json", "index.js", "README.md", "LICENSE", f"{w(_WORDS)}{i}.js"])
    if kind == "site_packages":
        return f"{w(_WORDS)}{i}" + (".cpython-311.pyc" if d.endswith("__pycache__") else ".py")
    ext = {
        "config": w([".conf", ".yaml", ".ini", ".json", ".cfg"]),
        "source": w([".py", ".py", ".js", ".ts", ".go"]),
        "binary": w(["", ".so.1", ".so"]),
        "man": f".{d[-1]}.gz",
        "doc": w(["", ".md", ".txt", ".rst"]),
        "base64": ".yaml" if d.startswith("srv/k8s") else w([".b64", ".json"]),
        "archive": ".tar.gz" if d == "var/backups" else w([".jar", ".zip"]),
    }[kind]
    return f"{w(_WORDS)}-{i}{ext}"


_TEXT_OF = {
    "config": "conf",
    "source": "py",
    "node_modules": "js",
    "site_packages": "py",
    "doc": "prose",
    "man": "prose",
}


def generate(out: Path, *, size_mb: int = 1024, files: int = 100_000, seed: int = 1) -> dict[str, object]:
    rng = random.Random(seed)
    keys = Keys(rng)
    out.mkdir(parents=True, exist_ok=True)
    host = build_host_tree(out / "host", seed=seed)
    planted = [
        Planted(p.form, f"host/{p.path}", p.key_id, p.has_secret, p.kind, p.member, p.profile) for p in host.planted
    ]
    decoys = list(host.decoy_ids)
    pools = _Pools(rng)
    tree = _Tree(out, rng)
    total = size_mb << 20
    apps = max(2, files // 5000)
    plant_every = max(files // 220, 1)  # ~220 planted pairs whatever the size
    decoy_every = max(files // 100, 1)
    styles = ("env", "json", "yaml", "py", "log")
    counter = 0
    services = [
        f"var/log/{rng.choice(_WORDS)}{j}/{rng.choice(_WORDS)}"
        for j in range(max(1, round(files * KINDS[6].file_share) // 2))
    ]

    def pair() -> tuple[str, str]:
        return keys.key_id(), keys.secret()

    def maybe_plant(body: bytearray, rel: str, kind: str, member: str | None = None) -> None:
        nonlocal counter
        counter += 1
        if counter % plant_every == 0:
            k, s = pair()
            _insert(body, rng.randrange(0, max(1, len(body))), _snippet(rng, k, s, rng.choice(styles)).encode())
            planted.append(Planted(f"scattered in {kind}", rel, k, True, "archive" if member else "file", member))
        elif counter % decoy_every == 1:
            aida, run = keys.key_id("AIDA"), keys.key_id()
            body += f'\n"UserId": "{aida}"\n# example: AKIAIOSFODNN7EXAMPLE\nid={run}X9\n'.encode()
            decoys.extend([aida, run])

    for kind in KINDS:
        n_files = max(1, round(files * kind.file_share))
        mean = max(64, int(total * kind.byte_share / n_files))
        seen: set[str] = set()
        dirs: dict[int, str] = {}
        for i in range(n_files):
            if kind.name in ("log", "log_gz"):  # x.log and x.log.1 of each service, then x.log.2.gz …
                svc = services[(i // 2 if kind.name == "log" else i) % len(services)]
                gen = i % 2 if kind.name == "log" else 2 + i // len(services)
                rel = f"{svc}.log" + (f".{gen}" if gen else "") + (".gz" if kind.name == "log_gz" else "")
            else:
                j = rng.randrange(max(1, n_files // FILES_PER_DIR))
                d = dirs[j] if j in dirs else dirs.setdefault(j, _dir_of(rng, kind.name, j, apps))
                rel = f"{d}/{_name_of(rng, kind.name, d, i)}"
            if rel in seen:
                rel = f"{rel}.{i}"
            seen.add(rel)
            size = _size(rng, mean)
            if kind.name == "binary":
                body = pools.take(pools.binary, size)
                if size < 200_000:
                    maybe_plant(body, rel, kind.name)
                tree.write(rel, bytes(body))
            elif kind.name == "site_packages" and rel.endswith(".pyc"):
                tree.write(rel, bytes(pools.take(pools.pyc, size)))
            elif kind.name == "node_modules" and rel.endswith(".min.js"):
                body = pools.take(pools.text["minjs"], size)
                tree.write(rel, bytes(body))
            elif kind.name == "node_modules" and rel.endswith("package.json"):
                body = pools.take(pools.text["json"], min(size, 3000))
                maybe_plant(body, rel, kind.name)
                tree.write(rel, bytes(body))
            elif kind.name == "log_gz":
                body = pools.take(pools.text["log"], size * 3)  # these logs compress ~3:1
                member = rel.rsplit("/", 1)[1][:-3]
                maybe_plant(body, rel, "gzip log", member)
                tree.write(rel, gzip.compress(bytes(body), compresslevel=6, mtime=0))
            elif kind.name == "man":
                body = pools.take(pools.text["prose"], size * 3)
                tree.write(rel, gzip.compress(bytes(body), compresslevel=6, mtime=0))
            elif kind.name == "log":
                body = pools.take(pools.text["log"], size)
                maybe_plant(body, rel, kind.name)
                tree.write(rel, bytes(body))
            elif kind.name == "base64":
                inner = pools.take(pools.text["json"], size * 3 // 4)
                maybe_plant(inner, rel, kind.name)
                enc = base64.b64encode(bytes(inner))
                if rel.endswith(".yaml"):
                    data = (
                        b"apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\ntype: Opaque\ndata:\n  payload: "
                        + enc
                        + b"\n"
                    )
                elif rel.endswith(".json"):
                    data = b'{"state": "' + enc + b'", "encoding": "base64"}\n'
                else:
                    data = enc
                tree.write(rel, data)
            elif kind.name == "archive":
                tree.write(rel, _archive(rng, pools, rel, size, keys, planted))
            else:
                body = pools.take(pools.text[_TEXT_OF[kind.name]], size)
                maybe_plant(body, rel, kind.name)
                tree.write(rel, bytes(body))

    k, s = pair()
    _big_log(out / "var/log/huge/app-oneline.log", int(total * BIG_LOG), k, s)
    planted.append(Planted("single-line log", "var/log/huge/app-oneline.log", k, True))
    planted += _mail_spool(tree, rng, pools, keys, int(total * MAIL))

    manifest = {
        "size_mb": size_mb,
        "files": files,
        "seed": seed,
        "generator": 2,
        "planted": [asdict(p) for p in planted],
        "decoys": sorted(set(decoys)),
    }
    Path(str(out) + ".manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _archive(rng: random.Random, pools: _Pools, rel: str, size: int, keys: Keys, planted: list[Planted]) -> bytes:
    """A jar/zip of source and class-like members, or a .tar.gz backup of configs; one in three holds a pair."""
    members: dict[str, bytes] = {}
    total = 0
    i = 0
    while total < size * 2:
        n = _size(rng, 20_000)
        if rel.endswith(".tar.gz"):
            name, data = f"etc/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}{i}.conf", pools.take(pools.text["conf"], n)
        elif i % 2:
            name, data = f"com/example/{rng.choice(_WORDS)}/C{i}.class", pools.take(pools.binary, n // 2)
        else:
            name, data = f"META-INF/{rng.choice(_WORDS)}{i}.properties", pools.take(pools.text["conf"], n)
        members[name] = bytes(data)
        total += n
        i += 1
    if rng.random() < 0.34:
        k, s = keys.key_id(), keys.secret()
        name = "config/aws.properties" if not rel.endswith(".tar.gz") else "etc/app/aws.env"
        members[name] = f"aws.accessKeyId={k}\naws.secretKey={s}\n".encode()
        planted.append(Planted("archive member", rel, k, True, "archive", name))
    buf = io.BytesIO()
    if rel.endswith(".tar.gz"):
        with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as t:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = 1_700_000_000
                t.addfile(info, io.BytesIO(data))
    else:
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in members.items():
                z.writestr(name, data)
    return buf.getvalue()


def _big_log(path: Path, size: int, k: str, s: str) -> None:
    """One line of ``size`` bytes with a pair in its middle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = b'{"ts":"2026-11-01T00:00:00Z","level":"info","msg":"request served","ms":12},' * 8192
    with open(path, "wb") as fh:
        written = 0
        while written < size // 2:
            fh.write(chunk)
            written += len(chunk)
        fh.write(f'{{"aws_access_key_id":"{k}","aws_secret_access_key":"{s}"}},'.encode())
        while written < size:
            fh.write(chunk)
            written += len(chunk)


def _mail_spool(tree: _Tree, rng: random.Random, pools: _Pools, keys: Keys, size: int) -> list[Planted]:
    """mbox files under var/mail: plain messages and MIME ones with 76-column base64 attachments. A pair is in
    the text of some messages and at the start of some attachments (where wrapping leaves its id whole)."""
    planted: list[Planted] = []
    users = ["alice", "bob", "carol", "dave", "erin", "root", "www-data", "backup"]
    per_user = max(1, size // len(users))
    for u in users:
        rel = f"var/mail/{u}"
        parts: list[bytes] = []
        total = 0
        n = 0
        while total < per_user:
            n += 1
            head = (
                f"From {rng.choice(users)}@host Tue Nov  3 10:{n % 60:02d}:00 2026\nFrom: {rng.choice(users)}@example.com\n"
                f"To: {u}@example.com\nSubject: {' '.join(rng.choice(_WORDS) for _ in range(4))}\n"
                f"Message-ID: <{rng.getrandbits(64):x}@host>\n"
            )
            text = pools.take(pools.text["prose"], _size(rng, 3000))
            if n % 40 == 0:
                k, s = keys.key_id(), keys.secret()
                attachment = f"AWS_ACCESS_KEY_ID={k}\nAWS_SECRET_ACCESS_KEY={s}\n".encode() + bytes(
                    pools.take(pools.text["conf"], 2000)
                )
                enc = base64.encodebytes(attachment)  # 76-column lines
                body = (
                    (
                        head + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b1"\n\n--b1\n'
                        "Content-Type: text/plain\n\n"
                    ).encode()
                    + bytes(text)
                    + (
                        b'\n--b1\nContent-Type: application/octet-stream; name="app.env"\n'
                        b"Content-Transfer-Encoding: base64\n\n"
                    )
                    + enc
                    + b"--b1--\n\n"
                )
                planted.append(Planted("mail attachment (base64)", rel, k, True))
            else:
                if n % 40 == 20:
                    k, s = keys.key_id(), keys.secret()
                    _insert(text, len(text) // 2, _snippet(rng, k, s, "env").encode())
                    planted.append(Planted("mail text", rel, k, True))
                body = (head + "\n").encode() + bytes(text) + b"\n\n"
            parts.append(body)
            total += len(body)
        tree.write(rel, b"".join(parts))
    return planted


def ensure(out: Path, *, size_mb: int, files: int, seed: int) -> dict[str, object]:
    """The manifest of an existing corpus with these parameters, generating it when missing."""
    mpath = Path(str(out) + ".manifest.json")
    if mpath.exists():
        m = json.loads(mpath.read_text())
        if (m["size_mb"], m["files"], m["seed"], m.get("generator")) == (size_mb, files, seed, 2) and out.is_dir():
            return m
    return generate(out, size_mb=size_mb, files=files, seed=seed)


def default_out(size_mb: int, files: int, seed: int) -> Path:
    return Path(__file__).resolve().parent / "out" / f"host-{size_mb}m-{files}f-s{seed}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK[0]} MB, {QUICK[1]} files")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    size_mb, files = QUICK if a.quick else (a.size_mb, a.files)
    out = a.out or default_out(size_mb, files, a.seed)
    m = ensure(out, size_mb=size_mb, files=files, seed=a.seed)
    print(f"{out}: {len(m['planted'])} planted, {len(m['decoys'])} decoys")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
