"""AWS shared credentials and config files: per-profile pairing, profile kinds, malformed files, homes."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keysweep.scan import ScanOptions, ScanStats, run_scan
from keysweep.sources import aws_files
from keysweep.sources.aws_files import AwsFile, home_files, scan_aws_files, scan_aws_text
from keysweep.sources.processes import scan_processes

from tests.support.cli import run_keysweep
from tests.support.fifo_writer import fifo_with_blocked_writer
from tests.support.hosttree import cli_env, make_detector

REPO = Path(__file__).resolve().parent.parent
K1, S1 = "AKIAXYZDQCEN4B6JSJQI", "Zq3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"
K2, S2 = "AKIASP2TPHJSQH3FJRUX", "Ab3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"
T1 = "ASIAY34FZKBOKMUTVV7A"
TOKEN = "FwoGZXIvYXdzE" + "Qx7/+Ab3vY8pL0mN2bX7" * 15


def _scan(text: str, kind: str = "aws-credentials") -> tuple[list, ScanStats]:
    stats = ScanStats()
    found = scan_aws_text(text.encode(), "/home/u/.aws/credentials", kind, make_detector(), stats, user="u")
    return found, stats


def test_profiles_pair_exactly_even_when_secrets_are_far_apart() -> None:
    # the second profile's secret is nearer to the first id than the first profile's own secret
    text = (
        f"[a]\naws_access_key_id = {K1}\nregion = us-east-1\n"
        + "".join(f"opt{i} = {i}\n" for i in range(60))
        + f"aws_secret_access_key = {S1}\n"
        f"[b]\naws_secret_access_key={S2}\nAWS_ACCESS_KEY_ID={K2}\n"
    )
    found, stats = _scan(text)
    got = {(f.location.profile, f.key_id, f.secret.reveal(), f.pairing) for f in found}
    assert got == {("a", K1, S1, "profile"), ("b", K2, S2, "profile")}
    assert all(f.location.kind == "aws-credentials" and f.location.user == "u" for f in found)
    assert stats.errors == {}


def test_session_token_pairs_with_its_temporary_key() -> None:
    found, _ = _scan(f"[tmp]\naws_access_key_id={T1}\naws_secret_access_key={S1}\naws_session_token={TOKEN}\n")
    assert len(found) == 1 and found[0].has_session_token and found[0].session_token.reveal() == TOKEN
    assert found[0].key_type == "temporary"


def test_config_file_profile_names_and_kinds() -> None:
    text = (
        "[default]\nregion=eu-west-1\n"
        f"[profile ci]\naws_access_key_id={K1}\naws_secret_access_key={S1}\n"
        "[profile assume]\nrole_arn=arn:aws:iam::123456789012:role/r\nsource_profile=ci\n"
        "[profile sso]\nsso_session=corp\n[sso-session corp]\nsso_start_url=https://x/start\n"
        "[profile proc]\ncredential_process=/bin/creds\n"
        "[profile old-sso]\nsso_start_url=https://y/start\n"
        "[services dev]\ns3 =\n  endpoint_url = http://localhost\n"
    )
    found, stats = _scan(text, "aws-config")
    assert [(f.location.kind, f.location.profile, f.profile_kind) for f in found] == [("aws-config", "ci", "static")]
    # a role_arn profile whose source_profile holds static keys is not a second finding: the source is one
    assert dict(stats.profiles) == {"other": 1, "static": 1, "role_arn": 1, "sso": 2, "credential_process": 1}
    assert stats.errors == {}


def test_malformed_file_is_reported_and_still_scanned_as_text() -> None:
    text = (
        "this is not ini at all\n"
        f"[good]\naws_access_key_id={K1}\naws_secret_access_key={S1}\n"
        "[broken\n"
        f"export AWS_ACCESS_KEY_ID={K2}\nexport AWS_SECRET_ACCESS_KEY={S2}\n"
    )
    found, stats = _scan(text)
    assert stats.errors["malformed-aws-file"] == 1
    got = {(f.key_id, f.has_secret, f.pairing) for f in found}
    assert (K1, True, "profile") in got
    assert any(k == K2 and has for k, has, _ in got)


def test_examples_and_non_keys_in_profiles() -> None:
    found, stats = _scan(
        "[doc]\naws_access_key_id=AKIAIOSFODNN7EXAMPLE\naws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
        "[test]\naws_access_key_id=testing\naws_secret_access_key=testing\n"
    )
    assert found == []
    assert stats.skipped["example-key"] == 1


def test_home_files_come_from_the_password_file_under_a_prefix(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\nbad line\n"
        "svc:x:998:998::/dev/null:/usr/sbin/nologin\nproc:x:997:997::/proc/self:/usr/sbin/nologin\n"
    )
    files = home_files(str(tmp_path))
    shown = {(f.shown, f.user) for f in files}
    assert ("/home/alice/.aws/credentials", "alice") in shown
    assert ("/root/.aws/config", "root") in shown
    assert all(f.path == str(tmp_path) + f.shown for f in files)
    assert not {f.user for f in files} & {"svc", "proc"}  # a "home" in /dev or /proc is not looked at
    # without a prefix: this host's own password database
    assert any(f.shown == "/root/.aws/credentials" for f in home_files())


def test_each_file_is_read_once_and_a_dotfile_link_names_the_real_file(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "credentials"
    real.parent.mkdir()
    real.write_text(f"[default]\naws_access_key_id={K1}\naws_secret_access_key={S1}\n")
    (tmp_path / "home" / ".aws").mkdir(parents=True)
    (tmp_path / "home" / ".aws" / "credentials").symlink_to(real)  # same owner as the file: followed
    files = [
        AwsFile(path=str(tmp_path / "home/.aws/credentials"), shown="/home/u/.aws/credentials", kind="aws-credentials"),
        AwsFile(path=str(real), shown=str(real), kind="aws-credentials"),
        AwsFile(path=str(tmp_path / "missing"), shown="/missing", kind="aws-credentials"),
    ]
    stats = ScanStats()
    handled: set[tuple[int, int]] = set()
    opts = ScanOptions(sources=("aws-files",))
    found = scan_aws_files(files, make_detector(), opts, stats, handled=handled)
    assert [(f.location.path, f.location.named_path, f.location.user) for f in found] == [
        (str(real), "/home/u/.aws/credentials", pwd.getpwuid(os.geteuid()).pw_name)
    ]
    assert stats.aws_files_scanned == 1 and handled == {(real.stat().st_dev, real.stat().st_ino)}
    assert stats.errors == {} and stats.skipped == {}  # a missing file is the normal case


def test_files_walk_parses_aws_files_by_name(tmp_path: Path) -> None:
    d = tmp_path / "u" / ".aws"
    d.mkdir(parents=True)
    (d / "credentials").write_text(f"[p1]\naws_access_key_id={K1}\naws_secret_access_key={S1}\n")
    assert aws_files.aws_file_kind(str(d / "credentials")) == "aws-credentials"
    result = run_scan(ScanOptions(paths=(str(tmp_path),), sources=("files",), workers=1), make_detector())
    assert [(f.location.kind, f.location.profile, f.pairing) for f in result.findings] == [
        ("aws-credentials", "p1", "profile")
    ]


def test_named_files_from_environments_are_read_and_not_reported_twice(tmp_path: Path) -> None:
    import subprocess

    creds = tmp_path / "custom-creds"
    creds.write_text(f"[svc]\naws_access_key_id={K2}\naws_secret_access_key={S2}\n")
    env = {"PATH": os.environ.get("PATH", ""), "AWS_SHARED_CREDENTIALS_FILE": str(creds)}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    try:
        result = run_scan(
            ScanOptions(paths=(str(tmp_path),), sources=("processes", "aws-files", "files"), workers=1),
            make_detector(),
        )
    finally:
        child.kill()
        child.wait()
    # (other processes on a shared machine may hold the same test key in their environment)
    mine = [f for f in result.findings if f.key_id == K2 and f.location.kind != "process"]
    assert [(f.location.kind, f.location.path, f.location.profile) for f in mine] == [
        ("aws-credentials", str(creds), "svc")
    ]


def test_sdk_caches_are_counted_by_the_aws_files_source_alone(tmp_path: Path) -> None:
    aws = tmp_path / ".aws"
    (aws / "cli" / "cache").mkdir(parents=True)
    (aws / "cli" / "cache" / "x.json").write_text('{"Credentials": {"AccessKeyId": "ASIAY34FZKBOKMUTVV7A"}}')
    (aws / "sso" / "cache").mkdir(parents=True)
    (aws / "sso" / "cache" / "y.json").write_text("{}")
    (aws / "credentials").write_text("[default]\nregion=x\n")
    files = [AwsFile(path=str(aws / "credentials"), shown="/home/u/.aws/credentials", kind="aws-credentials")]
    stats = ScanStats()
    found = scan_aws_files(files, make_detector(), ScanOptions(), stats, handled=set(), count_caches=True)
    assert found == [] and stats.skipped["host-role-credentials"] == 2


def test_whole_host_under_a_prefix_reads_that_hosts_users(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n")
    (host / "home/bob/.aws").mkdir(parents=True)
    (host / "home/bob/.aws/credentials").write_text(f"[default]\naws_access_key_id={K1}\naws_secret_access_key={S1}\n")
    os.chown(host / "home/bob/.aws/credentials", 1000, 1000)  # the owner is named from the scanned host's users
    opts = ScanOptions(roots=("/",), sources=("aws-files", "files"), workers=1, path_prefix=str(host))
    result = run_scan(opts, make_detector())
    assert [(f.location.kind, f.location.path, f.location.user, f.location.profile) for f in result.findings] == [
        ("aws-credentials", "/home/bob/.aws/credentials", "bob", "default")
    ]
    assert result.stats.aws_files_scanned == 1
    assert +result.stats.findings_by_source == {"aws-files": 1}  # the walk did not read it again


# --- hostile homes and environments: links, FIFOs, devices, other users' files, container roots --------------

K3, S3 = "AKIAYVP4CIPPERUVIFXG", "Cd3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"
HOST_KEY, HOST_SECRET = "AKIAQQQQRRRRSSSSTTT2", "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"


def _creds(path: Path, key: str, secret: str, uid: int = 0, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[default]\naws_access_key_id={key}\naws_secret_access_key={secret}\n")
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


def _link(path: Path, target: str, uid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    os.lchown(path, uid, uid)


def _hostile_host(host: Path) -> Path:
    """A host tree whose users planted links, a device link and a FIFO path (made by the caller) in their homes."""
    (host / "etc").mkdir(parents=True)
    users = ["root:x:0:0::/root:/bin/sh"] + [
        f"{name}:x:{uid}:{uid}::/home/{name}:/bin/sh"
        for name, uid in (("alice", 1000), ("bob", 1001), ("carol", 1002), ("dave", 1003))
    ]
    (host / "etc/passwd").write_text("\n".join(users) + "\n")
    # alice (listed first) links her credentials to dave's: it must neither hide dave's file nor become alice's
    _creds(host / "home/dave/.aws/credentials", K1, S1, uid=1003)
    _link(host / "home/alice/.aws/credentials", "/home/dave/.aws/credentials", uid=1000)
    # bob: a link to a terminal multiplexer device (and a FIFO as credentials, made by the caller)
    (host / "home/bob/.aws").mkdir(parents=True)
    _link(host / "home/bob/.aws/config", "/dev/ptmx", uid=1001)
    # carol: her own dotfile link (a relative one that climbs past the root, clamped there); a root-owned config
    _creds(host / "dotfiles/carol", K2, S2, uid=1002)
    _link(host / "home/carol/.aws/credentials", "../" * 12 + "dotfiles/carol", uid=1002)
    _creds(host / "home/carol/.aws/config", K3, S3, uid=0).write_text(
        f"[profile x]\naws_access_key_id={K3}\naws_secret_access_key={S3}\n"
    )
    return host / "home/bob/.aws/credentials"


HOSTILE_EXPECTED = {
    (K1, "/home/dave/.aws/credentials", "dave", None, None),
    (K2, "/dotfiles/carol", "carol", "/home/carol/.aws/credentials", None),
    (K3, "/home/carol/.aws/config", "root", None, "carol"),
}


def test_hostile_homes_open_no_fifo_or_device_and_attribute_real_owners(tmp_path: Path) -> None:
    host = tmp_path / "host"
    fifo = _hostile_host(host)
    with fifo_with_blocked_writer(fifo) as writer:
        result = run_scan(ScanOptions(roots=("/",), sources=("aws-files",), path_prefix=str(host)), make_detector())
        assert not writer.released.wait(0.2), "the FIFO was opened"
    got = {
        (f.key_id, f.location.path, f.location.user, f.location.named_path, f.location.named_by)
        for f in result.findings
    }
    assert got == HOSTILE_EXPECTED
    skipped = result.stats.skipped
    assert (skipped["symlink-other-owner"], skipped["not-regular"], skipped["pseudo-fs"]) == (1, 1, 1)
    assert result.stats.aws_files_scanned == 3


@pytest.mark.timeout(120)
def test_hostile_homes_through_the_command_line_twice_with_state(tmp_path: Path) -> None:
    host = tmp_path / "host"
    fifo = _hostile_host(host)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    argv = [
        "scan",
        "--host-prefix",
        str(host),
        "--source",
        "aws-files",
        "--source",
        "files",
        "--state-dir",
        str(state),
        "--format",
        "json",
    ]
    with fifo_with_blocked_writer(fifo) as writer:
        for _ in range(2):
            proc = run_keysweep(*argv, env=cli_env(), cwd=REPO, timeout=100)
            assert proc.returncode == 1, proc.stderr
            report = json.loads(proc.stdout)
            got = {
                tuple(f["location"].get(k) for k in ("path", "user", "named_path", "named_by"))
                for f in report["findings"]
            }
            assert {(p, u, n, b) for _, p, u, n, b in HOSTILE_EXPECTED} <= got
            assert not writer.released.is_set(), "the FIFO was opened"
    assert all("/home/alice" not in (f["location"].get("named_path") or "") for f in report["findings"])


@contextmanager
def _process(env: dict[str, str], *, user: str | None = None, jail: Path | None = None, cwd: str = "/"):
    """A real sleeping process with exactly ``env``, as ``user`` (setpriv) or chrooted into ``jail``."""
    argv = ["/bin/sleep", "60"]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}", "--clear-groups", *argv]

    def enter_jail() -> None:
        assert jail is not None
        os.chroot(jail)
        os.chdir(cwd)

    p = subprocess.Popen(argv, env=env, preexec_fn=enter_jail if jail is not None else None)
    try:
        deadline = time.monotonic() + 5
        # exec of sleep itself done (setpriv's own command line names sleep too): uid and environment are final
        while not Path(f"/proc/{p.pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"sleep"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield p.pid
    finally:
        p.kill()
        p.wait()


def _named_by_process(pid: int) -> tuple[list, ScanStats]:
    stats = ScanStats()
    _, files = scan_processes(make_detector(), stats)
    mine = [f for f in files if f.root == f"/proc/{pid}/root"]
    stats = ScanStats()
    found = scan_aws_files(mine, make_detector(), ScanOptions(), stats, handled=set())
    return found, stats


@pytest.mark.timeout(30)
def test_environment_naming_a_device_or_fifo_opens_neither(tmp_path: Path) -> None:
    with fifo_with_blocked_writer(tmp_path / "fifo") as writer:
        env = {"AWS_SHARED_CREDENTIALS_FILE": "/dev/ptmx", "AWS_CONFIG_FILE": str(tmp_path / "fifo")}
        with _process(env) as pid:
            found, stats = _named_by_process(pid)
        assert not writer.released.wait(0.2), "the FIFO was opened"
    assert found == []
    assert (stats.skipped["pseudo-fs"], stats.skipped["not-regular"]) == (1, 1)


@pytest.mark.timeout(30)
def test_file_named_by_another_users_process_is_reported_as_its_owners(tmp_path: Path) -> None:
    secret_file = _creds(tmp_path / "root-only/credentials", K1, S1, uid=0, mode=0o600)
    with _process({"AWS_SHARED_CREDENTIALS_FILE": str(secret_file)}, user="nobody") as pid:
        found, _ = _named_by_process(pid)
    assert [(f.key_id, f.location.path, f.location.user, f.location.named_by) for f in found] == [
        (K1, str(secret_file), "root", "nobody")
    ]


def _jail(root: Path) -> Path:
    """A minimal root filesystem holding /bin/sleep and the libraries it loads."""
    libs = subprocess.run(["ldd", "/bin/sleep"], capture_output=True, text=True, check=True).stdout
    for path in ["/bin/sleep", *(w for w in libs.split() if w.startswith("/"))]:
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), dest)
    return root


@pytest.mark.timeout(30)
def test_container_paths_resolve_inside_the_process_root_never_on_the_host(tmp_path: Path) -> None:
    host_secret = _creds(tmp_path / "host-only/credentials", HOST_KEY, HOST_SECRET, mode=0o600)
    jail = _jail(tmp_path / "jail")
    _link(jail / "creds", str(host_secret), uid=0)  # absolute: the container's own path of that name
    _link(jail / "app/cfg", "../" * 30 + str(host_secret).lstrip("/"), uid=0)  # climbs: clamped at the jail root
    (jail / "app/conf").mkdir(parents=True)
    _link(jail / "app/conf/escape", "../../../../../../..", uid=0)  # a directory link to "the top"
    env = {"AWS_SHARED_CREDENTIALS_FILE": "/creds", "AWS_CONFIG_FILE": "conf/escape" + str(host_secret)}
    with _process(env, jail=jail, cwd="/app") as pid:
        found, stats = _named_by_process(pid)
        assert found == [] and stats.aws_files_scanned == 0  # the jail holds no such file: nothing is read
        _creds(jail / str(host_secret).lstrip("/"), K3, S3)  # now the container has its own file at that path
        found, stats = _named_by_process(pid)
    assert {(f.key_id, f.location.path, f.location.named_path) for f in found} == {
        (K3, str(host_secret), "/creds"),
    }
    assert HOST_KEY not in {f.key_id for f in found}
    assert stats.aws_files_scanned == 1  # both variables reach the container's one file, read once


# --- the INI parser on attacker-written bytes ------------------------------------------------------------------

_JUNK_LINE = st.text(max_size=60).filter(lambda t: "\n" not in t)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_parse_without_error(data: bytes) -> None:
    stats = ScanStats()
    for f in scan_aws_text(data, "/h/.aws/credentials", "aws-credentials", make_detector(), stats, user="u"):
        assert f.location.path == "/h/.aws/credentials"


@settings(max_examples=200, deadline=None)
@given(st.lists(_JUNK_LINE, max_size=20), st.lists(_JUNK_LINE, max_size=20), st.sampled_from(["\n", "\r\n"]))
def test_a_planted_profile_is_found_paired_on_its_line_whatever_surrounds_it(
    before: list[str], after: list[str], eol: str
) -> None:
    planted = ["[planted]", f"aws_access_key_id = {K1}", f"aws_secret_access_key = {S1}", "[after]"]
    text = eol.join([*before, *planted, *after]) + eol
    stats = ScanStats()
    found = scan_aws_text(text.encode("utf-8", "surrogatepass"), "/c", "aws-credentials", make_detector(), stats)
    mine = [f for f in found if f.location.profile == "planted"]
    assert [(f.key_id, f.secret.reveal() if f.secret else None, f.location.line) for f in mine] == [
        (K1, S1, len(before) + 2)
    ]
