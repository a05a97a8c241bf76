"""End to end on a generated host tree: every planted pair in every form is found exactly, no decoy is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from keysweep.allowlist import Allowlist
from keysweep.models import Finding

from tests.support.hosttree import HostTree, build_host_tree, cli_env, finding_identity, make_detector, scan_paths
from tests.support.settle import settle


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> HostTree:
    return build_host_tree(tmp_path_factory.mktemp("e2e") / "host", seed=7, filler=400)


def _identities(tree: HostTree, findings: list[Finding]) -> set[tuple[str, str, str | None, str, bool]]:
    return {finding_identity(tree.root, f) for f in findings}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 2])
def test_every_planted_pair_is_found_and_nothing_else(tree: HostTree, workers: int) -> None:
    result = scan_paths(tree.root, workers=workers)
    got = _identities(tree, result.findings)
    assert got == tree.expected(), {"missing": tree.expected() - got, "extra": got - tree.expected()}
    reported = {f.key_id for f in result.findings}
    assert not reported & set(tree.decoy_ids)
    # the botocore example data is skipped by path, and counted
    assert result.stats.skipped["ignored-path"] == 1
    assert result.stats.errors == {}


@pytest.mark.timeout(60)
def test_pairs_are_exact_and_secrets_survive_worker_processes(tree: HostTree) -> None:
    one = {(f.key_id, f.location.path): f for f in scan_paths(tree.root, workers=1).findings}
    two = {(f.key_id, f.location.path): f for f in scan_paths(tree.root, workers=2).findings}
    assert one.keys() == two.keys()
    for k, f in one.items():
        g = two[k]
        assert (f.secret.reveal() if f.secret else None) == (g.secret.reveal() if g.secret else None)
        assert f.fingerprint == g.fingerprint and f.location == g.location
    paired = [f for f in one.values() if f.has_secret]
    assert paired and all(f.secret is not None and f.secret.reveal() in tree.secrets for f in paired)
    temporary = [f for f in one.values() if f.key_type == "temporary"]
    assert len(temporary) == 1 and temporary[0].has_session_token
    assert temporary[0].session_token is not None and temporary[0].session_token.reveal() in tree.secrets


def test_profiles_keep_their_names_and_kinds(tree: HostTree) -> None:
    result = scan_paths(tree.root / "home")
    profiles = {(f.location.kind, f.location.profile, f.profile_kind) for f in result.findings if f.location.profile}
    assert profiles == {
        ("aws-credentials", "default", "static"),
        ("aws-credentials", "Prod", "static"),
        ("aws-config", "ci", "static"),
    }
    # role_arn / sso / credential_process profiles are counted as the good cases, not findings
    assert result.stats.profiles["role_arn"] == 1
    assert result.stats.profiles["sso"] == 1
    assert result.stats.profiles["credential_process"] == 1


def test_lines_and_archive_members(tree: HostTree) -> None:
    by_path = {(f.location.path, f.location.member): f for f in scan_paths(tree.root).findings}
    env = by_path[(str(tree.root / "srv/app/.env"), None)]
    assert env.location.kind == "file" and env.location.line == 2
    nested = by_path[(str(tree.root / "var/backups/release.tar.gz"), "lib/inner.zip!secrets.env")]
    assert nested.location.kind == "archive" and nested.has_secret


class _DictCache:
    """A FileCache kept in memory (the real one is keysweep.state's SQLite store)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[tuple[int, int, int], list[Finding]]] = {}
        self.lookups = 0

    def lookup(self, path: str, st: os.stat_result) -> list[Finding] | None:
        self.lookups += 1
        hit = self.entries.get(path)
        if hit is None or hit[0] != (st.st_ino, st.st_size, st.st_mtime_ns):
            return None
        return hit[1]

    def store(self, path: str, st: os.stat_result, findings: list[Finding]) -> None:
        self.entries[path] = ((st.st_ino, st.st_size, st.st_mtime_ns), [f.without_secret() for f in findings])


@pytest.mark.timeout(60)
def test_file_cache_skips_unchanged_files_and_rereads_changed_ones(tmp_path: Path) -> None:
    from keysweep.scan import ScanOptions, run_scan

    tree = build_host_tree(tmp_path / "host", seed=3, filler=300)
    settle()  # a file read in the tick of its last change is not recorded as unchanged
    det = make_detector()
    cache = _DictCache()
    opts = ScanOptions(paths=(str(tree.root),), sources=("files",), workers=2)
    first = run_scan(opts, det, file_cache=cache)
    assert first.stats.files_cached == 0 and first.stats.files_scanned > 0
    second = run_scan(opts, det, file_cache=cache)
    assert second.stats.files_scanned == 0 and second.stats.files_cached == first.stats.files_scanned
    assert {f.key_id for f in second.findings} == {f.key_id for f in first.findings}
    env = tree.root / "srv/app/.env"
    env.write_text(env.read_text() + "# changed\n")
    third = run_scan(opts, det, file_cache=cache)
    assert third.stats.files_scanned == 1


def test_allowlist_suppresses_by_path_key_and_fingerprint(tree: HostTree) -> None:
    full = scan_paths(tree.root).findings
    env = next(f for f in full if f.location.path == str(tree.root / "srv/app/.env"))
    yaml_f = next(f for f in full if f.location.path == str(tree.root / "etc/app/config.yaml"))
    allow = Allowlist.from_mapping(
        {"paths": ["**/var/backups/*.tar.gz"], "key_ids": [env.key_id], "fingerprints": [yaml_f.fingerprint]}
    )
    result = scan_paths(tree.root, allowlist=allow)
    kept = {(f.key_id, f.location.path) for f in result.findings}
    assert (env.key_id, env.location.path) not in kept
    assert (yaml_f.key_id, yaml_f.location.path) not in kept
    assert not any(f.location.path.endswith(".tar.gz") for f in result.findings if f.location.path)
    assert result.stats.suppressed == 4  # .env, yaml, and the two backups
    assert len(result.findings) == len(full) - 4


@pytest.mark.timeout(120)
def test_cli_json_report_matches_the_library(tree: HostTree) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "keysweep", "scan", str(tree.root), "--format", "json", "--workers", "2"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=100,
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    got = {finding_identity(tree.root, f) for f in doc["findings"]}
    assert got == tree.expected()
    assert doc["summary"]["files_scanned"] >= 20
    assert "scanned" in proc.stderr and "ignored-path 1" in proc.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 2])
def test_should_stop_ends_the_walk_early_and_keeps_what_was_found(tmp_path: Path, workers: int) -> None:
    from keysweep.scan import ScanOptions, run_scan

    for i in range(400):
        d = tmp_path / f"d{i:03d}"
        d.mkdir()
        for j in range(5):
            (d / f"{j}.txt").write_text("nothing\n")
    asked = 0

    def stop() -> bool:
        nonlocal asked
        asked += 1
        return asked > 50

    result = run_scan(
        ScanOptions(paths=(str(tmp_path),), sources=("files",), workers=workers), make_detector(), should_stop=stop
    )
    assert result.stats.interrupted
    assert 0 < result.stats.files_scanned < 2000


@pytest.mark.timeout(60)
def test_progress_reports_growing_counts(tree: HostTree) -> None:
    from keysweep.scan import ScanOptions, run_scan

    seen: list[tuple[int, int]] = []
    result = run_scan(
        ScanOptions(paths=(str(tree.root),), sources=("files",), workers=2),
        make_detector(),
        progress=lambda s: seen.append((s.files_scanned, s.bytes_scanned)),
    )
    assert seen and seen[-1] == (result.stats.files_scanned, result.stats.bytes_scanned)
    assert seen == sorted(seen)


@pytest.mark.timeout(120)
def test_a_large_file_scanned_in_parts_reports_what_one_reader_does(tmp_path: Path) -> None:
    """With workers a file over 32 MiB is scanned in parts: ids at the part edges keep their secret, line and
    offset, none is reported twice."""
    import random

    from tests.support.hosttree import B32, SECRET_CHARS

    rng = random.Random(11)
    filler = b"2025-11-01T00:00:00Z INFO request served in 12 ms\n"
    n_lines = 36 * 2**20 // len(filler)
    size = n_lines * len(filler)
    # around each place where two or three workers would cut the file, and at both ends
    cuts = [0, size // 3, size // 2, 2 * size // 3, size - 1]
    planted: dict[int, tuple[str, str]] = {}  # line index -> (key id, secret)
    for cut in cuts:
        for delta in (-2, -1, 0, 1):
            idx = min(max(cut // len(filler) + delta, 0), n_lines - 2)
            planted[idx] = (
                "AKIA" + "".join(rng.choice(B32) for _ in range(16)),
                "".join(rng.choice(SECRET_CHARS) for _ in range(39)) + "7",
            )
    with open(tmp_path / "big.log", "wb") as fh:
        for i in range(n_lines):
            if i in planted:
                kid, secret = planted[i]
                fh.write(f"key={kid} secret={secret}\n".encode())
            else:
                fh.write(filler)
    for i in range(300):  # enough files for the worker processes
        (tmp_path / f"small{i:03d}.txt").write_text("nothing here\n")

    def found(workers: int) -> list[tuple[str, int | None, int | None, str | None, str]]:
        result = scan_paths(tmp_path, workers=workers)
        assert result.stats.files_scanned == 301 and not result.stats.errors
        return sorted(
            (f.key_id, f.location.line, f.location.offset, f.secret_redacted, f.pairing) for f in result.findings
        )

    whole = found(1)
    assert [(k, line) for k, line, *_ in whole] == sorted((kid, i + 1) for i, (kid, _) in planted.items())
    assert all(pairing == "same-line" for *_, pairing in whole)
    assert found(2) == whole
    assert found(3) == whole
