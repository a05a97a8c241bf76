"""Static and dry-run checks of the packaging: systemd unit, nFPM description, lock, maintainer scripts, Dockerfile,
Kubernetes and ECS manifests. The full build/install/purge cycle runs in scripts/ci-packages.sh."""

from __future__ import annotations

import configparser
import gzip
import json
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from keysweep.config import from_mapping, load_config
from packaging.requirements import Requirement

from tests.support.locks import locked

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
UNIT = PACKAGING / "systemd" / "keysweep.service"
TWO_CAPS = {"CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"}
LOCKED = {
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "python-dateutil",
    "six",
    "urllib3",
    "pyyaml",
    "psutil",
    "watchdog",
    "hyperscan",
    "isal",
}


# --- systemd unit ---------------------------------------------------------------------------------------------------


def unit_settings(path: Path = UNIT) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value (systemd allows a key more than once)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values and len(values) == 1, f"{key}: expected exactly one setting, got {values}"
    return values[0]


def test_unit_grants_exactly_the_two_capabilities() -> None:
    service = unit_settings()["Service"]
    assert set(one(service, "CapabilityBoundingSet").split()) == TWO_CAPS
    assert set(one(service, "AmbientCapabilities").split()) == TWO_CAPS
    assert one(service, "User") == "keysweep"
    assert one(service, "NoNewPrivileges") == "yes"


def test_unit_reads_everything_and_writes_only_its_state() -> None:
    service = unit_settings()["Service"]
    assert one(service, "ProtectSystem") == "strict"
    assert one(service, "ProtectHome") == "read-only"
    assert one(service, "StateDirectory") == "keysweep"
    assert one(service, "CacheDirectory") == "keysweep"
    assert one(service, "UMask") == "0077"
    for writable in ("ReadWritePaths", "ReadWriteDirectories", "BindPaths"):
        assert writable not in service, f"{writable} would open a writable path"
    # the host's /tmp and /var/tmp are swept too (a private /tmp would hide them); temporary files go elsewhere
    assert service.get("PrivateTmp", ["no"]) == ["no"]
    assert "TMPDIR=/var/cache/keysweep" in service["Environment"]
    # other users' processes must stay visible (hidepid lets CAP_SYS_PTRACE through; a pid-only /proc subset
    # would hide /proc/meminfo and /proc/sys that the agent reads)
    assert service.get("ProcSubset", ["all"]) == ["all"]


def test_unit_hardening_and_resource_settings() -> None:
    service = unit_settings()["Service"]
    expected = {
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "SystemCallArchitectures": "native",
        "Nice": "19",
        "IOSchedulingClass": "idle",
    }
    for key, value in expected.items():
        assert one(service, key) == value, key
    assert service["SystemCallFilter"][0] == "@system-service"
    # the agent lowers its own priority (os.nice, ionice): @resources must stay allowed
    assert all("@resources" not in f for f in service["SystemCallFilter"][1:])
    assert set(one(service, "RestrictAddressFamilies").split()) <= {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}
    assert re.fullmatch(r"\d+%", one(service, "CPUQuota"))
    assert re.fullmatch(r"\d+[KMG]", one(service, "MemoryMax"))
    assert re.fullmatch(r"/bin/kill -HUP \$MAINPID", one(service, "ExecReload"))
    assert one(service, "ExecStart") == "/usr/bin/keysweep agent --config /etc/keysweep/agent.yaml"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_rates_ok_in_systemd_analyze_security() -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=25", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    score = re.search(r"Overall exposure level for keysweep\.service: (\d+\.\d+) (\w+)", out.stdout)
    assert score and float(score.group(1)) <= 2.5 and score.group(2) == "OK", out.stdout[-300:]


# --- nFPM description and the lock ----------------------------------------------------------------------------------


def nfpm() -> dict:
    return yaml.safe_load((PACKAGING / "nfpm.yaml").read_text())


def contents_by_dst() -> dict[str, dict]:
    return {entry["dst"]: entry for entry in nfpm()["contents"]}


def test_conffile_is_config_noreplace_and_readable_by_the_service_only() -> None:
    entry = contents_by_dst()["/etc/keysweep/agent.yaml"]
    assert entry["type"] == "config|noreplace"
    assert entry["src"] == "packaging/config/agent.yaml"
    assert entry["file_info"]["mode"] == 0o640 and entry["file_info"]["group"] == "keysweep"
    load_config(REPO / entry["src"])  # the shipped default is a valid configuration


def test_package_ships_unit_wrapper_environment_and_state_dirs() -> None:
    contents = contents_by_dst()
    assert contents["/usr/lib/systemd/system/keysweep.service"]["src"] == "packaging/systemd/keysweep.service"
    assert contents["/usr/bin/keysweep"]["file_info"]["mode"] == 0o755
    assert contents["/opt/keysweep"]["type"] == "tree"
    for state in ("/var/lib/keysweep", "/var/cache/keysweep"):
        assert contents[state]["type"] == "dir" and contents[state]["file_info"]["mode"] == 0o700
    for entry in contents.values():
        src = entry.get("src")
        if src and not src.startswith("build/"):
            assert (REPO / src).exists(), src
    wrapper = (PACKAGING / "keysweep.sh").read_text()
    assert 'exec "$python" -I -S -B /opt/keysweep/launch.py "$@"' in wrapper


def supported_pythons() -> list[str]:
    match = re.search(r'^PYTHONS="([\d. ]+)"$', (PACKAGING / "build.sh").read_text(), re.M)
    assert match, "build.sh: PYTHONS not found"
    return match.group(1).split()


def test_packages_accept_every_interpreter_they_carry_libraries_for() -> None:
    versions = supported_pythons()
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["options"]["python_requires"] == f">={versions[0]}", "the packages and setup.cfg disagree"
    assert versions[0] == "3.9", "Debian 11, RHEL 9 and Amazon Linux 2023 run Python 3.9 (docs/packaging.md)"
    overrides = nfpm()["overrides"]
    deb_python = next(d for d in overrides["deb"]["depends"] if d.startswith("python3"))
    assert [a.strip() for a in deb_python.split("|")] == ["python3 (>= 3.9~)", *(f"python{v}" for v in versions)]
    rpm_python = next(d for d in overrides["rpm"]["depends"] if "python" in d)
    assert rpm_python == "(" + " or ".join(f"/usr/bin/python{v}" for v in versions) + ")"
    wrapper = (PACKAGING / "keysweep.sh").read_text()
    for version in versions:
        assert f"/usr/bin/python{version}" in wrapper, version


def test_environment_is_per_interpreter_libraries_not_a_venv() -> None:
    contents = contents_by_dst()
    assert contents["/opt/keysweep"]["src"] == "build/pkgroot/opt/keysweep"
    text = (PACKAGING / "build.sh").read_text()
    assert 'install -m 0644 packaging/launch.py "$STAGE/launch.py"' in text
    assert "--target" in text and "split-sites.py" in text


def test_package_scripts_are_the_assembled_hooks() -> None:
    assert nfpm()["scripts"] == {
        hook: f"build/pkgscripts/{hook}.sh" for hook in ("preinstall", "postinstall", "preremove", "postremove")
    }


LOCKS = ("requirements.lock", "requirements-py39.lock")


def lock_markers(lock: str) -> dict[str, str]:
    """package -> the environment marker of its pin in ``lock`` (pins without one are left out)."""
    text = (PACKAGING / lock).read_text().replace("\\\n", " ")
    found = re.findall(r"^([\w.-]+)==\S+ ; ([^-\n]+?)\s+--hash", text, re.M)
    return {name.lower(): marker.strip() for name, marker in found}


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_pins_every_runtime_dependency_with_hashes(lock: str) -> None:
    pins = locked(lock)
    assert set(pins) == LOCKED
    for name, (version, hashes) in pins.items():
        assert re.fullmatch(r"\d+(\.\w+)+", version), (name, version)
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    for line in setup["options"]["install_requires"].split("\n"):
        if line.strip():
            req = Requirement(line)
            assert req.specifier.contains(pins[req.name.lower()][0]), f"{lock} breaks setup.cfg's {req}"


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_bundles_hyperscan_where_the_fast_extra_installs_it(lock: str) -> None:
    """Both locks pin Hyperscan (the gate of keysweep.gate) under the fast extra's own marker, so the packages get
    it on x86-64 and install without it elsewhere; its release satisfies the extra's specifier."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    (fast,) = [Requirement(line) for line in setup["options.extras_require"]["fast"].split("\n") if line.strip()]
    assert fast.name == "hyperscan" and str(fast.marker) == 'platform_machine == "x86_64"'
    assert lock_markers(lock) == {"hyperscan": str(fast.marker)}
    assert fast.specifier.contains(locked(lock)["hyperscan"][0])
    assert "--only-binary=hyperscan" in (PACKAGING / lock).read_text().split("\n#\n", 2)[1]


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_bundles_isal_where_the_inflate_extra_installs_it(lock: str) -> None:
    """Both locks pin ISA-L (the inflater of keysweep.sources.archives) on every platform, as the inflate extra
    does, at a release its specifier takes."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    (inflate,) = [Requirement(line) for line in setup["options.extras_require"]["inflate"].split("\n") if line.strip()]
    assert inflate.name == "isal" and inflate.marker is None
    assert "isal" not in lock_markers(lock)
    assert inflate.specifier.contains(locked(lock)["isal"][0])


def test_each_interpreter_gets_the_lock_made_for_it() -> None:
    """3.9 and 3.10 get the older lock (pip-compile run with 3.9), the others the current one; each lock says
    which Python resolved it."""
    script = PACKAGING / "build.sh"
    for version in supported_pythons():
        out = subprocess.run(
            ["bash", "-c", f'eval "$(sed -n "/^lock_for()/,/^}}/p" {script})"; lock_for {version}'],
            capture_output=True,
            text=True,
            check=True,
        )
        lock = "requirements-py39.lock" if version in ("3.9", "3.10") else "requirements.lock"
        assert out.stdout.strip() == f"packaging/{lock}", version
    assert "autogenerated by pip-compile with Python 3.9\n" in (PACKAGING / "requirements-py39.lock").read_text()
    assert "autogenerated by pip-compile with Python 3.11\n" in (PACKAGING / "requirements.lock").read_text()
    assert locked("requirements-py39.lock")["boto3"][0] != locked()["boto3"][0]


def test_environment_installs_only_with_hashes_and_wheels() -> None:
    for path in (PACKAGING / "build.sh", REPO / "Dockerfile"):
        text = path.read_text().replace("\\\n", " ")
        runtime = '"$(lock_for "$version")"' if path.name == "build.sh" else "packaging/requirements.lock"
        for lock in (runtime, "packaging/build-requirements.lock"):
            lines = [ln for ln in text.splitlines() if f"-r {lock}" in ln]
            assert any("pip" in ln and " install " in ln for ln in lines), f"{path.name}: {lock} not installed"
            for line in lines:  # every download and install of a lock: hashes checked, wheels only
                assert "--require-hashes" in line and "--only-binary=:all:" in line, (path.name, line)
        assert "--no-build-isolation" in text, f"{path.name}: keysweep's wheel must use the locked build backend"


# --- maintainer scripts ---------------------------------------------------------------------------------------------

HOOKS = ("preinstall", "postinstall", "preremove", "postremove")
STUB = """#!/bin/sh
echo "$(basename "$0") $*" >>"$STUB_LOG"
case "$(basename "$0")" in
    getent) grep -q "^$1 $2\\$" "$STUB_DB" 2>/dev/null; exit $? ;;
    groupadd) echo "group $2" >>"$STUB_DB" ;;
    useradd) for last; do :; done; echo "passwd $last" >>"$STUB_DB" ;;
    userdel) sed -i "/^passwd $1\\$/d; /^group $1\\$/d" "$STUB_DB" ;;
    groupdel) sed -i "/^group $1\\$/d" "$STUB_DB" ;;
esac
exit 0
"""


class Host:
    """A throwaway root (DPKG_ROOT) with recording stand-ins for the user and systemd tools."""

    def __init__(self, tmp: Path, scripts: Path) -> None:
        self.root = tmp / "root"
        self.scripts = scripts
        self.log = tmp / "calls.log"
        self.db = tmp / "accounts"
        stubs = tmp / "stubs"
        stubs.mkdir()
        for tool in ("getent", "groupadd", "useradd", "userdel", "groupdel", "systemctl", "chown"):
            (stubs / tool).write_text(STUB)
            (stubs / tool).chmod(0o755)
        self.env = {
            "PATH": f"{stubs}:/usr/bin:/bin",
            "DPKG_ROOT": str(self.root),
            "STUB_LOG": str(self.log),
            "STUB_DB": str(self.db),
        }
        (self.root / "etc/keysweep").mkdir(parents=True)
        (self.root / "etc/keysweep/agent.yaml").write_text("state_dir: /var/lib/keysweep\n")

    def systemd(self, running: bool) -> None:
        path = self.root / "run/systemd/system"
        path.mkdir(parents=True, exist_ok=True) if running else shutil.rmtree(path, ignore_errors=True)

    def run(self, hook: str, *args: str) -> subprocess.CompletedProcess[str]:
        self.log.write_text("")
        return subprocess.run(
            ["sh", str(self.scripts / f"{hook}.sh"), *args], env=self.env, capture_output=True, text=True, timeout=30
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def accounts(self) -> set[str]:
        return set(self.db.read_text().splitlines()) if self.db.exists() else set()


@pytest.fixture(scope="module")
def hook_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hooks")
    subprocess.run(["bash", str(PACKAGING / "build.sh"), "scripts", str(out)], check=True, timeout=30)
    return out


@pytest.fixture
def host(tmp_path: Path, hook_dir: Path) -> Iterator[Host]:
    yield Host(tmp_path, hook_dir)


@pytest.mark.parametrize("hook", HOOKS)
def test_hooks_are_assembled_and_valid_posix_sh(hook_dir: Path, hook: str) -> None:
    text = (hook_dir / f"{hook}.sh").read_text()
    assert text.startswith("#!/bin/sh\n") and "# @COMMON@" not in text and "systemd_running()" in text
    for shell in ("sh", "bash", "dash"):
        if shutil.which(shell):
            subprocess.run([shell, "-n", str(hook_dir / f"{hook}.sh")], check=True, timeout=10)


@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize("arg", ["", "bogus", "-1"])
def test_hooks_reject_unknown_arguments(host: Host, hook: str, arg: str) -> None:
    result = host.run(hook, arg)
    assert result.returncode == 1 and "unknown argument" in result.stderr


@pytest.mark.parametrize("args", [("install",), ("install", "0.0.9-1"), ("upgrade", "0.1.0-1"), ("1",), ("2",)])
def test_preinstall_creates_the_system_user_once(host: Host, args: tuple[str, ...]) -> None:
    assert host.run("preinstall", *args).returncode == 0
    assert host.accounts() == {"group keysweep", "passwd keysweep"}
    useradd = [c for c in host.calls() if c.startswith("useradd")]
    assert useradd and "--system" in useradd[0] and "--shell /usr/sbin/nologin" in useradd[0]
    assert host.run("preinstall", *args).returncode == 0  # already there: nothing created twice
    assert not [c for c in host.calls() if c.startswith(("useradd", "groupadd"))]


def test_preinstall_abort_upgrade_changes_nothing(host: Host) -> None:
    assert host.run("preinstall", "abort-upgrade", "0.2.0-1").returncode == 0
    assert host.accounts() == set() and not [c for c in host.calls() if not c.startswith("getent")]


@pytest.mark.parametrize("args", [("configure", ""), ("configure",), ("1",)])
def test_postinstall_first_install_owns_state_and_does_not_start(host: Host, args: tuple[str, ...]) -> None:
    host.systemd(running=True)
    result = host.run("postinstall", *args)
    assert result.returncode == 0, result.stderr
    calls = host.calls()
    for state in ("/var/lib/keysweep", "/var/cache/keysweep"):
        assert (host.root / state.lstrip("/")).stat().st_mode & 0o777 == 0o700
        assert f"chown keysweep:keysweep {host.root}{state}" in calls
    assert f"chown root:keysweep {host.root}/etc/keysweep/agent.yaml" in calls
    assert (host.root / "etc/keysweep/agent.yaml").stat().st_mode & 0o777 == 0o640
    assert "systemctl daemon-reload" in calls
    assert not [c for c in calls if re.match(r"systemctl (start|restart|try-restart|enable)", c)]
    assert "systemctl enable --now" in result.stdout


@pytest.mark.parametrize("args", [("configure", "0.1.0-1"), ("2",), ("3",)])
def test_postinstall_upgrade_restarts_a_running_agent_and_keeps_config_ownership(
    host: Host, args: tuple[str, ...]
) -> None:
    host.systemd(running=True)
    assert host.run("postinstall", *args).returncode == 0
    calls = host.calls()
    assert "systemctl try-restart keysweep.service" in calls
    assert not [c for c in calls if "agent.yaml" in c]  # the administrator's file is left as it is


def test_postinstall_without_running_systemd_calls_no_systemctl(host: Host) -> None:
    host.systemd(running=False)
    assert host.run("postinstall", "configure", "0.1.0-1").returncode == 0
    assert not [c for c in host.calls() if c.startswith("systemctl")]


@pytest.mark.parametrize("arg", ["abort-upgrade", "abort-remove", "abort-deconfigure"])
def test_postinstall_abort_paths_only_reload(host: Host, arg: str) -> None:
    host.systemd(running=True)
    assert host.run("postinstall", arg, "0.1.0-1").returncode == 0
    assert host.calls() == ["systemctl daemon-reload"]


@pytest.mark.parametrize("args", [("remove",), ("deconfigure", "in-favour", "other", "1.0"), ("0",)])
def test_preremove_on_removal_disables_and_stops(host: Host, args: tuple[str, ...]) -> None:
    host.systemd(running=True)
    assert host.run("preremove", *args).returncode == 0
    calls = host.calls()
    assert f"systemctl --root={host.root} --no-reload disable keysweep.service" in calls
    assert "systemctl stop keysweep.service" in calls


@pytest.mark.parametrize("args", [("upgrade", "0.2.0-1"), ("failed-upgrade", "0.1.0-1"), ("1",), ("2",)])
def test_preremove_on_upgrade_leaves_the_service_alone(host: Host, args: tuple[str, ...]) -> None:
    host.systemd(running=True)
    assert host.run("preremove", *args).returncode == 0
    assert host.calls() == []


def _with_state(host: Host) -> None:
    for state in ("var/lib/keysweep", "var/cache/keysweep", "var/log/keysweep"):
        (host.root / state).mkdir(parents=True, exist_ok=True)
        (host.root / state / "data").write_text("x")
    host.db.write_text("group keysweep\npasswd keysweep\n")


@pytest.mark.parametrize(
    "args",
    [
        ("remove",),
        ("0",),
        ("upgrade", "0.2.0-1"),
        ("1",),
        ("abort-install",),
        ("abort-upgrade", "0.1.0-1"),
        ("failed-upgrade", "0.1.0-1"),
        ("disappear", "other", "1.0"),
    ],
)
def test_postremove_keeps_state_config_and_user_unless_purged(host: Host, args: tuple[str, ...]) -> None:
    _with_state(host)
    assert host.run("postremove", *args).returncode == 0
    for kept in ("var/lib/keysweep/data", "var/cache/keysweep/data", "etc/keysweep/agent.yaml"):
        assert (host.root / kept).exists(), f"{args}: {kept} removed"
    assert host.accounts() == {"group keysweep", "passwd keysweep"}


def test_postremove_purge_removes_state_config_and_user(host: Host) -> None:
    _with_state(host)
    host.systemd(running=True)
    assert host.run("postremove", "purge").returncode == 0
    for gone in ("var/lib/keysweep", "var/cache/keysweep", "var/log/keysweep", "etc/keysweep"):
        assert not (host.root / gone).exists(), gone
    assert host.accounts() == set()
    assert "userdel keysweep" in host.calls()
    assert (host.root / "run/systemd/system").is_dir()  # nothing outside the package's paths touched


# --- container image ------------------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


def test_dockerfile_runs_non_root_with_exec_form_entrypoint_and_healthcheck() -> None:
    steps = dockerfile()
    froms = [arg for op, arg in steps if op == "FROM"]
    assert froms and all(re.match(r"\$\{BASE\}( AS \w+)?$", f) for f in froms), froms
    # the public Python image stays the default; `make image` passes the local Debian one
    assert re.fullmatch(r"BASE=python:3\.11\.\d+-slim-bookworm", next(a for o, a in steps if o == "ARG")), steps[0]
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    ops = [op for op, _ in final]
    assert ops.index("USER") < ops.index("ENTRYPOINT")
    assert json.loads(next(arg for op, arg in final if op == "ENTRYPOINT")) == ["keysweep"]
    cmd = json.loads(next(arg for op, arg in final if op == "CMD"))
    assert cmd[0] == "agent"
    health = next(arg for op, arg in final if op == "HEALTHCHECK")
    probe = json.loads(health.split("CMD", 1)[1])
    assert probe[:3] == ["keysweep", "status", "--check"]
    config = REPO / "packaging/container/agent.yaml"
    assert load_config(config).scan.host_prefix == "/host"
    # the image's state volume is /var/lib/keysweep; the agent keeps its state in a subdirectory it creates itself
    assert load_config(config).state_dir == "/var/lib/keysweep/state"
    assert 'VOLUME ["/var/lib/keysweep"]' in [f"{o} {a}" for o, a in final]
    assert f"COPY {config.relative_to(REPO)} /etc/keysweep/agent.yaml" in [f"COPY {a}" for o, a in final if o == "COPY"]


def test_dockerignore_keeps_the_context_to_what_the_build_copies() -> None:
    patterns = [p for p in (REPO / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for op, arg in dockerfile():
        if op == "COPY" and not arg.startswith("--from"):
            for src in arg.split()[:-1]:
                assert src.rstrip("/") in allowed, f"COPY {src} is excluded by .dockerignore"
                assert (REPO / src).exists(), src


@pytest.mark.skipif(
    shutil.which("hadolint") is None and not (REPO / ".venv/bin/hadolint").exists(),
    reason="hadolint not installed (pip install -e '.[packaging]')",
)
def test_dockerfile_passes_hadolint() -> None:
    tool = shutil.which("hadolint") or str(REPO / ".venv/bin/hadolint")
    out = subprocess.run([tool, str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# --- Kubernetes and ECS manifests -----------------------------------------------------------------------------------


def k8s(name: str) -> dict[str, dict]:
    docs = list(yaml.safe_load_all((PACKAGING / "kubernetes" / name).read_text()))
    return {doc["kind"]: doc for doc in docs if doc}


def agent_config(configmap: dict) -> object:
    return from_mapping(yaml.safe_load(configmap["data"]["agent.yaml"]), source="configmap")


def mounts(container: dict) -> dict[str, dict]:
    return {m["mountPath"]: m for m in container["volumeMounts"]}


def test_daemonset_reads_the_host_read_only_with_only_the_two_capabilities() -> None:
    docs = k8s("daemonset.yaml")
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["DAC_READ_SEARCH", "SYS_PTRACE"]}
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc.get("privileged", False) is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    host = mounts(container)["/host"]
    assert host["readOnly"] is True and volumes[host["name"]]["hostPath"]["path"] == "/"
    assert all(m["readOnly"] for path, m in mounts(container).items() if path not in ("/var/lib/keysweep", "/tmp"))
    limits = container["resources"]["limits"]
    assert {"cpu", "memory"} <= set(limits)
    cfg = agent_config(docs["ConfigMap"])
    assert cfg.scan.host_prefix == "/host"
    assert cfg.state_dir in mounts(container) and "hostPath" in volumes[mounts(container)[cfg.state_dir]["name"]]
    assert volumes[mounts(container)[cfg.state_dir]["name"]]["hostPath"]["type"] == "DirectoryOrCreate"  # root's
    assert (
        volumes[mounts(container)["/etc/keysweep"]["name"]]["configMap"]["name"]
        == docs["ConfigMap"]["metadata"]["name"]
    )
    sa = docs["ServiceAccount"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"]


def test_sidecar_runs_unprivileged_beside_the_application() -> None:
    docs = k8s("sidecar-example.yaml")
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    sidecar = next(c for c in pod["containers"] if c["name"] == "keysweep")
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    cfg = agent_config(docs["ConfigMap"])
    for root in cfg.scan.roots:
        mount = mounts(sidecar)[f"{cfg.scan.host_prefix}{root}"]
        assert mount["readOnly"] is True
    assert {"cpu", "memory"} <= set(sidecar["resources"]["limits"])


def test_ecs_task_runs_the_agent_as_a_non_essential_read_only_sidecar() -> None:
    task = json.loads((PACKAGING / "ecs" / "task-definition.json").read_text())
    assert task["pidMode"] == "task" and task["taskRoleArn"].startswith("arn:aws:iam::")
    containers = {c["name"]: c for c in task["containerDefinitions"]}
    agent = containers["keysweep"]
    assert agent["essential"] is False and agent["readonlyRootFilesystem"] is True
    assert agent["user"] not in ("0", "root")
    assert agent["linuxParameters"]["capabilities"]["drop"] == ["ALL"]
    assert not agent["linuxParameters"]["capabilities"].get("add")
    env = {e["name"]: e["value"] for e in agent["environment"]}
    cfg = from_mapping(yaml.safe_load(env["KEYSWEEP_AGENT_YAML"]), source="task definition")
    paths = {m["containerPath"]: m for m in agent["mountPoints"]}
    for root in cfg.scan.roots:
        assert paths[f"{cfg.scan.host_prefix}{root}"]["readOnly"] is True
    # the agent's own subdirectory of its writable task volume (the volume's owner and mode are not the agent's)
    state_mount = paths[str(Path(cfg.state_dir).parent)]
    assert state_mount["readOnly"] is False and state_mount["sourceVolume"] == "keysweep-state"
    assert "exec keysweep agent" in agent["command"][0]
    assert agent["healthCheck"]["command"][:2] == ["CMD", "keysweep"]


def test_ecs_task_role_may_only_send_to_the_queue() -> None:
    policy = json.loads((PACKAGING / "ecs" / "task-role-policy.json").read_text())
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"].startswith("arn:aws:sqs:") and "*" not in statement["Resource"]


def test_no_manifest_or_script_holds_a_real_looking_key() -> None:
    pattern = re.compile(rb"\b(?:AKIA|ASIA)[A-Z2-7]{16}\b")
    for path in [*PACKAGING.rglob("*"), REPO / "Dockerfile"]:
        if path.is_file() and "requirements" not in path.name and path.parent.name != "wheelhouse":
            assert not pattern.search(path.read_bytes()), path


# --- the launcher and the per-interpreter libraries ---------------------------------------------------------------


def fake_install(root: Path, tags: list[str]) -> Path:
    """An /opt/keysweep-like tree: launch.py and, for each tag, lib/<tag>/keysweep/__main__.py reporting how it ran."""
    shutil.copy(PACKAGING / "launch.py", root / "launch.py")
    (root / "lib/common").mkdir(parents=True)
    for tag in tags:
        package = root / "lib" / tag / "keysweep"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "__main__.py").write_text(
            "import json, sys\n"
            "print(json.dumps({'argv': sys.argv[1:], 'path': sys.path, 'version': list(sys.version_info[:2]),"
            " 'flags': [sys.flags.isolated, sys.flags.no_site, sys.flags.dont_write_bytecode]}))\n"
        )
    return root / "launch.py"


def current_tag() -> str:
    return f"cp{sys.version_info[0]}{sys.version_info[1]}"


def test_launcher_runs_keysweep_from_the_interpreters_libraries_only(tmp_path: Path) -> None:
    launch = fake_install(tmp_path, [current_tag(), "cp30"])
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-B", str(launch), "scan", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    ran = json.loads(out.stdout)
    assert ran["argv"] == ["scan", "--format", "json"]
    assert ran["path"][:2] == [str(tmp_path / "lib" / current_tag()), str(tmp_path / "lib/common")]
    assert not any("site-packages" in p or "dist-packages" in p for p in ran["path"]), ran["path"]
    assert str(tmp_path) not in ran["path"] and "" not in ran["path"]  # neither the launcher's nor the working dir
    assert ran["flags"] == [1, 1, 1]


def test_launcher_names_what_it_needs_on_an_unsupported_interpreter(tmp_path: Path) -> None:
    launch = fake_install(tmp_path, ["cp30"])  # no /usr/bin/python3.0 anywhere
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-B", str(launch), "--version"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 3 and out.stdout == ""
    assert "keysweep: needs CPython 3.0" in out.stderr
    assert f"this host has {sys.version_info[0]}.{sys.version_info[1]}" in out.stderr


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no /usr/bin/python3")
def test_launcher_switches_to_a_supported_system_interpreter(tmp_path: Path) -> None:
    system = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print('cp%d%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    def runs(python: str | None) -> bool:
        return python is not None and subprocess.run([python, "-c", ""], capture_output=True).returncode == 0

    versions = ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14")
    others = [
        python
        for v in versions
        if f"cp{v.replace('.', '')}" != system
        for python in (
            shutil.which(f"python{v}"),
            *map(str, sorted(Path.home().glob(f".pyenv/versions/{v}.*/bin/python{v}"))),
        )
    ]
    other = next((python for python in others if runs(python)), None)
    if other is None:
        pytest.skip("needs a second CPython besides the system one")
    launch = fake_install(tmp_path, [system])
    out = subprocess.run([other, "-I", "-S", "-B", str(launch), "x"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    ran = json.loads(out.stdout)
    assert "cp{}{}".format(*ran["version"]) == system and ran["argv"] == ["x"] and ran["flags"] == [1, 1, 1]


def test_split_sites_keeps_one_copy_of_what_every_interpreter_shares(tmp_path: Path) -> None:
    for tag, ext in (("cp311", b"\x7fELF-311"), ("cp312", b"\x7fELF-312")):
        site = tmp_path / f"site-{tag}"
        (site / "pure").mkdir(parents=True)
        (site / "pure/__init__.py").write_text("x = 1\n")
        (site / "compiled").mkdir()
        (site / "compiled/__init__.py").write_text("")
        (site / f"compiled/_speedups.cpython-{tag[2:]}.so").write_bytes(ext)
        (site / "bin").mkdir()
        (site / "bin/tool").write_text("#!/build/path/python\n")
    (tmp_path / "site-cp312/only312.py").write_text("")
    files = split_sites(tmp_path / "lib", [tmp_path / "site-cp311", tmp_path / "site-cp312"])
    assert files == {
        "common/pure/__init__.py",
        "cp311/compiled/__init__.py",
        "cp311/compiled/_speedups.cpython-311.so",
        "cp312/compiled/__init__.py",
        "cp312/compiled/_speedups.cpython-312.so",
        "cp312/only312.py",
    }


def split_sites(lib: Path, sites: list[Path]) -> set[str]:
    """Run packaging/split-sites.py over ``sites`` into ``lib``; the files it wrote, relative to ``lib``."""
    out = subprocess.run(
        [sys.executable, str(PACKAGING / "split-sites.py"), str(lib), *map(str, sites)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return {str(p.relative_to(lib)) for p in lib.rglob("*") if p.is_file()}


def interpreter(version: str) -> str | None:
    """A working CPython ``version`` on this machine (/usr/bin, PATH or pyenv), or None."""
    for python in (
        f"/usr/bin/python{version}",
        shutil.which(f"python{version}"),
        *map(str, sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))),
    ):
        if (
            python
            and Path(python).is_file()
            and subprocess.run([python, "-c", ""], capture_output=True).returncode == 0
        ):
            return python
    return None


def test_split_sites_keeps_what_one_lock_shares_once_for_its_interpreters(tmp_path: Path) -> None:
    """Two locks: a pure package that differs between them is kept once per lock (never in common, never once per
    interpreter); what all share is in common; the launcher, run by each of these interpreters found here, imports
    its own lock's copy."""
    versions = {"cp39": "old", "cp310": "old", "cp311": "new", "cp312": "new"}
    for tag, release in versions.items():
        site = tmp_path / f"site-{tag}"
        (site / "botocore").mkdir(parents=True)
        (site / "botocore/__init__.py").write_text(f"release = {release!r}\n")
        (site / "keysweep").mkdir()
        (site / "keysweep/__init__.py").write_text("")
        (site / "keysweep/__main__.py").write_text(
            "import json, sys, botocore\nprint(json.dumps([botocore.release, sys.path[:3]]))\n"
        )
        (site / f"_ext.cpython-{tag[2:]}.so").write_bytes(tag.encode())
    files = split_sites(tmp_path / "lib", [tmp_path / f"site-{tag}" for tag in versions])
    lib = tmp_path / "lib"
    assert files == {
        "common/keysweep/__init__.py",
        "common/keysweep/__main__.py",
        "cp39-cp310/botocore/__init__.py",
        "cp311-cp312/botocore/__init__.py",
        *(f"{t}/_ext.cpython-{t[2:]}.so" for t in versions),
    }
    shutil.copy(PACKAGING / "launch.py", tmp_path / "launch.py")
    ran = 0
    for tag, release in versions.items():
        python = interpreter(f"{tag[2]}.{tag[3:]}")
        if python is None:
            continue
        run = subprocess.run(
            [python, "-I", "-S", "-B", str(tmp_path / "launch.py")], capture_output=True, text=True, timeout=30
        )
        assert run.returncode == 0, run.stderr
        shared = "cp39-cp310" if release == "old" else "cp311-cp312"
        assert json.loads(run.stdout) == [release, [str(lib / tag), str(lib / shared), str(lib / "common")]], tag
        ran += 1
    assert ran, "no CPython 3.9 to 3.12 here"


def test_built_deb_runs_on_every_supported_cpython_here(tmp_path: Path) -> None:
    """dist/'s deb (from `make packages`) unpacked and run as /usr/bin/keysweep runs it (`-I -S -B launch.py`) by
    each CPython 3.9-3.14 found on this machine: --version, a scan that finds planted keys (one in a gzip log) with
    the Hyperscan gate and the ISA-L of its lock, config check."""
    from tests.support.planted import planted_key

    debs = sorted((REPO / "dist").glob("keysweep_*-1_*.deb"))
    if not debs or shutil.which("dpkg-deb") is None:
        pytest.skip("no dist/keysweep_*-1_*.deb (make packages) or no dpkg-deb")
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tmp_path / "root")], check=True)
    launch = tmp_path / "root/opt/keysweep/launch.py"
    key, logged = planted_key(39), planted_key(40)
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree/.env").write_text(f"aws_access_key_id={key.key_id}\naws_secret_access_key={key.secret}\n")
    (tmp_path / "tree/debug.log.1.gz").write_bytes(
        gzip.compress(f"DEBUG key={logged.key_id} secret={logged.secret}\n".encode())
    )
    ran = []
    for version in supported_pythons():
        python = interpreter(version)
        if python is None:
            continue
        run = [python, "-I", "-S", "-B", str(launch)]
        out = subprocess.run([*run, "--version"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.startswith("keysweep "), (version, out.stderr)
        scan = subprocess.run(
            [*run, "scan", "--format", "json", str(tmp_path / "tree")], capture_output=True, text=True, timeout=300
        )
        assert scan.returncode == 1, (version, scan.stderr)
        report = json.loads(scan.stdout)
        assert sorted(f["key_id"] for f in report["findings"]) == sorted([key.key_id, logged.key_id]), version
        # the Hyperscan gate of the interpreter's lock runs (x86-64; elsewhere the packages carry none), and its ISA-L
        lock = "requirements-py39.lock" if version in ("3.9", "3.10") else "requirements.lock"
        gate = f"hyperscan {locked(lock)['hyperscan'][0]}" if platform.machine() == "x86_64" else "none"
        assert report["summary"]["detection_gate"] == gate, version
        assert report["summary"]["inflate"] == f"isal {locked(lock)['isal'][0]}", version
        assert key.secret not in scan.stdout + scan.stderr and logged.secret not in scan.stdout + scan.stderr
        check = subprocess.run(
            [*run, "config", "check", str(tmp_path / "root/etc/keysweep/agent.yaml")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, (version, check.stdout + check.stderr)
        ran.append(version)
    assert ran, "no supported CPython here"


# --- shell scripts --------------------------------------------------------------------------------------------------


def ssm_document() -> dict:
    return yaml.safe_load((PACKAGING / "ssm" / "keysweep-install.yaml").read_text())


def ssm_script(**values: str) -> str:
    """The document's shell step as Systems Manager runs it: {{ Parameter }} replaced by the given values."""
    doc = ssm_document()
    step = next(s for s in doc["mainSteps"] if s["action"] == "aws:runShellScript")
    script = "\n".join(step["inputs"]["runCommand"]) + "\n"
    params = {name: spec.get("default", "") for name, spec in doc["parameters"].items()} | values
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: params[m.group(1)], script)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (Debian: shellcheck)")
def test_shell_scripts_pass_shellcheck(hook_dir: Path, tmp_path: Path) -> None:
    rendered = tmp_path / "ssm-install.sh"
    rendered.write_text(ssm_script(PackagesUrl="https://bucket.s3.amazonaws.com/keysweep/"))
    scripts = [PACKAGING / "keysweep.sh", PACKAGING / "build.sh", *sorted((REPO / "scripts").glob("*.sh"))]
    out = subprocess.run(
        ["shellcheck", "--severity=warning", *map(str, scripts)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout
    # parameters are substituted as text, so tests of their values are constant expressions once rendered
    out = subprocess.run(
        ["shellcheck", "--severity=warning", "--exclude=SC2050,SC2157", str(rendered)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout
    # the hooks share common.sh, so each carries variables and functions it does not use itself
    out = subprocess.run(
        ["shellcheck", "--severity=warning", "--exclude=SC2034,SC2317", *map(str, sorted(hook_dir.glob("*.sh")))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout


# --- manifests validated against the platforms' own schemas ---------------------------------------------------------


def kubernetes_docs() -> list[tuple[str, dict]]:
    return [
        (path.name, doc)
        for path in sorted((PACKAGING / "kubernetes").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])  # the oldest EKS still supports, and the newest schema
def test_kubernetes_manifests_match_the_kubernetes_schemas(version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for _, doc in kubernetes_docs():
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError naming the field
    # the validator is no rubber stamp: a mistyped field and an unknown one are refused
    daemonset = next(doc for _, doc in kubernetes_docs() if doc["kind"] == "DaemonSet")
    broken = json.loads(json.dumps(daemonset))
    broken["spec"]["template"]["spec"]["hostPID"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)
    broken = json.loads(json.dumps(daemonset))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def botocore_errors(service: str, operation: str, params: dict) -> str:
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    report = ParamValidator().validate(params, model.input_shape)
    return report.generate_report() if report.has_errors() else ""


def test_ecs_task_definition_matches_the_ecs_api_model() -> None:
    task = json.loads((PACKAGING / "ecs" / "task-definition.json").read_text())
    assert botocore_errors("ecs", "RegisterTaskDefinition", task) == ""
    task["containerDefinitions"][1]["readOnlyRootFilesystem"] = True  # the API spells it readonlyRootFilesystem
    assert "readOnlyRootFilesystem" in botocore_errors("ecs", "RegisterTaskDefinition", task)


# --- fleet install with Systems Manager ----------------------------------------------------------------------------


def test_ssm_document_is_a_linux_command_document_using_every_parameter() -> None:
    doc = ssm_document()
    assert doc["schemaVersion"] == "2.2"
    actions = [step["action"] for step in doc["mainSteps"]]
    assert actions == ["aws:downloadContent", "aws:runShellScript"]
    assert all(step["precondition"] == {"StringEquals": ["platformType", "Linux"]} for step in doc["mainSteps"])
    text = (PACKAGING / "ssm" / "keysweep-install.yaml").read_text().split("\nparameters:", 1)[1]
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", text.split("\nmainSteps:", 1)[1]))
    assert used == set(doc["parameters"]), "parameters declared but unused, or used but undeclared"
    assert doc["parameters"]["StartAgent"]["allowedValues"] == ["true", "false"]
    for name in ("AgentConfig", "AgentConfigS3Uri", "StartAgent"):
        assert "default" in doc["parameters"][name], name  # only the package location must be given


def test_ssm_script_is_valid_sh_with_any_configuration_text() -> None:
    hostile = "scan:\n  roots: ['/srv/it''s here']\n# \"quoted\" $HOME `id` $(id)\n"
    script = ssm_script(PackagesUrl="https://bucket.s3.amazonaws.com/keysweep/", AgentConfig=hostile)
    for shell in ("sh", "dash", "bash"):
        if shutil.which(shell):
            subprocess.run([shell, "-n"], input=script, text=True, check=True, timeout=10)
    # the configuration lands verbatim in the file (a quoted here-document: nothing expanded)
    assert f"<<'KEYSWEEP_AGENT_YAML_END'\n{hostile}\nKEYSWEEP_AGENT_YAML_END\n" in script


def test_ssm_document_and_association_are_accepted_by_the_ssm_api(moto_server: object) -> None:
    import boto3

    ssm = boto3.client("ssm")
    content = (PACKAGING / "ssm" / "keysweep-install.yaml").read_text()
    association = json.loads((PACKAGING / "ssm" / "association.json").read_text())
    created = ssm.create_document(
        Content=content, Name=association["Name"], DocumentType="Command", DocumentFormat="YAML"
    )["DocumentDescription"]
    assert created["SchemaVersion"] == "2.2" and created["DocumentType"] == "Command"
    declared = {p["Name"]: p for p in ssm.describe_document(Name=association["Name"])["Document"]["Parameters"]}
    assert set(declared) == set(ssm_document()["parameters"])
    # moto has no State Manager associations: the example is checked against the API model and the document
    assert botocore_errors("ssm", "CreateAssociation", association) == ""
    assert set(association["Parameters"]) <= set(declared)
    required = {name for name, spec in ssm_document()["parameters"].items() if "default" not in spec}
    assert required <= set(association["Parameters"])
    spec = ssm_document()["parameters"]
    for name, (value,) in association["Parameters"].items():
        assert re.fullmatch(spec[name].get("allowedPattern", ".*"), value, re.S), name
        assert value in spec[name].get("allowedValues", [value]), name
