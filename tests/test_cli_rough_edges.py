"""What a new user meets first: regions, missing stores, missing credentials, help, and what a scan could not read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from keysweep.cli import _COMMAND_MODULES, main

from tests.support.central import make_queues, send, sqs_client
from tests.support.hosttree import cli_env
from tests.support.messages import finding_message, host

REPO = Path(__file__).resolve().parent.parent
KEY, SECRET = "AKIAXYZDQCEN4B6JSJQI", "Zq3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"
PAIR = f"AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY={SECRET}\n"
CREDENTIALS = f"[default]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n"


def _cli(
    *args: str, user: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "keysweep", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env or cli_env(), cwd=REPO, timeout=timeout)


def _no_region(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)


# ------------------------------------------------------------------------------------------------ regions


@pytest.mark.timeout(60)
def test_collect_takes_the_region_from_the_queue_url(moto_server, monkeypatch, tmp_path, capsys) -> None:
    sqs = sqs_client()
    q = make_queues(sqs)
    send(sqs, q.url, [finding_message(host_info=host("build-1", "build-1", "on-premises"))])
    _no_region(monkeypatch)
    name = q.url.rstrip("/").rsplit("/", 1)[1]
    url = f"https://sqs.us-east-1.amazonaws.com/123456789012/{name}"  # as the console shows it
    db = tmp_path / "fleet.db"
    assert main(["collect", "--queue-url", url, "--db", str(db), "--once", "--wait-seconds", "0"]) == 0
    assert "stored=1 " in capsys.readouterr().err


def test_collect_without_any_region_is_one_clear_line_and_creates_nothing(monkeypatch, tmp_path, capsys) -> None:
    _no_region(monkeypatch)
    db = tmp_path / "fleet.db"
    code = main(["collect", "--queue-url", "http://127.0.0.1:1/123456789012/q", "--db", str(db), "--once"])
    err = capsys.readouterr().err
    assert code == 2 and not db.exists()
    assert err.count("\n") == 1 and "no AWS region" in err and "--region" in err and "Traceback" not in err


@pytest.mark.timeout(60)
def test_scan_with_a_queue_and_no_region_fails_before_it_scans_or_creates_state(tmp_path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.env").write_text(PAIR)
    state = tmp_path / "state"
    proc = _cli(
        "scan",
        str(tmp_path / "tree"),
        "--queue-url",
        "http://127.0.0.1:1/123456789012/q",
        "--state-dir",
        str(state),
        env=cli_env(AWS_CONFIG_FILE=os.devnull),
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "no AWS region" in proc.stderr
    assert proc.stdout == "" and not state.exists()


def test_region_in_the_queue_url() -> None:
    from keysweep.aws import region_in_url

    assert region_in_url("https://sqs.eu-west-1.amazonaws.com/123456789012/q") == "eu-west-1"
    assert region_in_url("https://sqs.us-gov-west-1.amazonaws.com/123456789012/q") == "us-gov-west-1"
    assert region_in_url("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q") == "cn-north-1"
    assert (
        region_in_url("https://vpce-0a1b-2c3d.sqs.ap-southeast-2.vpce.amazonaws.com/123456789012/q") == "ap-southeast-2"
    )
    assert region_in_url("http://127.0.0.1:4566/123456789012/q") is None


# ---------------------------------------------------------------------------------------- report and audit


def test_report_on_a_missing_store_says_to_collect_first(tmp_path, capsys) -> None:
    db = tmp_path / "missing.db"
    assert main(["report", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "keysweep collect" in err and str(db) in err and not db.exists()
    assert main(["audit", "--db", str(db), "--deactivate", KEY, "--yes"]) in (2, 3)
    assert not db.exists()


@pytest.mark.timeout(60)
def test_audit_without_credentials_says_how_to_give_them_and_prints_nothing_else(tmp_path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = cli_env(
        HOME=str(home),
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION="us-east-1",
    )
    proc = _cli("audit", env=env)
    assert proc.returncode == 2
    assert proc.stdout == ""  # no SCP, no `aws organizations` commands for an account never audited
    assert proc.stderr.count("\n") == 1 and "no AWS credentials" in proc.stderr
    assert "AWS_PROFILE" in proc.stderr and "AWS_ACCESS_KEY_ID" in proc.stderr


# ------------------------------------------------------------------------------------------------------ help


def test_bare_keysweep_says_a_command_is_required_and_lists_them(capsys) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "a command is required" in err
    for command in _COMMAND_MODULES:
        assert f"\n    {command} " in err


@pytest.mark.parametrize("command", [[name] for name in _COMMAND_MODULES] + [["rules", "check"], ["config", "check"]])
def test_every_command_has_a_description(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    out = capsys.readouterr().out
    usage_end = out.index("\n\n")
    description = out[usage_end + 2 :].split("\n\n", 1)[0]
    assert not description.startswith(("positional arguments", "options")), out


def test_scan_help_lists_every_exit_code(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["scan", "--help"])
    out = capsys.readouterr().out
    for code in ("0", "1", "2", "3", "130"):
        assert f"\n  {code} " in out
    assert "--strict" in out


# ------------------------------------------------------------------------------------ what was not read


def _unread_tree(root: Path) -> None:
    (root / "clean.txt").write_text("nothing here\n")
    (root / "clean.txt").chmod(0o644)
    (root / "private.env").write_text(PAIR)
    (root / "private.env").chmod(0o600)
    (root / "locked").mkdir(mode=0o700)
    (root / "locked" / "inner.env").write_text(PAIR)
    (root / "big.bin").write_bytes(b"\0" * 8192)
    (root / "big.bin").chmod(0o644)


@pytest.mark.root
@pytest.mark.timeout(180)
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_unread_files_are_named_and_strict_makes_the_scan_fail(shared_tree: Path, workers: str) -> None:
    _unread_tree(shared_tree)
    common = ("scan", str(shared_tree), "--max-file-size", "4KiB", "--workers", workers, "--format", "json")
    plain = _cli(*common, user="nobody")
    assert plain.returncode == 0, plain.stderr  # nothing found: still 0 without --strict
    summary = json.loads(plain.stdout)["summary"]
    places = {(p["reason"], p["path"]) for p in summary["incomplete"]["places"]}
    assert {
        ("permission-denied", f"{shared_tree}/private.env"),
        ("permission-denied", f"{shared_tree}/locked"),
        ("too-large", f"{shared_tree}/big.bin"),
    } <= places
    assert summary["incomplete"]["count"] == len(places) and summary["incomplete"]["not_listed"] == 0
    assert f"{shared_tree}/private.env (permission-denied)" in plain.stderr
    assert "not read or partly read" in plain.stderr

    strict = _cli(*common, "--strict", user="nobody")
    assert strict.returncode == 3 and "--strict" in strict.stderr
    sarif = _cli("scan", str(shared_tree), "--max-file-size", "4KiB", "--format", "sarif", "--strict", user="nobody")
    assert sarif.returncode == 3
    run_summary = json.loads(sarif.stdout)["runs"][0]["properties"]["summary"]
    assert {p["path"] for p in run_summary["incomplete"]["places"]} == {p for _, p in places}


@pytest.mark.timeout(60)
def test_a_partly_scanned_archive_is_named(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "app.whl", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/zeros.bin", b"\0" * 20_000_000)  # past 8 MiB and 100 times the wheel's size
        zf.writestr("pkg/later.env", PAIR)
    proc = _cli("scan", str(tmp_path), "--format", "json", "--strict", "--workers", "1")
    summary = json.loads(proc.stdout)["summary"]
    assert proc.returncode == 3, proc.stderr
    assert summary["incomplete"]["places"] == [{"reason": "archive-ratio", "path": f"{tmp_path}/app.whl"}]
    assert f"{tmp_path}/app.whl (archive-ratio)" in proc.stderr
    sarif = _cli("scan", str(tmp_path), "--format", "sarif", "--workers", "1")
    assert sarif.returncode == 0  # without --strict: nothing found
    notes = json.loads(sarif.stdout)["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert [
        (n["descriptor"]["id"], n["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]) for n in notes
    ] == [("archive-ratio", f"file://{tmp_path}/app.whl")]


@pytest.mark.timeout(60)
def test_a_complete_clean_scan_is_0_even_with_strict_and_the_summary_has_no_zero_counts(tmp_path: Path) -> None:
    (tmp_path / "clean.txt").write_text("nothing here\n")
    proc = _cli("scan", str(tmp_path), "--strict", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["incomplete"] == {"count": 0, "places": [], "not_listed": 0}
    assert proc.stderr.splitlines() == [proc.stderr.splitlines()[0]]  # one line: no empty skipped/errors lines
    assert "no findings" in proc.stderr and " 0 " not in proc.stderr.replace("0.0 s", "")


# ----------------------------------------------------------------------------------- aws-files with PATHs


@pytest.mark.timeout(60)
def test_aws_files_source_reads_only_under_the_given_paths(tmp_path: Path) -> None:
    homes = tmp_path / "home"
    for user in ("alice", "bob"):
        (homes / user / ".aws").mkdir(parents=True)
    (homes / "alice" / ".aws" / "credentials").write_text(CREDENTIALS)
    (homes / "bob" / ".aws" / "config").write_text("[profile sso]\nsso_session = corp\n")
    (tmp_path / "elsewhere.env").write_text(PAIR)  # not an AWS file: the aws-files source does not read it

    proc = _cli("scan", str(homes), "--source", "aws-files", "--format", "json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert [f["location"]["path"] for f in doc["findings"]] == [f"{homes}/alice/.aws/credentials"]
    assert doc["summary"]["aws_files_scanned"] == 2 and doc["summary"]["profiles"] == {"sso": 1, "static": 1}

    one = _cli("scan", str(homes / "bob"), "--source", "aws-files", "--format", "json")
    assert one.returncode == 0 and json.loads(one.stdout)["summary"]["aws_files_scanned"] == 1
    named = _cli("scan", str(homes / "alice" / ".aws" / "credentials"), "--source", "aws-files", "--format", "json")
    assert named.returncode == 1 and json.loads(named.stdout)["findings"][0]["location"]["profile"] == "default"


# ------------------------------------------------------------------------------------------------- widths


@pytest.mark.timeout(60)
def test_scan_table_fits_100_columns_and_keeps_paths_whole(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-directory-name-" * 3) / "and-a-deeper-one"
    deep.mkdir(parents=True)
    (deep / "app.env").write_text(PAIR)
    proc = _cli("scan", str(tmp_path), "--format", "table")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    path = f"{deep}/app.env:1"
    assert f"    {path}" in lines  # whole, on its own line
    assert all(len(line) <= 100 for line in lines if path not in line)


def test_fleet_table_rows_fit_100_columns(tmp_path: Path, capsys) -> None:
    from tests.support.fleet import LIVE_KEY, build_store

    db = build_store(tmp_path / "fleet.db")
    assert main(["report", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    key_rows = [line for line in lines if line.split()[:1] in (["live"], ["invalid"])]
    assert len(key_rows) == 3  # one line per key: the fleet's three keys
    assert main(["report", "--db", str(db), "--details"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line and not line.startswith(" ")]  # headers, key and host rows
    assert all(len(line) <= 100 for line in rows), max(rows, key=len)
    live = lines.index(next(line for line in lines if line.startswith(f"{LIVE_KEY}  live")))
    assert lines[live + 2] == "  owner: arn:aws:iam::534261010715:user/deploy (account 534261010715)"  # whole

    main(["collect", "--coverage", "--db", str(db)])
    coverage = capsys.readouterr().out.splitlines()
    assert len(coverage) >= 6 and all(len(line) <= 100 for line in coverage), max(coverage, key=len)
    assert any("i-0aaaaaaaaaaaaaaa1" in line for line in coverage)  # an instance id is never cut
