"""The decoders run on attacker-written bytes around every prefilter hit: base64 (runs, wrapped blocks, values),
percent-encoding, UTF-16 and JSON escapes. Each never raises, stays inside its bounds, and decodes what its
encoder produced."""

from __future__ import annotations

import base64
import binascii
import json
import re
from urllib.parse import quote

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from keysweep import decode
from keysweep.detect import Detector
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Location
from keysweep.ruleset import load_ruleset

from tests.support.planted import planted_key

DETECTOR = Detector(load_ruleset(), Fingerprinter(b"property-fingerprint-key"))
LOC = Location(kind="file", path="/p")
_B64 = re.compile(rb"[A-Za-z0-9+/_-]")  # either alphabet: standard and URL-safe
_ANY = settings(max_examples=300, deadline=None)


@_ANY
@given(st.text("AKISBC", min_size=4, max_size=8), st.binary(max_size=40), st.binary(max_size=40))
def test_a_base64_form_of_the_keyword_is_in_every_encoding_on_its_grid(
    keyword: str, before: bytes, after: bytes
) -> None:
    kw = keyword.encode()
    encoded = base64.b64encode(before + kw + after)
    hits = [(f, first) for f, first in decode.base64_forms(kw) if f in encoded]
    assert hits
    for form, first in hits:
        h = encoded.find(form)
        while h >= 0:
            grid = (h - first) % 4
            decoded = decode.decode_base64_run(encoded, 0, len(encoded), grid)
            if decoded is not None and grid == 0:
                assert decoded[1] == before + kw + after
            h = encoded.find(form, h + 1)


@_ANY
@given(st.binary(max_size=3000), st.integers(0, 3000))
def test_base64_run_is_the_bounded_run_around_its_position(buf: bytes, pos: int) -> None:
    pos = min(pos, len(buf))
    s, e = decode.base64_run(buf, pos)
    assert s <= pos <= e <= len(buf)
    assert pos - s <= decode.B64_MAX_RUN and e - pos <= decode.B64_MAX_RUN
    assert all(_B64.fullmatch(buf[i : i + 1]) for i in range(s, e))
    if s > 0 and pos - s < decode.B64_MAX_RUN:
        assert not _B64.fullmatch(buf[s - 1 : s])  # maximal: stops at a non-base64 byte
    if e < len(buf) and e - pos < decode.B64_MAX_RUN:
        assert not _B64.fullmatch(buf[e : e + 1])


@_ANY
@given(st.binary(max_size=600), st.integers(0, 3))
def test_base64_decoding_never_raises(buf: bytes, grid: int) -> None:
    got = decode.decode_base64_run(buf, 0, len(buf), grid)
    assert got is None or (0 <= got[0] < len(buf) + 4 and isinstance(got[1], bytes))
    value = decode.decode_base64_value(buf)
    assert value is None or base64.b64encode(value) == buf


@_ANY
@given(
    st.binary(min_size=20, max_size=2000),
    st.sampled_from([16, 64, 76]),
    st.text(" \t", max_size=6),
    st.sampled_from(["\n", "\r\n"]),
    st.floats(0, 1),
)
def test_a_wrapped_base64_block_is_joined_whole(data: bytes, width: int, indent: str, eol: str, where: float) -> None:
    text = base64.b64encode(data).decode()
    lines = [text[i : i + width] for i in range(0, len(text), width)]
    assume(len(lines) >= 2 and not lines[0].endswith("="))
    doc = ("key: |\n" + "".join(indent + line + eol for line in lines) + "next: x\n").encode()
    start = doc.find(lines[0].encode())
    pos = start + int(where * (len(text) - 1))
    pos += (pos - start) // width * (len(indent) + len(eol))  # the same character in the wrapped document
    block = decode.wrapped_base64(doc, min(pos, len(doc) - 1))
    # wherever ``pos`` falls (the last, shorter or padded line included) the whole block is found
    assert block is not None
    joined, text_offsets, buf_offsets = block
    assert joined == text.encode()
    for t, b in zip(text_offsets, buf_offsets, strict=True):
        assert doc[b : b + 4] == joined[t : t + 4]


@_ANY
@given(st.binary(max_size=3000), st.integers(0, 3000))
def test_wrapped_base64_on_any_bytes_stays_in_bounds(buf: bytes, pos: int) -> None:
    pos = min(pos, max(0, len(buf) - 1))
    block = decode.wrapped_base64(buf, pos)
    if block is not None:
        joined, text_offsets, buf_offsets = block
        assert len(joined) <= 2 * decode.B64_MAX_RUN + 2048 and len(text_offsets) == len(buf_offsets) >= 2
        for k, (t, b) in enumerate(zip(text_offsets, buf_offsets, strict=True)):
            end = text_offsets[k + 1] if k + 1 < len(text_offsets) else len(joined)
            assert buf[b : b + end - t] == joined[t:end]  # every line is a slice of the buffer


@_ANY
@given(st.binary(min_size=1, max_size=600), st.integers(0, 2))
def test_url_safe_base64_decodes_like_standard(data: bytes, strip: int) -> None:
    encoded = base64.urlsafe_b64encode(data)
    encoded = encoded[: len(encoded) - min(strip, encoded.count(b"="))]  # padding is optional
    got = decode.decode_base64_run(encoded, 0, len(encoded), 0)
    assert got is not None and got[1] == data


@_ANY
@given(st.binary(max_size=2000), st.booleans(), st.integers(0, 2000), st.integers(0, 2000))
def test_quoted_printable_view_decodes_what_an_encoder_wrote(data: bytes, crlf: bool, a: int, b: int) -> None:
    encoded = binascii.b2a_qp(data, istext=False)  # '=XX' escapes, soft line breaks at 76 columns
    if crlf:
        encoded = encoded.replace(b"\n", b"\r\n")
    text, offsets = decode.quoted_printable_view(encoded, 0, len(encoded))
    assert text == data
    assert len(offsets) == len(text) and offsets == sorted(set(offsets))
    # on any slice of it (attacker bytes, cut anywhere): never raises, every byte maps back into the slice
    lo, hi = sorted((min(a, len(encoded)), min(b, len(encoded))))
    part, where = decode.quoted_printable_view(encoded, lo, hi)
    assert len(part) == len(where) and all(lo <= o < hi for o in where)
    for ch, o in zip(part, where, strict=True):
        assert encoded[o] == ch or encoded[o] == ord("=")


@_ANY
@given(st.binary(max_size=2000), st.integers(0, 2000), st.integers(0, 2000))
def test_percent_view_maps_every_byte_back(buf: bytes, a: int, b: int) -> None:
    lo, hi = sorted((min(a, len(buf)), min(b, len(buf))))
    text, offsets = decode.percent_view(buf, lo, hi)
    assert len(text) == len(offsets)
    assert offsets == sorted(set(offsets)) and all(lo <= o < hi for o in offsets)
    for ch, o in zip(text, offsets, strict=True):
        esc = buf[o : o + 3]
        if re.fullmatch(rb"%[0-9A-Fa-f]{2}", esc) and o + 3 <= hi:
            assert ch == int(esc[1:], 16)
        else:
            assert ch == buf[o]


@_ANY
@given(st.text("ABCxyz019/+=", max_size=60))
def test_percent_decode_undoes_url_quoting_of_key_characters(value: str) -> None:
    assert decode.percent_decode(quote(value, safe="").encode()) == value.encode()


@_ANY
@given(st.lists(st.integers(0, 5000), max_size=30), st.integers(0, 5000), st.integers(2, 600))
def test_utf16_regions_cover_each_hit_in_its_phase(hits: list[int], size: int, radius: int) -> None:
    hits = [h for h in hits if h < size]
    regions = decode.utf16_regions(hits, size, radius)
    for lo, hi in regions:
        assert 0 <= lo <= hi <= size and (hi - lo) % 2 == 0
    for h in hits:
        assert any(lo <= h < hi and (h - lo) % 2 == 0 for lo, hi in regions) or size - h < 2


@_ANY
@given(st.binary(max_size=3000), st.integers(0, 3000), st.integers(0, 3000))
def test_decode_utf16_is_one_byte_per_character(buf: bytes, a: int, b: int) -> None:
    lo, hi = sorted((min(a, len(buf)), min(b, len(buf))))
    hi -= (hi - lo) % 2
    out = decode.decode_utf16(buf, lo, hi)
    assert len(out) <= (hi - lo) // 2
    text = bytes(buf[lo:hi:2])
    if not any(buf[lo + 1 : hi : 2]) and all(c < 0x80 for c in text):  # ASCII as UTF-16LE
        assert out == text


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["raw", "escaped", "url"]), st.text('ab {}:,"', max_size=40))
def test_json_escapes_and_url_encoding_give_back_the_secret(i: int, how: str, filler: str) -> None:
    p = planted_key(i)
    secret = p.secret[:20] + "/+" + p.secret[22:]  # a '/' to escape and a '+' to percent-encode
    doc = json.dumps({"filler": filler, "AccessKeyId": p.key_id, "SecretAccessKey": secret})
    if how == "escaped":
        doc = doc.replace("/", "\\/")
    elif how == "url":
        doc = "https://example.invalid/?q=" + quote(doc, safe="")
    [f] = [f for f in DETECTOR.scan(doc.encode(), location=LOC) if f.key_id == p.key_id]
    assert f.secret is not None and f.secret.reveal() == secret
