"""The committed LQ table: its Markdown is the table writer's from its CSV, and its settings are checked like any others."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from stablebptt.paper.lq import LQSpec, run_lq, table_markdown

LQ = Path(__file__).resolve().parents[2] / "results" / "lq"


def test_the_committed_markdown_is_written_from_the_committed_rows():
    spec = LQSpec(**json.loads((LQ / "lq.json").read_text(encoding="utf-8")))
    with (LQ / "table.csv").open(encoding="utf-8") as f:
        rows = [{k: v if k in ("start", "method") else float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    assert len(rows) == len(spec.control_costs) * 2 * len(spec.methods)
    assert table_markdown(spec, rows) == (LQ / "table.md").read_text(encoding="utf-8")


def test_progress_is_logged_and_shown_and_a_rerun_replaces_its_own_table(tmp_path, capsys, caplog):
    """A bar over every epoch of every training (stderr) and one INFO line; without ``progress`` no bar.
    A second check into the same folder replaces the first's table and settings."""
    spec = LQSpec(control_costs=(0.0,), methods=("R",), epochs=2, n_states=4)
    with caplog.at_level(logging.INFO, logger="stablebptt"):
        rows = run_lq(spec, tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "lq: 100%" in err and "4/4" in err, err  # 1 control cost × 2 starts × 1 method × 2 epochs
    assert [r.getMessage() for r in caplog.records if r.name == "stablebptt.paper.lq"] == [
        f"LQ check: 2 trainings of 2 full-batch epochs (control costs 0, methods R) into {tmp_path}"
    ]
    assert len(rows) == 2
    again = LQSpec(control_costs=(0.0,), methods=("R",), epochs=3, n_states=4)
    run_lq(again, tmp_path)
    assert "lq:" not in capsys.readouterr().err
    assert json.loads((tmp_path / "lq.json").read_text(encoding="utf-8"))["epochs"] == 3
    assert "after 3 full-batch" in (tmp_path / "table.md").read_text(encoding="utf-8")
