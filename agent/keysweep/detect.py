"""Bytes in, findings out: key ids, the secrets and session tokens paired with them, keyed fingerprints.

Hot path: every keyword form (raw, UTF-16, base64 at three alignments) is looked for by one compiled pattern
per distinct first byte (A, Q, F, B: ``re`` is fast only behind a literal first byte, and one alternation of
all forms measured ~2x slower than the four passes). The passes for Q and B, rare in text, jump between
occurrences of that byte with memchr while it stays rare (see :func:`_prefilter_matches`). A buffer without a
hit costs exactly that. Only from a hit do the key-id regex, the decoders and the pairing run, and the
40-character secret pattern is searched only in a window around each key id.

Pairing (``Finding.pairing``), best first, each secret used by at most one id:
  ``same-line``  the secret is on the id's line (CSV exports, JSON, URLs, ``key:secret``);
  ``named``      the secret is assigned to a secret-looking name within ``pair_window`` bytes either side
                 (the default 4 KiB covers ``.s3cfg``, whose ``secret_key`` sits ~50 lines below ``access_key``);
  ``window``     the nearest plausible unnamed secret within ``pair_window`` bytes and 10 lines;
  ``none``       no secret found (still a finding: it says where a key lives).
Within a tier a secret named with the id's qualifiers (``_PROD``, ``DEV_``, ``_2``) wins, then a secret after
the id beats one before it (secrets follow their ids in credential files, CSV exports, API JSON and sorted
environments), then the nearer one; pairs of one kind are then put in order (two ids followed by two secrets
pair first-first, not crosswise). Session tokens pair the same way.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import heapq
import re
from collections.abc import Callable, Container
from dataclasses import dataclass

from keysweep import decode, gate, keyid
from keysweep.fingerprint import Fingerprinter, redact
from keysweep.models import Finding, Location, Secret
from keysweep.readfull import read_full
from keysweep.ruleset import Rule, Ruleset, most_severe

DEFAULT_PAIR_WINDOW = 4096
UNNAMED_MAX_LINES = 10
TOKEN_MAX = 4096  # a session token may run this far past the pair window
_NAME_LOOKBACK = 120  # how far before a value on its line a secret-looking name may sit
_MAX_DEPTH = 2  # base64 inside base64 inside the file, no deeper
_QP_SECRET_REACH = 256  # how far after an unpaired id a soft line break makes its window be read as quoted-printable
_ALNUM = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
# marshal's TYPE_SHORT_ASCII 'z' and TYPE_SHORT_ASCII_INTERNED 'Z', each also with FLAG_REF (0x80)
_MARSHAL_SHORT_ASCII = frozenset(b"zZ\xfa\xda")
_VALUE_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+%")  # secrets, tokens
_SECRET_RUN_RE = re.compile(rb"[A-Za-z0-9/+%]{40,160}")
_SECRET_RUN_ESC_RE = re.compile(rb"(?:[A-Za-z0-9/+%]|\\/){40,240}")  # JSON that escapes '/' as '\/'
_SECRET_RE = re.compile(rb"[A-Za-z0-9/+]{40}\Z")
_HEX_RE = re.compile(rb"[0-9a-fA-F]{40}\Z")
_B64_SECRET_RE = re.compile(rb"[A-Za-z0-9+/]{54}==")  # base64 of exactly 40 bytes
_B64_TOKEN_RE = re.compile(rb"[A-Za-z0-9+/]{136,8192}={0,2}")  # base64 of 100+ bytes
_TOKEN_VALUE_RE = re.compile(rb"[A-Za-z0-9/+]{100,}={0,2}\Z")
_TOKEN_RE = re.compile(rb"(?:[A-Za-z0-9/+]|%2[FfBb]){100,}(?:=|%3[Dd]){0,2}")
_TOKEN_ESC_RE = re.compile(rb"(?:[A-Za-z0-9/+]|%2[FfBb]|\\/){100,}(?:=|%3[Dd]){0,2}")
_NEWLINE_RE = re.compile(rb"\n")
MAX_KEYS_PER_PLACE = 1000  # distinct keys one file or archive reports (see KeyCap)
_EXAMPLE_CACHE = 4096
_STRONG_PAIRINGS = frozenset({"same-line", "named"})
_MAX_CHOICES = 4  # candidates kept per id for the one-to-one assignment (bounds work in dense files)
_MAX_QUALIFIED_CHOICES = 16  # for an id whose name has qualifiers (``_PROD``): its own may be further away


class _Hit:
    """A key id found in a buffer and what it was paired with (slots: a dense chunk holds one per id until it is
    paired)."""

    __slots__ = ("key_id", "rule", "pos", "encoding", "secret", "token", "pairing")

    def __init__(self, key_id: str, rule: Rule, pos: int, encoding: str | None) -> None:
        self.key_id = key_id
        self.rule = rule
        self.pos = pos  # in the buffer passed to scan() (estimated for decoded views)
        self.encoding = encoding
        self.secret: str | None = None
        self.token: str | None = None
        self.pairing = "none"


@dataclass(frozen=True)
class _Cand:
    pos: int
    end: int
    value: str
    named: bool
    plausible: bool  # passes the stricter test for unnamed secrets


class KeyCap:
    """How many distinct keys one place (a file, or an archive with all its members) may report.

    ``limit`` keys with a secret and as many ids without one, counted apart: a file that repeats its key id
    on every line, or an attacker who plants a thousand bare ids, cannot crowd out a real pair. ``over``
    counts the key occurrences dropped once a pool is full (reported as the skip reason ``too-many-keys``).
    """

    def __init__(self, limit: int = MAX_KEYS_PER_PLACE) -> None:
        self._left = [limit, limit]  # ids without a secret, keys with one
        self.over = 0

    def take(self, paired: bool) -> bool:
        if self._left[paired] <= 0:
            self.over += 1
            return False
        self._left[paired] -= 1
        return True

    def give_back(self, paired: bool) -> None:
        self._left[paired] += 1


class Place:
    """The findings of one place (a file or an archive member), kept as they are found: one per key id, at
    its first line; a later occurrence replaces it only when it is better paired (a secret where there was
    none, a secret on its own line or under its name where it was only near, a session token). Memory is
    bounded by the :class:`KeyCap` (shared by all members of one archive), never by how often a key repeats.

    An id whose secret is on its line or named (and, for a temporary key, whose token is found) is
    ``settled``: nothing later in the place can improve it, so the detector spends no pairing work on it.
    The one thing given up: the same id paired with a second, different secret later in the same place (an
    access key has one secret; the first strong pairing is kept).
    """

    def __init__(self, cap: KeyCap | None = None) -> None:
        self.cap = KeyCap() if cap is None else cap
        self.settled: set[str] = set()
        self._found: dict[tuple[str, int | None], tuple[tuple[bool, bool, bool], Finding]] = {}

    def add(
        self, detector: Detector, h: _Hit, location: Location, line: int, offset: int, per_line: bool = False
    ) -> Finding | None:
        """Keep the hit if it is a new key here or better paired; the finding kept, else None."""
        key = (h.key_id, line if per_line else None)
        strength = (h.secret is not None, h.pairing in _STRONG_PAIRINGS, h.token is not None)
        old = self._found.get(key)
        if old is None:
            if not self.cap.take(strength[0]):
                return None
        elif strength <= old[0]:
            return None
        elif strength[0] and not old[0][0]:  # a bare id now paired: it moves to the paired pool
            if not self.cap.take(True):
                return None
            self.cap.give_back(False)
        loc = dataclasses.replace(location, line=line, offset=offset, encoding=h.encoding)
        f = detector.make_finding(
            h.key_id, location=loc, secret=h.secret, session_token=h.token, pairing=h.pairing, rule=h.rule.id
        )
        self._found[key] = (strength, f)
        if not per_line and _settles(h):
            self.settled.add(h.key_id)
        return f

    def findings(self) -> list[Finding]:
        return [f for _, f in self._found.values()]


def _settles(h: _Hit) -> bool:
    """Nothing later can pair this id better: its secret is on its line or named (and a temporary id's token
    was found)."""
    return (
        h.secret is not None
        and h.pairing in _STRONG_PAIRINGS
        and (h.token is not None or keyid.key_type(h.key_id) != "temporary")
    )


class _Settling:
    """The ids settled before a run of decoded views, plus those the run's views settle as they go: a long
    base64 log that repeats its key in every payload pairs it once per chunk, not once per line."""

    __slots__ = ("_before", "_now")

    def __init__(self, before: Container[str]) -> None:
        self._before = before
        self._now: set[str] = set()

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._now or key_id in self._before

    def note(self, hit: _Hit) -> None:
        if _settles(hit):
            self._now.add(hit.key_id)


class Detector:
    """Finds AWS key ids and pairs them with secrets and session tokens.

    ``include_examples`` keeps documentation examples and placeholders (dropped by default).
    """

    def __init__(
        self,
        ruleset: Ruleset,
        fingerprinter: Fingerprinter,
        *,
        pair_window: int = DEFAULT_PAIR_WINDOW,
        include_examples: bool = False,
    ) -> None:
        self.ruleset = ruleset
        self.fingerprinter = fingerprinter
        self.pair_window = pair_window
        self.include_examples = include_examples
        key_rules = ruleset.key_rules
        self._id_re = re.compile(
            b"|".join(b"(?P<r%d>%s)" % (i, (r.regex or "").encode()) for i, r in enumerate(key_rules))
        )
        self._rule_by_group = {f"r{i}": r for i, r in enumerate(key_rules)}
        secret_rule, token_rule = ruleset.secret_rule, ruleset.token_rule
        self._secret_rule = secret_rule
        self._secret_names = re.compile(secret_rule.names.encode()) if secret_rule.names else None
        self._token_names = re.compile(token_rule.names.encode()) if token_rule.names else None
        self._token_prefixes = tuple(p.encode() for p in token_rule.prefixes)
        self._severity = {r.id: r.severity for r in ruleset.rules}
        self._example_ids: dict[str, bool] = {}  # a key id repeated on every line of a log is judged once

        # every literal form of every keyword, with what it is and (base64) where its quantum grid starts
        self._forms: dict[bytes, tuple[str, int]] = {}
        for k in ruleset.keywords:
            self._forms.setdefault(k, ("raw", 0))
            self._forms.setdefault(decode.utf16_form(k), ("utf-16", 0))
            for form, first in decode.base64_forms(k):
                self._forms.setdefault(form, ("base64", first))
        first_bytes = frozenset(f[0] for f in self._forms)
        for k in ruleset.keywords:
            for form, first in decode.base64_utf16_forms(k, first_bytes):
                self._forms.setdefault(form, ("base64", first))
        # re searches fast only behind a literal first byte, so one pattern per first byte (measured on a
        # host-like corpus: one alternation of all forms ~400 MB/s; four grouped passes ~700 MB/s)
        wrappable = {f for f, (kind, _) in self._forms.items() if kind == "base64"}
        raw = {f for f, (kind, _) in self._forms.items() if kind == "raw"}
        self._prefilters = _grouped(list(self._forms), wrappable, raw)
        # UTF-16 text of ASCII characters always holds NUL bytes: a buffer without one (most text) skips those forms
        self._prefilters_no_nul = _grouped(
            [f for f, (kind, _) in self._forms.items() if kind != "utf-16"], wrappable, raw
        )
        # one native pass that tells the buffers without any match (nearly all) from the rest (keysweep.gate)
        self._gate = gate.build([rx.pattern for _, rx in self._prefilters])

    # -- public API ---------------------------------------------------------------------------------------

    @property
    def gate_engine(self) -> str:
        """``hyperscan <version>`` when the Hyperscan gate runs ahead of the prefilter, else ``none``."""
        return gate.engine(self._gate)

    @property
    def overlap(self) -> int:
        """Bytes by which a chunked reader must overlap consecutive chunks (see :meth:`scan_stream`)."""
        return 2 * (self.pair_window + TOKEN_MAX) + 64

    def may_hold(self, buf: bytes) -> bool:
        """False only when :meth:`scan` would certainly find nothing in ``buf`` (the native gate's exact answer:
        no prefilter match); always True without the gate."""
        return self._gate is None or self._gate(buf)

    def scan(
        self,
        buf: bytes,
        *,
        location: Location,
        base_offset: int = 0,
        base_line: int = 1,
        min_offset: int = 0,
        max_offset: int | None = None,
        per_line: bool = False,
        place: Place | None = None,
    ) -> list[Finding]:
        """Findings in ``buf``, whose first byte is at ``base_offset`` / line ``base_line`` of the stream.

        One finding per key id per place, at its first line unless better paired later (see :class:`Place`; ``place``
        carries what earlier buffers of the same place found, and the findings returned are those this buffer
        added or improved). ``per_line``: one finding per key id and line instead, for callers that map lines
        to places of their own (environment variables); bounded by the same cap. Ids at absolute offsets below
        ``min_offset`` (already reported from the previous chunk) or at or above ``max_offset`` (left for the
        next chunk) are dropped. Line numbers are 1-based.
        """
        if place is None:
            place = Place()
        hits = self._scan_view(buf, None, 0, base_offset, place.settled if not per_line else ())
        if not hits:
            return []
        lo, hi = min_offset - base_offset, None if max_offset is None else max_offset - base_offset
        hits = [h for h in hits if h.pos >= lo and (hi is None or h.pos < hi)]
        hits.sort(key=lambda h: h.pos)
        out: list[Finding] = []
        best: dict[str, _Hit] = {}  # the best hit of each key id on the current line
        line, at = base_line, 0
        for h in hits:
            nl = buf.count(b"\n", at, h.pos)
            if nl:
                self._keep(best, line, place, location, base_offset, per_line, out)
                line += nl
            at = h.pos
            prev = best.get(h.key_id)
            if prev is None or _rank(h) > _rank(prev):
                best[h.key_id] = h
        self._keep(best, line, place, location, base_offset, per_line, out)
        return out

    def _keep(
        self,
        best: dict[str, _Hit],
        line: int,
        place: Place,
        location: Location,
        base_offset: int,
        per_line: bool,
        out: list[Finding],
    ) -> None:
        """Offer one line's best hits to the place (in the order they occur), then forget them."""
        for h in sorted(best.values(), key=lambda x: x.pos) if len(best) > 1 else best.values():
            f = place.add(self, h, location, line, base_offset + h.pos, per_line)
            if f is not None:
                out.append(f)
        best.clear()

    def scan_stream(
        self,
        read: Callable[[int], bytes],
        *,
        location: Location,
        chunk_size: int = 1 << 20,
        base_offset: int = 0,
        min_offset: int = 0,
        max_offset: int | None = None,
        place: Place | None = None,
    ) -> list[Finding]:
        """Scan a stream of any size in chunks of ``chunk_size`` with :attr:`overlap`; memory stays bounded.

        Every id is reported from the chunk that holds its whole pairing window; one finding per key per
        place (:class:`Place`; pass one to read how many keys its cap dropped). The stream's first byte is at
        ``base_offset`` (line 1); only ids at offsets in ``[min_offset, max_offset)`` are reported (a part of
        a file whose neighbours another reader scans: the stream then starts and ends ``overlap // 2`` bytes
        beyond those bounds).
        """
        overlap = self.overlap
        chunk_size = max(chunk_size, 2 * overlap)
        place = Place() if place is None else place
        buf = read_full(read, chunk_size)
        buf_off, buf_line, min_off = base_offset, 1, min_offset
        while buf:
            nxt = read_full(read, chunk_size)
            max_off = None if not nxt else buf_off + len(buf) - overlap // 2
            if max_offset is not None:
                max_off = max_offset if max_off is None else min(max_off, max_offset)
            self.scan(
                buf,
                location=location,
                base_offset=buf_off,
                base_line=buf_line,
                min_offset=min_off,
                max_offset=max_off,
                place=place,
            )
            if not nxt:
                break
            cut = max(0, len(buf) - overlap)
            buf_line += buf.count(b"\n", 0, cut)
            buf_off += cut
            min_off = max(min_off, max_off) if max_off is not None else min_off
            buf = buf[cut:] + nxt
        return place.findings()

    def make_finding(
        self,
        key_id: str,
        *,
        location: Location,
        secret: str | None,
        session_token: str | None,
        pairing: str,
        rule: str = "aws-access-key-id",
        profile_kind: str | None = None,
    ) -> Finding:
        """A finding with fingerprints, account and redaction filled in (also for structured sources)."""
        fp = self.fingerprinter
        severity = self._severity.get(rule, "high")
        if secret is not None:
            severity = most_severe(severity, self._secret_rule.severity)
        example = self.example_reason(key_id, secret, location.path) if self.include_examples else None
        return Finding(
            rule=rule,
            key_id=key_id,
            location=location,
            fingerprint=fp.key_fingerprint(key_id, secret),
            severity=severity,
            has_secret=secret is not None,
            secret_redacted=redact(secret),
            secret_fingerprint=fp.secret_fingerprint(secret) if secret is not None else None,
            account_id=keyid.decode_account(key_id),
            key_type=keyid.key_type(key_id),
            pairing=pairing,
            has_session_token=session_token is not None,
            profile_kind=profile_kind,
            example=example,
            secret=Secret(secret) if secret is not None else None,
            session_token=Secret(session_token) if session_token is not None else None,
        )

    def is_example_key(self, key_id: str) -> bool:
        known = self._example_ids.get(key_id)
        if known is None:
            known = key_id in self.ruleset.example_key_ids or keyid.is_example_key(key_id)
            if len(self._example_ids) >= _EXAMPLE_CACHE:
                self._example_ids.clear()
            self._example_ids[key_id] = known
        return known

    def is_example_secret(self, secret: str) -> bool:
        return secret in self.ruleset.example_secrets or "EXAMPLE" in secret

    def example_reason(self, key_id: str, secret: str | None = None, path: str | None = None) -> str | None:
        """Why a finding of this key (with this secret, at this path) is hidden unless examples are included:
        ``documentation key id``, ``placeholder key id (contains XXXX)``, ``ignored path **/moto/**``, … (several
        joined by ``; ``), or None for a finding shown anyway."""
        reasons = []
        if key_id in self.ruleset.example_key_ids:
            reasons.append("documentation key id")
        elif (why := keyid.example_reason(key_id)) is not None:
            reasons.append(why)
        if secret is not None and self.is_example_secret(secret):
            reasons.append(
                "documentation secret" if secret in self.ruleset.example_secrets else "secret contains EXAMPLE"
            )
        if path and (glob := self.ruleset.ignoring_glob(path)) is not None:
            reasons.append(f"ignored path {glob}")
        return "; ".join(reasons) or None

    def at_path(self, finding: Finding, path: str) -> Finding:
        """The finding placed at ``path`` (found in a buffer scanned before its path was known)."""
        found = dataclasses.replace(finding, location=dataclasses.replace(finding.location, path=path))
        if self.include_examples:
            found = dataclasses.replace(
                found,
                example=self.example_reason(finding.key_id, finding.secret.reveal() if finding.secret else None, path),
            )
        return found

    # -- views ----------------------------------------------------------------------------------------------

    def _scan_view(
        self,
        view: bytes,
        encoding: str | None,
        depth: int,
        origin: int = 0,
        settled: Container[str] = (),
    ) -> list[_Hit]:
        """Ids in ``view`` (the buffer itself or a decoded slice of it), paired within the view; positions
        are in ``view``, whose first byte is at ``origin`` of its stream (for the UTF-16 byte order). The
        prefilter passes are the only work over the whole view: every other step starts from one of their hits.

        ``settled``: key ids whose finding cannot improve (:attr:`Place.settled`). A view holding no other id
        is not paired at all (a log that repeats its key on every line costs little more than the prefilter);
        one that does is paired whole, settled ids included, so every secret still goes to the same id."""
        if self._gate is not None and not self._gate(view):
            return []  # not one match of the passes below
        settled_ids: list[tuple[int, str, Rule]] = []  # while every id so far is settled: cheap tuples
        ids: list[_Hit] | None = None  # from the first id that is not
        utf16_hits: list[int] = []
        b64_hits: list[tuple[int, int]] = []
        pct_hits: list[int] = []  # ids right after a %XX escape: URL-encoded text (%22AKIA…%22)
        qp_hits: list[int] = []  # ids after a =XX escape or broken by a soft line break: quoted-printable mail
        for anchor, rx in self._prefilters if b"\0" in view else self._prefilters_no_nul:
            at = view.find(anchor)  # memchr: a view without the byte (often, for small files) costs no pass
            if at < 0:
                continue
            for m in _prefilter_matches(view, anchor, rx, at) if anchor in _RARE_ANCHORS else rx.finditer(view, at):
                kind, first = self._forms[_form_of(m.group())]
                p = m.start()
                if kind == "raw":
                    idm = self._id_re.match(view, p)
                    if idm is None:
                        if decode.soft_line_break(view, p, p + 24):  # the id wrapped in a mail body
                            qp_hits.append(p)
                        continue
                    e = idm.end()
                    if e < len(view) and view[e] in _ALNUM and not _marshalled_id(view, p, e):
                        continue
                    if p and view[p - 1] in _ALNUM and not _after_backslash_escape(view, p):
                        if decode.ends_with_escape(view, p):
                            pct_hits.append(p)
                        elif decode.ends_with_qp_escape(view, p):  # "=3D": an '=' in a mail body
                            qp_hits.append(p)
                        continue
                    key_id = idm.group().decode("ascii")
                    if self.include_examples or not self.is_example_key(key_id):
                        rule = self._rule_by_group[idm.lastgroup or "r0"]
                        if ids is not None:
                            ids.append(_Hit(key_id, rule, p, encoding))
                        elif key_id in settled:
                            settled_ids.append((p, key_id, rule))
                        else:
                            ids = [_Hit(k, r, q, encoding) for q, k, r in settled_ids]
                            ids.append(_Hit(key_id, rule, p, encoding))
                elif kind == "utf-16":
                    utf16_hits.append(p)
                else:
                    b64_hits.append((p, first))
        if ids is None:
            ids = []
        else:
            ids.sort(key=lambda h: h.pos)
            self._pair(view, ids)
            # a secret after the id broken by a soft line break: a long line of a quoted-printable mail body
            qp_hits += [
                h.pos for h in ids if h.secret is None and decode.soft_line_break(view, h.pos, h.pos + _QP_SECRET_REACH)
            ]
        if depth < _MAX_DEPTH:
            if pct_hits:
                ids += self._scan_unescaped(view, pct_hits, depth, settled, decode.percent_view, "percent")
            if qp_hits:
                ids += self._scan_unescaped(
                    view, qp_hits, depth, settled, decode.quoted_printable_view, "quoted-printable"
                )
            if utf16_hits:
                ids += self._scan_utf16(view, utf16_hits, depth, origin, settled)
            if b64_hits:
                ids += self._scan_base64(view, sorted(b64_hits), depth, settled)
        return ids

    def _scan_unescaped(
        self,
        view: bytes,
        hits: list[int],
        depth: int,
        settled: Container[str],
        unescape: Callable[[bytes, int, int], tuple[bytes, list[int]]],
        encoding: str,
    ) -> list[_Hit]:
        """Scan the windows around ``hits`` again through ``unescape`` (percent-encoding, quoted-printable)."""
        radius = self.pair_window + TOKEN_MAX
        out: list[_Hit] = []
        for lo, hi in _merge_spans([(max(0, h - radius), min(len(view), h + radius)) for h in hits]):
            text, offsets = unescape(view, lo, hi)
            for h in self._scan_view(text, encoding, depth + 1, settled=settled):
                h.pos = offsets[h.pos]
                out.append(h)
        return out

    def _scan_utf16(self, view: bytes, hits: list[int], depth: int, origin: int, settled: Container[str]) -> list[_Hit]:
        radius = 2 * (self.pair_window + TOKEN_MAX)
        out: list[_Hit] = []
        for lo, hi in decode.utf16_regions(hits, len(view), radius):
            # ASCII in UTF-16LE has its character at even stream offsets, in big-endian at odd ones
            enc = "utf-16le" if (origin + lo) % 2 == 0 else "utf-16be"
            for h in self._scan_view(decode.decode_utf16(view, lo, hi), enc, depth + 1, settled=settled):
                h.pos = lo + 2 * h.pos
                out.append(h)
        return out

    def _scan_base64(self, view: bytes, hits: list[tuple[int, int]], depth: int, settled: Container[str]) -> list[_Hit]:
        out: list[_Hit] = []
        covered = [-1, -1, -1, -1]  # per quantum grid: text decoded so far (keeps long runs linear)
        wrapped_until = -1
        settled = _Settling(settled)
        for h, first in hits:
            grid = (h - first) % 4
            if h + 32 <= covered[grid] or h < wrapped_until:  # the whole encoded id (<= 28 chars) was decoded
                continue
            rs, rend = decode.base64_run(view, h)
            eol = _line_end(view, rend)
            if rend - rs < 26 and not eol:
                continue  # a 20-character id needs at least 26 base64 characters
            # a wrapped line runs from its indentation to its end (a run after "payload=" is not one)
            if eol and (rs == 0 or view[rs - 1] in b" \t\n"):
                block = decode.wrapped_base64(view, h)
                if block is not None:
                    wrapped_until = self._scan_wrapped(block, h, first, depth, view, out, settled)
                    continue
            if rend - rs < 26:
                continue
            covered[grid] = rend
            decoded = decode.decode_base64_run(view, rs, rend, grid)
            if decoded is None:
                continue
            s, data = decoded
            for hit in self._scan_view(data, "base64", depth + 1, settled=settled):
                hit.pos = s + (4 * hit.pos) // 3
                if hit.encoding == "base64":
                    self._pair_encoded_siblings(view, hit)
                settled.note(hit)
                out.append(hit)
        return out

    def _scan_wrapped(
        self,
        block: tuple[bytes, list[int], list[int]],
        h: int,
        first: int,
        depth: int,
        view: bytes,
        out: list[_Hit],
        settled: Container[str],
    ) -> int:
        """Decode a block of wrapped base64 lines as one blob; returns where the block ends in ``view``."""
        text, text_offs, view_offs = block
        k = bisect.bisect_right(view_offs, h) - 1
        decoded = decode.decode_base64_run(text, 0, len(text), text_offs[k] + (h - view_offs[k]) - first)
        if decoded is not None:
            s, data = decoded
            for hit in self._scan_view(data, "base64", depth + 1, settled=settled):
                q = s + (4 * hit.pos) // 3
                k = bisect.bisect_right(text_offs, q) - 1
                hit.pos = view_offs[k] + (q - text_offs[k])
                out.append(hit)
        return view_offs[-1] + (len(text) - text_offs[-1])

    # -- pairing --------------------------------------------------------------------------------------------

    def _pair(self, view: bytes, ids: list[_Hit]) -> None:
        """Give each id (sorted by position) its secret and, for temporary ids, its session token.

        Candidates are collected once over the union of the ids' windows, so dense files (a CSV export of
        thousands of keys) cost one pass over each window region, not one per id."""
        w = self.pair_window
        spans = _merge_spans([(max(0, h.pos - w), min(len(view), h.pos + 20 + w)) for h in ids])
        cands = [c for lo, hi in spans for c in self._secret_candidates(view, lo, hi)]
        if cands:
            newlines = [m.start() for lo, hi in spans for m in _NEWLINE_RE.finditer(view, lo, hi)]
            cand_pos = [c.pos for c in cands]
            cand_line = [bisect.bisect_right(newlines, p) for p in cand_pos]
            id_line = [bisect.bisect_right(newlines, h.pos) for h in ids]
            named = [c.named for c in cands]
            nxt_named, prv_named = _next_true(named), _prev_true(named)
            quals = [_qualifiers(view, h.pos) for h in ids]
            cand_quals: dict[int, frozenset[bytes]] = {}

            def match(i: int, j: int) -> int:
                """0: the id's and the secret's names carry the same qualifiers (``_prod``, ``DEV_``, ``_2``);
                2: both carry qualifiers, different ones; 1: either has none."""
                if not quals[i] or not cands[j].named:
                    return 1
                q = cand_quals.get(j)
                if q is None:
                    q = cand_quals[j] = _qualifiers(view, cands[j].pos)
                return 1 if not q else 0 if q == quals[i] else 2

            scored: list[tuple[int, int, tuple[int, int], int, int]] = []  # (tier, names, distance, id, candidate)
            for i, h in enumerate(ids):
                args = (h, i, id_line[i], cands, cand_pos, cand_line, nxt_named, prv_named)
                mine = [(tier, match(i, j), dist, i, j) for tier, dist, _i, j in self._choices(*args)]
                if quals[i] and all(m[1] for m in mine):  # none named like the id: its own may be further away
                    mine = [
                        (tier, match(i, j), dist, i, j)
                        for tier, dist, _i, j in self._choices(*args, _MAX_QUALIFIED_CHOICES)
                    ]
                scored += mine

            def same_kind(i: int, j: int, tier: int, names: int) -> bool:
                """Would pairing id i with candidate j be of this tier and names, within the window?"""
                lines = abs(cand_line[j] - id_line[i])
                return (
                    ids[i].pos - w <= cand_pos[j] <= ids[i].pos + 20 + w
                    and (lines == 0) == (tier <= 1)
                    and (tier < 3 or lines <= UNNAMED_MAX_LINES)
                    and match(i, j) == names
                )

            chosen = _uncross(_assign(scored), [h.pos for h in ids], cand_pos, same_kind)
            for (tier, _names), i, j in chosen:
                ids[i].secret = cands[j].value
                ids[i].pairing = ("same-line", "same-line", "named", "window")[tier]
        temporary = [h for h in ids if keyid.key_type(h.key_id) == "temporary"]
        if temporary:
            spans = _merge_spans([(max(0, h.pos - w), min(len(view), h.pos + 20 + w + TOKEN_MAX)) for h in temporary])
            tokens = [t for lo, hi in spans for t in self._token_candidates(view, lo, hi)]
            tok_pos = [t[0] for t in tokens]
            scored = []
            for i, h in enumerate(temporary):
                lo = bisect.bisect_left(tok_pos, h.pos - w)
                hi = bisect.bisect_right(tok_pos, h.pos + 20 + w + TOKEN_MAX)
                mine = [(0, 1, _distance(h.pos, tokens[j][0], tokens[j][1]), i, j) for j in range(lo, hi)]
                scored += heapq.nsmallest(_MAX_CHOICES, mine)

            def in_window(i: int, j: int, _tier: int, _names: int) -> bool:
                return temporary[i].pos - w <= tok_pos[j] <= temporary[i].pos + 20 + w + TOKEN_MAX

            for _kind, i, j in _uncross(_assign(scored), [h.pos for h in temporary], tok_pos, in_window):
                temporary[i].token = tokens[j][2]

    def _choices(
        self,
        h: _Hit,
        i: int,
        id_line: int,
        cands: list[_Cand],
        cand_pos: list[int],
        cand_line: list[int],
        nxt_named: list[int],
        prv_named: list[int],
        most: int = _MAX_CHOICES,
    ) -> list[tuple[int, tuple[int, int], int, int]]:
        """The id's best ``most`` candidates by (tier, distance): what sorting every candidate in its
        window would give, found by looking only as far as a better one could still be. Its own line
        (tiers 0, 1) first; then outwards, later lines before earlier ones: a named value (tier 2) on a later
        line beats every value before the id, and once ``most`` values of tier <= 2 are in hand
        nothing further can enter; unnamed values (tier 3) only within ``UNNAMED_MAX_LINES``."""
        w, pos = self.pair_window, h.pos
        lo_j = bisect.bisect_left(cand_pos, pos - w)
        hi_j = bisect.bisect_right(cand_pos, pos + 20 + w)
        a = bisect.bisect_left(cand_line, id_line, lo_j, hi_j)
        b = bisect.bisect_right(cand_line, id_line, a, hi_j)
        mine = [(1 - cands[j].named, _distance(pos, cands[j].pos, cands[j].end), i, j) for j in range(a, b)]
        good = len(mine)  # values of tier <= 2 in hand
        for forward in (True, False):
            if good >= most:
                break
            if forward:
                near = range(b, bisect.bisect_right(cand_line, id_line + UNNAMED_MAX_LINES, b, hi_j))
            else:
                near = range(a - 1, bisect.bisect_left(cand_line, id_line - UNNAMED_MAX_LINES, lo_j, a) - 1, -1)
            unnamed = 0
            for j in near:
                c = cands[j]
                if c.named:
                    good += 1
                    mine.append((2, _distance(pos, c.pos, c.end), i, j))
                    if good >= most:
                        break
                elif c.plausible and unnamed < most:
                    unnamed += 1
                    mine.append((3, _distance(pos, c.pos, c.end), i, j))
            else:  # named values further away
                j = nxt_named[near.stop] if forward else prv_named[near.stop + 1]
                while good < most and lo_j <= j < hi_j:
                    good += 1
                    mine.append((2, _distance(pos, cands[j].pos, cands[j].end), i, j))
                    j = nxt_named[j + 1] if forward else prv_named[j]
        mine.sort()
        return mine[:most]

    def _secret_candidates(self, view: bytes, lo: int, hi: int) -> list[_Cand]:
        found = []
        run_re = _SECRET_RUN_ESC_RE if view.find(b"\\/", lo, hi) >= 0 else _SECRET_RUN_RE
        for m in run_re.finditer(view, lo, hi):
            s, e = m.span()
            if (s and view[s - 1] in _VALUE_CHARS) or (e < len(view) and view[e] in _VALUE_CHARS):
                continue  # part of a longer run
            if s and view[s - 1] == 0x5C and view[s] in b"ntr" and e - s == 41:  # "\nSECRET" in escaped text
                s += 1
            if e < len(view) and view[e] == 0x3D:  # '=': the tail of a base64 blob
                continue
            value = _unescape(view[s:e])
            if not _SECRET_RE.match(value) or _HEX_RE.match(value) or len(set(value)) < 10:
                continue
            text = value.decode("ascii")
            if not self.include_examples and self.is_example_secret(text):
                continue
            found.append(_Cand(s, e, text, self._named(view, s, self._secret_names), _plausible_unnamed(text)))
        return found

    def _token_candidates(self, view: bytes, lo: int, hi: int) -> list[tuple[int, int, str]]:
        """(start, end, token) for every named or known-prefix session token in view[lo:hi]."""
        found = []
        token_re = _TOKEN_ESC_RE if view.find(b"\\/", lo, hi) >= 0 else _TOKEN_RE
        for m in token_re.finditer(view, lo, hi):
            s = m.start()
            if s and view[s - 1] in _VALUE_CHARS:
                continue
            value = _unescape(m.group())
            if self._named(view, s, self._token_names) or value.startswith(self._token_prefixes):
                found.append((s, m.end(), value.decode("ascii")))
        return found

    def _pair_encoded_siblings(self, view: bytes, hit: _Hit) -> None:
        """An id found in a base64 value (a Kubernetes Secret's ``data``) has its secret and session token in
        sibling base64 values, not inside its own."""
        w, at = self.pair_window, hit.pos
        if hit.secret is None:
            best: tuple[int, tuple[int, int], str] | None = None
            for m in _B64_SECRET_RE.finditer(view, max(0, at - w), min(len(view), at + w)):
                s = m.start()
                if s and view[s - 1] in _ALNUM:
                    continue
                data = decode.decode_base64_value(m.group())
                if data is None or not _SECRET_RE.match(data) or _HEX_RE.match(data):
                    continue
                text = data.decode("ascii")
                if not self.include_examples and self.is_example_secret(text):
                    continue
                named = self._named(view, s, self._secret_names)
                if not named and not _plausible_unnamed(text):
                    continue
                rank = (0 if named else 1, _distance(at, s, m.end()))
                if best is None or rank < best[:2]:
                    best = (*rank, text)
            if best is not None:
                hit.secret = best[2]
                hit.pairing = "named" if best[0] == 0 else "window"
        if hit.token is None and keyid.key_type(hit.key_id) == "temporary":
            best_token: tuple[tuple[int, int], str] | None = None
            for m in _B64_TOKEN_RE.finditer(view, max(0, at - w), min(len(view), at + w + 2 * TOKEN_MAX)):
                s = m.start()
                if s and view[s - 1] in _ALNUM:
                    continue
                data = decode.decode_base64_value(m.group())
                if data is None or not _TOKEN_VALUE_RE.match(data):
                    continue
                if self._named(view, s, self._token_names) or data.startswith(self._token_prefixes):
                    distance = _distance(at, s, m.end())
                    if best_token is None or distance < best_token[0]:
                        best_token = (distance, data.decode("ascii"))
            if best_token is not None:
                hit.token = best_token[1]

    @staticmethod
    def _named(view: bytes, pos: int, names: re.Pattern[bytes] | None) -> bool:
        if names is None:
            return False
        lo = max(0, pos - _NAME_LOOKBACK)
        nl = view.rfind(b"\n", lo, pos)
        return names.search(view, nl + 1 if nl >= 0 else lo, pos) is not None


def _line_end(view: bytes, end: int) -> bool:
    """A base64 run ending at ``end`` ends its line (after its '=' padding, if any)."""
    end += 2 if view.startswith(b"==", end) else view.startswith(b"=", end)
    return end == len(view) or view[end] in b"\r\n"


def _marshalled_id(view: bytes, start: int, end: int) -> bool:
    """The id is a whole string marshalled by CPython (a ``.pyc`` constant): a short-ASCII type byte and the
    length byte 20 before it, so the byte after it is the next object's type byte ('z', 'i', 'N', …), not text."""
    return end - start == 20 and start >= 2 and view[start - 1] == 20 and view[start - 2] in _MARSHAL_SHORT_ASCII


def _after_backslash_escape(view: bytes, pos: int) -> bool:
    """``\\n``, ``\\t`` or ``\\r`` right before ``pos``: an escaped line break in JSON or a log, not a letter."""
    return pos >= 2 and view[pos - 2] == 0x5C and view[pos - 1] in b"ntr"


def _distance(id_pos: int, start: int, end: int) -> tuple[int, int]:
    """(before, distance) of a value from an id. Secrets and tokens follow their id in every common format
    (credential files, CSV exports, API JSON, sorted environments), so within a tier any value after the id
    beats every value before it; minified JSON with several keys then pairs each key with its own values."""
    return (0, start - id_pos - 20) if start >= id_pos else (1, id_pos - end)


def _assign(scored: list[tuple[int, int, tuple[int, int], int, int]]) -> list[tuple[tuple[int, int], int, int]]:
    """Greedy one-to-one assignment, best (tier, names, (before, distance)) first: ((tier, names), id, candidate)."""
    scored.sort()
    used_ids: set[int] = set()
    used: set[int] = set()
    out = []
    for tier, names, _dist, i, j in scored:
        if i in used_ids or j in used:
            continue
        used_ids.add(i)
        used.add(j)
        out.append(((tier, names), i, j))
    return out


def _uncross(
    pairs: list[tuple[tuple[int, int], int, int]],
    id_pos: list[int],
    cand_pos: list[int],
    same_kind: Callable[[int, int, int, int], bool],
) -> list[tuple[tuple[int, int], int, int]]:
    """Pairs of one kind (tier and names) put in order: the first id gets the first value. Nearest-first pairs
    two ids followed by two secrets crosswise (the second id is nearer to the first secret), and objects that
    hold their secret before their id (``{"SecretAccessKey": S1, "AccessKeyId": K1}, {S2, K2}``: K1 takes S2,
    after it); in order both are right. An ordered matching never stretches further than a crossing one, and a
    group is reordered only when each new pair stays of its kind and in its window
    (``same_kind(id, candidate, tier, names)``)."""
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for kind, i, j in pairs:
        groups.setdefault(kind, []).append((i, j))
    out: list[tuple[tuple[int, int], int, int]] = []
    for (tier, names), members in groups.items():
        members.sort(key=lambda m: id_pos[m[0]])
        ordered = sorted((j for _i, j in members), key=cand_pos.__getitem__)
        if any(j != k for (_i, j), k in zip(members, ordered)) and all(
            same_kind(i, k, tier, names) for (i, _j), k in zip(members, ordered)
        ):
            members = [(i, k) for (i, _j), k in zip(members, ordered)]
        out += [((tier, names), i, j) for i, j in members]
    return out


_NAME_BEFORE_RE = re.compile(rb"([A-Za-z0-9_.\-]{1,80})[ \t\"':=>]{1,8}\Z")  # a name, then what assigns to it
_NAME_WORD_RE = re.compile(rb"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# the words every key or secret name is made of; what is left (prod, dev, backup, 2, …) tells keys apart
_GENERIC_WORDS = frozenset(
    b"aws amazon access key keys id ids secret secrets accesskey accesskeyid secretkey secretaccesskey keyid ak sk "
    b"value".split()
)


def _qualifiers(view: bytes, pos: int) -> frozenset[bytes]:
    """The qualifiers in the name a value at ``pos`` is assigned to (``AWS_ACCESS_KEY_ID_PROD = …``,
    ``"backupSecretAccessKey": "…"``: {prod}, {backup}); empty when there is no name or only generic words."""
    lo = max(0, pos - 96)
    m = _NAME_BEFORE_RE.search(view, view.rfind(b"\n", lo, pos) + 1 or lo, pos)
    if m is None:
        return frozenset()  # no name right before it (CSV, URLs)
    return _name_qualifiers(m.group(1))


@functools.lru_cache(maxsize=1024)  # a file repeats a few names (aws_access_key_id) on every key
def _name_qualifiers(name: bytes) -> frozenset[bytes]:
    return frozenset(w.lower() for w in _NAME_WORD_RE.findall(name)) - _GENERIC_WORDS


def _next_true(flags: list[bool]) -> list[int]:
    """For each index k (and len(flags)): the first index >= k whose flag is set, else len(flags)."""
    out = [len(flags)] * (len(flags) + 1)
    for k in range(len(flags) - 1, -1, -1):
        out[k] = k if flags[k] else out[k + 1]
    return out


def _prev_true(flags: list[bool]) -> list[int]:
    """For each k in 0..len(flags): the last index < k whose flag is set, else -1."""
    out = [-1] * (len(flags) + 1)
    for k in range(len(flags)):
        out[k + 1] = k if flags[k] else out[k]
    return out


def _merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _unescape(raw: bytes) -> bytes:
    """Undo JSON's optional '\\/' escape and URL percent-encoding of '/', '+' and '='."""
    if b"\\" in raw:
        raw = raw.replace(b"\\/", b"/")
    return decode.percent_decode(raw) if b"%" in raw else raw


_INDENT = object()  # the indentation after a line break inside a wrapped form


def _grouped(
    forms: list[bytes],
    wrappable: Container[bytes] = (),
    soft_breakable: Container[bytes] = (),
) -> list[tuple[bytes, re.Pattern[bytes]]]:
    """(first byte, pattern of the forms starting with it) per distinct first byte.

    The rest of the forms is one trie: ``re`` tries alternatives one by one and skips one that starts with a
    literal byte at the cost of a compare, so a trie of literals is as fast as the plain alternation on text
    and faster on base64. A form in ``wrappable`` also matches with a line break (LF or CRLF, then any
    indentation) between any two of its characters: base64 wrapped at 64 or 76 columns breaks a line inside
    the encoded keyword about once in 16 places. A form in ``soft_breakable`` also matches with a
    quoted-printable soft line break (``=`` and LF or CRLF) between two of its characters (a long line of a mail
    body). Such a match holds the break (see :func:`_form_of`).
    """
    groups: dict[int, dict[object, dict]] = {}
    for f in forms:
        variants: list[list[object]] = [list(f)]
        if f in wrappable:
            for i in range(1, len(f)):
                variants += [[*f[:i], 0x0A, _INDENT, *f[i:]], [*f[:i], 0x0D, 0x0A, _INDENT, *f[i:]]]
        if f in soft_breakable:
            for i in range(1, len(f)):
                variants += [[*f[:i], 0x3D, 0x0A, *f[i:]], [*f[:i], 0x3D, 0x0D, 0x0A, *f[i:]]]
        root = groups.setdefault(f[0], {})
        for v in variants:
            node = root
            for t in v[1:]:
                node = node.setdefault(t, {})
            node[None] = {}
    return [(bytes([first]), re.compile(re.escape(bytes([first])) + _trie(root))) for first, root in groups.items()]


def _trie(node: dict[object, dict]) -> bytes:
    # a break as LF or as CRLF before the same rest is one branch, ``\r?\n``: the same matches, a third shorter
    # pattern and ~30 % less compiling, for ``re`` and for Hyperscan (keysweep.gate) alike
    crlf = node.get(0x0D)
    merged = crlf is not None and 0x0A in node and list(crlf) == [0x0A] and crlf[0x0A] == node[0x0A]
    alts = [
        (rb"[ \t]*" if t is _INDENT else rb"\r?\n" if merged and t == 0x0A else re.escape(bytes([t])))  # type: ignore[list-item]
        + _trie(child)
        for t, child in node.items()
        if t is not None and not (merged and t == 0x0D)
    ]
    if not alts:
        return b""
    if None in node:
        return b"(?:" + b"|".join(alts) + b")?"
    return alts[0] if len(alts) == 1 else b"(?:" + b"|".join(alts) + b")"


def _form_of(match: bytes) -> bytes:
    """The form a prefilter match stands for: the match without the line break of a wrapped form."""
    return match.translate(None, b"\r\n \t=") if b"\n" in match else match


# uppercase letters that are rare in text and code (the base64 forms' Q and B): found with memchr, not re
_RARE_ANCHORS = frozenset((b"B", b"J", b"K", b"Q", b"V", b"X", b"Z"))
_SPARSE_GAP = 1024  # mean bytes between anchor bytes above which memchr + match beats re's byte-by-byte search
_SPARSE_PROBE = 4  # anchor bytes looked at before judging


def _prefilter_matches(view: bytes, anchor: bytes, rx: re.Pattern[bytes], start: int = 0) -> list[re.Match[bytes]]:
    """What ``rx.finditer(view, start)`` yields, where every match starts with ``anchor``.

    ``re`` looks for a literal first byte one byte at a time (~3.5 GB/s); ``bytes.find`` uses memchr (tens of
    GB/s). Where the anchor byte is rare (most text for the base64 forms' Q and B) jumping from one anchor byte
    to the next and matching there is several times cheaper; once the anchor turns out to be frequent (binary
    data, base64 blobs) the rest of the view goes to ``finditer``, so dense data costs at most one extra probe."""
    find = view.find
    i = find(anchor, start)
    if i < 0:
        return []
    out: list[re.Match[bytes]] = []
    n = 0
    match = rx.match
    while i >= 0:
        m = match(view, i)
        nxt = i + 1
        if m is not None:
            out.append(m)
            nxt = m.end()
        n += 1
        if n >= _SPARSE_PROBE and i < n * _SPARSE_GAP:
            out.extend(rx.finditer(view, nxt))
            return out
        i = find(anchor, nxt)
    return out


def _plausible_unnamed(value: str) -> bool:
    """A random 40-character key has upper and lower case and at least one digit, '/' or '+'
    (false for identifiers such as ``AbstractSingletonProxyFactoryBeanWrapper``)."""
    return (
        _UPPER_RE.search(value) is not None
        and _LOWER_RE.search(value) is not None
        and _DIGIT_OR_SIGN_RE.search(value) is not None
    )


_UPPER_RE = re.compile("[A-Z]")
_LOWER_RE = re.compile("[a-z]")
_DIGIT_OR_SIGN_RE = re.compile("[0-9/+]")


def _rank(h: _Hit) -> tuple[bool, bool, bool]:
    return (h.secret is not None, h.token is not None, h.encoding is None)


@dataclass(frozen=True)
class ExampleResult:
    """One rule example run through the detector: ``ok`` when it behaved as the rule says."""

    rule: str
    source: str
    positive: bool
    example: str
    ok: bool


def check_rule_examples(ruleset: Ruleset) -> list[ExampleResult]:
    """Run every rule's examples (must be detected) and negative examples (must not) through a detector.

    key-id rules: a finding of that rule; secret rules: a finding with its secret paired; session-token
    rules: a finding with its token paired.
    """
    detector = Detector(ruleset, Fingerprinter(b"keysweep rules check"))
    location = Location(kind="file", path="<example>")
    results = []
    for rule in ruleset.rules:
        for positive, examples in ((True, rule.examples), (False, rule.negative_examples)):
            for example in examples:
                findings = detector.scan(example.encode("utf-8"), location=location)
                if rule.kind == "key-id":
                    hit = any(f.rule == rule.id for f in findings)
                elif rule.kind == "secret":
                    hit = any(f.has_secret for f in findings)
                else:
                    hit = any(f.has_session_token for f in findings)
                results.append(ExampleResult(rule.id, rule.source, positive, example, hit == positive))
    return results
