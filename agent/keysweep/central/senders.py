"""Which sender may speak for which host: the collector binds every message to its SQS ``SenderId``.

Rules, in order:

1. An EC2 instance profile sends as ``AROA…:i-0123…`` (the role session is named by EC2 after the instance): such a
   sender speaks for host id = that instance id, and for nothing else unless the sender map gives it more (agents
   in pods that use their node's instance profile). ``instance_roles`` in the sender map limits this rule to the
   agents' instance roles, for accounts where other roles could pick a session name that looks like an instance.
2. A sender named in the sender map (``principals``: a SenderId or principal id — the part before ``:`` — or a
   glob of either, to a list of host ids or host id globs) speaks only for the host ids its entries allow.
3. Any other sender: refused when ``unmapped: reject``; otherwise the first sender (principal id) seen for a host id
   owns it (recorded in the store) and another sender's message for it is refused. Host ids that look like EC2
   instance ids, and host ids a map entry allows, are never owned this way: they belong to rules 1 and 2.

The map is a YAML or JSON document (``keysweep collect --senders FILE``; the Lambda function reads the same
document as JSON from ``KEYSWEEP_SENDER_MAP``)::

    principals:
      AIDAEXAMPLEONPREM01: [build-01, build-02]     # an IAM user of two on-premises machines
      "AROAEXAMPLEECSTASK:*": ["arn:aws:ecs:*"]     # an ECS task role: any task of it
    instance_roles: [AROAEXAMPLEAGENTROLE]          # optional
    unmapped: first-seen                            # or: reject
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from keysweep.errors import ConfigError

SENDER_MAP_ENV = "KEYSWEEP_SENDER_MAP"
_INSTANCE_SESSION = re.compile(r"(AROA[A-Z0-9]{8,})\:(i-[0-9a-f]{8,17})\Z")
_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}\Z")
UNMAPPED = ("first-seen", "reject")


def principal(sender: str) -> str:
    """The principal id of a SenderId: the role id of an assumed-role session, the user id of a user."""
    return sender.split(":", 1)[0]


@dataclass(frozen=True)
class Binding:
    """What the sender map says about one message: refused (``reason``), or the owner to record for its host."""

    reason: str | None = None
    owner: str | None = None
    authoritative: bool = False  # bound by the instance or the map: takes the host id over from a first-seen owner


@dataclass(frozen=True)
class SenderMap:
    principals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    instance_roles: tuple[str, ...] = ()
    unmapped: str = "first-seen"

    @classmethod
    def from_mapping(cls, data: Any, *, source: str) -> SenderMap:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: the sender map must be a mapping")
        unknown = set(data) - {"principals", "instance_roles", "unmapped"}
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {sorted(unknown)} (principals, instance_roles, unmapped)")
        raw = data.get("principals") or {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: principals must map a sender to a list of host ids")
        principals: dict[str, tuple[str, ...]] = {}
        for name, hosts in raw.items():
            if isinstance(hosts, str):
                hosts = [hosts]
            if (
                not isinstance(name, str)
                or not name
                or not isinstance(hosts, list)
                or not hosts
                or not all(isinstance(h, str) and h for h in hosts)
            ):
                raise ConfigError(f"{source}: principals.{name}: expected a list of host ids or patterns")
            principals[name] = tuple(hosts)
        roles = data.get("instance_roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
            raise ConfigError(f"{source}: instance_roles must be a list of role ids (AROA…)")
        unmapped = data.get("unmapped", "first-seen")
        if unmapped not in UNMAPPED:
            raise ConfigError(f"{source}: unmapped must be one of {', '.join(UNMAPPED)}")
        return cls(principals, tuple(roles), unmapped)

    @classmethod
    def load(cls, path: str | Path) -> SenderMap:
        from keysweep.yamlfile import read_yaml  # YAML only where a file is read: the Lambda package reads JSON

        return cls.from_mapping(read_yaml(path), source=str(path))

    @classmethod
    def from_json(cls, text: str | None, *, source: str = SENDER_MAP_ENV) -> SenderMap:
        if not text or not text.strip():
            return cls()
        try:
            data = json.loads(text)
        except ValueError:
            raise ConfigError(f"{source}: not valid JSON") from None
        return cls.from_mapping(data, source=source)

    def _entries(self, sender: str) -> list[tuple[str, ...]]:
        ident = principal(sender)
        return [
            hosts for name, hosts in self.principals.items() if fnmatchcase(sender, name) or fnmatchcase(ident, name)
        ]

    def bind(self, sender: str, host_id: str) -> Binding:
        instance = _INSTANCE_SESSION.match(sender)
        if instance and self.instance_roles and instance.group(1) not in self.instance_roles:
            instance = None
        if instance and host_id == instance.group(2):
            return Binding(owner=sender, authoritative=True)
        entries = self._entries(sender)
        if entries:
            if any(fnmatchcase(host_id, pattern) for hosts in entries for pattern in hosts):
                return Binding(owner=principal(sender), authoritative=True)
            return Binding(reason=f"the sender map does not let sender {sender} speak for this host id")
        if instance:
            return Binding(reason=f"sender {sender} is an EC2 instance and speaks only for its own host id")
        if self.unmapped == "reject":
            return Binding(reason=f"sender {sender} is not in the sender map")
        if _INSTANCE_ID.match(host_id):
            return Binding(
                reason=f"sender {sender} may not claim an EC2 instance id (only the instance's own role "
                "session or the sender map)"
            )
        if any(fnmatchcase(host_id, pattern) for hosts in self.principals.values() for pattern in hosts):
            return Binding(reason=f"the sender map gives this host id to another sender than {sender}")
        return Binding(owner=principal(sender))
