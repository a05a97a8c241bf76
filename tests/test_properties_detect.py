"""The detector on random bytes with pairs planted at random offsets and across chunk boundaries: every planted
pair is found, paired, once, at its line, through the same chunked reading the file scan uses."""

from __future__ import annotations

import base64
import binascii
import io
import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keysweep.detect import Detector
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Location
from keysweep.ruleset import load_ruleset
from keysweep.sources.filesystem import CHUNK_SIZE

from tests.support.hosttree import scan_paths
from tests.support.planted import planted_key

DETECTOR = Detector(load_ruleset(), Fingerprinter(b"property-fingerprint-key"))
LOC = Location(kind="file", path="/p")
CHUNK = 2 * DETECTOR.overlap  # the smallest chunk scan_stream uses: the most boundaries per byte
STEP = CHUNK - DETECTOR.overlap  # consecutive buffers start this far apart


def _noise(data: bytes) -> bytes:
    """Random bytes that hold no key id of their own (every key prefix starts with 'A')."""
    return data.replace(b"A", b"a")


def _form(kind: str, kid: str, secret: str) -> bytes:
    if kind == "raw":
        return f"\naws_access_key_id={kid} aws_secret_access_key={secret}\n".encode()
    if kind == "lines":  # a credentials file: the secret on the next line, named
        return f"\n[p]\naws_access_key_id = {kid}\naws_secret_access_key = {secret}\n".encode()
    if kind == "utf-16":
        return f"\n{kid},{secret}\n".encode("utf-16-le")
    if kind == "wrapped":  # a mail attachment: base64 at 76 columns, CRLF; the wrap falls anywhere in the pair
        text = "#" * (sum(map(ord, kid)) % 76) + f"\n{kid},{secret}\n"
        return b"\r\n" + base64.encodebytes(text.encode()).replace(b"\n", b"\r\n")
    if kind == "quoted-printable":  # a mail body: '=' escaped as =3D
        return b"\n" + binascii.b2a_qp(f"AWS_ACCESS_KEY_ID={kid}\nAWS_SECRET_ACCESS_KEY={secret}\n".encode())
    blob = json.dumps({"AccessKeyId": kid, "SecretAccessKey": secret}).encode()
    return b"\npayload: " + base64.b64encode(blob) + b"\n"


_KINDS = st.sampled_from(["raw", "lines", "utf-16", "base64", "wrapped", "quoted-printable"])
# offsets near where buffers start and end, and anywhere
_NEAR_EDGE = st.tuples(st.integers(1, 6), st.integers(-300, 300), st.sampled_from([0, DETECTOR.overlap // 2]))
_OFFSET = st.one_of(_NEAR_EDGE.map(lambda t: t[0] * STEP + t[1] + t[2]), st.integers(0, 6 * STEP))


def _build(noise: bytes, plants: list[tuple[int, str]]) -> tuple[bytes, dict[str, tuple[str, int, str]]]:
    """``noise`` with each planted pair inserted at its offset (or as near as the plants before it allow)."""
    out = bytearray()
    expected: dict[str, tuple[str, int, str]] = {}
    src = 0
    for i, (offset, kind) in enumerate(sorted(plants)):
        take = max(0, offset - len(out))
        out += noise[src : src + take]
        src += take
        if kind == "utf-16" and len(out) % 2:
            out += b"\n"  # UTF-16 text of a log starts at an even offset or an odd one; both are tried elsewhere
        p = planted_key(i)
        form = _form(kind, p.key_id, p.secret)
        line = out.count(b"\n") + 1 + (2 if kind == "lines" else 1)
        expected[p.key_id] = (p.secret, line, kind)
        out += form
    out += noise[src:]
    return bytes(out), expected


@settings(max_examples=150, deadline=None)
@given(
    st.binary(min_size=0, max_size=7 * STEP).map(_noise),
    st.lists(st.tuples(_OFFSET, _KINDS), min_size=1, max_size=8, unique_by=lambda t: t[0] // 512),
)
def test_every_planted_pair_is_found_once_across_chunk_boundaries(noise: bytes, plants: list[tuple[int, str]]) -> None:
    data, expected = _build(noise, plants)
    found = DETECTOR.scan_stream(io.BytesIO(data).read, location=LOC, chunk_size=CHUNK)
    got = {f.key_id: f for f in found}
    assert set(expected) <= set(got)
    assert len(found) == len(got)  # once each
    for kid, (secret, line, kind) in expected.items():
        f = got[kid]
        assert f.secret is not None and f.secret.reveal() == secret, (kind, f.pairing)
        if kind in ("raw", "lines"):
            assert f.location.line == line


@settings(max_examples=100, deadline=None)
@given(
    st.binary(max_size=3 * STEP).map(_noise),
    st.lists(st.tuples(_OFFSET, _KINDS), min_size=1, max_size=5, unique_by=lambda t: t[0] // 512),
    st.integers(1, 5000),
)
def test_short_reads_find_what_whole_reads_find(noise: bytes, plants: list[tuple[int, str]], most: int) -> None:
    """A pipe or a decompressor returns short reads; what is found cannot depend on them."""
    data, _expected = _build(noise, plants)
    src = io.BytesIO(data)

    def short(n: int) -> bytes:
        return src.read(min(n, most))

    whole = DETECTOR.scan_stream(io.BytesIO(data).read, location=LOC, chunk_size=CHUNK)
    parts = DETECTOR.scan_stream(short, location=LOC, chunk_size=CHUNK)
    key = [(f.key_id, f.location.line, f.location.offset, f.secret_fingerprint) for f in whole]
    assert [(f.key_id, f.location.line, f.location.offset, f.secret_fingerprint) for f in parts] == key


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5000))
def test_random_bytes_never_raise_and_every_finding_is_in_them(data: bytes) -> None:
    for f in DETECTOR.scan(data, location=LOC) + DETECTOR.scan(data, location=LOC, per_line=True):
        assert f.key_id.encode() in data or f.location.encoding is not None
        assert (
            f.secret is None
            or f.location.encoding is not None
            or f.secret.reveal().encode() in data
            or b"%" in data
            or b"\\/" in data
        )


@pytest.mark.timeout(300)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.integers(1, 2), st.integers(-200, 200), _KINDS),
        min_size=1,
        max_size=4,
        unique_by=lambda t: (t[0], t[1] // 512),
    ),
    st.integers(0, 2**32),
)
def test_a_file_scan_finds_pairs_planted_across_its_read_chunks(tmp_path: Path, edges, seed: int) -> None:  # noqa: ANN001
    """Through the file scan itself (2 MiB reads), pairs planted around its chunk boundaries."""
    noise = _noise(random.Random(seed).randbytes(3 * CHUNK_SIZE))
    step = CHUNK_SIZE - DETECTOR.overlap
    data, expected = _build(noise, [(k * step + d, kind) for k, d, kind in edges])
    for old in tmp_path.iterdir():
        old.unlink()
    (tmp_path / "big.log").write_bytes(data)
    result = scan_paths(tmp_path, detector=DETECTOR)
    got = {f.key_id: f for f in result.findings}
    for kid, (secret, line, kind) in expected.items():
        assert got[kid].secret is not None and got[kid].secret.reveal() == secret, kind
        if kind in ("raw", "lines"):
            assert got[kid].location.line == line
