"""One configuration mechanism: every section read by one validator, one mapping of the scan section to scan options."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from keysweep.cli import build_parser
from keysweep.cli.scan import build_options
from keysweep.config import ScanConfig, from_mapping
from keysweep.errors import ConfigError
from keysweep.stage_config import ContextConfig, ReportConfig, VerifyConfig
from keysweep.sweep import scan_options

# a value other than the default for each option of the scan section
OTHER = {
    "roots": ("/srv",),
    "excludes": ("*.iso",),
    "sources": ("files",),
    "max_file_size": 1024,
    "archive_max_depth": 1,
    "archive_max_bytes": 2048,
    "archive_max_ratio": 10.0,
    "same_filesystem": True,
    "skip_network_fs": False,
    "host_prefix": "/host",
    "workers": 3,
}


def test_every_scan_option_reaches_the_scan(tmp_path: Path) -> None:
    allow = tmp_path / "allow.yaml"
    allow.write_text("key_ids: [AKIAXYZDQCEN4B6JSJQI]\n")
    others = {**OTHER, "allowlist": str(allow)}
    pipeline_only = {"rules_dirs"}  # the pipeline's rule loading reads it, not the walk
    fields = {f.name for f in dataclasses.fields(ScanConfig)}
    assert fields - pipeline_only == set(others), "a new scan option needs a value here and a place in scan_options"
    base = scan_options(ScanConfig())
    for name, value in others.items():
        changed = scan_options(dataclasses.replace(ScanConfig(), **{name: value}))
        assert changed != base, f"scan.{name} does not change the scan's options"


def test_workers_means_the_same_in_the_file_and_on_the_command_line(tmp_path: Path) -> None:
    cfg = from_mapping({"scan": {"workers": 0}})
    assert scan_options(cfg.scan).workers == 0 and scan_options(cfg.scan).worker_count >= 1
    flags = build_options(build_parser().parse_args(["scan", str(tmp_path), "--workers", "0"]))
    assert flags.workers == 0 and flags.worker_count == scan_options(cfg.scan).worker_count
    one = build_options(build_parser().parse_args(["scan", str(tmp_path), "--workers", "1"]))
    assert one.worker_count == scan_options(from_mapping({"scan": {"workers": 1}}).scan).worker_count == 1
    with pytest.raises(ConfigError, match="scan.workers: must be 0 or more, got -1"):
        from_mapping({"scan": {"workers": -1}})


@pytest.mark.parametrize(
    ("section", "cls", "key", "value"),
    [
        ("verify", VerifyConfig, "max_concurrency", 0),
        ("verify", VerifyConfig, "canary_accounts", ["12345"]),
        ("report", ReportConfig, "spool_warn_ratio", 2),
        ("report", ReportConfig, "flush_timeout", "soon"),
        ("context", ContextConfig, "imds_token_ttl", 99999),
        ("context", ContextConfig, "imds_timout", "1s"),
    ],
)
def test_a_stage_section_reads_the_same_alone_and_in_the_agents_file(section, cls, key, value) -> None:
    with pytest.raises(ConfigError) as alone:
        cls.from_mapping({key: value}, source="agent.yaml")
    with pytest.raises(ConfigError) as in_file:
        from_mapping({section: {key: value}}, source="agent.yaml")
    assert str(alone.value) == str(in_file.value)
    assert str(alone.value).startswith(f"agent.yaml: {section}.{key}")


def test_sections_are_typed_and_default_to_their_stage_defaults() -> None:
    cfg = from_mapping({"verify": {"enabled": True}, "report": {"heartbeats": False}})
    assert isinstance(cfg.verify, VerifyConfig) and cfg.verify.enabled
    assert isinstance(cfg.report, ReportConfig) and cfg.report.heartbeats is False
    assert cfg.context == ContextConfig()
