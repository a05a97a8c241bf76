"""The agent configuration: defaults, validation errors naming key and value, the documented default file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from keysweep.config import AgentConfig, from_mapping, load_config, option_paths, parse_duration, parse_size
from keysweep.errors import ConfigError

from tests.support.cli import run_keysweep

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FILE = REPO / "packaging" / "config" / "agent.yaml"


def _errors(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        from_mapping(data, source="agent.yaml")
    return str(info.value)


def test_empty_config_gives_documented_defaults() -> None:
    cfg = from_mapping({})
    assert (cfg.scan, cfg.schedule, cfg.watch, cfg.resources) == (
        AgentConfig().scan,
        AgentConfig().schedule,
        AgentConfig().watch,
        AgentConfig().resources,
    )
    assert cfg.verify is not None and cfg.verify.enabled is False  # the verification stage's own defaults
    assert cfg.state_dir == "/var/lib/keysweep"
    assert cfg.resources.nice == 19 and cfg.resources.ionice_idle
    assert cfg.scan.roots == ("/",)


def test_units_are_parsed() -> None:
    cfg = from_mapping({"schedule": {"interval": "15m", "splay": "250ms"}, "scan": {"max_file_size": "1MiB"}})
    assert cfg.schedule.interval == 900.0
    assert cfg.schedule.splay == 0.25
    assert cfg.scan.max_file_size == 1048576
    assert parse_size("2G") == 2 * 1024**3 and parse_size(10) == 10
    assert parse_duration("1d") == 86400.0 and parse_duration(3) == 3.0


def test_a_single_string_is_a_one_item_list() -> None:
    assert from_mapping({"scan": {"roots": "/srv"}}).scan.roots == ("/srv",)


@pytest.mark.parametrize(
    ("data", "key", "value"),
    [
        ({"scan": {"max_file_size": "lots"}}, "scan.max_file_size", "'lots'"),
        ({"scan": {"same_filesystem": "yes"}}, "scan.same_filesystem", "'yes'"),
        ({"scan": {"workers": -1}}, "scan.workers", "-1"),
        ({"scan": {"workers": "2"}}, "scan.workers", "'2'"),
        ({"scan": {"roots": ["relative/dir"]}}, "scan.roots[0]", "'relative/dir'"),
        ({"scan": {"roots": [3]}}, "scan.roots", "[3]"),
        ({"scan": {"host_prefix": "host"}}, "scan.host_prefix", "'host'"),
        ({"schedule": {"interval": "5 fortnights"}}, "schedule.interval", "'5 fortnights'"),
        ({"schedule": {"interval": 0}}, "schedule.interval", "0.0"),
        ({"schedule": {"full_reread_every": 0}}, "schedule.full_reread_every", "0"),
        ({"watch": {"debounce": "10s"}}, "watch.debounce", "10.0"),
        ({"watch": {"max_watches": -1}}, "watch.max_watches", "-1"),
        ({"watch": "on"}, "watch", "'on'"),
        ({"resources": {"nice": 40}}, "resources.nice", "40"),
        ({"resources": {"max_cpu_percent": 250}}, "resources.max_cpu_percent", "250.0"),
        ({"resources": {"max_rss_mb": -5}}, "resources.max_rss_mb", "-5"),
        ({"logging": {"level": "loud"}}, "logging.level", "'loud'"),
        ({"state_dir": "var/lib"}, "state_dir", "'var/lib'"),
        ({"status": {"prometheus_file": 7}}, "status.prometheus_file", "7"),
        ({"verify": {"region": "moon-1"}}, "verify.region", "'moon-1'"),
        ({"context": {"imds_timeout": "soon"}}, "context.imds_timeout", "'soon'"),
        ({"report": {"queue_url": "not-a-queue"}}, "report.queue_url", "'not-a-queue'"),
    ],
)
def test_every_validation_error_names_key_and_value(data: dict, key: str, value: str) -> None:
    message = _errors(data)
    line = next((ln for ln in message.splitlines() if f" {key}:" in ln or f" {key}." in ln), None)
    assert line is not None, message
    assert line.startswith("agent.yaml: ")
    assert value in line, line


def test_unknown_keys_are_errors_with_a_suggestion() -> None:
    message = _errors({"scan": {"rootz": ["/"]}, "schedul": {}})
    assert "scan.rootz: unknown key (did you mean 'roots'?)" in message
    assert "schedul: unknown key (did you mean 'schedule'?)" in message


def test_all_errors_are_reported_at_once() -> None:
    message = _errors({"scan": {"workers": -1, "max_file_size": "x"}, "resources": {"nice": 99}})
    assert len(message.splitlines()) == 3


def test_fingerprint_key_value_is_never_echoed() -> None:
    message = _errors({"fingerprint": {"key": ["s3cr3t-org-key-value"]}})
    assert "fingerprint.key" in message
    assert "s3cr3t" not in message


def test_fingerprint_key_and_key_file_are_exclusive(tmp_path: Path) -> None:
    assert "fingerprint: set either key or key_file" in _errors(
        {"fingerprint": {"key": "k" * 20, "key_file": str(tmp_path / "k")}}
    )


def test_fingerprint_key_file_is_read(tmp_path: Path) -> None:
    key_file = tmp_path / "org.key"
    key_file.write_text("an-organisation-wide-key\n")
    cfg = from_mapping({"fingerprint": {"key_file": str(key_file)}})
    assert cfg.fingerprint_key() == "an-organisation-wide-key"
    missing = from_mapping({"fingerprint": {"key_file": str(tmp_path / "missing")}})
    with pytest.raises(ConfigError, match="fingerprint.key_file"):
        missing.fingerprint_key()


def test_broken_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "agent.yaml"
    bad.write_text("scan:\n  roots: [/\n")
    with pytest.raises(ConfigError, match=re.escape(str(bad)) + r": not valid YAML at line \d+"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- a\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(top)


def test_default_file_loads_and_documents_every_option() -> None:
    cfg = load_config(DEFAULT_FILE)
    assert cfg.state_dir == "/var/lib/keysweep"
    data = yaml.safe_load(DEFAULT_FILE.read_text())
    text = DEFAULT_FILE.read_text()
    missing = []
    for path in option_paths():
        node = data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(path)
                break
            node = node[part]
    assert not missing, f"options missing from {DEFAULT_FILE}: {missing}"
    # every option carries a comment: the line above it (or above its group) starts with '#'
    lines = text.splitlines()
    for path in option_paths():
        name = path.split(".")[-1]
        idx = next(i for i, ln in enumerate(lines) if re.match(rf"\s*{re.escape(name)}:", ln))
        j = idx - 1
        while j >= 0 and re.match(r"\s*\w+:", lines[j]) and not lines[j].strip().startswith("#"):
            j -= 1  # options documented together by one comment
        assert j >= 0 and lines[j].strip().startswith("#"), f"{path} has no comment"
    # and the defaults in the file are the defaults in the code, except what the file documents differently
    assert cfg.scan == AgentConfig().scan
    assert cfg.schedule == AgentConfig().schedule
    assert cfg.watch == AgentConfig().watch
    assert cfg.resources == AgentConfig().resources


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_keysweep(*args)


@pytest.mark.timeout(120)
def test_config_check_command(tmp_path: Path) -> None:
    ok = _cli("config", "check", str(DEFAULT_FILE))
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    bad = tmp_path / "agent.yaml"
    bad.write_text("scan:\n  max_file_size: huge\nwatch:\n  enabeld: true\n")
    res = _cli("config", "check", str(bad))
    assert res.returncode == 2
    assert "scan.max_file_size" in res.stderr and "'huge'" in res.stderr
    assert "watch.enabeld: unknown key (did you mean 'enabled'?)" in res.stderr
    assert "OK" not in res.stdout


@pytest.mark.timeout(120)
def test_config_check_loads_extra_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.yaml").write_text("rules:\n  - id: 5\n")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"scan:\n  rules_dirs: [{rules}]\n")
    res = _cli("config", "check", str(cfg))
    assert res.returncode == 2
    assert "broken.yaml" in res.stderr
