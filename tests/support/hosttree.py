"""A generated host tree with key pairs planted in the forms they take on real hosts, plus decoys.

``build_host_tree(root, seed)`` writes the tree and returns what a correct scan must report (``planted``) and
what it must not (``decoy_ids``), with every planted secret (``secrets``) so tests can check no output leaks
one. Used by the end-to-end tests and by bench/corpus.py.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import marshal
import random
import tarfile
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from keysweep import keyid

if TYPE_CHECKING:
    from keysweep.detect import Detector
    from keysweep.scan import ScanResult

B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
SECRET_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+"


@dataclass(frozen=True)
class Planted:
    """One finding a scan must report. ``path`` is relative to the tree root."""

    form: str
    path: str
    key_id: str
    has_secret: bool
    kind: str = "file"
    member: str | None = None
    profile: str | None = None

    def identity(self) -> tuple[str, str, str | None, str, bool]:
        return (self.kind, self.path, self.member, self.key_id, self.has_secret)


@dataclass
class HostTree:
    root: Path
    planted: list[Planted] = field(default_factory=list)
    decoy_ids: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)  # every planted secret and session token

    def expected(self) -> set[tuple[str, str, str | None, str, bool]]:
        return {p.identity() for p in self.planted}


def finding_identity(root: Path, f: object) -> tuple[str, str, str | None, str, bool]:
    """The (kind, relative path, member, key id, has_secret) of a finding dict or Finding under ``root``."""
    d = f if isinstance(f, dict) else f.to_dict()  # type: ignore[attr-defined]
    loc = d["location"]
    path = loc.get("path") or ""
    prefix = str(root).rstrip("/") + "/"
    return (
        loc["kind"],
        path[len(prefix) :] if path.startswith(prefix) else path,
        loc.get("member"),
        d["key_id"],
        d["has_secret"],
    )


class Keys:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def key_id(self, prefix: str = "AKIA") -> str:
        while True:
            k = prefix + self.rng.choice("QRSTUVWXYZ234567") + "".join(self.rng.choice(B32) for _ in range(15))
            if not keyid.is_example_key(k):
                return k

    def secret(self) -> str:
        while True:
            s = "".join(self.rng.choice(SECRET_CHARS) for _ in range(40))
            if (
                any(c.isupper() for c in s)
                and any(c.islower() for c in s)
                and any(c.isdigit() for c in s)
                and "/" in s
                and len(set(s)) >= 10
            ):
                return s

    def token(self) -> str:
        body = "".join(self.rng.choice(SECRET_CHARS) for _ in range(300))
        return "FwoGZXIvYXdzE" + body + "=="


def _write(root: Path, rel: str, data: bytes | str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1700000000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_host_tree(root: Path, *, seed: int = 1, filler: int = 0) -> HostTree:
    """Write the planted files under ``root`` (created) and return what a scan must and must not find.

    ``filler`` harmless files are added (enough of them make a scan use its worker processes)."""
    rng = random.Random(seed)
    keys = Keys(rng)
    tree = HostTree(root=root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(filler):
        _write(root, f"usr/lib/filler/{i % 10}/module_{i}.py", f"def f{i}():\n    return {rng.getrandbits(32)}\n")

    def pair() -> tuple[str, str]:
        k, s = keys.key_id(), keys.secret()
        tree.secrets.append(s)
        return k, s

    def plant(form: str, path: str, key: str, has_secret: bool = True, **kw: str) -> None:
        tree.planted.append(Planted(form=form, path=path, key_id=key, has_secret=has_secret, **kw))

    def plant_file(form: str, path: str, data: bytes | str, key: str, has_secret: bool = True, **kw: str) -> None:
        """Write ``data`` at ``path`` and expect ``key`` found there."""
        _write(root, path, data)
        plant(form, path, key, has_secret, **kw)

    k, s = pair()
    plant_file(
        ".env", "srv/app/.env", f"APP_ENV=production\nAWS_ACCESS_KEY_ID={k}\nAWS_SECRET_ACCESS_KEY={s}\nPORT=8080\n", k
    )

    k, s = pair()
    history = [f"ls -la /srv/{i}" for i in range(30)]
    history[12:12] = [f"export AWS_ACCESS_KEY_ID={k}", f"export AWS_SECRET_ACCESS_KEY={s}", "aws s3 ls"]
    plant_file("shell history", "home/alice/.bash_history", "\n".join(history) + "\n", k)

    k1, s1 = pair()
    k2, s2 = pair()
    plant_file(
        "aws credentials",
        "home/bob/.aws/credentials",
        f"[default]\naws_access_key_id = {k1}\naws_secret_access_key = {s1}\n\n"
        f"[Prod]\nAWS_ACCESS_KEY_ID={k2}\nAws_Secret_Access_Key={s2}\n\n"
        "[deploy]\nrole_arn = arn:aws:iam::123456789012:role/deploy\nsource_profile = Prod\n",
        k1,
        kind="aws-credentials",
        profile="default",
    )
    plant("aws credentials", "home/bob/.aws/credentials", k2, kind="aws-credentials", profile="Prod")

    k, s = pair()
    plant_file(
        "aws config",
        "home/carol/.aws/config",
        "[default]\nregion = eu-west-1\n\n[profile ci]\n"
        f"aws_access_key_id = {k}\naws_secret_access_key = {s}\n\n"
        "[profile sso]\nsso_session = corp\nsso_account_id = 123456789012\n\n"
        "[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\n\n"
        "[profile tool]\ncredential_process = /usr/local/bin/get-creds\n",
        k,
        kind="aws-config",
        profile="ci",
    )

    k, s = pair()
    s3cfg = ["[default]", f"access_key = {k}", "access_token = ", "add_encoding_exts = "]
    s3cfg += [f"option_{i:02d} = value-{i}" for i in range(48)]
    s3cfg += [f"secret_key = {s}", "send_chunk = 65536", "signature_v2 = False"]
    plant_file(".s3cfg", "home/dave/.s3cfg", "\n".join(s3cfg) + "\n", k)

    k, s = pair()
    plant_file(
        "json",
        "srv/web/config/settings.json",
        json.dumps({"name": "web", "aws": {"accessKeyId": k, "secretAccessKey": s, "region": "us-east-1"}}, indent=2),
        k,
    )

    k, s = pair()
    plant_file(
        "yaml",
        "etc/app/config.yaml",
        f'database:\n  host: db\nstorage:\n  aws_access_key_id: {k}\n  aws_secret_access_key: "{s}"\n',
        k,
    )

    k, s = pair()
    b64 = lambda v: base64.b64encode(v.encode()).decode()  # noqa: E731
    plant_file(
        "kubernetes secret (base64)",
        "srv/k8s/aws-secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: aws\ntype: Opaque\ndata:\n"
        f"  AWS_ACCESS_KEY_ID: {b64(k)}\n  AWS_SECRET_ACCESS_KEY: {b64(s)}\n",
        k,
    )

    k, s = pair()
    env_file = f"AWS_ACCESS_KEY_ID={k}\nAWS_SECRET_ACCESS_KEY={s}\n"
    plant_file(
        "cloud-init user-data",
        "var/lib/cloud/instance/user-data.txt",
        "#cloud-config\nwrite_files:\n  - path: /etc/app.env\n    encoding: b64\n"
        f"    content: {b64(env_file)}\n    permissions: '0600'\n",
        k,
    )

    k, s = pair()
    url = f"https://uploader.internal/put?AWSAccessKeyId={k}&AWSSecretKey={urllib.parse.quote(s, safe='')}&bucket=b"
    plant_file(
        "percent-encoded URL",
        "var/log/uploader/access.log",
        "\n".join([f"10.0.0.{i} - - GET /health 200" for i in range(20)] + [f"10.0.0.99 - - GET {url} 200"]) + "\n",
        k,
    )

    k, s = pair()
    plant_file(
        "UTF-16 file",
        "home/erin/Documents/aws-keys.txt",
        ("\ufeff" + f"Access key ID: {k}\r\nSecret access key: {s}\r\n").encode("utf-16-le"),
        k,
    )

    k, s = pair()
    # marshal puts a type byte right after each string; here an interned name (0xda), not an ASCII letter
    code = compile(
        f"ACCESS_KEY = '{k}'\nREGION = 'eu_west_1'\nSECRET_KEY = '{s}'\nMODE = 'prod'\n", "settings.py", "exec"
    )
    plant_file(
        ".pyc binary",
        "opt/tool/__pycache__/settings.cpython-311.pyc",
        b"\xa7\r\r\n" + b"\x00" * 12 + marshal.dumps(code),
        k,
    )

    k, s = pair()
    plant_file(
        "zip (jar)",
        "opt/app/lib/app.jar",
        _zip(
            {
                "META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\n",
                "config/aws.properties": f"aws.accessKeyId={k}\naws.secretKey={s}\n".encode(),
            }
        ),
        k,
        kind="archive",
        member="config/aws.properties",
    )

    k, s = pair()
    plant_file(
        "tar.gz",
        "var/backups/etc.tar.gz",
        _tar_gz(
            {
                "etc/hostname": b"web-1\n",
                "etc/app/app.env": f"AWS_ACCESS_KEY_ID={k}\nAWS_SECRET_ACCESS_KEY={s}\n".encode(),
            }
        ),
        k,
        kind="archive",
        member="etc/app/app.env",
    )

    k, s = pair()
    inner = _zip({"secrets.env": f"AWS_ACCESS_KEY_ID={k}\nAWS_SECRET_ACCESS_KEY={s}\n".encode()})
    plant_file(
        "nested zip in tar.gz",
        "var/backups/release.tar.gz",
        _tar_gz({"README": b"release\n", "lib/inner.zip": inner}),
        k,
        kind="archive",
        member="lib/inner.zip!secrets.env",
    )

    k, s = pair()
    plant_file(
        "gzip",
        "var/log/app/app.log.1.gz",
        gzip.compress(f"INFO start\nDEBUG creds key={k} secret={s}\nINFO done\n".encode(), mtime=0),
        k,
        kind="archive",
        member="app.log.1",
    )

    k, s = pair()
    tok = keys.token()
    tree.secrets.append(tok)
    k = keys.key_id("ASIA")
    plant_file(
        "temporary key with session token",
        "tmp/session.env",
        f"AWS_ACCESS_KEY_ID={k}\nAWS_SECRET_ACCESS_KEY={s}\nAWS_SESSION_TOKEN={tok}\n",
        k,
    )

    k = keys.key_id()
    plant_file(
        "id only",
        "srv/docs/runbook.md",
        f"# Runbook\n\nThe deploy user's key {k} must be rotated.\n",
        k,
        has_secret=False,
    )

    k = keys.key_id()
    plant_file(
        "id next to SHA-1 hashes",
        "srv/ci/build.log",
        f"commit 3f786850e387550fdab836ed7d6dc881de23001b\nusing key {k}\n"
        "tree da39a3ee5e6b4b0d3255bfef95601890afd80709\n",
        k,
        has_secret=False,
    )

    # decoys: nothing here may be reported
    _write(
        root,
        "usr/share/doc/aws/example.md",
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
        "placeholder: AKIAXXXXXXXXXXXXXXXX\n",
    )
    tree.decoy_ids += ["AKIAIOSFODNN7EXAMPLE", "AKIAXXXXXXXXXXXXXXXX"]
    aida, aroa = keys.key_id("AIDA"), keys.key_id("AROA")
    _write(root, "srv/iam/whoami.json", json.dumps({"UserId": aida, "RoleId": aroa, "Account": "123456789012"}))
    tree.decoy_ids += [aida, aroa]
    embedded, extended = keys.key_id(), keys.key_id()
    _write(root, "srv/data/ids.txt", f"X{embedded}\n{extended}ABC\nsha={'ab' * 20}\n")
    tree.decoy_ids += [embedded, extended]
    vk, vs = keys.key_id(), keys.secret()
    _write(
        root,
        "usr/lib/python3/dist-packages/botocore/data/iam/2010-05-08/examples-1.json",
        json.dumps(
            {
                "examples": {
                    "CreateAccessKey": [
                        {"output": {"AccessKey": {"AccessKeyId": vk, "SecretAccessKey": vs, "UserName": "Bob"}}}
                    ]
                }
            }
        ),
    )
    tree.decoy_ids.append(vk)
    return tree


# --- scanning helpers shared by the scan tests and the benchmark ---------------------------------------------

FINGERPRINT_KEY = "keysweep-tests-fingerprint-key-0001"


def make_detector(*, include_examples: bool = False) -> Detector:
    from keysweep.detect import Detector
    from keysweep.fingerprint import Fingerprinter
    from keysweep.ruleset import load_ruleset

    return Detector(load_ruleset(), Fingerprinter(FINGERPRINT_KEY.encode()), include_examples=include_examples)


def scan_paths(*paths: Path | str, detector: Detector | None = None, **options: object) -> ScanResult:
    """run_scan over ``paths`` (files source only unless ``sources`` is given), in this process by default."""
    from keysweep.scan import ScanOptions, run_scan

    opts: dict[str, object] = {"sources": ("files",), "workers": 1, **options}
    return run_scan(ScanOptions(paths=tuple(str(p) for p in paths), **opts), detector or make_detector())  # type: ignore[arg-type]


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for running ``python -m keysweep`` in tests: a fixed fingerprint key, no AWS settings."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYSWEEP_"))}
    env["KEYSWEEP_FINGERPRINT_KEY"] = FINGERPRINT_KEY
    env.update(extra)
    return env
