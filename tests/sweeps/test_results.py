"""The committed results: every table is derived from the committed per-run files by the report code."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from stablebptt.cli import main
from stablebptt.sweeps.spec import finished_runs, read_sweep

RESULTS = Path(__file__).resolve().parents[2] / "results"
FOLDERS = sorted(p.parent for p in [*RESULTS.glob("*/sweep.json"), *RESULTS.glob("brax/*/peer.json")])


def test_there_are_committed_results():
    assert {p.name for p in FOLDERS} >= {"cartpole", "repulsion", "quantum", "inverted_double_pendulum", "reacher"}
    # clip none is complete: 4 levels × 4 methods × 3 seeds; quantum 3 targets × 4 methods × seed 42 (more seeds join at target 3)
    for name, runs, seeds in (("cartpole", 48, (42, 43, 44)), ("repulsion", 48, (42, 43, 44)), ("quantum", 12, (42,))):
        spec = read_sweep(RESULTS / name)
        assert spec.preset == "paper" and spec.epochs == 1000
        finished = finished_runs(spec, RESULTS / name)
        assert len([run for run in finished if run.clip == "none" and run.seed in seeds]) == runs
        # every committed run is one of the sweep's runs and is accepted as finished by the code on main
        held = {run.path for run in finished}
        on_disk = {str(p.parent.relative_to(RESULTS / name)) for p in (RESULTS / name).rglob("summary.json")}
        assert on_disk == held


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


def test_the_documented_command_on_a_finished_folder_trains_nothing_and_says_so(tmp_path, capsys, caplog):
    """``reproduce quantum`` as results/README.md records it: its runs are all there, so the sweep logs that and trains
    nothing; the command prints the log line plainly on stdout, the library call prints nothing (logging is the caller's)."""
    import logging

    from stablebptt.sweeps.run import run_sweep
    from stablebptt.sweeps.spec import SweepSpec

    copy = tmp_path / "quantum"
    shutil.copytree(RESULTS / "quantum", copy, ignore=shutil.ignore_patterns("params.eqx", "*.png", "table.*"))
    argv = ["reproduce", "quantum", "--preset", "paper", "--clips", "none", "--seeds", "1", "--out", str(copy), "--quiet"]
    import io

    root = logging.StreamHandler(io.StringIO())  # as a library (Brax's absl) installs on the root logger
    logging.getLogger().addHandler(root)
    try:
        assert main(argv) == 0
    finally:
        logging.getLogger().removeHandler(root)
    assert root.stream.getvalue() == ""  # printed once, by the command, not again by the root handler
    assert logging.getLogger("stablebptt").propagate
    out, err = capsys.readouterr()
    assert "quantum sweep (paper): 12 of 12 runs finished, 0 to train\n" in out and err == ""
    assert (copy / "table.md").read_text(encoding="utf-8") == (RESULTS / "quantum" / "table.md").read_text(encoding="utf-8")
    assert logging.getLogger("stablebptt").handlers == []  # the command's console handler is gone with it

    spec = SweepSpec.from_preset("quantum", "paper", seeds=1, clips=("none",))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stablebptt"):
        assert run_sweep(spec, copy, progress=False) == []
    assert capsys.readouterr() == ("", "")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("stablebptt.sweeps.run", "quantum sweep (paper): 12 of 12 runs finished, 0 to train")]


def test_the_committed_diagnosis_table_names_the_winners_the_committed_runs_measured():
    """results/diagnose.csv (beside diagnose.md) keeps up with the runs: each setting's measured winner and mean
    finals are those of the committed tables, and 'match' compares them with its suggestion."""
    import importlib.util

    path = RESULTS.parent / "benchmarks" / "diagnose_table.py"
    loaded = importlib.util.spec_from_file_location("diagnose_table", path)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    rows = module.committed_rows()
    assert [r["setting"] for r in rows] == [s[0] for s in module.SETTINGS]
    for row in rows:
        assert module.with_measured(row) == row, row["setting"]
    assert (RESULTS / "diagnose.md").read_text(encoding="utf-8") == module.HEADER + module.table(rows)
