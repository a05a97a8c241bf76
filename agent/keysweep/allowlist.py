"""An allowlist of accepted findings: path globs, key ids and fingerprints, from a small YAML file.

```yaml
paths:          # globs on the reported path (an archive's path covers its members; "a.zip!member" names one)
  - /opt/app/tests/fixtures/**
key_ids:
  - AKIAXXXXXXXXXXXXXXXX
fingerprints:   # a finding's key fingerprint or secret fingerprint (as printed by `keysweep scan --format json`)
  - 3f1c...
```
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keysweep import keyid
from keysweep.errors import ConfigError
from keysweep.models import Finding
from keysweep.ruleset import glob_to_regex
from keysweep.yamlfile import read_yaml

_FIELDS = ("paths", "key_ids", "fingerprints")


@dataclass(frozen=True)
class Allowlist:
    paths: tuple[str, ...] = ()
    key_ids: frozenset[str] = frozenset()
    fingerprints: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        regex = "|".join(f"(?:{glob_to_regex(p)})" for p in self.paths)
        object.__setattr__(self, "_path_re", re.compile(regex) if regex else None)

    @classmethod
    def from_mapping(cls, data: object, *, source: str = "allowlist") -> Allowlist:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping with {', '.join(_FIELDS)}")
        unknown = sorted(set(map(str, data)) - set(_FIELDS))
        if unknown:
            raise ConfigError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(_FIELDS)})")
        values = {name: _strings(data.get(name), source, name) for name in _FIELDS}
        for kid in values["key_ids"]:
            if keyid.key_type(kid) is None:
                raise ConfigError(f"{source}: key_ids: {kid!r} is not an access key id")
        return cls(
            paths=tuple(values["paths"]),
            key_ids=frozenset(values["key_ids"]),
            fingerprints=frozenset(values["fingerprints"]),
        )

    @classmethod
    def load(cls, path: str | Path) -> Allowlist:
        return cls.from_mapping(read_yaml(path, source=f"allowlist {path}"), source=f"allowlist {path}")

    def allows(self, finding: Finding) -> bool:
        """True when the finding is accepted (not reported)."""
        if finding.key_id in self.key_ids:
            return True
        if finding.fingerprint in self.fingerprints or (finding.secret_fingerprint or "") in self.fingerprints:
            return True
        path_re: re.Pattern[str] | None = getattr(self, "_path_re")  # noqa: B009
        path = finding.location.path
        if path_re is None or path is None:
            return False
        if path_re.search(path) is not None:  # a file, or an archive with everything in it
            return True
        member = finding.location.member
        return member is not None and path_re.search(f"{path}!{member}") is not None

    def apply(self, findings: Iterable[Finding]) -> tuple[list[Finding], int]:
        """The findings not allowed, and how many were."""
        items = list(findings)
        kept = [f for f in items if not self.allows(f)]
        return kept, len(items) - len(kept)


def _strings(value: Any, source: str, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{source}: {name}: expected a list of strings")
    return list(value)
