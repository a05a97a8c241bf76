"""The agent's YAML configuration → frozen dataclasses, validated at load.

Every error names the key (dotted path) and the bad value; unknown keys are errors with a "did you mean".
The ``verify``, ``report`` and ``context`` sections belong to their stages and are parsed by their own
``from_mapping`` classmethods, so each stage owns its options.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keysweep.errors import ConfigError
from keysweep.yamlfile import read_yaml

DEFAULT_CONFIG_PATH = Path("/etc/keysweep/agent.yaml")
DEFAULT_STATE_DIR = "/var/lib/keysweep"

_SIZE = {"kind": "size"}
_DURATION = {"kind": "duration"}


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


@dataclass(frozen=True)
class ScanConfig:
    roots: tuple[str, ...] = ("/",)
    excludes: tuple[str, ...] = ()
    sources: tuple[str, ...] = ("files", "processes", "aws-files")
    max_file_size: int = field(default=256 * 1024 * 1024, metadata=_SIZE)
    archive_max_depth: int = 3
    archive_max_bytes: int = field(default=512 * 1024 * 1024, metadata=_SIZE)
    archive_max_ratio: float = 100.0
    same_filesystem: bool = False
    skip_network_fs: bool = True
    host_prefix: str | None = None
    allowlist: str | None = None
    rules_dirs: tuple[str, ...] = ()
    workers: int = 1


@dataclass(frozen=True)
class ScheduleConfig:
    interval: float = field(default=3600.0, metadata=_DURATION)
    splay: float = field(default=300.0, metadata=_DURATION)
    full_reread_every: int = 24


@dataclass(frozen=True)
class WatchConfig:
    enabled: bool = True
    homes: bool = True
    system_paths: bool = True
    paths: tuple[str, ...] = ()
    debounce: float = field(default=0.3, metadata=_DURATION)
    max_watches: int = 8192


@dataclass(frozen=True)
class ResourcesConfig:
    nice: int = 19
    ionice_idle: bool = True
    max_cpu_percent: float | None = None
    max_rss_mb: int = 200


@dataclass(frozen=True)
class FingerprintConfig:
    key: str | None = field(default=None, repr=False)
    key_file: str | None = None


@dataclass(frozen=True)
class LoggingConfig:
    level: str = field(default="info", metadata=_choices("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class StatusConfig:
    prometheus_file: str | None = None


# (section name, module, class) of the sections other stages own
_DELEGATED = (
    ("verify", "keysweep.verify", "VerifyConfig"),
    ("report", "keysweep.report.sqs", "ReportConfig"),
    ("context", "keysweep.context", "ContextConfig"),
)


@dataclass(frozen=True)
class AgentConfig:
    state_dir: str = DEFAULT_STATE_DIR
    scan: ScanConfig = ScanConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    watch: WatchConfig = WatchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    fingerprint: FingerprintConfig = FingerprintConfig()
    logging: LoggingConfig = LoggingConfig()
    status: StatusConfig = StatusConfig()
    verify: Any = None
    report: Any = None
    context: Any = None
    source: str | None = field(default=None, compare=False, metadata={"internal": True})

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

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


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(value: object) -> int:
    """``1048576``, ``"512k"``, ``"100MiB"``, ``"1G"`` → bytes (binary multiples)."""
    if isinstance(value, bool):
        raise ValueError("expected a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("expected a non-negative size")
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError("expected a size such as 1048576, 512KiB, 100MiB or 1GiB")
    mult = 1024 ** "bkmgt".index((m.group(2) or "b").lower())
    return int(float(m.group(1)) * mult)


def parse_duration(value: object) -> float:
    """``90``, ``"250ms"``, ``"30s"``, ``"15m"``, ``"6h"``, ``"1d"`` → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("expected a non-negative duration")
        return float(value)
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ValueError("expected a duration such as 30, 250ms, 30s, 15m, 6h or 1d")
    return float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "s").lower()]


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _convert(value: object, hint: Any, meta: Mapping[str, Any]) -> Any:
    """Convert one scalar/list value to the field's type or raise ValueError with what was expected."""
    kind = meta.get("kind")
    if kind == "size":
        return parse_size(value)
    if kind == "duration":
        return parse_duration(value)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, meta)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ValueError("expected a list")
        return tuple(_convert(v, args[0], meta) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str) or not value:
            raise ValueError("expected a non-empty string")
        if "choices" in meta and value not in meta["choices"]:
            raise ValueError("expected one of " + ", ".join(meta["choices"]))
        return value
    raise ValueError(f"unsupported type {hint}")  # pragma: no cover - a programming error


def _unknown_key(prefix: str, key: object, known: list[str]) -> str:
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
    return f"{prefix}{key}: unknown key{hint}"


def build_section(cls: type, data: object, prefix: str, errors: list[str]) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        errors.append(f"{prefix.rstrip('.')}: expected a mapping of options, got {_describe(data)}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            errors.append(_unknown_key(prefix, key, list(fields)))
            continue
        f = fields[key]
        if dataclasses.is_dataclass(hints[key]):
            values[key] = build_section(hints[key], value, f"{prefix}{key}.", errors)
            continue
        try:
            values[key] = _convert(value, hints[key], f.metadata)
        except ValueError as exc:
            shown = "<hidden>" if not f.repr else _describe(value)
            errors.append(f"{prefix}{key}: {exc}, got {shown}")
    return cls(**values)


def _check(cfg: AgentConfig, errors: list[str]) -> None:
    """Rules between values that the types alone do not express."""
    s = cfg.schedule
    if s.interval < 1:
        errors.append(f"schedule.interval: must be at least 1 second, got {s.interval!r}")
    if s.full_reread_every < 1:
        errors.append(f"schedule.full_reread_every: must be at least 1, got {s.full_reread_every!r}")
    r = cfg.resources
    if not -20 <= r.nice <= 19:
        errors.append(f"resources.nice: must be between -20 and 19, got {r.nice!r}")
    if r.max_cpu_percent is not None and not 1 <= r.max_cpu_percent <= 100:
        errors.append(f"resources.max_cpu_percent: must be between 1 and 100, got {r.max_cpu_percent!r}")
    if r.max_rss_mb < 0:
        errors.append(f"resources.max_rss_mb: must be 0 (off) or positive, got {r.max_rss_mb!r}")
    if cfg.scan.workers < 1:
        errors.append(f"scan.workers: must be at least 1, got {cfg.scan.workers!r}")
    if cfg.scan.archive_max_depth < 0:
        errors.append(f"scan.archive_max_depth: must be 0 or more, got {cfg.scan.archive_max_depth!r}")
    for i, root in enumerate(cfg.scan.roots):
        if not root.startswith("/"):
            errors.append(f"scan.roots[{i}]: must be an absolute path, got {root!r}")
    if cfg.scan.host_prefix is not None and not cfg.scan.host_prefix.startswith("/"):
        errors.append(f"scan.host_prefix: must be an absolute path, got {cfg.scan.host_prefix!r}")
    if cfg.watch.max_watches < 0:
        errors.append(f"watch.max_watches: must be 0 or more, got {cfg.watch.max_watches!r}")
    if cfg.watch.debounce > 5:
        errors.append(f"watch.debounce: must be at most 5s, got {cfg.watch.debounce!r}")
    if not cfg.state_dir.startswith("/"):
        errors.append(f"state_dir: must be an absolute path, got {cfg.state_dir!r}")
    if cfg.fingerprint.key is not None and cfg.fingerprint.key_file is not None:
        errors.append("fingerprint: set either key or key_file, not both")


def _delegate(section: str, module: str, cls_name: str, data: object, errors: list[str]) -> Any:
    """Parse a section owned by another stage with its ``from_mapping``; errors get the section prefix."""
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError):  # that stage is not installed: keep the raw mapping
        return dict(data) if isinstance(data, Mapping) else None
    if data is not None and not isinstance(data, Mapping):
        errors.append(f"{section}: expected a mapping of options, got {_describe(data)}")
        data = None
    # a stage's parser may take the file name; the agent adds it to every line itself
    kwargs = {"source": None} if "source" in inspect.signature(cls.from_mapping).parameters else {}
    try:
        return cls.from_mapping(dict(data or {}), **kwargs)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            errors.append(line if line.startswith(section) else f"{section}.{line}")
        return None


def from_mapping(data: object, *, source: str | None = None) -> AgentConfig:
    """Build and validate an :class:`AgentConfig`; raises :class:`ConfigError` listing every problem."""
    errors: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source or 'config'}: expected a mapping at the top level, got {_describe(data)}")
    own = {k: v for k, v in data.items() if k not in {name for name, _, _ in _DELEGATED}}
    cfg: AgentConfig = build_section(AgentConfig, own, "", errors)
    delegated = {name: _delegate(name, mod, cls, data.get(name), errors) for name, mod, cls in _DELEGATED}
    cfg = dataclasses.replace(cfg, source=source, **delegated)
    _check(cfg, errors)
    if errors:
        where = f"{source}: " if source else ""
        raise ConfigError("\n".join(where + e for e in errors))
    return cfg


def load_config(path: str | Path | None = None) -> AgentConfig:
    """Read and validate the agent configuration file (default ``/etc/keysweep/agent.yaml``)."""
    p = Path(path) if path else DEFAULT_CONFIG_PATH
    return from_mapping(read_yaml(p), source=str(p))


def option_paths(cls: type = AgentConfig, prefix: str = "") -> list[str]:
    """Every option as a dotted path (for documentation checks), including delegated sections' dataclass fields."""
    out: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out += option_paths(hint, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    if cls is AgentConfig:
        for name, module, cls_name in _DELEGATED:
            out.remove(name)
            try:
                sub = getattr(importlib.import_module(module), cls_name)
            except (ImportError, AttributeError):
                continue
            if dataclasses.is_dataclass(sub):
                out += option_paths(sub, f"{name}.")
    return out
