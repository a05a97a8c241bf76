"""Every YAML input (configuration, rules, allowlist) reports syntax errors the same way: file, line, column."""

from __future__ import annotations

import pytest
from keysweep.allowlist import Allowlist
from keysweep.errors import ConfigError, RuleError
from keysweep.ruleset import load_ruleset

BROKEN = "paths:\n  - /a\n  - [unclosed\n"


def test_allowlist_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "allow.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigError, match=rf"allowlist {path}: not valid YAML at line \d+, column \d+"):
        Allowlist.load(path)


def test_rule_file_syntax_error_is_a_rule_error_naming_the_file(tmp_path):
    (tmp_path / "bad.yaml").write_text(BROKEN)
    with pytest.raises(RuleError, match=r"bad\.yaml: not valid YAML at line \d+"):
        load_ruleset([tmp_path])


def test_unreadable_allowlist_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        Allowlist.load(tmp_path / "missing.yaml")
