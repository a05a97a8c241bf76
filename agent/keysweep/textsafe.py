"""Text from hosts and scanned names made safe for every output: terminal, CSV, HTML, JSON, SARIF and ASFF.

What is neutralised, and how it is shown (visible, never dropped, so a reader still sees that it was there):

- C0 controls, DEL and C1 controls (U+0000–U+001F, U+007F–U+009F): ``\\xNN`` (``ESC`` becomes ``\\x1b``, a
  newline ``\\x0a``), so no value drives a terminal, starts a new CSV/log line or hides in JSON as ``\\u001b``;
- Unicode bidirectional controls (the Bidi_Control set: U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069)
  and the line/paragraph separators U+2028/U+2029: ``\\uNNNN``, so no value reorders what is shown around it;
- undecodable bytes of a name (Python's surrogate escapes): ``\\xNN`` (:func:`readable`).

A backslash is left as it is (as by :func:`readable`): a name holding the four characters ``\\x1b``
reads the same as one holding ESC; both are harmless.

JSON written by :func:`dump_json` is strictly standard (no ``NaN``/``Infinity``: a non-finite number becomes
``null``) and at most :data:`MAX_JSON_DEPTH` containers deep (a deeper value is replaced by :data:`DEPTH_MARKER`),
so ``jq`` and every other parser read it. CSV cells from :func:`csv_cell` also never start with a character a
spreadsheet runs as a formula.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

MAX_JSON_DEPTH = 64
DEPTH_MARKER = f"[nested deeper than {MAX_JSON_DEPTH} levels: left out]"
BIDI_CONTROLS = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
FORMULA_STARTS = ("=", "+", "-", "@")  # a leading tab or CR is already shown as \x09 / \x0d

_ESCAPES: dict[int, str] = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({c: f"\\u{c:04x}" for c in (*BIDI_CONTROLS, 0x2028, 0x2029)})


def readable(text: str) -> str:
    """``text`` with undecodable bytes (Python's surrogate escapes) shown as ``\\xNN``: never a lone surrogate,
    which no UTF-8 output could write."""
    if text.isascii():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that was not an escaped byte
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def safe_text(value: object) -> str:
    """``value`` as one line of inert text (None as the empty string); see the module's description."""
    text = "" if value is None else value if isinstance(value, str) else str(value)
    if text.isprintable():  # the common case: no control (Cc), format (Cf), surrogate (Cs) or separator
        return text
    if not text.isascii():
        text = readable(text)
    return text.translate(_ESCAPES)


def shorten(value: object, width: int) -> str:
    """:func:`safe_text` of at most ``width`` characters (cut with ``…``): for table cells, where the full value
    is in the JSON output."""
    text = safe_text(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def safe_lines(values: Iterable[object]) -> str:
    """Several values as lines of one cell: each made safe on its own, joined by our own newlines."""
    return "\n".join(safe_text(v) for v in values)


def csv_cell(value: object) -> str:
    """A CSV cell: safe text that a spreadsheet will not run as a formula (``'`` put before ``= + - @``).

    A list or tuple becomes one line per item."""
    text = safe_lines(value) if isinstance(value, (list, tuple)) else safe_text(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def safe_data(
    value: Any, *, max_depth: int = MAX_JSON_DEPTH, text: Callable[[str], str] = safe_text, _depth: int = 0
) -> Any:
    """A JSON-able copy of ``value``: every string (keys too) safe, non-finite floats None, nesting bounded.

    Anything that is not a JSON type (a datetime, a path) becomes its safe ``str``. ``text`` makes a string safe
    (``readable``: only undecodable bytes as ``\\xNN``, for data whose line breaks are content)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return text(value)
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        if _depth >= max_depth:
            return DEPTH_MARKER
        if isinstance(value, Mapping):
            return {text(k): safe_data(v, max_depth=max_depth, text=text, _depth=_depth + 1) for k, v in value.items()}
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [safe_data(v, max_depth=max_depth, text=text, _depth=_depth + 1) for v in items]
    return text(str(value))


def dumps_json(
    value: Any, *, indent: int | None = None, compact: bool = False, sort_keys: bool = False, nested_in: int = 0
) -> str:
    """Standard JSON of :func:`safe_data` (``compact``: no spaces, for one document per line; ``nested_in``: how many
    containers of a document written piece by piece hold this value, so that the whole stays within the bound)."""
    separators = (",", ":") if compact else None
    return json.dumps(
        safe_data(value, max_depth=MAX_JSON_DEPTH - nested_in),
        indent=indent,
        separators=separators,
        ensure_ascii=False,
        allow_nan=False,
        sort_keys=sort_keys,
    )


def dump_json(value: Any, stream: TextIO, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """:func:`dumps_json` to ``stream``, with a final newline."""
    stream.write(dumps_json(value, indent=indent, sort_keys=sort_keys))
    stream.write("\n")
