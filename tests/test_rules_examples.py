"""Every rule's examples are detected and its negative examples are not (the same check as `keysweep rules check`)."""

from __future__ import annotations

import pytest
from keysweep.detect import check_rule_examples
from keysweep.ruleset import load_ruleset

RESULTS = check_rule_examples(load_ruleset())


@pytest.mark.parametrize(
    "result",
    RESULTS,
    ids=[f"{r.rule}-{'pos' if r.positive else 'neg'}-{i}" for i, r in enumerate(RESULTS)],
)
def test_rule_example(result):
    what = "must be detected" if result.positive else "must not be detected"
    assert result.ok, f"{result.rule}: {what}: {result.example!r}"


def test_every_rule_has_examples_of_both_kinds():
    for rule in load_ruleset().rules:
        assert rule.examples, rule.id
        assert rule.negative_examples, rule.id


def test_a_rule_whose_example_fails_is_reported(tmp_path):
    (tmp_path / "extra.yaml").write_text(
        """
rules:
  - id: extra-key-id
    kind: key-id
    description: a rule whose examples are wrong on purpose
    severity: low
    regex: 'AKIB[A-Z2-7]{16}'
    keywords: [AKIB]
    examples: ['no key here']
    negative_examples: ['AKIBXYZDQCEN4B6JSJQI']
"""
    )
    results = [r for r in check_rule_examples(load_ruleset([tmp_path])) if r.rule == "extra-key-id"]
    assert len(results) == 2 and not any(r.ok for r in results)
