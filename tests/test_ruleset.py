from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import pytest
from keysweep.cli import main
from keysweep.errors import RuleError
from keysweep.ruleset import builtin_rules_dir, glob_to_regex, load_files, load_ruleset

GOOD_RULE = """
rules:
  - id: extra-rule
    kind: key-id
    description: an extra rule
    severity: medium
    regex: 'AKIB[A-Z2-7]{16}'
    keywords: [AKIB]
    examples: ['x AKIBXYZDQCEN4B6JSJQI x']
    negative_examples: ['nothing']
"""


def test_builtin_rules_load():
    rs = load_ruleset()
    assert {r.kind for r in rs.rules} == {"key-id", "secret", "session-token"}
    assert set(rs.keywords) >= {b"AKIA", b"ASIA", b"ABIA", b"ACCA"}
    assert all(isinstance(k, bytes) for k in rs.keywords)
    assert "AKIAIOSFODNN7EXAMPLE" in rs.example_key_ids
    assert "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" in rs.example_secrets
    assert len(rs.digest) == 64
    assert rs.digest == load_ruleset().digest


def test_rules_ship_inside_the_package():
    assert (builtin_rules_dir() / "aws.yaml").is_file()


def test_digest_changes_with_rule_content(tmp_path):
    (tmp_path / "extra.yaml").write_text(GOOD_RULE)
    one = load_ruleset([tmp_path]).digest
    (tmp_path / "extra.yaml").write_text(GOOD_RULE.replace("medium", "low"))
    two = load_ruleset([tmp_path]).digest
    assert len({load_ruleset().digest, one, two}) == 3


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("/usr/lib/python3/dist-packages/botocore/data/iam/2010-05-08/examples-1.json", True),
        ("/opt/venv/lib/python3.11/site-packages/botocore/data/sts/2011-06-15/examples-1.json", True),
        ("/opt/venv/lib/python3.11/site-packages/moto/iam/models.py", True),
        ("/srv/app/node_modules/aws-sdk/clients/iam.d.ts", True),
        ("/srv/app/node_modules/aws-sdk-mock/index.js", False),
        ("/opt/venv/lib/python3.11/site-packages/botocore/data/iam/2010-05-08/service-2.json", False),
        ("/home/dev/moto/credentials", False),
        ("/home/dev/.aws/credentials", False),
        ("/etc/app/examples-1.json", False),
        ("/opt/keysweep/lib/python3.11/site-packages/keysweep/rules/aws.yaml", True),
        ("/opt/keysweep/lib/python3.11/site-packages/keysweep/detect.py", False),
        # documentation: only the system's documentation trees
        ("/usr/share/doc/python3-botocore/html/reference/sts.html", True),
        ("/usr/local/share/doc/awscli/index.html", True),
        ("/usr/share/doc/python3-botocore/changelog.txt", False),
        ("/opt/billing/share/doc/setup.html", False),
        ("/home/dev/.local/share/doc/notes.html", False),
        ("/srv/chroot/usr/share/doc/app/index.html", False),
        ("/var/www/usr/share/doc/index.html", False),
    ],
)
def test_ignored_paths(path, ignored):
    assert load_ruleset().is_ignored_path(path) is ignored


def test_glob_semantics():
    import re

    rx = re.compile(glob_to_regex("**/a/*.json"))
    assert rx.search("/x/y/a/b.json") and rx.search("a/b.json")
    assert not rx.search("/x/a/sub/b.json")  # '*' stays within one directory
    assert re.compile(glob_to_regex("/etc/**")).search("/etc/x/y")
    assert not re.compile(glob_to_regex("/etc/**")).search("/srv/etc/x")


SECRET_RULE = """rules:
  - id: second-secret
    kind: secret
    description: another secret shape
    severity: high
    regex: '[A-Za-z0-9/+]{40}'
    names: 'password'
    examples: ['x']
"""

BAD_FILES = [
    ("rules: [", "line"),
    ("- just a list", "top level"),
    ("rules: {id: x}", "rules: must be a list"),
    (GOOD_RULE.replace("    severity: medium\n", ""), "severity: missing"),
    (GOOD_RULE.replace("severity: medium", "severity: urgent"), "severity: 'urgent'"),
    (GOOD_RULE.replace("kind: key-id", "kind: password"), "kind: 'password'"),
    (GOOD_RULE.replace("regex: 'AKIB[A-Z2-7]{16}'", "regex: 'AKIB[A-Z'"), "regex: does not compile"),
    (GOOD_RULE.replace("id: extra-rule", "id: Extra Rule"), "id:"),
    (GOOD_RULE.replace("    keywords: [AKIB]\n", ""), "keywords:"),
    (GOOD_RULE.replace("keywords: [AKIB]", "keywords: AKIB"), "keywords: must be a list"),
    (GOOD_RULE.replace("examples: ['x AKIBXYZDQCEN4B6JSJQI x']", "examples: []"), "examples:"),
    (GOOD_RULE.replace("negative_examples: ['nothing']", "negative_examples: [1]"), "negative_examples[0]"),
    (GOOD_RULE + "    colour: red\n", "colour: unknown field"),
    (GOOD_RULE.replace("id: extra-rule", "id: aws-access-key-id"), "id: duplicate"),
    ("ignore:\n  paths: '**/x'\n", "ignore.paths: must be a list"),
    # fields a kind does not use are refused, not ignored
    (SECRET_RULE, "regex: only key-id rules have a regex"),
    (SECRET_RULE.replace("    regex: '[A-Za-z0-9/+]{40}'\n", "    keywords: [SECRET]\n"), "keywords: only key-id"),
    (SECRET_RULE.replace("    regex: '[A-Za-z0-9/+]{40}'\n", "    prefixes: [abc]\n"), "prefixes: only session-token"),
    (GOOD_RULE + "    names: 'key'\n", "names: only secret and session-token"),
    (SECRET_RULE.replace("    regex: '[A-Za-z0-9/+]{40}'\n", ""), "kind: only one secret rule may exist"),
    ("ignore:\n  pathz: []\n", "ignore.pathz: unknown field"),
]


@pytest.mark.parametrize(("content", "expected"), BAD_FILES)
def test_bad_rule_file_names_file_and_field(tmp_path, content, expected):
    bad = tmp_path / "broken-rules.yaml"
    bad.write_text(content)
    with pytest.raises(RuleError) as exc:
        load_ruleset([tmp_path])
    assert "broken-rules.yaml" in str(exc.value)
    assert expected in str(exc.value)


def test_missing_rule_kind_is_an_error(tmp_path):
    (tmp_path / "only.yaml").write_text(GOOD_RULE)
    with pytest.raises(RuleError, match="no rule of kind"):
        load_files([tmp_path / "only.yaml"])


def test_missing_extra_dir_is_an_error(tmp_path):
    with pytest.raises(RuleError, match="does-not-exist"):
        load_ruleset([tmp_path / "does-not-exist"])


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_cli_rules_check_passes_on_builtin_rules():
    code, out, _ = _run(["rules", "check"])
    assert code == 0
    assert "aws-access-key-id" in out and "0 failed" in out


def test_cli_rules_check_reports_failing_examples(tmp_path):
    (tmp_path / "extra.yaml").write_text(GOOD_RULE.replace("examples: ['x AKIB", "examples: ['x AKIC"))
    code, out, _ = _run(["rules", "check", str(tmp_path)])
    assert code == 2
    assert "extra-rule" in out and "example not detected" in out and "1 failed" in out


def test_cli_rules_check_bad_file_exits_2_naming_it(tmp_path):
    (tmp_path / "bad.yaml").write_text(GOOD_RULE.replace("severity: medium", "severity: 7"))
    code, _, err = _run(["rules", "check", str(tmp_path)])
    assert code == 2
    assert "bad.yaml" in err and "severity" in err


def test_cli_rules_check_reports_a_regex_that_does_not_start_with_a_keyword(tmp_path):
    # 'AKIB' is this rule's keyword, but its regex also matches 'XKIB…': the prefilter never looks there
    (tmp_path / "extra.yaml").write_text(
        GOOD_RULE.replace("regex: 'AKIB[A-Z2-7]{16}'", "regex: '[AX]KIB[A-Z2-7]{16}'").replace(
            "examples: ['x AKIB", "examples: ['XKIBXYZDQCEN4B6JSJQI', 'x AKIB"
        )
    )
    code, out, _ = _run(["rules", "check", str(tmp_path)])
    assert code == 2
    assert (
        "extra-rule: regex matches 'XKIBXYZDQCEN4B6JSJQI' in an example, which starts with none of its keywords" in out
    )


def test_builtin_secret_and_token_rules_have_no_regex():
    ruleset = load_ruleset()
    assert ruleset.secret_rule.regex is None and ruleset.token_rule.regex is None
    assert all(r.regex for r in ruleset.key_rules)


def test_cli_rules_check_accepts_a_single_file(tmp_path):
    f = tmp_path / "extra.yaml"
    f.write_text(GOOD_RULE)
    code, out, _ = _run(["rules", "check", str(f)])
    assert code == 0 and "extra-rule" in out


@pytest.mark.parametrize("root", ["/", "/usr", "/opt"])
def test_documentation_is_ignored_by_host_path_whatever_the_scan_root(tmp_path, root):
    """Ignore globs match the host's absolute path (the host prefix stripped), not a path relative to where the
    scan starts: a scan of / and one of /usr skip the same system documentation, and an application's own
    share/doc is scanned from any root."""
    from tests.support.hosttree import scan_paths

    host = tmp_path / "host"
    key, other = "AKIAXYZDQCEN4B6JSJQI", "AKIASP2TPHJSQH3FJRUX"
    page = "<p>aws_access_key_id = {}</p>\n"
    for rel, kid in [
        ("usr/share/doc/tool/html/index.html", key),
        ("usr/local/share/doc/tool/a.html", key),
        ("usr/lib/app/share/doc/b.html", other),
        ("opt/app/share/doc/c.html", other),
    ]:
        (host / rel).parent.mkdir(parents=True, exist_ok=True)
        (host / rel).write_text(page.format(kid))
    result = scan_paths(roots=(root,), path_prefix=str(host))
    found = sorted(f.location.path for f in result.findings)
    expected = {
        "/": ["/opt/app/share/doc/c.html", "/usr/lib/app/share/doc/b.html"],
        "/usr": ["/usr/lib/app/share/doc/b.html"],
        "/opt": ["/opt/app/share/doc/c.html"],
    }[root]
    assert found == expected
    assert result.stats.skipped["ignored-path"] == (0 if root == "/opt" else 2)
    # without the host prefix the same tree is not the host's documentation: a copy of it elsewhere is scanned
    copy = scan_paths(host / "usr")
    assert {f.key_id for f in copy.findings} == {key, other} and copy.stats.skipped["ignored-path"] == 0
