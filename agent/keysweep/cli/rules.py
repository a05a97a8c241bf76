"""``keysweep rules check [DIR ...]``: load the detection rules and run every example through the detector."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from keysweep.detect import check_rule_examples
from keysweep.errors import ExitCode, RuleError
from keysweep.ruleset import builtin_rules_dir, keyword_misses, load_ruleset
from keysweep.textsafe import safe_text


def register(subparsers: Any) -> None:
    rules = subparsers.add_parser(
        "rules",
        help="work with detection rules",
        description="Work with keysweep's detection rules (the built-in ones and your own rule files). "
        "`keysweep rules check [DIR ...]` loads them and runs every example and negative example.",
    )
    sub = rules.add_subparsers(dest="rules_command", metavar="ACTION")
    check = sub.add_parser(
        "check",
        help="load the rules and run every example and negative example",
        description="Load the built-in rules plus the rule files in DIR (each *.yaml), run every rule's examples "
        "(must be detected) and negative examples (must not be), and report. Exit 0 when all pass, 2 otherwise.",
    )
    check.add_argument("dirs", nargs="*", type=Path, metavar="DIR", help="extra rule directory or file")
    check.set_defaults(func=run_check)
    rules.set_defaults(func=lambda _args: _usage(rules))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return int(ExitCode.USAGE)


def _source(path: str) -> str:
    """Where a rule came from: ``built-in NAME`` for the packaged rules (their install path is long), else the
    path given."""
    source = Path(path)
    return f"built-in {source.name}" if source.parent == builtin_rules_dir() else safe_text(path)


def run_check(args: argparse.Namespace) -> int:
    try:
        ruleset = load_ruleset(args.dirs)
    except RuleError as exc:
        print(f"keysweep: rules: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    results = check_rule_examples(ruleset)
    failed = [r for r in results if not r.ok]
    misses = {rule.id: keyword_misses(rule) for rule in ruleset.rules}
    for rule in ruleset.rules:
        mine = [r for r in results if r.rule == rule.id]
        bad = sum(1 for r in mine if not r.ok) + len(misses[rule.id])
        status = "ok" if not bad else f"FAILED {bad}"
        print(f"{rule.id:28} {rule.kind:14} {len(mine):3} examples  {status}  ({_source(rule.source)})")
    for r in failed:
        what = "example not detected" if r.positive else "negative example detected"
        print(f"  {r.rule}: {what}: {safe_text(repr(r.example))}")
    for rid, texts in misses.items():
        for text in texts:
            print(
                f"  {rid}: regex matches {safe_text(repr(text))} in an example, which starts with none of its "
                "keywords: the prefilter never looks there"
            )
    n_failed = len(failed) + sum(map(len, misses.values()))
    print(
        f"{len(ruleset.rules)} rules, {len(results)} examples, {n_failed} failed; "
        f"{len(ruleset.ignore_paths)} ignored path globs; digest {ruleset.digest[:16]}"
    )
    return int(ExitCode.USAGE if n_failed else ExitCode.CLEAN)
