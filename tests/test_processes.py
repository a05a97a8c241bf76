"""Process environments of real child processes: exact pairing, attribution, host-role credentials, own process."""

from __future__ import annotations

import os
import pwd
import resource
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st
from keysweep.models import Finding
from keysweep.scan import ScanStats
from keysweep.sources.processes import MAX_ENVIRON, parse_cgroup, parse_environ, read_environ, scan_processes

from tests.support.hosttree import make_detector

KEY, SECRET = "AKIAXYZDQCEN4B6JSJQI", "Zq3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"
TMP_KEY = "ASIAY34FZKBOKMUTVV7A"
TOKEN = "IQoJb3JpZ2luX2VjE" + "Qx7/+Ab3vY8pL0mN2bX7" * 15
OTHER_KEY, OTHER_SECRET = "AKIASP2TPHJSQH3FJRUX", "Ab3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"


@contextmanager
def child(env: dict[str, str]) -> Iterator[int]:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={"PATH": "/usr/bin:/bin", **env})
    try:
        yield p.pid
    finally:
        p.kill()
        p.wait()


def _mine(pid: int, **env: str) -> tuple[list[Finding], ScanStats]:
    stats = ScanStats()
    found, _ = scan_processes(make_detector(), stats)
    return [f for f in found if f.location.pid == pid], stats


@pytest.mark.timeout(30)
def test_environment_pair_is_exact_and_attributed() -> None:
    with child({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "LANG": "C"}) as pid:
        found, stats = _mine(pid)
    assert len(found) == 1
    f = found[0]
    assert (f.key_id, f.has_secret, f.pairing) == (KEY, True, "environment")
    assert f.secret is not None and f.secret.reveal() == SECRET
    loc = f.location
    assert loc.kind == "process" and loc.pid == pid and loc.variable == "AWS_ACCESS_KEY_ID"
    assert loc.exe is not None and os.path.basename(loc.exe).startswith("python")
    assert loc.user == pwd.getpwuid(os.geteuid()).pw_name
    assert stats.processes_scanned >= 1


@pytest.mark.timeout(30)
def test_other_variables_are_scanned_as_text_with_their_names() -> None:
    env = {"APP_S3_CREDENTIALS": f"{OTHER_KEY}:{OTHER_SECRET}", "DATABASE_URL": "postgres://x@db/app"}
    with child(env) as pid:
        found, _ = _mine(pid)
    assert [(f.key_id, f.has_secret, f.location.variable) for f in found] == [(OTHER_KEY, True, "APP_S3_CREDENTIALS")]


@pytest.mark.timeout(30)
def test_temporary_key_with_token_is_paired() -> None:
    with child({"AWS_ACCESS_KEY_ID": TMP_KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}) as pid:
        found, _ = _mine(pid)
    assert len(found) == 1 and found[0].has_session_token and found[0].key_type == "temporary"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "runtime",
    [
        {"AWS_LAMBDA_FUNCTION_NAME": "fn", "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12"},
        {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"},
        {"AWS_ROLE_ARN": "arn:aws:iam::1:role/r", "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token"},
    ],
)
def test_runtime_role_credentials_are_not_findings(runtime: dict[str, str]) -> None:
    env = {"AWS_ACCESS_KEY_ID": TMP_KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN, **runtime}
    with child(env) as pid:
        found, stats = _mine(pid)
    assert found == []
    assert stats.skipped["host-role-credentials"] >= 1


@pytest.mark.timeout(30)
def test_a_long_term_key_in_a_lambda_environment_is_still_a_finding() -> None:
    env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_LAMBDA_FUNCTION_NAME": "fn"}
    with child(env) as pid:
        found, _ = _mine(pid)
    assert [f.key_id for f in found] == [KEY]


def test_own_process_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    # os.environ changes do not reach /proc/self/environ; a re-exec'd child shows what the scanner would hold
    code = (
        "import json,sys; from keysweep.sources.processes import scan_processes; from keysweep.scan import ScanStats;"
        "from tests.support.hosttree import make_detector;"
        "f,_=scan_processes(make_detector(), ScanStats()); import os;"
        "print(json.dumps([x.location.pid for x in f if x.key_id == sys.argv[1]]), os.getpid())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, KEY],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=os.path.dirname(os.path.dirname(__file__)),
        timeout=60,
    )
    pids, own = out.stdout.split()
    assert int(own) not in __import__("json").loads(pids)


def test_parse_cgroup_units_and_containers() -> None:
    cid = "4f1d2c3b" * 8
    assert parse_cgroup("0::/system.slice/nginx.service\n") == parse_cgroup("0::/system.slice/nginx.service")
    assert parse_cgroup("0::/system.slice/nginx.service").unit == "nginx.service"
    docker = parse_cgroup(f"0::/system.slice/docker-{cid}.scope\n")
    assert docker.container_id == cid and docker.unit is None
    k8s = parse_cgroup(f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-pod1.slice/cri-containerd-{cid}.scope")
    assert k8s.container_id == cid
    crio = parse_cgroup(f"0::/kubepods/burstable/pod1/crio-{cid}.scope")
    assert crio.container_id == cid
    v1 = parse_cgroup(f"12:memory:/docker/{cid}\n1:name=systemd:/docker/{cid}\n")
    assert v1.container_id == cid
    podman = parse_cgroup(f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{cid}.scope/container")
    assert podman.container_id == cid and podman.unit == "user@1000.service"
    user = parse_cgroup("0::/user.slice/user-1000.slice/user@1000.service/app.slice/backup.service")
    assert user.unit == "backup.service"
    assert parse_cgroup("0::/") == parse_cgroup("")


def test_parse_environ_keeps_values_with_equals_and_drops_junk() -> None:
    assert parse_environ(b"A=1\0B=x=y\0junk\0=nameless\0C=\0") == [("A", "1"), ("B", "x=y"), ("C", "")]


# --- /proc/PID/environ is hostile bytes ------------------------------------------------------------------------

_NAME = st.binary(min_size=1, max_size=40).filter(lambda b: b"=" not in b and b"\0" not in b)
_VALUE = st.binary(max_size=300).filter(lambda b: b"\0" not in b)


@given(st.lists(st.tuples(_NAME, _VALUE), max_size=30))
def test_parse_environ_is_lossless_on_any_bytes(items: list[tuple[bytes, bytes]]) -> None:
    data = b"".join(n + b"=" + v + b"\0" for n, v in items)
    got = parse_environ(data)
    assert [(n.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")) for n, v in got] == items


@given(st.binary(max_size=2000))
def test_parse_environ_never_fails_and_every_item_came_from_the_input(data: bytes) -> None:
    for name, value in parse_environ(data):
        raw = name.encode("utf-8", "surrogateescape") + b"=" + value.encode("utf-8", "surrogateescape")
        assert name and raw in data.split(b"\0")


@pytest.mark.timeout(30)
def test_undecodable_names_and_values_keep_their_bytes(tmp_path) -> None:
    creds = tmp_path.joinpath(os.fsdecode(b"cr\xe9ds\xff"))  # a file name that is not UTF-8
    creds.write_text(f"[p]\naws_access_key_id={OTHER_KEY}\naws_secret_access_key={OTHER_SECRET}\n")
    env = {
        b"CFG_\xff": f"{KEY}:{SECRET}".encode() + b" \xfe\xfd",
        b"AWS_SHARED_CREDENTIALS_FILE": os.fsencode(creds),
    }
    with child(env) as pid:
        stats = ScanStats()
        found, files = scan_processes(make_detector(), stats)
    found = [f for f in found if f.location.pid == pid]
    assert [(f.key_id, f.has_secret, f.location.variable) for f in found] == [(KEY, True, "CFG_\\xff")]
    (named,) = [f for f in files if f.root == f"/proc/{pid}/root"]
    assert named.inside == str(creds) and named.shown == str(tmp_path) + "/cr\\xe9ds\\xff"


def _raise_stack_limit() -> None:
    resource.setrlimit(resource.RLIMIT_STACK, (64 * 1024 * 1024, resource.RLIM_INFINITY))


@pytest.mark.timeout(60)
def test_an_environment_larger_than_the_bound_is_read_only_up_to_it() -> None:
    # one string may hold at most 128 KiB at exec; many of them, with a raised stack limit, pass 2 MiB
    filler = {f"FILLER_{i}": "x" * 120_000 for i in range(20)}
    env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, **filler, "ZZ_LATE": f"{OTHER_KEY}"}
    p = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={"PATH": "/usr/bin:/bin", **env},
        preexec_fn=_raise_stack_limit,
    )
    try:
        data, truncated = read_environ(p.pid)
        stats = ScanStats()
        found, _ = scan_processes(make_detector(), stats)
    finally:
        p.kill()
        p.wait()
    assert truncated and len(data) <= MAX_ENVIRON and data.endswith(b"\0")
    assert stats.skipped["environ-truncated"] >= 1
    mine = [f for f in found if f.location.pid == p.pid]
    assert [(f.key_id, f.has_secret) for f in mine] == [(KEY, True)]  # the variable past the bound is not read
