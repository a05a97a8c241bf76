from __future__ import annotations

import base64
import random

import pytest
from keysweep import decode


@pytest.mark.parametrize("keyword", [b"AKIA", b"ASIA", b"ABIA", b"ACCA"])
def test_base64_forms_appear_in_every_encoding(keyword):
    rng = random.Random(keyword)
    forms = decode.base64_forms(keyword)
    assert len(forms) == 3 and all(len(f) >= 4 for f, _ in forms)
    for _ in range(200):
        pad = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 12)))
        tail = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 12)))
        encoded = base64.b64encode(pad + keyword + tail)
        form, first = forms[len(pad) % 3]
        at = encoded.find(form)
        assert at >= 0
        # the quantum grid the form implies is the real one (quanta start at multiples of 4)
        assert (at - first) % 4 == 0


def test_base64_run_and_decode():
    payload = b"hello AKIAXYZDQCEN4B6JSJQI world!"
    blob = base64.b64encode(payload)
    buf = b"key: " + blob + b"\nnext"
    hit = buf.find(b"QUtJQ") if b"QUtJQ" in buf else buf.find(blob[8:12])
    start, end = decode.base64_run(buf, hit)
    assert buf[start:end] == blob.rstrip(b"=")
    s, data = decode.decode_base64_run(buf, start, end, start % 4)
    assert s == start and data == payload


def test_decode_from_a_misaligned_run_start():
    payload = b"..AKIAXYZDQCEN4B6JSJQI.."
    blob = base64.b64encode(payload)
    buf = b"wor" + blob  # the run starts 3 letters early; the grid names the true start
    start, end = decode.base64_run(buf, 10)
    assert start == 0
    s, data = decode.decode_base64_run(buf, start, end, 3)
    assert s == 3 and data == payload
    _, wrong = decode.decode_base64_run(buf, start, end, 0)
    assert b"AKIA" not in wrong


def test_base64_run_is_bounded():
    buf = b"A" * (3 * decode.B64_MAX_RUN)
    start, end = decode.base64_run(buf, len(buf) // 2)
    assert end - start == 2 * decode.B64_MAX_RUN


def test_decode_base64_value():
    assert decode.decode_base64_value(base64.b64encode(b"x" * 40)) == b"x" * 40
    assert decode.decode_base64_value(b"not base64!") is None


def test_percent_decode():
    assert decode.percent_decode(b"ab%2Fcd%2bef%3D%3d%41") == b"ab/cd+ef==%41"


def test_utf16_form_matches_both_byte_orders():
    form = decode.utf16_form(b"AKIA")
    assert form in "x AKIA y".encode("utf-16-le")
    assert form in "x AKIA y".encode("utf-16-be")


def test_utf16_regions_merge_and_keep_parity():
    regions = decode.utf16_regions([100, 120, 5000], 10000, 50)
    assert regions == [(50, 170), (4950, 5050)]
    odd = decode.utf16_regions([101], 10000, 50)
    assert odd == [(51, 151)]
    assert decode.utf16_regions([3], 4, 50) == [(1, 3)]


def test_decode_utf16_one_byte_per_character():
    raw = "añ€AKIA".encode("utf-16-le")
    text = decode.decode_utf16(raw, 0, len(raw))
    assert text == b"a\xf1?AKIA"
    assert len(text) * 2 == len(raw)


def test_base64_utf16_forms_appear_in_every_encoding():
    firsts = frozenset(b"AQFB")
    forms = decode.base64_utf16_forms(b"AKIA", firsts)
    assert len(forms) == 3 and all(f[0] in firsts for f, _ in forms)
    rng = random.Random(4)
    for _ in range(100):
        pad = "".join(rng.choice("abc xyz") for _ in range(rng.randrange(0, 9)))
        encoded = base64.b64encode(f"{pad}AKIA".encode("utf-16-le") + b"\x00tail")
        form, first = forms[(2 * len(pad)) % 3]
        at = encoded.find(form)
        assert at >= 0 and (at - first) % 4 == 0


def test_wrapped_base64_block():
    payload = bytes(range(256)) * 3
    lines = base64.encodebytes(payload).splitlines()
    buf = b"header: x\n" + b"".join(b"  " + line + b"\n" for line in lines) + b"tail: y\n"
    pos = buf.index(lines[3])
    text, text_offs, buf_offs = decode.wrapped_base64(buf, pos + 5)
    assert base64.b64decode(text) == payload
    assert text_offs[:2] == [0, 76] and buf[buf_offs[3] : buf_offs[3] + 76] == lines[3]


def test_wrapped_base64_rejects_single_and_ragged_lines():
    single = b"x\n" + base64.b64encode(b"y" * 57) + b"\nnot base64 here\n"
    assert decode.wrapped_base64(single, 5) is None
    ragged = b"QUFBQUFB" * 10 + b"\n" + b"QUFB" * 30 + b"\n"
    assert decode.wrapped_base64(ragged, 5) is None  # a longer line after: not one wrapped blob
    long_line = b"Q" * 5000 + b"\n" + b"Q" * 5000
    assert decode.wrapped_base64(long_line, 4000) is None


def test_percent_view_maps_offsets():
    buf = b"xx a%22b%2Fc%zz d yy"
    text, offsets = decode.percent_view(buf, 3, 17)
    assert text == b'a"b/c%zz d'
    assert [buf[offsets[i]] for i in range(len(text)) if text[i] != buf[offsets[i]]] == [ord("%"), ord("%")]
    assert offsets[text.index(b"c")] == buf.index(b"c")
    assert decode.ends_with_escape(b"%22A", 3) and not decode.ends_with_escape(b"%2xA", 3)
