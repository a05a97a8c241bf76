"""The agent's YAML configuration → typed, frozen sections, validated at load.

Every section — the agent's own below and the ``verify``, ``report`` and ``context`` sections their stages
declare — is read by the one validator of :mod:`keysweep.sections`: every error names the key (dotted path) and
the bad value; unknown keys are errors with a "did you mean".

``scan.workers`` means what ``keysweep scan --workers`` means: how many processes read files — 1 the scanning
process itself (no worker processes), N ≥ 2 that many worker processes, 0 one per CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from keysweep.errors import ConfigError
from keysweep.scan_types import SOURCES
from keysweep.sections import Section, build, describe, option, parse_duration, parse_size
from keysweep.sections import option_paths as _option_paths
from keysweep.stage_config import ContextConfig, ReportConfig, VerifyConfig
from keysweep.yamlfile import read_yaml

__all__ = ["AgentConfig", "from_mapping", "load_config", "option_paths", "parse_duration", "parse_size"]

DEFAULT_CONFIG_PATH = Path("/etc/keysweep/agent.yaml")
DEFAULT_STATE_DIR = "/var/lib/keysweep"


@dataclass(frozen=True)
class ScanConfig(Section):
    name = "scan"

    roots: tuple[str, ...] = option(("/",), absolute=True)
    excludes: tuple[str, ...] = ()
    sources: tuple[str, ...] = option(SOURCES, choices=SOURCES)
    max_file_size: int = option(256 * 1024 * 1024, kind="size")
    archive_max_depth: int = option(3, lo=0)
    archive_max_bytes: int = option(512 * 1024 * 1024, kind="size")
    archive_max_ratio: float = option(100.0, above=0)
    same_filesystem: bool = False
    skip_network_fs: bool = True
    host_prefix: str | None = option(None, absolute=True)
    allowlist: str | None = None
    rules_dirs: tuple[str, ...] = ()
    workers: int = option(1, lo=0)  # 0: one per CPU; 1: no worker processes


@dataclass(frozen=True)
class ScheduleConfig(Section):
    name = "schedule"

    interval: float = option(3600.0, kind="duration", lo=1)
    splay: float = option(300.0, kind="duration")
    full_reread_every: int = option(24, lo=1)


@dataclass(frozen=True)
class WatchConfig(Section):
    name = "watch"

    enabled: bool = True
    homes: bool = True
    system_paths: bool = True
    paths: tuple[str, ...] = ()
    debounce: float = option(0.3, kind="duration", hi=5)
    max_watches: int = option(8192, lo=0)


@dataclass(frozen=True)
class ResourcesConfig(Section):
    name = "resources"

    nice: int = option(19, lo=-20, hi=19)
    ionice_idle: bool = True
    max_cpu_percent: float | None = option(None, lo=1, hi=100)
    max_rss_mb: int = option(200, lo=0)  # 0: no limit


@dataclass(frozen=True)
class FingerprintConfig(Section):
    name = "fingerprint"

    key: str | None = option(None, secret=True)
    key_file: str | None = None


@dataclass(frozen=True)
class LoggingConfig(Section):
    name = "logging"

    level: str = option("info", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class StatusConfig(Section):
    name = "status"

    prometheus_file: str | None = None


@dataclass(frozen=True)
class AgentConfig(Section):
    state_dir: str = option(DEFAULT_STATE_DIR, absolute=True)
    scan: ScanConfig = ScanConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    watch: WatchConfig = WatchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    fingerprint: FingerprintConfig = FingerprintConfig()
    logging: LoggingConfig = LoggingConfig()
    status: StatusConfig = StatusConfig()
    verify: VerifyConfig = VerifyConfig()
    report: ReportConfig = ReportConfig()
    context: ContextConfig = ContextConfig()
    source: str | None = field(default=None, compare=False, metadata={"internal": True})  # the file read

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    def problems(self) -> list[str]:
        if self.fingerprint.key is not None and self.fingerprint.key_file is not None:
            return ["fingerprint: set either key or key_file, not both"]
        return []

    def fingerprint_key(self) -> str | None:
        """The organisation-wide fingerprint key, read from ``fingerprint.key_file`` when that is set."""
        if self.fingerprint.key_file:
            try:
                return Path(self.fingerprint.key_file).read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                raise ConfigError(
                    f"fingerprint.key_file: cannot read {self.fingerprint.key_file!r}: {exc.strerror}"
                ) from None
        return self.fingerprint.key


def from_mapping(data: object, *, source: str | None = None) -> AgentConfig:
    """Build and validate an :class:`AgentConfig`; raises :class:`ConfigError` listing every problem."""
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{source or 'config'}: expected a mapping at the top level, got {describe(data)}")
    errors: list[str] = []
    cfg = build(AgentConfig, data, "", errors)
    if errors:
        where = f"{source}: " if source else ""
        raise ConfigError("\n".join(where + e for e in errors))
    return dataclasses.replace(cfg, source=source)


def load_config(path: str | Path | None = None) -> AgentConfig:
    """Read and validate the agent configuration file (default ``/etc/keysweep/agent.yaml``)."""
    p = Path(path) if path else DEFAULT_CONFIG_PATH
    return from_mapping(read_yaml(p), source=str(p))


def option_paths() -> list[str]:
    """Every option of the agent's file as a dotted path (for documentation checks)."""
    return _option_paths(AgentConfig)
