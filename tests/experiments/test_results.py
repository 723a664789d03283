"""The committed results: every table is derived from the committed per-run files by the report code."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from stablebptt.cli import main

RESULTS = Path(__file__).resolve().parents[2] / "results"
FOLDERS = sorted(p.parent for p in [*RESULTS.glob("*/sweep.json"), *RESULTS.glob("brax/*/peer.json")])


def test_there_are_committed_results():
    assert {p.name for p in FOLDERS} >= {"cartpole", "repulsion", "quantum", "inverted_double_pendulum", "reacher"}
    # the complete grids: 4 levels × 4 methods × 3 seeds; quantum 3 targets × 4 methods × 1 seed
    for name, runs in (("cartpole", 48), ("repulsion", 48), ("quantum", 12)):
        assert len(list((RESULTS / name).rglob("summary.json"))) == runs


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_report_regenerates_the_committed_table(folder, tmp_path, capsys):
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("params.eqx", "*.png", "*.gif", "table.*"))
    assert main(["report", str(copy)]) == 0
    assert "table and figure in" in capsys.readouterr().out
    assert (copy / "table.csv").read_text(encoding="utf-8") == (folder / "table.csv").read_text(encoding="utf-8")
    assert (copy / "table.md").read_text(encoding="utf-8") == (folder / "table.md").read_text(encoding="utf-8")
    assert (copy / "figure.png").stat().st_size > 0
    # the table counts exactly the runs that wrote a summary
    rows = list(csv.DictReader((folder / "table.csv").open(encoding="utf-8")))
    summaries = [json.loads(p.read_text()) for p in folder.rglob("summary.json")]
    apg_runs = len(list(folder.glob("apg/*.json")))  # a Brax comparison's APG runs write one file each
    assert sum(int(r["seeds"]) for r in rows) == len([s for s in summaries if s["status"] in ("finished", "diverged")]) + apg_runs


def test_report_on_a_folder_without_settings_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds neither sweep.json nor peer.json" in err
