"""The canary gate: decides offline, before any network call, which keys must never be sent anywhere.

Any signed call with a honey token alerts whoever planted it, so a key is held back when
- its account (decoded offline from the key id, or learned with sts:GetAccessKeyInfo) is a known canary account
  (rules/canary-accounts.yaml plus the configured extra accounts), or
- it sits in an AWS profile the configuration names as a honey-token profile (ggshield's ``honeytoken plant``
  writes a plain ``[profile]`` section whose name the GitGuardian workspace chooses; nothing on disk marks it,
  so the names are configuration), or a source already classified the profile as a canary (profile_kind), or
- its key id is listed explicitly in the configuration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from keysweep.errors import RuleError
from keysweep.models import Finding
from keysweep.yamlfile import parse_yaml

CANARY_FILE = "canary-accounts.yaml"
_ACCOUNT_RE = re.compile(r"\d{12}")


def parse_canary_accounts(text: str, *, source: str) -> frozenset[str]:
    """The account ids of a canary-accounts document; raises RuleError naming the file and the field."""
    doc = parse_yaml(text, source=source, error=RuleError)
    if not isinstance(doc, dict) or not isinstance(doc.get("accounts"), list):
        raise RuleError(f"{source}: 'accounts' must be a list")
    accounts: set[str] = set()
    for i, entry in enumerate(doc["accounts"]):
        account = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(account, str) or not _ACCOUNT_RE.fullmatch(account):
            raise RuleError(f"{source}: accounts[{i}].id must be a quoted 12-digit account id, got {account!r}")
        accounts.add(account)
    return frozenset(accounts)


def builtin_canary_accounts() -> frozenset[str]:
    text = resources.files("keysweep.rules").joinpath(CANARY_FILE).read_text(encoding="utf-8")
    return parse_canary_accounts(text, source=CANARY_FILE)


def is_account_id(value: str) -> bool:
    return bool(_ACCOUNT_RE.fullmatch(value))


@dataclass(frozen=True)
class CanaryGate:
    accounts: frozenset[str]
    profiles: frozenset[str] = frozenset()
    key_ids: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls, *, extra_accounts: Iterable[str] = (), profiles: Iterable[str] = (), key_ids: Iterable[str] = ()
    ) -> CanaryGate:
        return cls(builtin_canary_accounts() | frozenset(extra_accounts), frozenset(profiles), frozenset(key_ids))

    def reason(self, finding: Finding, account: str | None) -> str | None:
        """Why this finding is a canary ("canary-account", …), or None when it may be verified."""
        if finding.key_id in self.key_ids:
            return "canary-key-id"
        if finding.profile_kind == "canary":
            return "honeytoken-profile"
        if finding.location.profile is not None and finding.location.profile in self.profiles:
            return "canary-profile"
        if account is not None and account in self.accounts:
            return "canary-account"
        return None
