"""`keysweep scan` as a user runs it: exit codes, formats, flags, the stderr summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from keysweep.cli import build_parser
from keysweep.cli.scan import build_options
from keysweep.errors import ConfigError

from tests.support.hosttree import cli_env

REPO = Path(__file__).resolve().parent.parent
KEY, SECRET = "AKIAXYZDQCEN4B6JSJQI", "Zq3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"
PAIR = f"AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY={SECRET}\n"


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keysweep", "scan", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=REPO,
        timeout=timeout,
    )


def _args(*argv: str):  # noqa: ANN202
    return build_parser().parse_args(["scan", *argv])


@pytest.mark.timeout(60)
def test_exit_codes_clean_findings_usage(tmp_path: Path) -> None:
    (tmp_path / "clean.txt").write_text("nothing here\n")
    clean = run(str(tmp_path), "--format", "json")
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["findings"] == []
    (tmp_path / "a.env").write_text(PAIR)
    found = run(str(tmp_path), "--format", "jsonl")
    assert found.returncode == 1
    lines = [json.loads(line) for line in found.stdout.splitlines()]
    assert [(d["key_id"], d["has_secret"], d["location"]["line"]) for d in lines] == [(KEY, True, 1)]
    assert run(str(tmp_path / "missing")).returncode == 2
    assert run(str(tmp_path), "--max-file-size", "lots").returncode == 2
    assert run(str(tmp_path), "--format", "xml").returncode == 2
    bad = tmp_path / "allow.yaml"
    bad.write_text("paths: [unclosed\n")
    proc = run(str(tmp_path), "--allowlist", str(bad))
    assert proc.returncode == 2 and "allow.yaml" in proc.stderr


@pytest.mark.timeout(60)
def test_default_format_is_json_when_stdout_is_not_a_terminal_and_summary_goes_to_stderr(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text(PAIR)
    (tmp_path / "big.bin").write_bytes(b"\0" * 4096)
    proc = run(str(tmp_path), "--max-file-size", "1KiB")
    doc = json.loads(proc.stdout)
    assert doc["summary"]["skipped"] == {"too-large": 1}
    assert "scanned 1 files" in proc.stderr and "too-large 1" in proc.stderr
    assert "\r" not in proc.stderr  # no progress line when stderr is not a terminal


@pytest.mark.timeout(60)
def test_table_and_sarif(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text(PAIR)
    table = run(str(tmp_path), "--format", "table")
    assert KEY in table.stdout and f"{tmp_path}/a.env:1" in table.stdout
    sarif = json.loads(run(str(tmp_path), "--format", "sarif").stdout)
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["results"]


@pytest.mark.timeout(60)
def test_excludes_and_allowlist(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.env").write_text(PAIR)
    (tree / "b.log").write_text(PAIR.replace(KEY, "AKIASP2TPHJSQH3FJRUX"))
    proc = run(str(tree), "--exclude", "*.log", "--format", "json")
    assert [f["key_id"] for f in json.loads(proc.stdout)["findings"]] == [KEY]
    allow = tmp_path / "allow.yaml"
    allow.write_text(f"key_ids: [{KEY}]\n")
    proc = run(str(tree), "--exclude", "*.log", "--allowlist", str(allow), "--format", "json")
    assert proc.returncode == 0 and "allowlisted: 1" in proc.stderr


def test_sources_default_and_flags_map_to_options(tmp_path: Path) -> None:
    with_paths = build_options(_args(str(tmp_path)))
    assert with_paths.sources == ("files",) and with_paths.paths == (str(tmp_path),)
    whole_host = build_options(_args())
    assert set(whole_host.sources) == {"files", "processes", "aws-files"} and whole_host.roots == ("/",)
    o = build_options(
        _args(
            str(tmp_path),
            "--source",
            "processes",
            "--source",
            "files",
            "--workers",
            "3",
            "--archive-depth",
            "1",
            "--same-filesystem",
            "--skip-network-fs",
            "--follow-symlinks",
            "--max-file-size",
            "10MiB",
            "--host-prefix",
            str(tmp_path),
            "--exclude",
            "*.iso",
        )
    )
    assert o.sources == ("processes", "files") and o.workers == 3 and o.archive_max_depth == 1
    assert o.same_filesystem and o.skip_network_fs and o.follow_symlinks
    assert o.max_file_size == 10 << 20 and o.path_prefix == str(tmp_path) and o.excludes == ("*.iso",)
    with pytest.raises(ConfigError):
        build_options(_args(str(tmp_path), "--host-prefix", str(tmp_path / "nope")))


def test_config_file_supplies_scan_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "scan:\n  excludes: ['*.iso']\n  max_file_size: 1MiB\n  archive_max_depth: 2\n"
    )
    from keysweep.config import load_config

    o = build_options(_args(str(tmp_path), "--exclude", "*.img"), load_config(cfg))
    assert "*.iso" in o.excludes and "*.img" in o.excludes and str(tmp_path / "state") in o.excludes
    assert o.max_file_size == 1 << 20 and o.archive_max_depth == 2


@pytest.mark.timeout(60)
def test_host_prefix_paths_are_reported_without_it(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "srv").mkdir(parents=True)
    (host / "srv" / "a.env").write_text(PAIR)
    proc = run("--host-prefix", str(host), "--source", "files", "--format", "json")
    assert proc.returncode == 1, proc.stderr
    assert [f["location"]["path"] for f in json.loads(proc.stdout)["findings"]] == ["/srv/a.env"]
