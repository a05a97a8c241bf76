"""Where each key stands on its way out, as the store keeps it: found -> replaced -> unused -> deactivated -> deleted.

One record per key and state: who (a caller ARN, or the local user when no AWS credentials named one) and when,
and whether a person marked it (``keysweep plan --mark``) or the plan observed it (IAM status, the quiet period,
the hosts' sweeps). The first record of a state is kept: progress is a history, not a setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

KEY_STATES = ("found", "replaced", "unused", "deactivated", "deleted")
SOURCES = ("mark", "observed")


@dataclass(frozen=True)
class KeyState:
    key_id: str
    state: str  # one of KEY_STATES
    actor: str
    at: str  # utc_iso()
    source: str = "mark"  # mark | observed
    note: str | None = None

    def __post_init__(self) -> None:
        if self.state not in KEY_STATES:
            raise ValueError(f"key state {self.state!r}: not one of {', '.join(KEY_STATES)}")
        if self.source not in SOURCES:
            raise ValueError(f"key state source {self.source!r}: not one of {', '.join(SOURCES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeyState:
        return cls(
            str(data["key_id"]),
            str(data["state"]),
            str(data["actor"]),
            str(data["at"]),
            str(data.get("source") or "mark"),
            data.get("note"),
        )
