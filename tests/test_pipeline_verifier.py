"""The pipeline's verifier is built on first use: once, whichever of the agent's threads asks first, and never by a
scan that verifies nothing (its botocore client configuration is most of a plain scan's start-up)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from keysweep import sweep, verify
from keysweep.cli import main
from keysweep.config import from_mapping
from keysweep.verify import Verifier

from tests.support.planted import planted_key


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Verifier]:
    """Every verifier the pipeline builds, in order; each takes 50 ms to build, so threads asking at once overlap."""
    made: list[Verifier] = []

    class Recorded(Verifier):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            time.sleep(0.05)
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(verify, "Verifier", Recorded)  # the pipeline imports it where it builds one
    return made


def planted_tree(root: Path) -> str:
    key = planted_key(5)
    root.mkdir()
    (root / ".env").write_text(f"aws_access_key_id={key.key_id}\naws_secret_access_key={key.secret}\n")
    return key.key_id


def test_threads_asking_at_once_get_one_verifier(tmp_path: Path, built: list[Verifier]) -> None:
    config = from_mapping({"state_dir": str(tmp_path / "state"), "scan": {"roots": [str(tmp_path)]}})
    pipeline = sweep.Pipeline(config, incremental=False)
    try:
        assert built == []  # building the pipeline builds no verifier
        start = threading.Barrier(8)
        got: list[Verifier] = []

        def ask() -> None:
            start.wait()
            got.append(pipeline.verifier)

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(built) == 1
        assert len(got) == 8 and all(v is built[0] for v in got)
        assert pipeline.verifier is built[0]
    finally:
        pipeline.close()


def test_a_scan_without_verify_never_builds_a_verifier(
    tmp_path: Path, built: list[Verifier], capsys: pytest.CaptureFixture[str]
) -> None:
    key_id = planted_tree(tmp_path / "tree")
    assert main(["scan", "--workers", "1", "--format", "json", str(tmp_path / "tree")]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert [f["key_id"] for f in findings] == [key_id] and findings[0].get("verification") is None
    assert built == []


def test_a_scan_with_verify_builds_one(
    tmp_path: Path, built: list[Verifier], capsys: pytest.CaptureFixture[str], moto_server: object
) -> None:
    key_id = planted_tree(tmp_path / "tree")
    assert main(["scan", "--workers", "1", "--verify", "--format", "json", str(tmp_path / "tree")]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert [f["key_id"] for f in findings] == [key_id] and findings[0]["verification"]["status"]
    assert len(built) == 1
