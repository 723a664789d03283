"""The committed LQ table: its Markdown is the table writer's from its CSV, and its settings are checked like any others."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from stablebptt.paper.lq import LQSpec, table_markdown

LQ = Path(__file__).resolve().parents[2] / "results" / "lq"


def test_the_committed_markdown_is_written_from_the_committed_rows():
    spec = LQSpec(**json.loads((LQ / "lq.json").read_text(encoding="utf-8")))
    with (LQ / "table.csv").open(encoding="utf-8") as f:
        rows = [{k: v if k in ("start", "method") else float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    assert len(rows) == len(spec.control_costs) * 2 * len(spec.methods)
    assert table_markdown(spec, rows) == (LQ / "table.md").read_text(encoding="utf-8")
