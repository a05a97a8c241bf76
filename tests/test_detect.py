from __future__ import annotations

import base64
import io
import json
import marshal
import py_compile
import random
import re
import string
from pathlib import Path
from urllib.parse import quote

import pytest
from keysweep.detect import DEFAULT_PAIR_WINDOW, MAX_KEYS_PER_PLACE, Detector, KeyCap, Place
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Location
from keysweep.ruleset import load_ruleset

KID = "AKIAXYZDQCEN4B6JSJQI"
KID2 = "AKIASP2TPHJSQH3FJRUX"
TMP = "ASIAY34FZKBOKMUTVV7A"
SECRET = "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"
SECRET2 = "p9Lk2/Hd8+Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz0"
TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ" + "D" * 200 + "AbCd3f=="
LOC = Location(kind="file", path="/srv/app/config")
B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(load_ruleset(), Fingerprinter(b"test-fingerprint-key"))


def scan(detector: Detector, text: str | bytes, **kw):
    buf = text.encode() if isinstance(text, str) else text
    return detector.scan(buf, location=LOC, **kw)


def only(findings):
    assert len(findings) == 1, findings
    return findings[0]


def test_credentials_file_pairs_each_profile(detector):
    text = (
        f"[default]\naws_access_key_id = {KID}\naws_secret_access_key = {SECRET}\n\n"
        f"[prod]\naws_access_key_id = {KID2}\naws_secret_access_key = {SECRET2}\n"
    )
    fs = scan(detector, text)
    assert [(f.key_id, f.location.line, f.secret.reveal(), f.pairing) for f in fs] == [
        (KID, 2, SECRET, "named"),
        (KID2, 6, SECRET2, "named"),
    ]
    assert all(f.has_secret and f.severity == "critical" for f in fs)
    assert fs[0].account_id == "534261010715" and fs[0].key_type == "long-term"


def test_s3cfg_secret_fifty_lines_below(detector):
    filler = "".join(f"option_{i} = value-{i}\n" for i in range(50))
    text = f"[default]\naccess_key = {KID}\n{filler}secret_key = {SECRET}\n"
    f = only(scan(detector, text))
    assert f.has_secret and f.secret.reveal() == SECRET and f.pairing == "named"
    assert f.location.line == 2


def test_csv_export_pairs_on_the_same_line(detector):
    text = f"User name,Password,Access key ID,Secret access key\nci-bot,,{KID},{SECRET}\n"
    f = only(scan(detector, text))
    assert f.pairing == "same-line" and f.secret.reveal() == SECRET and f.location.line == 2


def test_minified_json_pairs_one_to_one(detector):
    doc = json.dumps(
        [{"AccessKeyId": KID, "SecretAccessKey": SECRET}, {"AccessKeyId": KID2, "SecretAccessKey": SECRET2}]
    )
    fs = scan(detector, doc)
    assert {(f.key_id, f.secret.reveal()) for f in fs} == {(KID, SECRET), (KID2, SECRET2)}


def test_each_secret_goes_to_one_id(detector):
    text = f"# old: aws_access_key_id={KID2}\naws_access_key_id={KID}\naws_secret_access_key={SECRET}\n"
    fs = {f.key_id: f for f in scan(detector, text)}
    assert fs[KID].secret.reveal() == SECRET
    assert not fs[KID2].has_secret and fs[KID2].pairing == "none"


def test_unnamed_secret_in_window(detector):
    text = f"id {KID}\nsome words here\n{SECRET}\n"
    f = only(scan(detector, text))
    assert f.pairing == "window" and f.secret.reveal() == SECRET


def test_unnamed_secret_too_many_lines_away_is_not_paired(detector):
    text = f"id {KID}\n" + "x\n" * 30 + f"{SECRET}\n"
    assert not only(scan(detector, text)).has_secret


def test_secret_beyond_window_is_not_paired(detector):
    text = f"aws_access_key_id={KID}\n" + "#" * (DEFAULT_PAIR_WINDOW + 100) + f"\naws_secret_access_key={SECRET}\n"
    assert not only(scan(detector, text)).has_secret
    wide = Detector(load_ruleset(), Fingerprinter(b"k" * 16), pair_window=DEFAULT_PAIR_WINDOW * 2)
    assert only(wide.scan(text.encode(), location=LOC)).has_secret


@pytest.mark.parametrize(
    "not_a_secret",
    [
        "3f786850e387550fdab836ed7e6dc881de23001b",  # SHA-1
        "3F786850E387550FDAB836ED7E6DC881DE23001B",
        "AbstractSingletonProxyFactoryBeanWrapper",  # identifier (unnamed)
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",  # documentation example
        SECRET + "A",  # 41 characters
        SECRET[:-1],  # 39 characters
    ],
)
def test_things_that_are_not_secrets(detector, not_a_secret):
    text = f"key {KID}\nvalue {not_a_secret}\n"
    assert not only(scan(detector, text)).has_secret


def test_base64_tail_is_not_a_secret(detector):
    text = f"key {KID}\nblob {SECRET}==\n"
    assert not only(scan(detector, text)).has_secret


def test_id_without_secret_is_still_a_finding(detector):
    f = only(scan(detector, f"deploy user key: {KID}\n"))
    assert not f.has_secret and f.secret is None and f.secret_redacted is None and f.pairing == "none"
    assert f.fingerprint == detector.fingerprinter.key_fingerprint(KID, None)


def test_documentation_examples_are_dropped_unless_asked(detector):
    text = (
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
    )
    assert scan(detector, text) == []
    assert scan(detector, "key = AKIAXXXXXXXXXXXXXXXX") == []
    keep = Detector(load_ruleset(), Fingerprinter(b"k" * 16), include_examples=True)
    f = only(keep.scan(text.encode(), location=LOC))
    assert f.key_id == "AKIAIOSFODNN7EXAMPLE" and f.has_secret


@pytest.mark.parametrize("prefix", ["AIDA", "AROA", "AGPA", "AIPA", "ANPA", "ANVA", "APKA", "ASCA"])
def test_principal_ids_are_not_keys(detector, prefix):
    assert scan(detector, f"arn {prefix}XYZDQCEN4B6JSJQI") == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (f"{KID}", True),
        (f"x={KID};", True),
        (f'"{KID}"', True),
        (f"_{KID}_", True),
        (f"-{KID}.", True),
        (f"a{KID}", False),
        (f"{KID}b", False),
        (f"9{KID}", False),
        (f"{KID}7", False),
        (f"{KID[:-1]}", False),
        (f"{KID[:-1]}1", False),
    ],
)
def test_id_boundaries(detector, text, found):
    assert bool(scan(detector, text)) is found


@pytest.mark.parametrize("kind", ["ASIA", "ABIA", "ACCA"])
def test_all_key_prefixes(detector, kind):
    f = only(scan(detector, f"{kind}Y34FZKBOKMUTVV7A"))
    assert f.key_id.startswith(kind)


def test_line_numbers_and_offsets(detector):
    text = f"a\r\nb\n\n  {KID}\n"
    f = only(scan(detector, text))
    assert f.location.line == 4
    assert f.location.offset == text.index(KID)
    g = only(scan(detector, text, base_offset=1000, base_line=10))
    assert g.location.line == 13 and g.location.offset == 1000 + text.index(KID)
    assert g.location.path == LOC.path and g.location.kind == "file"


def test_min_and_max_offset(detector):
    text = f"{KID}\n" + "." * 100 + f"\n{KID2}\n"
    second = text.index(KID2)
    assert [f.key_id for f in scan(detector, text, min_offset=1)] == [KID2]
    assert [f.key_id for f in scan(detector, text, base_offset=50, min_offset=50 + second + 1)] == []
    assert [f.key_id for f in scan(detector, text, max_offset=second)] == [KID]


@pytest.mark.parametrize(
    ("encoding", "label"), [("utf-16-le", "utf-16le"), ("utf-16-be", "utf-16be"), ("utf-16", "utf-16le")]
)
@pytest.mark.parametrize("base_offset", [0, 2, 1000, 4096])
def test_utf16_text(detector, encoding, label, base_offset):
    text = f"first line\r\n[default]\r\naws_access_key_id = {KID}\r\naws_secret_access_key = {SECRET}\r\n"
    f = only(scan(detector, text.encode(encoding), base_offset=base_offset))
    assert f.key_id == KID and f.secret.reveal() == SECRET
    assert f.location.line == 3
    assert f.location.encoding == label


def test_utf16_many_keys_each_once(detector):
    rng = random.Random(3)
    lines = [f"key{i} = AKIA{''.join(rng.choice(B32) for _ in range(16))}" for i in range(30)]
    fs = scan(detector, "\n".join(lines).encode("utf-16-le"))
    assert len(fs) == 30
    assert [f.location.line for f in fs] == list(range(1, 31))


def test_kubernetes_secret_base64_values(detector):
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    text = (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: aws\ndata:\n"
        f"  AWS_ACCESS_KEY_ID: {b64(KID)}\n  AWS_SECRET_ACCESS_KEY: {b64(SECRET)}\n"
    )
    f = only(scan(detector, text))
    assert f.key_id == KID and f.location.encoding == "base64" and f.location.line == 6
    assert f.secret.reveal() == SECRET and f.pairing == "named"


@pytest.mark.parametrize("pad", ["", "x", "xy", "xyz"])
def test_base64_blob_at_every_alignment(detector, pad):
    inner = f"{pad}[default]\naws_access_key_id={KID}\naws_secret_access_key={SECRET}\n"
    text = (
        "#cloud-config\nwrite_files:\n- encoding: b64\n  content: " + base64.b64encode(inner.encode()).decode() + "\n"
    )
    f = only(scan(detector, text))
    assert f.key_id == KID and f.secret.reveal() == SECRET and f.location.encoding == "base64"
    assert f.location.line == 4


def test_raw_and_decoded_on_the_same_line_count_once(detector):
    text = f"{KID} {base64.b64encode(KID.encode()).decode()}\n"
    f = only(scan(detector, text))
    assert f.location.encoding is None


def test_percent_encoded_secret_in_url(detector):
    secret = "Ab3/Cd5+Ef7/Gh9+Ij1/Kl3+Mn5/Op7+Qr9/St1z"
    url = f"https://{KID}:{quote(secret, safe='')}@storage.example/bucket\n"
    assert "%2F" in url
    f = only(scan(detector, url))
    assert f.secret.reveal() == secret and f.pairing == "same-line"


def test_session_token_pairs_with_temporary_ids_only(detector):
    text = f"aws_access_key_id={TMP}\naws_secret_access_key={SECRET}\naws_session_token={TOKEN}\n"
    f = only(scan(detector, text))
    assert f.has_session_token and f.session_token.reveal() == TOKEN and f.key_type == "temporary"
    g = only(scan(detector, text.replace(TMP, KID)))
    assert not g.has_session_token and g.session_token is None


def test_unnamed_token_with_known_prefix_and_presigned_url(detector):
    url = (
        f"https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={TMP}%2F20260101%2Fus-east-1"
        f"%2Fs3%2Faws4_request&X-Amz-Security-Token={quote(TOKEN, safe='')}&X-Amz-Signature={'ab' * 32}\n"
    )
    f = only(scan(detector, url))
    assert f.key_id == TMP and not f.has_secret
    assert f.has_session_token and f.session_token.reveal() == TOKEN


def test_same_key_in_two_places_shares_the_key_fingerprint(detector):
    a = only(detector.scan(f"k={KID}\ns={SECRET}".encode(), location=Location(kind="file", path="/a")))
    b = only(detector.scan(f"x\nk={KID} s={SECRET}".encode(), location=Location(kind="file", path="/b")))
    assert a.fingerprint == b.fingerprint and a.secret_fingerprint == b.secret_fingerprint
    assert a.location != b.location


def test_findings_never_expose_the_secret(detector):
    text = f"aws_access_key_id={TMP}\naws_secret_access_key={SECRET}\naws_session_token={TOKEN}\n"
    f = only(scan(detector, text))
    for rendered in (repr(f), str(f), json.dumps(f.to_dict()), repr(f.location)):
        assert SECRET not in rendered and TOKEN[:60] not in rendered and SECRET[4:12] not in rendered
    assert f.secret_redacted == SECRET[:4] + "…"


def test_make_finding_for_structured_sources(detector):
    loc = Location(kind="aws-credentials", path="/root/.aws/credentials", profile="prod")
    f = detector.make_finding(
        TMP, location=loc, secret=SECRET, session_token=TOKEN, pairing="profile", profile_kind="static"
    )
    assert f.rule == "aws-access-key-id" and f.pairing == "profile" and f.profile_kind == "static"
    assert f.has_secret and f.has_session_token and f.account_id == "609629065308"
    assert f.fingerprint == detector.fingerprinter.key_fingerprint(TMP, SECRET)
    assert f.secret_fingerprint == detector.fingerprinter.secret_fingerprint(SECRET)
    g = detector.make_finding(KID, location=loc, secret=None, session_token=None, pairing="none")
    assert not g.has_secret and g.secret_fingerprint is None and g.severity == "high"


@pytest.mark.parametrize(
    "buf",
    [
        b"",
        b"A",
        b"AKIA",
        b"AKIA" * 1000,
        bytes(range(256)) * 64,
        b"QUtJQ" * 500,
        b"A\x00K\x00I\x00A\x00" * 300,
        "AKIA€".encode("utf-16-le") * 100,
        b"\xff\xfe" + b"\x00\xd8" * 1000,
        b"QUtJQ" * 400_000,
        b"A\x00K\x00I\x00A\x00" * 250_000,
        b"AKIA" * 500_000,
        (b"QUtJQ" * 15 + b"A\n") * 30_000,
    ],
)
# a guard against a hang, not a speed goal (those are bench/'s): a scan quadratic in these 2 MB buffers would run for
# hours, a linear one takes seconds, 20 and more at a load of 10 on 2 cores
@pytest.mark.timeout(300)
def test_hostile_buffers_do_not_crash(detector, buf):
    assert scan(detector, buf) == []


def _random_text(rng: random.Random, n: int) -> str:
    words = ["the", "key", "=", ":", "config", "x", "\n", " ", "\t", "{", "}", '"', "/", "+", "AKIA", "a1"]
    return "".join(rng.choice(words) + rng.choice(["", " ", "\n"]) for _ in range(n))


def test_property_random_ids_found_once_at_the_right_line(detector):
    rng = random.Random(2026)
    for _ in range(300):
        kid = rng.choice(["AKIA", "ASIA"]) + "".join(rng.choice(B32) for _ in range(16))
        before, after = _random_text(rng, rng.randrange(0, 60)), _random_text(rng, rng.randrange(0, 60))
        sep_l, sep_r = rng.choice(" \n=:\"'([,"), rng.choice(" \n;\"')],")
        text = before + sep_l + kid + sep_r + after
        fs = [f for f in scan(detector, text) if f.key_id == kid]
        assert len(fs) == 1, text
        assert fs[0].location.line == text[: text.index(kid)].count("\n") + 1


def test_property_ids_inside_alnum_runs_are_not_found(detector):
    rng = random.Random(7)
    alnum = string.ascii_letters + string.digits
    for _ in range(300):
        kid = "AKIA" + "".join(rng.choice(B32) for _ in range(16))
        left = "".join(rng.choice(alnum) for _ in range(rng.randrange(0, 4)))
        right = "".join(rng.choice(alnum) for _ in range(rng.randrange(0 if left else 1, 4)))
        assert scan(detector, f" {left}{kid}{right} ") == [], (left, kid, right)


def test_property_random_base64_blobs(detector):
    rng = random.Random(99)
    for _ in range(100):
        kid = "AKIA" + "".join(rng.choice(B32) for _ in range(16))
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))) + f" {kid} ".encode()
        payload += bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        text = "value: " + base64.b64encode(payload).decode() + "\n"
        fs = scan(detector, text)
        assert [f.key_id for f in fs] == [kid] and fs[0].location.encoding == "base64"


def test_scan_stream_finds_keys_across_chunk_boundaries(detector):
    rng = random.Random(5)
    chunk = 2 * detector.overlap
    parts, expected, line = [], {}, 1
    for _ in range(60):
        filler = "".join(rng.choice(string.ascii_lowercase + " \n") for _ in range(rng.randrange(0, chunk // 3)))
        parts.append(filler)
        line += filler.count("\n")
        kid = "AKIA" + "".join(rng.choice(B32) for _ in range(16))
        gap = "".join(rng.choice("abc \n") for _ in range(rng.choice([0, 100, 3000])))  # .s3cfg-like distances
        parts.append(f"\naws_access_key_id={kid}\n{gap}\naws_secret_access_key=")
        secret = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(39)) + "7"
        parts.append(secret + "\n")
        expected[kid] = (line + 1, secret)
        line += 4 + gap.count("\n")
    data = "".join(parts).encode()
    assert len(data) > 5 * chunk
    fs = detector.scan_stream(io.BytesIO(data).read, location=LOC, chunk_size=chunk)
    got = {f.key_id: (f.location.line, f.secret.reveal() if f.secret else None) for f in fs}
    assert got == expected
    assert len(fs) == len(expected)


def test_overlap_covers_the_pair_window(detector):
    assert detector.overlap >= 2 * detector.pair_window + 40


def test_json_escaped_slashes(detector):
    secret, token = SECRET2.replace("/", "\\/"), TOKEN.replace("/", "\\/")
    doc = f'{{"key":"{TMP}","secret":"{secret}","token":"{token}"}}'
    f = only(scan(detector, doc))
    assert f.secret.reveal() == SECRET2 and f.session_token.reveal() == TOKEN


def test_escaped_newline_does_not_glue_secret_to_next_word(detector):
    nl = "\\n"
    env = f'"Env": ["AWS_ACCESS_KEY_ID={KID}{nl}AWS_SECRET_ACCESS_KEY={SECRET}{nl}PATH=/usr/bin"]'
    assert only(scan(detector, env)).secret.reveal() == SECRET


def test_scan_stream_with_short_reads(detector):
    text = ("x" * 5000 + "\n") * 20 + f"aws_access_key_id={KID}\naws_secret_access_key={SECRET}\n" + "y\n" * 50000
    data = text.encode()
    pos = 0
    calls = 0

    def read(n: int) -> bytes:  # a pipe: at most 4 KiB per read
        nonlocal pos, calls
        calls += 1
        out = data[pos : pos + min(n, 4096)]
        pos += len(out)
        return out

    f = only(detector.scan_stream(read, location=LOC, chunk_size=64 * 1024))
    assert f.location.line == 21 and f.secret.reveal() == SECRET
    assert pos == len(data)


def test_dense_csv_export_pairs_every_row(detector):
    rng = random.Random(8)
    rows, pairs = ["User name,Access key ID,Secret access key"], {}
    for i in range(2000):
        kid = "AKIA" + "".join(rng.choice(B32) for _ in range(16))
        secret = "".join(rng.choice(string.ascii_letters + string.digits + "/+") for _ in range(39)) + "7"
        pairs[kid] = secret
        rows.append(f"user{i},{kid},{secret}")
    fs = scan(detector, "\n".join(rows), place=Place(KeyCap(limit=2000)))
    assert {f.key_id: f.secret.reveal() for f in fs} == pairs
    assert [f.location.line for f in fs] == list(range(2, 2002))


def test_tokens_pair_one_to_one_in_minified_json(detector):
    tmp2 = "ASIAYVP4CIPPERUVIFXG"
    token2 = "FwoGZXIvYXdzEJr//////////wEaDG" + "Z" * 150 + "Xy0="
    doc = json.dumps(
        [
            {"AccessKeyId": TMP, "SecretAccessKey": SECRET, "SessionToken": TOKEN},
            {"AccessKeyId": tmp2, "SecretAccessKey": SECRET2, "SessionToken": token2},
        ]
    )
    fs = {f.key_id: f for f in scan(detector, doc)}
    assert fs[TMP].session_token.reveal() == TOKEN and fs[tmp2].session_token.reveal() == token2
    assert fs[TMP].secret.reveal() == SECRET and fs[tmp2].secret.reveal() == SECRET2


def test_kubernetes_secret_with_session_token(detector):
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    text = (
        "kind: Secret\ndata:\n"
        f"  AWS_ACCESS_KEY_ID: {b64(TMP)}\n  AWS_SECRET_ACCESS_KEY: {b64(SECRET)}\n  AWS_SESSION_TOKEN: {b64(TOKEN)}\n"
        "---\nkind: Secret\ndata:\n"
        f"  AWS_ACCESS_KEY_ID: {b64(KID)}\n  AWS_SECRET_ACCESS_KEY: {b64(SECRET2)}\n"
    )
    fs = {f.key_id: f for f in scan(detector, text)}
    assert fs[TMP].secret.reveal() == SECRET and fs[TMP].session_token.reveal() == TOKEN
    assert fs[KID].secret.reveal() == SECRET2 and not fs[KID].has_session_token
    assert fs[KID].location.line == 9 and fs[TMP].location.line == 3


@pytest.mark.parametrize("pad", ["", "x", "xy"])
def test_powershell_encoded_command(detector, pad):
    script = f"{pad}$env:AWS_ACCESS_KEY_ID='{KID}'; $env:AWS_SECRET_ACCESS_KEY='{SECRET}'; aws s3 ls"
    encoded = base64.b64encode(script.encode("utf-16-le")).decode()
    f = only(scan(detector, f"powershell.exe -NoProfile -EncodedCommand {encoded}\n"))
    assert f.key_id == KID and f.secret.reveal() == SECRET and f.location.line == 1


@pytest.mark.parametrize("indent", ["", "    "])
@pytest.mark.parametrize("pad", ["", "#" * 37, "#" * 38])
def test_wrapped_base64_block(detector, indent, pad):
    filler = "".join(f"# comment line {i} with some words\n" for i in range(12))
    inner = f"{filler}{pad}\n[default]\naws_access_key_id = {KID}\naws_secret_access_key = {SECRET}\n"
    wrapped = base64.encodebytes(inner.encode()).decode()  # 76 columns, like the base64 tool
    assert wrapped.count("\n") > 5
    text = "user_data: |\n" + "".join(indent + line + "\n" for line in wrapped.splitlines()) + "next: 1\n"
    f = only(scan(detector, text))
    assert f.key_id == KID and f.secret.reveal() == SECRET and f.location.encoding == "base64"
    # the finding points at the wrapped line holding the start of the encoded id
    assert f.location.line == 2 + ((4 * inner.index(KID)) // 3) // 76


def test_wrapped_pem_width_with_two_keys(detector):
    inner = f"a={KID}\nb={SECRET}\n" + "x" * 300 + f"\nc={KID2}\nd={SECRET2}\n"
    raw = base64.b64encode(inner.encode()).decode()
    text = "\n".join(raw[i : i + 64] for i in range(0, len(raw), 64)) + "\n"
    fs = {f.key_id: f for f in scan(detector, text)}
    assert set(fs) == {KID, KID2}
    assert fs[KID].secret.reveal() == SECRET and fs[KID2].secret.reveal() == SECRET2
    assert fs[KID].location.line < fs[KID2].location.line


REAL_WORLD = {
    "dotenv": f"APP=1\nAWS_ACCESS_KEY_ID={KID}\nAWS_SECRET_ACCESS_KEY={SECRET}\n",
    "java-properties": f"aws.accessKeyId={KID}\naws.secretKey={SECRET}\n",
    "terraform-state": json.dumps(
        {
            "resources": [
                {"instances": [{"attributes": {"id": KID, "secret": SECRET, "user": "ci", "status": "Active"}}]}
            ]
        },
        indent=2,
    ),
    "rclone": f"[s3]\ntype = s3\nprovider = AWS\naccess_key_id = {KID}\nsecret_access_key = {SECRET}\nregion = eu-west-1\n",
    "s3fs-passwd": f"{KID}:{SECRET}\n",
    "shell-history": f"aws configure set aws_access_key_id {KID}\naws configure set aws_secret_access_key {SECRET}\n",
    "export-credentials": f"export AWS_ACCESS_KEY_ID={KID}\nexport AWS_SECRET_ACCESS_KEY={SECRET}\n",
    "docker-inspect": json.dumps(
        {"Config": {"Env": [f"AWS_ACCESS_KEY_ID={KID}", f"AWS_SECRET_ACCESS_KEY={SECRET}", "PATH=/usr/bin"]}}
    ),
    "create-access-key": json.dumps(
        {
            "AccessKey": {
                "UserName": "ci",
                "AccessKeyId": KID,
                "Status": "Active",
                "SecretAccessKey": SECRET,
                "CreateDate": "2026-01-01",
            }
        },
        indent=4,
    ),
    "php-array": f"'credentials' => [\n    'key'    => '{KID}',\n    'secret' => '{SECRET}',\n],\n",
}


@pytest.mark.parametrize("name", sorted(REAL_WORLD))
def test_real_world_formats_pair(detector, name):
    f = only(scan(detector, REAL_WORLD[name]))
    assert f.key_id == KID and f.has_secret and f.secret.reveal() == SECRET, name
    assert f.pairing in ("same-line", "named")


def test_presigned_v2_url_has_no_secret(detector):
    url = f"https://b.s3.amazonaws.com/k?AWSAccessKeyId={KID}&Expires=1767225600&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D"
    f = only(scan(detector, url))
    assert not f.has_secret


def test_url_encoded_json(detector):
    body = json.dumps({"AccessKeyId": TMP, "SecretAccessKey": SECRET2, "SessionToken": TOKEN})
    line = f'127.0.0.1 - - "GET /cb?creds={quote(body, safe="")} HTTP/1.1" 200\n'
    assert f"%22{TMP}%22" in line
    f = only(scan(detector, "first\n" + line))
    assert f.key_id == TMP and f.location.encoding == "percent" and f.location.line == 2
    assert f.secret.reveal() == SECRET2 and f.session_token.reveal() == TOKEN
    assert f.location.offset == ("first\n" + line).index(TMP)


def test_escape_before_an_alnum_run_is_still_not_an_id(detector):
    assert scan(detector, f"%22x{KID}%22") == []
    assert scan(detector, f"%2{KID}") == []


def test_escaped_line_breaks_are_boundaries(detector):
    doc = json.dumps({"data": {"credentials.csv": f"Access key ID,Secret access key\n{KID}\t{SECRET}\n"}})
    assert "\\n" + KID in doc and "\\t" + SECRET in doc
    f = only(scan(detector, doc))
    assert f.key_id == KID and f.secret.reveal() == SECRET
    assert scan(detector, f"x\\q{KID}") == []  # only \n, \t and \r are escapes


def test_key_id_in_a_real_pyc_followed_by_the_next_constant(detector, tmp_path):
    # marshal writes the next constant's type byte ('z', 'i', 'g', ...) right after the id's 20 bytes
    src = tmp_path / "settings.py"
    src.write_text(
        "def client():\n"
        f"    return ('{KID}', 123456789)\n"
        "def other():\n"
        f"    x = '{KID2}'\n"
        "    y = 'not an identifier!'\n"
        "    return x, y\n"
    )
    pyc = py_compile.compile(str(src), cfile=str(tmp_path / "settings.pyc"), doraise=True)
    data = Path(pyc).read_bytes()
    for kid in (KID, KID2):
        at = data.index(kid.encode())
        assert data[at - 1] == 20 and data[at - 2] in b"zZ\xfa\xda"
    assert any(chr(data[data.index(k.encode()) + 20]).isalnum() for k in (KID, KID2))
    assert {f.key_id for f in scan(detector, data)} == {KID, KID2}
    # the same bytes marshal writes for a code object's constants
    assert {f.key_id for f in scan(detector, marshal.dumps((KID, 123456789, "y z")))} == {KID}


@pytest.mark.parametrize(
    "buf",
    [
        b"x" + KID.encode() + b"Q",  # inside a longer alphanumeric run
        b"\x14" + KID.encode() + b"z",  # a length byte without a marshal type byte
        b"z\x15" + KID.encode() + b"Q",  # a marshalled string of 21 characters holds a longer run
        b"z\x14X" + KID.encode()[:19] + b"Q",
    ],
)
def test_ids_inside_longer_runs_are_still_rejected(detector, buf):
    assert scan(detector, buf) == []


@pytest.mark.parametrize(
    "filler",
    [b"plain text without the anchor bytes\n", b"QB" * 40 + b"\n", b"Q" + b"x" * 2000 + b"B" + b"y" * 2000 + b"\n"],
    ids=["no-anchor", "dense-anchor", "sparse-anchor"],
)
def test_base64_ids_found_however_often_the_prefilter_bytes_occur(detector, filler):
    # the base64 forms' first bytes are looked for with memchr while rare and with re once frequent
    for align in range(3):
        blob = base64.b64encode(b"#" * align + f"key={KID}\n".encode())
        buf = filler * (300 if len(filler) < 1000 else 20) + b"data: " + blob + b"\n" + filler * 300
        assert [f.key_id for f in scan(detector, buf)] == [KID], align


def test_prefilter_matches_are_what_finditer_yields():
    from keysweep.detect import _prefilter_matches

    rx = re.compile(rb"Q(?:UtJQ|QBL|Q)")
    rng = random.Random(7)
    for _ in range(200):
        buf = bytes(rng.choice(b"QUtJBLx \n") for _ in range(rng.randrange(0, 3000)))
        assert [m.span() for m in _prefilter_matches(buf, b"Q", rx)] == [m.span() for m in rx.finditer(buf)]


def _log_line(i: int, kid: str, secret: str | None = None) -> str:
    tail = f" secret={secret}" if secret else ""
    return f"2026-12-03T10:00:{i % 60:02d}Z GET /items/{i} key={kid}{tail}\n"


def test_a_key_repeated_on_every_line_is_one_finding_at_its_first_line(detector):
    text = "header\n" + "".join(_log_line(i, KID, SECRET) for i in range(20_000))
    place = Place()
    fs = detector.scan_stream(io.BytesIO(text.encode()).read, location=LOC, chunk_size=64 * 1024, place=place)
    f = only(fs)
    assert (f.key_id, f.secret.reveal(), f.location.line, f.pairing) == (KID, SECRET, 2, "same-line")
    assert place.cap.over == 0


def test_a_better_pairing_found_later_replaces_the_first_finding(detector):
    # a bare id, then the id with its secret, then with its session token: each replaces the one before
    text = (
        f"key={TMP}\n"
        + "x\n" * 3000
        + f"key={TMP} secret={SECRET}\n"
        + "x\n" * 3000
        + f"key={TMP} secret={SECRET} token={TOKEN}\n"
        + f"key={TMP}\n" * 3000
    )
    place = Place()
    f = only(detector.scan_stream(io.BytesIO(text.encode()).read, location=LOC, chunk_size=16 * 1024, place=place))
    assert (f.location.line, f.secret.reveal(), f.session_token.reveal()) == (6003, SECRET, TOKEN)
    assert place.settled == {TMP} and place.cap.over == 0
    # settled: a long-term key paired on its line; a temporary key only once its token is found too
    place = Place()
    detector.scan(f"key={TMP} secret={SECRET}\nkey={KID} secret={SECRET2}\n".encode(), location=LOC, place=place)
    assert place.settled == {KID}


def _distinct_ids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["AKIA" + "".join(rng.choice("QRSTUVWXYZ234567") + rng.choice(B32) for _ in range(8)) for _ in range(n)]


def test_distinct_ids_past_the_cap_are_counted_and_a_real_pair_after_them_is_still_found(detector):
    ids = _distinct_ids(MAX_KEYS_PER_PLACE + 500, 11)
    text = "".join(f"{kid}\n" for kid in ids) + f"aws_access_key_id={KID}\naws_secret_access_key={SECRET}\n"
    place = Place()
    fs = detector.scan_stream(io.BytesIO(text.encode()).read, location=LOC, chunk_size=32 * 1024, place=place)
    bare = [f for f in fs if not f.has_secret]
    assert [f.key_id for f in bare] == ids[:MAX_KEYS_PER_PLACE]  # the first ones, in order
    assert place.cap.over == 500
    [paired] = [f for f in fs if f.has_secret]
    assert (paired.key_id, paired.secret.reveal(), paired.location.line) == (KID, SECRET, len(ids) + 1)


def test_the_cap_is_shared_by_the_places_that_share_it(detector):
    cap = KeyCap(limit=3)
    ids = _distinct_ids(5, 12)
    found = []
    for kid in ids:
        found += detector.scan(f"{kid}\n".encode(), location=LOC, place=Place(cap))
    assert [f.key_id for f in found] == ids[:3] and cap.over == 2


def test_per_line_keeps_each_line_within_the_cap(detector):
    text = "".join(f"A{i}={KID}\n" for i in range(5))
    assert [f.location.line for f in scan(detector, text, per_line=True)] == [1, 2, 3, 4, 5]
    assert [f.location.line for f in scan(detector, text)] == [1]
