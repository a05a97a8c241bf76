"""Keys in mail and other wrapped or escaped text: base64 wrapped at any column (the wrap may fall inside the
encoded key id), MIME parts of real mail (base64 and quoted-printable, LF and CRLF), URL-safe base64."""

from __future__ import annotations

import base64
import mailbox
from email.message import EmailMessage
from email.policy import SMTP, default
from pathlib import Path

import pytest
from keysweep.detect import Detector
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Location
from keysweep.ruleset import load_ruleset

KID = "AKIAXYZDQCEN4B6JSJQI"
KID2 = "AKIASP2TPHJSQH3FJRUX"
SECRET = "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"
SECRET2 = "p9Lk2/Hd8+Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz0"
LOC = Location(kind="file", path="/var/mail/root")


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(load_ruleset(), Fingerprinter(b"test-fingerprint-key"))


def pairs(detector: Detector, buf: bytes) -> set[tuple[str, str | None, str | None]]:
    return {
        (f.key_id, f.secret.reveal() if f.secret else None, f.location.encoding)
        for f in detector.scan(buf, location=LOC)
    }


def wrap(data: bytes, width: int, eol: str, indent: str = "") -> str:
    text = base64.b64encode(data).decode()
    return "".join(indent + text[i : i + width] + eol for i in range(0, len(text), width))


LAYOUTS = {
    # the id's line in the middle of a block
    "id-then-secret": lambda pad: (
        f"{pad}\n[default]\naws_access_key_id = {KID}\naws_secret_access_key = {SECRET}\n" + "# trailing comment\n" * 4
    ),
    # the id on the block's last (shorter, padded) line, its secret lines before it
    "secret-then-id-at-the-end": lambda pad: f"{pad}\nsecret_key = {SECRET}\naccess_key = {KID}\n",
    # a CSV export: id and secret on one line
    "csv-row": lambda pad: f"User name,Access key ID,Secret access key\n{pad},{KID},{SECRET}\n",
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("width", [64, 76])
def test_a_pair_in_wrapped_base64_is_found_at_every_alignment(detector, layout, eol, width):
    # every offset of the pair against the wrap: the line break falls at every place of the encoded id once,
    # its first characters (the keyword the prefilter looks for) included
    for offset in range(width + 3):
        inner = LAYOUTS[layout]("#" * offset)
        body = wrap(inner.encode(), width, eol)
        doc = f"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n{body}--b--\r\n".encode()
        findings = detector.scan(doc, location=LOC)
        assert [(f.key_id, f.secret.reveal() if f.secret else None) for f in findings] == [(KID, SECRET)], offset
        f = findings[0]
        assert f.location.encoding == "base64"
        # the finding points at the wrapped line holding the first character of the encoded id
        first_char = (4 * inner.index(KID)) // 3
        assert f.location.line == 4 + first_char // width, offset


@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_an_indented_wrapped_block_split_inside_the_keyword(detector, eol):
    found = 0
    for offset in range(76):
        inner = "#" * offset + f"\naws_access_key_id = {KID}\naws_secret_access_key = {SECRET}\n" + "-" * 80
        text = "write_files:\n  - encoding: b64\n    content: |\n" + wrap(inner.encode(), 76, eol, "      ")
        assert pairs(detector, text.encode()) == {(KID, SECRET, "base64")}, offset
        encoded = base64.b64encode(inner.encode()).decode()
        found += any(form not in text for form in ("QUtJQ", "FLSU", "BS0lB") if form in encoded)
    assert found  # some offsets really split the keyword's base64 form across two lines


def _mail(policy, cte: str | None) -> EmailMessage:
    msg = EmailMessage(policy=policy)
    msg["From"] = "ops@example.com"
    msg["To"] = "dev@example.com"
    msg["Subject"] = "new keys"
    msg.set_content("The keys are attached.\n")
    csv = f"User name,Access key ID,Secret access key\n{'deploy-bot-' * 5},{KID},{SECRET}\n"
    msg.add_attachment(csv.encode(), maintype="text", subtype="csv", filename="accessKeys.csv", cte=cte)
    env = f"AWS_ACCESS_KEY_ID={KID2}\nAWS_SECRET_ACCESS_KEY={SECRET2}\n" + "# padding text " * 12 + "\n"
    msg.add_attachment(env.encode(), maintype="text", subtype="plain", filename="app.env", cte=cte)
    return msg


@pytest.mark.parametrize("cte", ["base64", "quoted-printable"])
@pytest.mark.parametrize("policy", [default, SMTP], ids=["lf", "crlf"])
def test_both_attachments_of_a_mail_are_found_and_paired(detector, tmp_path: Path, policy, cte):
    box = mailbox.mbox(tmp_path / "root")
    box.add(_mail(policy, cte))
    box.add(_mail(policy, cte))  # a second message: one finding per key per file, at its first place
    box.flush()
    raw = (tmp_path / "root").read_bytes() if policy is default else _mail(policy, cte).as_bytes()
    if cte == "quoted-printable":  # what makes this case hard: the encoder escaped '=' and broke the long line
        assert b"=3DAKIA" in raw and b"=\n" in raw.replace(b"\r\n", b"\n")
    got = pairs(detector, raw)
    assert got == {(KID, SECRET, cte), (KID2, SECRET2, cte)}


def test_a_mail_forwarded_as_an_attachment(detector):
    outer = EmailMessage()
    outer["Subject"] = "Fwd: new keys"
    outer.set_content("forwarding\n")
    outer.add_attachment(_mail(default, "base64"))  # message/rfc822: the forwarded mail with its own parts
    assert b"message/rfc822" in outer.as_bytes()
    assert pairs(detector, outer.as_bytes()) == {(KID, SECRET, "base64"), (KID2, SECRET2, "base64")}


@pytest.mark.parametrize("cut", range(1, 20))
@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_quoted_printable_soft_break_anywhere_in_the_id(detector, cut, eol):
    body = f"AWS_ACCESS_KEY_ID =3D {KID[:cut]}={eol}{KID[cut:]}{eol}AWS_SECRET_ACCESS_KEY =3D {SECRET}{eol}"
    assert pairs(detector, body.encode()) == {(KID, SECRET, "quoted-printable")}


def test_text_that_only_looks_escaped_is_not_changed(detector):
    # an id glued to letters stays no id, whatever precedes them; a soft break far from an id changes nothing
    assert pairs(detector, f"x=3Dz{KID}\n".encode()) == set()
    text = f"aws_access_key_id = {KID}\n" + "y" * 300 + "=\n" + f"aws_secret_access_key = {SECRET}\n"
    assert pairs(detector, text.encode()) == {(KID, SECRET, None)}


@pytest.mark.parametrize("pad", range(3))
def test_url_safe_base64_without_padding(detector, pad):
    # '\xfb\xff' encodes to URL-safe characters ('-', '_') between the id and its secret: the run must not stop there
    payload = (
        b'{"p":"'
        + b"x" * pad
        + b'","AccessKeyId":"'
        + KID.encode()
        + b'","n":"\xfb\xff\xfe\xfb",'
        + b'"SecretAccessKey":"'
        + SECRET.encode()
        + b'"}'
    )
    token = base64.urlsafe_b64encode(payload).rstrip(b"=")
    between = token[4 * payload.index(b"AKIA") // 3 : 4 * payload.index(b'"Secret') // 3]
    assert b"-" in between or b"_" in between
    jwt = b"eyJhbGciOiJIUzI1NiJ9." + token + b".c2lnbmF0dXJl"
    assert pairs(detector, b"Authorization: Bearer " + jwt + b"\n") == {(KID, SECRET, "base64")}
