"""The one table writer: a known small table in both styles, and rows that do not fit."""

from __future__ import annotations

import pytest

from stablebptt.tables import render

HEADER = ("method", "loss", "epochs")
ROWS = [("R", "0.5", 3), ("C", "0.0123", 300), ("M", "", 1)]


def test_markdown():
    assert render(HEADER, ROWS, right=(2,)) == (
        "| method | loss | epochs |\n"
        "|---|---|---:|\n"
        "| R | 0.5 | 3 |\n"
        "| C | 0.0123 | 300 |\n"
        "| M |  | 1 |"
    )
    assert render(HEADER, []) == "| method | loss | epochs |\n|---|---|---|"


def test_text_pads_each_column_to_its_widest_cell():
    assert render(HEADER, ROWS, style="text") == (
        "method  loss    epochs\n"
        "R       0.5     3\n"
        "C       0.0123  300\n"
        "M               1"
    )


def test_rows_that_do_not_fit_and_unknown_styles_are_refused():
    with pytest.raises(ValueError, match=r"a table row has 2 cells for 3 columns: \['R', '1'\]"):
        render(HEADER, [("R", 1)])
    with pytest.raises(ValueError, match="unknown table style 'html'; choose one of markdown, text"):
        render(HEADER, ROWS, style="html")
