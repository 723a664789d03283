"""The one table writer: rows of cells to Markdown (the result tables, the claims, bench) or aligned text (a terminal)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from . import validate

__all__ = ["STYLES", "render"]

STYLES = ("markdown", "text")


def render(header: Sequence[str], rows: Iterable[Sequence[Any]], *, style: str = "markdown", right: Iterable[int] = ()) -> str:
    """``header`` and ``rows`` (one cell per column, written with ``str``) as lines, without a final newline.

    ``markdown``: ``| a | b |`` lines, the header's rule ``|---|---:|`` aligning the
    columns numbered in ``right`` (from 0) to the right. ``text``: every column
    padded to its widest cell, two spaces apart, trailing spaces cut.
    """
    validate.choice("table style", style, STYLES)
    header = [str(cell) for cell in header]
    body = [[str(cell) for cell in row] for row in rows]
    for row in body:
        if len(row) != len(header):
            raise ValueError(f"a table row has {len(row)} cells for {len(header)} columns: {row}")
    if style == "text":
        lines = [header, *body]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)
    right = set(right)
    rule = "|" + "".join("---:|" if i in right else "---|" for i in range(len(header)))
    return "\n".join(["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(row) + " |" for row in body)])
