"""The container image built and run for real, the way packaging/kubernetes/ runs it.

The DaemonSet: a planted host tree mounted read-only at /host, uid 0 with only the manifest's two capabilities,
read-only root file system, the manifest's volumes, environment, limits and arguments, no network. The sidecar
example: an application container and the agent sharing a volume (read-only under /host for the agent) and a process
namespace, both as uid 10001, no capability at all. In both, the planted keys must be reported in the JSON log
with /host stripped, and the image's health check must pass. The docker run flags are derived from the manifests,
so a change there is what gets run. Not reproduced: hostPID (the agent gets its own process namespace here, so
that it does not read the environments of this machine's processes) and the SQS queue (no network: findings stay
spooled, which the log says). Runs when a Docker engine answers (`make image-test` starts one and builds the image
first); skipped otherwise.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import subprocess
from pathlib import Path

import pytest
import yaml
from keysweep import __version__

from tests.support.docker import (
    NO_ENGINE,
    REPO,
    container,
    docker,
    engine_available,
    health,
    json_events,
    logs,
    wait_for,
)
from tests.support.locks import lock_version
from tests.support.planted import Planted, planted_key

pytestmark = [pytest.mark.docker, pytest.mark.skipif(not engine_available(), reason=NO_ENGINE)]

IMAGE = f"keysweep:{__version__}"
KUBERNETES = REPO / "packaging" / "kubernetes"
# capability bit numbers (linux/capability.h)
CAP_BITS = {"DAC_READ_SEARCH": 2, "SYS_PTRACE": 19}


@pytest.fixture(scope="session")
def image() -> str:
    """keysweep:<version>, (re)built by `make image` (the Docker layer cache makes an unchanged rebuild quick)."""
    out = subprocess.run(
        ["make", "--no-print-directory", "image"], cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return IMAGE


def manifest(name: str) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text()) if doc}


def quantity_bytes(value: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return int(value[: -len(suffix)]) * factor
    return int(value)


def cpus(value: str) -> str:
    return str(int(value[:-1]) / 1000) if value.endswith("m") else value


def agent_yaml(configmap: dict, tmp: Path) -> Path:
    """The ConfigMap's agent.yaml with one change: no random delay before the first sweep (splay 0)."""
    config = yaml.safe_load(configmap["data"]["agent.yaml"])
    config.setdefault("schedule", {})["splay"] = "0s"
    directory = tmp / f"config-{configmap['metadata']['name']}"
    directory.mkdir(mode=0o755)
    (directory / "agent.yaml").write_text(yaml.safe_dump(config))
    (directory / "agent.yaml").chmod(0o644)
    return directory


def run_flags(pod: dict, spec: dict, sources: dict[str, str | None]) -> list[str]:
    """docker run flags for one container of a pod spec. ``sources``: volume name -> host directory (None for an
    in-memory emptyDir)."""
    security = {**pod.get("securityContext", {}), **spec.get("securityContext", {})}
    flags = ["--network", "none"]
    user = str(security["runAsUser"])
    flags += ["--user", f"{user}:{security.get('runAsGroup', user)}"]
    if "fsGroup" in security:
        flags += ["--group-add", str(security["fsGroup"])]
    if security.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    assert not security.get("privileged")
    caps = security.get("capabilities", {})
    flags += [f"--cap-drop={c}" for c in caps.get("drop", [])] + [f"--cap-add={c}" for c in caps.get("add", [])]
    for env in spec.get("env", []):
        value = env.get("value", "test-node" if "valueFrom" in env else "")
        flags += ["-e", f"{env['name']}={value}"]
    limits = spec.get("resources", {}).get("limits", {})
    if "memory" in limits:
        flags += ["--memory", str(quantity_bytes(limits["memory"]))]
    if "cpu" in limits:
        flags += ["--cpus", cpus(limits["cpu"])]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in spec["volumeMounts"]:
        volume = volumes[mount["name"]]
        source = sources[mount["name"]]
        if source is None:
            assert volume.get("emptyDir", {}).get("medium") == "Memory", mount["name"]
            size = quantity_bytes(volume["emptyDir"].get("sizeLimit", "64Mi"))
            flags += ["--tmpfs", f"{mount['mountPath']}:size={size}"]
        else:
            flags += ["-v", f"{source}:{mount['mountPath']}{':ro' if mount.get('readOnly') else ''}"]
    # the image's own health check (= the manifests' liveness probe), checked often enough for a test
    flags += ["--health-interval", "2s"]
    return flags


def plant(root: Path, rel: str, key: Planted, *, owner: int = 0, mode: int = 0o600) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"aws_access_key_id = {key.key_id}\naws_secret_access_key = {key.secret}\n")
    os.chown(path, owner, owner)
    path.chmod(mode)


def cap_eff(name: str) -> int:
    """The effective capabilities of the container's main process (the agent), read from this host's /proc."""
    pid = docker("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("CapEff:")), 16)


def findings(name: str) -> list[dict]:
    return [e for e in json_events(name) if e.get("event") == "finding"]


def first_sweep_done(name: str) -> bool:
    return any(e.get("event") == "sweep.finished" for e in json_events(name))


def test_image_healthcheck_is_the_manifests_liveness_probe(image: str) -> None:
    test = json.loads(docker("image", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", image).stdout)
    daemonset = manifest("daemonset.yaml")["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    assert test == ["CMD", *daemonset["livenessProbe"]["exec"]["command"]]
    assert daemonset["image"] == image, "the DaemonSet names another version than the one built"


def test_image_scans_with_the_native_passes_of_its_lock(image: str, tmp_path: Path) -> None:
    """The image carries the Hyperscan (x86-64) and ISA-L releases of packaging/requirements.lock and the scan uses
    them: the gate, and ISA-L inflating a gzip log."""
    key, logged = planted_key(803), planted_key(804)
    app = tmp_path / "host/srv/app"
    app.mkdir(parents=True)
    (app / ".env").write_text(f"aws_access_key_id={key.key_id}\naws_secret_access_key={key.secret}\n")
    (app / "debug.log.1.gz").write_bytes(gzip.compress(f"key={logged.key_id} secret={logged.secret}\n".encode()))
    for path in (tmp_path / "host", tmp_path / "host/srv", app, app / ".env", app / "debug.log.1.gz"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the image's user (10001) reads it
    scan = docker(
        "run", "--rm", "--network", "none", "--read-only", "-v", f"{tmp_path / 'host'}:/host:ro", image,
        "scan", "--format", "json", "--workers", "1", "/host",
        check=False,
    )  # fmt: skip
    assert scan.returncode == 1, scan.stderr
    report = json.loads(scan.stdout)
    assert sorted(f["key_id"] for f in report["findings"]) == sorted([key.key_id, logged.key_id])
    hyperscan = lock_version("requirements.lock", "hyperscan")
    expected = f"hyperscan {hyperscan}" if platform.machine() == "x86_64" else "none"
    assert report["summary"]["detection_gate"] == expected
    assert report["summary"]["inflate"] == f"isal {lock_version('requirements.lock', 'isal')}"


@pytest.mark.skipif(os.geteuid() != 0, reason="planting root-only files needs root")
def test_image_runs_as_the_daemonset_does(image: str, tmp_path: Path) -> None:
    docs = manifest("daemonset.yaml")
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    (spec,) = pod["containers"]
    host = tmp_path / "host"
    root_only, other_user = planted_key(801), planted_key(802)
    plant(host, "etc/app/env", root_only)
    (host / "etc/app").chmod(0o700)
    plant(host, "home/dev/.aws/credentials", other_user, owner=1000)
    (host / "home/dev").chmod(0o700)
    os.chown(host / "home/dev", 1000, 1000)
    state = tmp_path / "state"  # hostPath DirectoryOrCreate: created by the kubelet as root, 0755
    state.mkdir(mode=0o755)
    sources = {
        "host-root": str(host),
        "state": str(state),
        "config": str(agent_yaml(docs["ConfigMap"], tmp_path)),
        "tmp": None,
    }
    with container(*run_flags(pod, spec, sources), image, *spec["args"]) as name:
        wait_for("first sweep finished", lambda: first_sweep_done(name), 120, lambda: logs(name)[-4000:])
        wait_for("health check passing", lambda: health(name) == "healthy", 60, lambda: logs(name)[-2000:])
        reported = {(f["key_id"], f["location"]["path"]) for f in findings(name)}
        assert (root_only.key_id, "/etc/app/env") in reported, logs(name)[-4000:]
        assert (other_user.key_id, "/home/dev/.aws/credentials") in reported, logs(name)[-4000:]
        assert not any(path.startswith("/host") for _, path in reported)
        text = logs(name)
        assert root_only.secret not in text and other_user.secret not in text
        # uid 0 with exactly the two capabilities, nothing writable but the state and /tmp
        assert docker("exec", name, "id", "-u").stdout.strip() == "0"
        assert cap_eff(name) == sum(1 << CAP_BITS[c] for c in spec["securityContext"]["capabilities"]["add"])
        for target in ("/opt/probe", "/host/probe", "/etc/keysweep/probe"):
            assert docker("exec", name, "touch", target, check=False).returncode != 0, target
        assert not (host / "probe").exists()
        assert docker("exec", name, "touch", "/var/lib/keysweep/probe", check=False).returncode == 0


def test_image_runs_as_the_sidecar_example_does(image: str, tmp_path: Path) -> None:
    docs = manifest("sidecar-example.yaml")
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    specs = {c["name"]: c for c in pod["containers"]}
    app_spec, agent_spec = specs["app"], specs["keysweep"]
    file_key, env_key = planted_key(811), planted_key(812)
    shared = tmp_path / "app-data"  # emptyDir: world-writable, like the kubelet makes it
    shared.mkdir()
    shared.chmod(0o777)
    state = tmp_path / "keysweep-state"
    state.mkdir()
    state.chmod(0o777)
    app_mount = next(m["mountPath"] for m in app_spec["volumeMounts"] if m["name"] == "app-data")
    writer = (
        f"mkdir -p {app_mount}/config && printf 'aws_access_key_id={file_key.key_id}\\n"
        f"aws_secret_access_key={file_key.secret}\\n' > {app_mount}/config/.env && exec sleep 600"
    )
    security = pod["securityContext"]
    app_flags = [
        "--network",
        "none",
        "--user",
        f"{security['runAsUser']}:{security['runAsGroup']}",
        "-v",
        f"{shared}:{app_mount}",
        "-e",
        f"AWS_ACCESS_KEY_ID={env_key.key_id}",
        "-e",
        f"AWS_SECRET_ACCESS_KEY={env_key.secret}",
        "--entrypoint",
        "sh",
    ]
    with container(*app_flags, image, "-c", writer) as app:
        wait_for("the application wrote its file", lambda: (shared / "config/.env").exists(), 30, lambda: logs(app))
        sources = {
            "app-data": str(shared),
            "keysweep-state": str(state),
            "keysweep-config": str(agent_yaml(docs["ConfigMap"], tmp_path)),
        }
        assert pod["shareProcessNamespace"] is True
        flags = [*run_flags(pod, agent_spec, sources), "--pid", f"container:{app}"]
        with container(*flags, image, *agent_spec["args"]) as name:
            wait_for("first sweep finished", lambda: first_sweep_done(name), 120, lambda: logs(name)[-4000:])
            wait_for("health check passing", lambda: health(name) == "healthy", 60, lambda: logs(name)[-2000:])
            reported = {(f["key_id"], f["location"]["kind"], f["location"].get("path")) for f in findings(name)}
            assert (file_key.key_id, "file", f"{app_mount}/config/.env") in reported, logs(name)[-4000:]
            assert any(key == env_key.key_id and kind == "process" for key, kind, _ in reported), reported
            assert file_key.secret not in logs(name) and env_key.secret not in logs(name)
            assert docker("exec", name, "id", "-u").stdout.strip() == str(agent_spec["securityContext"]["runAsUser"])
            assert cap_eff(name) == 0
