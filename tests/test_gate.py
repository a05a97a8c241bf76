"""The Hyperscan gate before the detector's prefilter passes: exact (it passes over a buffer only when no pattern
matches in it), so a detector with the gate finds what one without it finds."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from keysweep import gate
from keysweep.detect import Place
from keysweep.models import Location

from tests.support.hosttree import build_host_tree, make_detector

pytest.importorskip("hyperscan")


def test_patterns_with_nul_and_line_breaks_compile_as_re_reads_them() -> None:
    patterns = [re.escape(b"A\x00K\x00I") + b"(?:\n[ \t]*)?X", re.escape(b"Q\r\nU") + b"tJ"]
    g = gate.build(patterns)
    assert g is not None
    for buf in (b"..A\x00K\x00I\n   X..", b"A\x00K\x00IX", b"xQ\r\nUtJ", b"A\x00K\x00I", b"A K I X", b"Q\nUtJ", b""):
        assert g(buf) == any(re.search(p, buf) for p in patterns), buf


def _buffers(detector: object, n: int) -> list[bytes]:
    """Text, binary and base64-like noise with the detector's forms planted whole, cut short, and (for the
    wrappable ones) broken by a line break, as base64 wraps them."""
    rng = random.Random(14)
    forms = list(detector._forms)  # type: ignore[attr-defined]
    noise = [b"INFO request served user=7 path=/api/v1 ", bytes(range(256)), b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            form = rng.choice(forms)
            if r < 0.3:
                parts.append(form)
            elif r < 0.5:
                parts.append(form[: rng.randint(1, len(form) - 1)])
            elif r < 0.6:
                cut = rng.randint(1, len(form) - 1)
                parts.append(form[:cut] + rng.choice([b"\n", b"\r\n", b"\n    "]) + form[cut:])
            else:
                parts.append(rng.choice(noise)[: rng.randint(0, 64)])
        out.append(b"".join(parts))
    return out


def test_the_gate_passes_over_a_buffer_only_when_no_pattern_matches() -> None:
    detector = make_detector()
    g = detector._gate
    assert g is not None  # hyperscan is installed: the detector uses it
    passes = [rx for _, rx in detector._prefilters]
    hit = 0
    for buf in _buffers(detector, 3000):
        expected = any(rx.search(buf) for rx in passes)
        assert g(buf) == expected, buf
        hit += expected
    assert 0 < hit < 3000  # both answers were exercised


def test_a_detector_with_the_gate_finds_what_one_without_finds(tmp_path: Path) -> None:
    fast, plain = make_detector(), make_detector()
    plain._gate = None  # the passes on every buffer, as without hyperscan
    tree = build_host_tree(tmp_path)
    bufs = [p.read_bytes() for p in sorted(tree.root.rglob("*")) if p.is_file()] + _buffers(fast, 500)
    location = Location(kind="file", path="/x")
    found = 0
    for buf in bufs:
        got = [
            (f.key_id, f.secret_fingerprint, f.location.line) for f in fast.scan(buf, location=location, place=Place())
        ]
        want = [
            (f.key_id, f.secret_fingerprint, f.location.line) for f in plain.scan(buf, location=location, place=Place())
        ]
        assert got == want
        assert fast.may_hold(buf) or not got  # a file the gate passes over is not scanned at all
        assert plain.may_hold(buf)  # without the gate every buffer is scanned
        found += len(got)
    assert found >= 10
    assert not fast.may_hold(b"INFO request served user=7\n" * 100)


def test_patterns_hyperscan_cannot_compile_leave_a_gate_that_passes_everything() -> None:
    g = gate.build([rb"(a)\1"])  # a back-reference: Hyperscan refuses it
    assert g is not None
    assert g(b"nothing like it") and g(b"")  # every buffer goes to the prefilter passes
    assert gate.engine(g) == "none"
    assert gate.engine(gate.build([b"AKIA"])).startswith("hyperscan ")


def test_a_worker_forked_while_the_database_compiles_inherits_it_compiled() -> None:
    """The database compiles in a thread; a fork (the files engine's workers) waits for it, so the child filters
    with it instead of finding no database and passing every buffer."""
    import multiprocessing

    detector = make_detector()  # its gate starts compiling now
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()

    def ask(conn: object) -> None:
        conn.send([detector.may_hold(b"INFO request served user=7\n" * 10), detector.may_hold(b"x AKIA y")])  # type: ignore[attr-defined]

    worker = ctx.Process(target=ask, args=(child,))
    worker.start()
    answers = parent.recv()
    worker.join(30)
    assert answers == [False, True]


def test_the_prefilter_passes_match_each_form_whole_or_broken_once() -> None:
    """Each form whole; a base64 form broken once by LF or CRLF and any indentation (wrapped base64); a raw key id
    broken once by a quoted-printable soft break; nothing broken by a lone CR, by CR CR LF, or twice. The gate
    compiles the same patterns."""
    detector = make_detector()
    passes = dict(detector._prefilters)
    for form, (kind, _) in detector._forms.items():
        rx = passes[form[:1]]

        def whole(buf: bytes, rx: re.Pattern[bytes] = rx) -> bool:
            m = rx.match(buf)
            return m is not None and m.end() == len(buf)

        assert whole(form)
        for cut in range(1, len(form)):
            head, tail = form[:cut], form[cut:]
            if kind == "base64":
                for brk in (b"\n", b"\r\n", b"\n    ", b"\r\n\t ", b"\n\t"):
                    assert whole(head + brk + tail), (form, cut, brk)
            if kind == "raw":
                for brk in (b"=\n", b"=\r\n"):
                    assert whole(head + brk + tail), (form, cut, brk)
            for brk in (b"\r", b"\r\r\n", b"=\r", b"\n\n", b"\r\n\r\n"):
                assert not whole(head + brk + tail), (form, cut, brk)
            if kind == "utf-16":
                assert not whole(head + b"\n" + tail) and not whole(head + b"=\n" + tail)
            if cut > 1:
                assert not whole(form[:1] + b"\n" + form[1:cut] + b"\n" + tail)  # two breaks
