"""Safe text in every output: hostile host values and file names through the real CLI, in every format."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from keysweep.central.fleet_report import load_report
from keysweep.central.securityhub import exportable, to_asff
from keysweep.central.store import open_store
from keysweep.cli import main
from keysweep.textsafe import DEPTH_MARKER, MAX_JSON_DEPTH, csv_cell, dumps_json, safe_text

from tests.support.hostile_fleet import (
    BIDI,
    CLEAR_SCREEN,
    DEEP_LEVELS,
    ESC_PATH,
    KEY_DEEP,
    KEY_ESC,
    build_hostile_store,
    nested,
)

KEY, SECRET = "AKIAXYZDQCEN4B6JSJQI", "Zq3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"
PAIR = f"AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY={SECRET}\n"
UNSAFE = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, 0x2028, 0x2029)] + list(BIDI)


def _unsafe_in(text: str) -> list[str]:
    """Control or bidi characters in ``text``, other than the newlines that end lines."""
    return sorted({c for c in text if c in UNSAFE and c != "\n"})


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"not standard JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def test_safe_text_shows_controls_bidi_and_undecodable_bytes_as_escapes() -> None:
    assert safe_text("a\x1b[2Jb\nc\x9b\x7f") == "a\\x1b[2Jb\\x0ac\\x9b\\x7f"
    assert safe_text("file\u202etxt.exe \u2066x\u2069") == "file\\u202etxt.exe \\u2066x\\u2069"
    assert safe_text(os.fsdecode(b"caf\xe9")) == "caf\\xe9"  # a Latin-1 name on a UTF-8 system
    assert safe_text("Zürich ✓ 東京") == "Zürich ✓ 東京"  # ordinary text is left alone
    assert safe_text(None) == "" and safe_text(42) == "42"
    assert all(not _unsafe_in(safe_text(c)) for c in UNSAFE)


def test_csv_cells_are_neither_formulas_nor_controls() -> None:
    for start in ("=", "+", "-", "@"):
        assert csv_cell(f"{start}1+1") == f"'{start}1+1"
    assert csv_cell("\t=1") == "\\x09=1" and csv_cell("\r=1") == "\\x0d=1"
    assert csv_cell("ok") == "ok" and csv_cell(None) == ""
    assert csv_cell(["=a", "b\x1b"]) == "'=a\nb\\x1b"  # lines of one cell: our newline, theirs escaped


def test_json_is_standard_and_bounded() -> None:
    text = dumps_json({"n": float("inf"), "m": float("nan"), "deep": nested(DEEP_LEVELS), "s": "\x1b\u202e"})
    doc = _strict_json(text)
    assert doc["n"] is None and doc["m"] is None and doc["s"] == "\\x1b\\u202e"
    assert _depth(doc) == MAX_JSON_DEPTH
    assert DEPTH_MARKER in text


@pytest.fixture
def hostile_db(tmp_path: Path) -> Path:
    return build_hostile_store(tmp_path / "hostile.db")


def _report(capsys: pytest.CaptureFixture[str], db: Path, fmt: str, *extra: str) -> str:
    assert main(["report", "--db", str(db), "--format", fmt, *extra]) == 0
    return capsys.readouterr().out


def test_fleet_report_in_every_format_carries_no_attacker_bytes(hostile_db: Path, capsys) -> None:
    assert not _unsafe_in(_report(capsys, hostile_db, "table"))  # the one-line-per-key table
    for fmt in ("table", "csv", "html", "json"):
        out = _report(capsys, hostile_db, fmt, *(["--details"] if fmt == "table" else []))
        assert not _unsafe_in(out), (fmt, _unsafe_in(out))
        assert "\\x1b[2J" in out and "\\u202e" in out, fmt  # shown, not dropped

    rows = list(csv.DictReader(io.StringIO(_report(capsys, hostile_db, "csv"))))
    cells = [v for r in rows for v in r.values() if v]
    assert all(not line.startswith(("=", "+", "-", "@")) for v in cells for line in v.splitlines()[:1])
    esc_row = next(r for r in rows if r["key_id"] == KEY_ESC)
    assert esc_row["suggestion"].startswith("'-2+3 ")
    assert esc_row["commands"].splitlines()[:2] == ["aws iam create-role \\x1b[2J", "@SUM(1)"]


def test_host_coverage_carries_no_attacker_bytes(hostile_db: Path, capsys) -> None:
    for fmt in ("table", "json"):
        main(["collect", "--coverage", "--db", str(hostile_db), "--format", fmt])
        out = capsys.readouterr().out
        assert not _unsafe_in(out), (fmt, _unsafe_in(out))
        assert "\\u2066" in out, fmt


def test_fleet_report_json_is_read_by_strict_parsers_and_jq(hostile_db: Path, capsys) -> None:
    out = _report(capsys, hostile_db, "json")
    doc = _strict_json(out)
    assert _depth(doc) <= MAX_JSON_DEPTH
    deep = next(k for k in doc["keys"] if k["key_id"] == KEY_DEEP)
    assert deep["locations"][0]["location"]["size"] is None  # 1e400 was infinite: null, not Infinity
    assert DEPTH_MARKER in json.dumps(deep["suggestions"][0]["trust_policy"])
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq is not installed")
    proc = subprocess.run(
        [jq, "-r", ".keys[].locations[].place"], input=out, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert CLEAR_SCREEN not in proc.stdout and "\\x1b[2J" in proc.stdout  # jq -r prints no live escape either


def test_security_hub_findings_carry_no_attacker_bytes(hostile_db: Path) -> None:
    store = open_store(str(hostile_db), create=False)
    try:
        report = load_report(store)
    finally:
        store.close()
    findings = [to_asff(k, account_id="123456789012", region="eu-west-1") for k in exportable(report.keys)]
    assert len(findings) == 2
    text = json.dumps(findings, ensure_ascii=False)
    assert not _unsafe_in(text) and "\\x1b[2J" in text
    assert all(len(f["Description"]) <= 1024 for f in findings)


def _scan(capsys, root: Path, fmt: str) -> str:
    assert main(["scan", str(root), "--format", fmt, "--workers", "1"]) == 1
    return capsys.readouterr().out


def test_scan_outputs_of_files_with_hostile_names(tmp_path: Path, capsys) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    for name in (f"a{CLEAR_SCREEN}.env", "b\u202etxt.env", "c\u2066d\u2069.env", "line\nbreak.env"):
        (root / name).write_text(PAIR)
    (root / os.fsdecode(b"caf\xe9.env")).write_text(PAIR)
    for fmt in ("table", "json", "jsonl", "sarif"):
        out = _scan(capsys, root, fmt)
        assert not _unsafe_in(out), (fmt, _unsafe_in(out))
        if fmt == "sarif":  # file URIs: percent-encoded
            assert "%1B%5B2J" in out and "%E2%80%AE" in out and "%E2%81%A6" in out
        else:
            assert "\\x1b[2J" in out and "\\u202e" in out and "\\u2066" in out, fmt
        if fmt != "table":
            for doc in out.splitlines() if fmt == "jsonl" else [out]:
                _strict_json(doc)
    paths = [f["location"]["path"] for f in _strict_json(_scan(capsys, root, "json"))["findings"]]
    assert len(paths) == 5 and any(p.endswith("line\\x0abreak.env") for p in paths)
    assert any(p.endswith("caf\\xe9.env") for p in paths)


def test_report_table_still_shows_the_hostile_path(hostile_db: Path, capsys) -> None:
    out = _report(capsys, hostile_db, "table", "--details")
    assert safe_text(ESC_PATH) in out  # whole
