"""Aligned text tables for the terminal: the one renderer behind every command's ``table`` output.

Cells are text the caller already made safe (``textsafe.safe_text``/``shorten``); this only lays them out. Every
column but the last is padded to its width (left-aligned, or right-aligned by index); the last is written as is,
so a long path or ARN stays whole and copyable.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence


def table_lines(
    rows: Sequence[Sequence[str]],
    *,
    widths: Sequence[int] | None = None,
    right: Collection[int] = (),
    sep: str = "  ",
    fold_over: int | None = None,
) -> list[str]:
    """``rows`` (the header first) as lines.

    ``widths`` gives every column but the last its width (a longer cell overflows, it is never cut here); by
    default each is its widest cell. ``right`` holds the indexes of right-aligned columns. Padding never ends a
    line. With ``fold_over``, when any line would be longer, each row's last cell goes on a line of its own under
    the row, indented by four spaces.
    """
    if not rows:
        return []
    lead = len(rows[0]) - 1
    if widths is None:
        widths = [max(len(r[i]) for r in rows) for i in range(lead)]
    if len(widths) != lead:
        raise ValueError(f"table: {len(widths)} widths for {lead} padded columns")

    def padded(row: Sequence[str]) -> list[str]:
        return [row[i].rjust(w) if i in right else row[i].ljust(w) for i, w in enumerate(widths)]

    def line(row: Sequence[str]) -> str:
        text = sep.join([*padded(row), row[lead]])
        return text if row[lead] else text.rstrip()

    lines = [line(r) for r in rows]
    if fold_over is not None and max(len(text) for text in lines) > fold_over:
        lines = []
        for r in rows:
            lines += [sep.join(padded(r)).rstrip(), f"    {r[lead]}"]
    return lines
