"""Loads and checks the detection rules (rules/*.yaml, shipped as package ``keysweep.rules``).

A rule file holds ``rules:`` (a list of rules) and/or ``ignore:`` (path globs, documentation key ids and
secrets). Every problem raises :class:`RuleError` naming the file and the field.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from keysweep.errors import RuleError
from keysweep.yamlfile import parse_yaml

KINDS = ("key-id", "secret", "session-token")
SEVERITIES = ("critical", "high", "medium", "low", "info")  # most severe first


def most_severe(*severities: str) -> str:
    """The most severe of the given severities (unknown names rank below ``info``)."""
    return min(severities, key=lambda s: SEVERITIES.index(s) if s in SEVERITIES else len(SEVERITIES))


_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
_RULE_FIELDS = {
    "id",
    "kind",
    "description",
    "severity",
    "regex",
    "keywords",
    "names",
    "prefixes",
    "examples",
    "negative_examples",
}
# fields only some kinds take: (kinds, why another kind may not have it)
_KIND_FIELDS = {
    "regex": (
        ("key-id",),
        "only key-id rules have a regex: secrets (40 characters of [A-Za-z0-9/+]) and session "
        "tokens have a fixed shape, searched only near key ids; see docs/detection.md",
    ),
    "keywords": (("key-id",), "only key-id rules have keywords (the prefilter's literals)"),
    "names": (("secret", "session-token"), "only secret and session-token rules have names"),
    "prefixes": (("session-token",), "only session-token rules have prefixes"),
}
_IGNORE_FIELDS = {"paths", "example_key_ids", "example_secrets"}
_NOT_RULES = frozenset({"canary-accounts.yaml"})  # other data shipped in the same package (verification's)


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    description: str
    severity: str
    regex: str | None  # key-id rules only
    keywords: tuple[str, ...]
    names: str | None
    prefixes: tuple[str, ...]
    examples: tuple[str, ...]
    negative_examples: tuple[str, ...]
    source: str  # the file it came from (for messages)


@dataclass(frozen=True)
class Ruleset:
    rules: tuple[Rule, ...]
    ignore_paths: tuple[str, ...]
    example_key_ids: frozenset[str]
    example_secrets: frozenset[str]
    digest: str  # sha256 of every loaded file's name and content: changes whenever a rule does
    # (any glob's longest literal, every glob as one alternation, one group each): the first is a cheap gate,
    # almost always false
    _ignore: tuple[re.Pattern[str], re.Pattern[str]] | None

    @property
    def key_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.kind == "key-id")

    @property
    def secret_rule(self) -> Rule:
        return next(r for r in self.rules if r.kind == "secret")

    @property
    def token_rule(self) -> Rule:
        return next(r for r in self.rules if r.kind == "session-token")

    @property
    def keywords(self) -> tuple[bytes, ...]:
        """The literal prefixes of every key-id rule, as bytes, for the prefilter."""
        seen: dict[bytes, None] = {}
        for rule in self.key_rules:
            for kw in rule.keywords:
                seen[kw.encode("ascii")] = None
        return tuple(seen)

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    def is_ignored_path(self, path: str) -> bool:
        """True for vendored SDK example data and other paths whose keys are known examples."""
        if self._ignore is None:
            return False
        gate, globs = self._ignore
        return gate.search(path) is not None and globs.search(path) is not None

    def ignoring_glob(self, path: str) -> str | None:
        """The first ignore glob that matches ``path`` (for saying why a finding is an example), else None."""
        if self._ignore is None:
            return None
        m = self._ignore[1].search(path)
        return self.ignore_paths[(m.lastindex or 1) - 1] if m is not None else None


def builtin_rules_dir() -> Path:
    return Path(str(resources.files("keysweep.rules")))


def load_ruleset(extra_dirs: Sequence[Path] = ()) -> Ruleset:
    """The built-in rules plus every *.yaml in ``extra_dirs`` (rule ids must be unique across all)."""
    files = [f for f in sorted(builtin_rules_dir().glob("*.yaml")) if f.name not in _NOT_RULES]
    for d in extra_dirs:
        d = Path(d)
        if d.is_file():
            files.append(d)
        elif d.is_dir():
            files.extend(sorted(d.glob("*.yaml")))
        else:
            raise RuleError(f"{d}: rules directory does not exist")
    return load_files(files)


def load_files(files: Sequence[Path]) -> Ruleset:
    digest = hashlib.sha256()
    rules: list[Rule] = []
    ignore_paths: list[str] = []
    example_ids: set[str] = set()
    example_secrets: set[str] = set()
    seen_ids: dict[str, str] = {}
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise RuleError(f"{path}: cannot read ({exc.strerror})") from None
        digest.update(path.name.encode() + b"\0" + raw + b"\0")
        doc = parse_yaml(raw, source=str(path), error=RuleError)
        if doc is None:
            continue
        if not isinstance(doc, dict) or not set(doc) <= {"rules", "ignore"}:
            raise RuleError(f"{path}: top level must be a mapping with 'rules' and/or 'ignore'")
        for i, item in enumerate(_list(doc.get("rules", []), path, "rules")):
            rule = _parse_rule(item, path, i)
            if rule.id in seen_ids:
                raise RuleError(f"{path}: rules[{i}].id: duplicate rule id {rule.id!r} (also in {seen_ids[rule.id]})")
            seen_ids[rule.id] = str(path)
            rules.append(rule)
        if "ignore" in doc:
            ign = doc["ignore"]
            if not isinstance(ign, dict):
                raise RuleError(f"{path}: ignore: must be a mapping")
            unknown = set(ign) - _IGNORE_FIELDS
            if unknown:
                raise RuleError(f"{path}: ignore.{sorted(unknown)[0]}: unknown field")
            ignore_paths += _strings(ign.get("paths", []), path, "ignore.paths")
            example_ids.update(_strings(ign.get("example_key_ids", []), path, "ignore.example_key_ids"))
            example_secrets.update(_strings(ign.get("example_secrets", []), path, "ignore.example_secrets"))
    for kind in KINDS:
        of_kind = [r for r in rules if r.kind == kind]
        if not of_kind:
            where = ", ".join(str(f) for f in files) or "(no rule files)"
            raise RuleError(f"{where}: rules: no rule of kind {kind!r}")
        if kind != "key-id" and len(of_kind) > 1:  # the detector pairs with one secret shape and one token shape
            raise RuleError(
                f"{of_kind[1].source}: rule {of_kind[1].id!r}: kind: only one {kind} rule may exist "
                f"({of_kind[0].id!r} in {of_kind[0].source})"
            )
    ignore = None
    if ignore_paths:
        literals = sorted({_longest_literal(g) for g in ignore_paths}, key=len, reverse=True)
        ignore = (
            re.compile("|".join(re.escape(lit) for lit in literals)),
            re.compile("|".join(f"({glob_to_regex(g)})" for g in ignore_paths)),  # group k: glob k-1
        )
    return Ruleset(
        rules=tuple(rules),
        ignore_paths=tuple(ignore_paths),
        example_key_ids=frozenset(example_ids),
        example_secrets=frozenset(example_secrets),
        digest=digest.hexdigest(),
        _ignore=ignore,
    )


def _longest_literal(glob: str) -> str:
    return max(re.split(r"[*?]+", glob), key=len)


def glob_to_regex(glob: str) -> str:
    """'**' spans directories, '*' and '?' stay within one; a glob not starting with '/' matches at any depth."""
    out: list[str] = []
    i = 0
    while glob.startswith("**/", i):  # at any depth is what the unanchored search does already
        i += 3
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    body = "".join(out)
    return ("^" if glob.startswith("/") else "(?:^|/)") + body + r"\Z"


def _list(value: Any, path: Path, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise RuleError(f"{path}: {field}: must be a list")
    return value


def _strings(value: Any, path: Path, field: str) -> list[str]:
    items = _list(value, path, field)
    for j, v in enumerate(items):
        if not isinstance(v, str) or not v:
            raise RuleError(f"{path}: {field}[{j}]: must be a non-empty string")
    return items


def _parse_rule(item: Any, path: Path, i: int) -> Rule:
    where = f"{path}: rules[{i}]"
    if not isinstance(item, dict):
        raise RuleError(f"{where}: must be a mapping")
    rid = item.get("id")
    if isinstance(rid, str) and _ID_RE.match(rid):
        where = f"{path}: rule {rid!r}"
    unknown = set(item) - _RULE_FIELDS
    if unknown:
        raise RuleError(f"{where}: {sorted(unknown)[0]}: unknown field")
    for f in ("id", "kind", "description", "severity", "examples"):
        if f not in item:
            raise RuleError(f"{where}: {f}: missing")
    for f in ("id", "kind", "description", "severity"):
        if not isinstance(item[f], str) or not item[f]:
            raise RuleError(f"{where}: {f}: must be a non-empty string")
    rid = item["id"]
    if not _ID_RE.match(rid):
        raise RuleError(f"{where}: id: {rid!r} must be lowercase letters, digits and '-'")
    kind = item["kind"]
    if kind not in KINDS:
        raise RuleError(f"{where}: kind: {kind!r} is not one of {', '.join(KINDS)}")
    for f in sorted(set(item) & _KIND_FIELDS.keys()):
        if kind not in _KIND_FIELDS[f][0]:
            raise RuleError(f"{where}: {f}: {_KIND_FIELDS[f][1]}")
    if item["severity"] not in SEVERITIES:
        raise RuleError(f"{where}: severity: {item['severity']!r} is not one of {', '.join(SEVERITIES)}")
    regex = None
    if kind == "key-id":
        if "regex" not in item:
            raise RuleError(f"{where}: regex: missing")
        regex = item["regex"]
        if not isinstance(regex, str) or not regex:
            raise RuleError(f"{where}: regex: must be a non-empty string")
        try:
            re.compile(regex)
        except re.error as exc:
            raise RuleError(f"{where}: regex: does not compile ({exc})") from None
    names = item.get("names")
    if names is not None:
        if not isinstance(names, str):
            raise RuleError(f"{where}: names: must be a regex string")
        try:
            re.compile(names)
        except re.error as exc:
            raise RuleError(f"{where}: names: does not compile ({exc})") from None
    keywords = _strings(item.get("keywords", []), path, f"rule {rid!r}: keywords")
    if kind == "key-id":
        if not keywords:
            raise RuleError(f"{where}: keywords: a key-id rule needs literal keywords for the prefilter")
        for kw in keywords:
            if not kw.isascii() or len(kw) < 3:
                raise RuleError(f"{where}: keywords: {kw!r} must be ASCII, at least 3 characters")
    examples = _strings(item["examples"], path, f"rule {rid!r}: examples")
    if not examples:
        raise RuleError(f"{where}: examples: at least one example is required")
    negatives = _strings(item.get("negative_examples", []), path, f"rule {rid!r}: negative_examples")
    prefixes = _strings(item.get("prefixes", []), path, f"rule {rid!r}: prefixes")
    return Rule(
        id=rid,
        kind=kind,
        description=item["description"],
        severity=item["severity"],
        regex=regex,
        keywords=tuple(keywords),
        names=names,
        prefixes=tuple(prefixes),
        examples=tuple(examples),
        negative_examples=tuple(negatives),
        source=str(path),
    )


def keyword_misses(rule: Rule) -> list[str]:
    """What the rule's regex matches in its own examples without starting at one of its keywords: text the
    prefilter never looks at, so the rule can never report it (a key-id regex must start with a keyword)."""
    if rule.regex is None:
        return []
    rx = re.compile(rule.regex)
    return [
        m.group()
        for example in rule.examples
        for m in rx.finditer(example)
        if m.group() and not m.group().startswith(rule.keywords)
    ]
