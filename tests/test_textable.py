"""The one text-table renderer (keysweep.textable)."""

from __future__ import annotations

import pytest
from keysweep.textable import table_lines


def test_columns_are_as_wide_as_their_widest_cell_and_the_last_is_free():
    rows = [("KEY ID", "ST", "PLACE"), ("AKIAEXAMPLE1", "live", "/etc/a b "), ("AKIA2", "-", "x")]
    assert table_lines(rows) == [
        "KEY ID        ST    PLACE",
        "AKIAEXAMPLE1  live  /etc/a b ",  # the last cell's own text is kept whole, trailing space too
        "AKIA2         -     x",
    ]


def test_given_widths_right_alignment_and_no_trailing_padding():
    rows = [("S", "N", "LAST"), ("live", "12", ""), ("a-very-long-status", "3", "k")]
    assert table_lines(rows, widths=(6, 3), right=(1,), sep=" ") == [
        "S        N LAST",
        "live    12",  # an empty last cell leaves no padding behind
        "a-very-long-status   3 k",  # a longer cell overflows; cutting is the caller's choice
    ]


def test_a_long_last_column_folds_under_each_row_whole():
    long = "/var/lib/" + "d" * 120
    rows = [("SEV", "PLACE"), ("high", long), ("low", "/x")]
    assert table_lines(rows, fold_over=100) == ["SEV", "    PLACE", "high", f"    {long}", "low", "    /x"]
    assert table_lines(rows[:1] + rows[2:], fold_over=100) == ["SEV  PLACE", "low  /x"]


def test_edges():
    assert table_lines([]) == []
    with pytest.raises(ValueError, match="2 widths for 1"):
        table_lines([("A", "B")], widths=(1, 2))
