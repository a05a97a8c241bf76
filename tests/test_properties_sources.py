"""The AWS INI parser and the /proc/PID/environ parser on generated and hostile input, through their public
functions (``parse_profiles``, ``scan_aws_text``, ``parse_environ``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from keysweep import keyid
from keysweep.detect import Detector
from keysweep.fingerprint import Fingerprinter
from keysweep.ruleset import load_ruleset
from keysweep.scan import ScanStats
from keysweep.sources.aws_files import parse_profiles, scan_aws_text
from keysweep.sources.processes import parse_environ

from tests.support.planted import planted_key

DETECTOR = Detector(load_ruleset(), Fingerprinter(b"property-fingerprint-key"))
_ANY = settings(max_examples=200, deadline=None)

_PROFILE_NAME = st.text("abcXYZ019-_.@ ", min_size=1, max_size=20).map(str.strip).filter(bool)
_SPACE = st.text(" \t", max_size=3)
_PROFILE = st.tuples(
    _PROFILE_NAME,
    st.integers(0, 10_000),  # which planted key
    st.sampled_from(["aws_access_key_id", "AWS_ACCESS_KEY_ID", "Aws_Access_Key_Id"]),
    _SPACE,
    _SPACE,
    st.sampled_from(["=", ":"]),
    st.sampled_from(["", " # a comment", " ; another", "\t# x"]),
    st.sampled_from(["", '"', "'"]),
    st.lists(
        st.sampled_from(
            ["# comment", "; comment", "", "   ", "region = eu-west-1", "s3 =", "  max_concurrent_requests = 10"]
        ),
        max_size=3,
    ),
)


@_ANY
@given(
    st.lists(_PROFILE, min_size=1, max_size=6, unique_by=lambda p: (p[0], p[1])),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
)
def test_generated_credentials_files_give_back_every_profile(profiles, eol: str, bom: bool) -> None:  # noqa: ANN001
    lines: list[str] = []
    expected = []
    for name, i, key_name, sp1, sp2, sep, comment, quote, extra in profiles:
        p = planted_key(i)
        lines.append(f"[{name}]")
        lines += extra
        lines.append(f"{key_name}{sp1}{sep}{sp2}{quote}{p.key_id}{quote}{comment}")
        expected.append((name, p.key_id, p.secret, len(lines)))
        lines.append(f"aws_secret_access_key = {p.secret}")
    text = eol.join(lines) + eol
    parsed, _malformed = parse_profiles(text, "aws-credentials")
    # a later section of the same name is another Profile; the file's first value per name is what SDKs use
    by_name: dict[str, list] = {}  # type: ignore[type-arg]
    for prof in parsed:
        by_name.setdefault(prof.name, []).append(prof)
    for name, kid, secret, line in expected:
        assert any(
            pr.get("aws_access_key_id") == kid
            and pr.get("aws_secret_access_key") == secret
            and pr.values["aws_access_key_id"][1] == line
            for pr in by_name[name]
        )
    data = ("\ufeff" if bom else "").encode() + text.encode()
    found = scan_aws_text(data, "/h/.aws/credentials", "aws-credentials", DETECTOR, ScanStats())
    got = {(f.location.profile, f.key_id, f.secret.reveal() if f.secret else None, f.location.line) for f in found}
    # placeholder-looking ids (AKIAXXXX…) are dropped as documentation examples, by design
    assert {(n, k, s, ln) for n, k, s, ln in expected if not keyid.is_example_key(k)} <= got


@_ANY
@given(st.text(max_size=2000), st.sampled_from(["aws-credentials", "aws-config"]))
def test_any_text_parses_and_every_line_number_is_a_real_line(text: str, kind: str) -> None:
    profiles, malformed = parse_profiles(text, kind)
    last = text.count("\n") + 1
    assert all(1 <= n <= last for n in malformed)
    for p in profiles:
        assert 1 <= p.line <= last
        assert all(1 <= ln <= last for _v, ln in p.values.values())
        assert text.split("\n")[p.line - 1].strip().startswith("[")


_ITEM = st.tuples(
    st.binary(min_size=1, max_size=30).filter(lambda b: b"=" not in b and b"\0" not in b),
    st.binary(max_size=200).filter(lambda b: b"\0" not in b),
)
_JUNK = st.binary(max_size=30).filter(lambda b: b"=" not in b and b"\0" not in b)  # no '=': not a variable


@_ANY
@given(st.lists(st.tuples(_ITEM, _JUNK), max_size=30), st.booleans())
def test_environ_items_come_back_in_order_between_junk_and_empty_names(items, trailing_nul: bool) -> None:  # noqa: ANN001
    parts: list[bytes] = []
    for (name, value), junk in items:
        parts += [junk, b"=" + value, name + b"=" + value]  # junk and a nameless item before each variable
    data = b"\0".join(parts) + (b"\0" if trailing_nul else b"")
    got = [(n.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")) for n, v in parse_environ(data)]
    assert got == [item for item, _junk in items]
