"""AWS shared credentials and config files: per-profile pairing, profile kinds, malformed files, homes."""

from __future__ import annotations

import os
from pathlib import Path

from keysweep.scan import ScanOptions, ScanStats, run_scan
from keysweep.sources import aws_files
from keysweep.sources.aws_files import AwsFile, home_files, scan_aws_files, scan_aws_text

from tests.support.hosttree import make_detector

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
    )
    files = home_files(str(tmp_path))
    shown = {(f.shown, f.user) for f in files}
    assert ("/home/alice/.aws/credentials", "alice") in shown
    assert ("/root/.aws/config", "root") in shown
    assert all(f.path == str(tmp_path) + f.shown for f in files)
    # without a prefix: this host's own password database
    assert any(f.shown == "/root/.aws/credentials" for f in home_files())


def test_each_file_is_read_once_and_symlinked_files_are_followed(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "credentials"
    real.parent.mkdir()
    real.write_text(f"[default]\naws_access_key_id={K1}\naws_secret_access_key={S1}\n")
    (tmp_path / "home" / ".aws").mkdir(parents=True)
    (tmp_path / "home" / ".aws" / "credentials").symlink_to(real)
    files = [
        AwsFile(path=str(tmp_path / "home/.aws/credentials"), shown="/home/u/.aws/credentials", kind="aws-credentials"),
        AwsFile(path=str(real), shown="/elsewhere", kind="aws-credentials"),
        AwsFile(path=str(tmp_path / "missing"), shown="/missing", kind="aws-credentials"),
    ]
    stats = ScanStats()
    handled: set[tuple[int, int]] = set()
    opts = ScanOptions(sources=("aws-files",))
    found = scan_aws_files(files, make_detector(), opts, stats, handled=handled)
    assert [f.location.path for f in found] == ["/home/u/.aws/credentials"]
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
    import sys

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
    opts = ScanOptions(roots=("/",), sources=("aws-files", "files"), workers=1, path_prefix=str(host))
    result = run_scan(opts, make_detector())
    assert [(f.location.kind, f.location.path, f.location.user, f.location.profile) for f in result.findings] == [
        ("aws-credentials", "/home/bob/.aws/credentials", "bob", "default")
    ]
    assert result.stats.aws_files_scanned == 1
    assert +result.stats.findings_by_source == {"aws-files": 1}  # the walk did not read it again
