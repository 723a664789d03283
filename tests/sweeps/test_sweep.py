"""Sweeps: resuming after an interruption, batched = one by one, the table, the figure, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import stablebptt.sweeps.groups as groups_module
from stablebptt.sweeps import report
from stablebptt.runs.rundir import RunDirError, read_metrics, trained_numbers
from stablebptt.sweeps.spec import SweepSpec, finished_runs
from stablebptt.sweeps.run import run_sweep

pytestmark = pytest.mark.long  # minutes of compiling: scheduled first (tests/conftest.py)

TINY = dict(
    experiment="cartpole",
    preset="quick",
    epochs=2,
    seeds=(42, 43),
    n_train=16,
    n_test=8,
    levels=(1, 2),
    methods=("R", "C"),
    clips=("none", "norm"),
    task_options={"n_steps": 10},
)


def numbers(out: Path, spec: SweepSpec) -> dict:
    """Every run's metrics without the wall times (NaN as None, so that equal means equal)."""
    return {run.path: trained_numbers(out / run.path / "metrics.csv") for run in spec.grid()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    spec = SweepSpec(**TINY)
    out = tmp_path_factory.mktemp("sweep") / "a"
    trained = run_sweep(spec, out, progress=False)
    assert len(trained) == 16
    return spec, out


def test_interrupted_sweep_resumes_without_repeating_or_losing_runs(uninterrupted, tmp_path, monkeypatch):
    spec, reference_dir = uninterrupted
    out = tmp_path / "b"
    original = groups_module.train_batched
    calls = []

    def interrupt_third_group(*args, on_epoch, **kwargs):
        calls.append(1)
        if len(calls) < 3:
            return original(*args, on_epoch=on_epoch, **kwargs)

        def stop(rows):
            on_epoch(rows)
            raise KeyboardInterrupt  # as Ctrl-C after the group's first epoch

        return original(*args, on_epoch=stop, **kwargs)

    monkeypatch.setattr(groups_module, "train_batched", interrupt_third_group)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, progress=False)
    monkeypatch.setattr(groups_module, "train_batched", original)

    before = {run.path for run in finished_runs(spec, out)}
    assert len(before) == 8  # two whole groups
    partial = [p for p in (out / "runs").rglob(".*.partial")]
    assert len(partial) == 4 and not any((p / "summary.json").exists() for p in partial)

    again = run_sweep(spec, out, progress=False)
    assert {run.path for run in again}.isdisjoint(before)  # no finished run is trained again
    assert len(again) == 8
    run_dirs = sorted(str(p.relative_to(out)) for p in (out / "runs").glob("*/*"))
    assert run_dirs == sorted(run.path for run in spec.grid())  # every run once, no partial left
    assert numbers(out, spec) == numbers(reference_dir, spec)  # same numbers as without the interruption


def test_restart_of_a_finished_sweep_trains_nothing(uninterrupted):
    spec, out = uninterrupted
    assert run_sweep(spec, out, progress=False) == []


def assert_same_numbers(a: dict, b: dict) -> None:
    for path in a:
        for row_a, row_b in zip(a[path], b[path], strict=True):
            for key in row_a:
                if row_a[key] is None:  # the cosine of single-pass flows
                    assert row_b[key] is None
                else:
                    np.testing.assert_allclose(row_a[key], row_b[key], rtol=1e-4, err_msg=f"{path} {key}")


def test_batched_equals_one_by_one(uninterrupted, tmp_path):
    """The default group is the runs of one difficulty and method (2 clips × 2 seeds: one program); one by one gives its numbers."""
    spec, batched_dir = uninterrupted
    assert [len(g) for g in spec.groups()] == [4, 4, 4, 4]
    group = SweepSpec(**{**TINY, "levels": (2,), "methods": ("C",)})
    out = tmp_path / "one-by-one"
    run_sweep(group, out, batched=False, progress=False)
    a, b = numbers(batched_dir, group), numbers(out, group)
    assert len(a) == 4
    assert_same_numbers(a, b)
    summary = json.loads((batched_dir / spec.grid()[0].path / "summary.json").read_text())
    assert summary["batch_runs"] == 4


def test_every_method_in_one_program_equals_one_by_one(tmp_path):
    """R, M, C and S of one difficulty as one vmapped program, after 2 epochs: the numbers of one-by-one runs
    to rtol 1e-4 (one program per method equals one-by-one runs in test_batched_equals_one_by_one)."""
    spec = SweepSpec(**{**TINY, "levels": (2,), "methods": ("R", "M", "C", "S"), "clips": ("none", "value"), "seeds": (42,)})
    assert [len(g) for g in spec.groups("level")] == [8] and [len(g) for g in spec.groups()] == [2, 2, 2, 2]
    runs = {}
    for name, options in (("level", {"group_by": "level"}), ("one-by-one", {"batched": False})):
        run_sweep(spec, tmp_path / name, progress=False, **options)
        runs[name] = numbers(tmp_path / name, spec)
    assert_same_numbers(runs["level"], runs["one-by-one"])
    first = {path.split("/")[-1].split("-")[0]: rows[0] for path, rows in runs["level"].items()}
    assert len({round(first[m]["update_sq_norm"], 7) for m in "RMS"}) == 3, first  # different flows, not one repeated
    assert first["C"]["cosine_mr"] is not None and all(first[m]["cosine_mr"] is None for m in "RMS")
    with pytest.raises(ValueError, match="unknown grouping 'seed'; choose one of level, method"):
        spec.groups("seed")


def test_table_equals_the_run_metrics(uninterrupted):
    spec, out = uninterrupted
    rows = report.write_report(spec, out)
    assert len(rows) == len(spec.levels) * len(spec.methods) * len(spec.clips)
    for row in rows:
        finals = [
            read_metrics(out / run.path / "metrics.csv")[-1]["test_loss"]
            for run in spec.grid()
            if (run.level, run.method, run.clip) == (row["level"], row["method"], row["clip"])
        ]
        assert row["seeds"] == len(finals) == 2 and row["diverged"] == 0
        assert row["final_test_loss_mean"] == pytest.approx(np.mean(finals), rel=1e-12)
        assert row["final_test_loss_std"] == pytest.approx(np.std(finals), rel=1e-12, abs=1e-15)
        bests = [
            min(r["test_loss"] for r in read_metrics(out / run.path / "metrics.csv"))
            for run in spec.grid()
            if (run.level, run.method, run.clip) == (row["level"], row["method"], row["clip"])
        ]
        assert row["best_test_loss_mean"] == pytest.approx(np.mean(bests), rel=1e-12)
        assert row["best_test_loss_mean"] <= row["final_test_loss_mean"]
    with open(out / "table.csv") as f:
        written = list(csv.DictReader(f))
    assert [float(r["final_test_loss_mean"]) for r in written] == [r["final_test_loss_mean"] for r in rows]
    markdown = (out / "table.md").read_text()
    first = rows[0]
    assert f"{first['final_test_loss_mean']:.3g} ± {first['final_test_loss_std']:.2g}" in markdown
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_figure_has_a_panel_per_level_and_a_curve_per_setting(uninterrupted):
    spec, out = uninterrupted
    fig = report.sweep_figure(spec, out)
    assert len(fig.axes) == len(spec.levels)
    for ax in fig.axes:
        assert len(ax.lines) == len(spec.methods) * len(spec.clips)
        assert ax.get_yscale() == "log"
        assert len(ax.collections) == len(spec.methods) * len(spec.clips)  # the spread over the two seeds


def test_quantum_figure_adds_update_size_panels(tmp_path):
    spec = SweepSpec(
        experiment="quantum", preset="quick", epochs=1, seeds=(42,), n_train=8, n_test=8,
        levels=(3, 4), methods=("C",), clips=("none",), task_options={"n_steps": 4},
    )  # fmt: skip
    run_sweep(spec, tmp_path, progress=False)
    fig = report.sweep_figure(spec, tmp_path)
    assert len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes] == ["target 3", "target 4", "target 3: update size", "target 4: update size"]


def test_checkpointed_sweep_gives_the_plain_numbers(uninterrupted, tmp_path):
    spec, out = uninterrupted
    checkpointed = SweepSpec(**{**TINY, "levels": (2,), "methods": ("C",), "remat": True})
    run_sweep(checkpointed, tmp_path / "remat", progress=False)
    got, want = numbers(tmp_path / "remat", checkpointed), numbers(out, spec)
    assert len(got) == 4
    for path, rows in got.items():
        assert json.loads((tmp_path / "remat" / path / "config.json").read_text())["remat"] == 4  # ceil(sqrt(10))
        for row, ref in zip(rows, want[path], strict=True):
            for key, value in row.items():
                assert value == pytest.approx(ref[key], rel=1e-5), (path, key)


def test_a_different_sweep_in_the_same_folder_is_refused(uninterrupted):
    spec, out = uninterrupted
    other = SweepSpec(**{**TINY, "epochs": 3})
    before = (out / "sweep.json").read_text()
    with pytest.raises(RunDirError, match=r"holds a sweep with different settings: epochs \(2 vs 3\)"):
        run_sweep(other, out, progress=False)
    assert (out / "sweep.json").read_text() == before


def test_runs_without_parameters_count_as_finished(uninterrupted, tmp_path, capsys):
    """A committed results folder keeps no params.eqx: the sweep takes its runs as done, evaluate says so."""
    import shutil

    from stablebptt.cli import main

    spec, out = uninterrupted
    copy = tmp_path / "committed"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("params.eqx"))
    assert not list(copy.rglob("params.eqx"))
    assert len(finished_runs(spec, copy)) == len(spec.grid())
    assert run_sweep(spec, copy, progress=False) == []
    code = main(["evaluate", str(copy / spec.grid()[0].path)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1
    assert "is a finished run whose parameters were not kept (no params.eqx" in lines[0]


def test_presets_and_bad_settings():
    quick = SweepSpec.from_preset("cartpole")
    assert len(quick.grid()) == 4 * 4 * 3 * 2 and len(quick.groups()) == 16 and len(quick.groups("level")) == 4
    assert SweepSpec.from_preset("quantum", "paper", seeds=5).seeds == (42, 43, 44, 45, 46)
    assert SweepSpec.from_preset("repulsion", "paper").epochs == 1000
    repulsion = SweepSpec.from_preset("repulsion")
    assert sorted({r.config.task_options["rc"] for r in repulsion.grid()}) == [0.001, 0.01, 0.1, 1.0]
    assert {(r.config.clip, r.config.method) for r in repulsion.grid()} == {(c, m) for c in ("none", "value", "norm") for m in "RMCS"}
    with pytest.raises(ValueError, match="unknown experiment 'pendulum'"):
        SweepSpec.from_preset("pendulum")
    with pytest.raises(ValueError, match="unknown preset 'fast'; choose one of quick, paper"):
        SweepSpec.from_preset("cartpole", "fast")
    with pytest.raises(ValueError, match="seeds=0; expected a positive number of seeds"):
        SweepSpec.from_preset("cartpole", seeds=0)


def test_a_sweep_killed_with_sigkill_continues(uninterrupted, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    spec, reference_dir = uninterrupted
    out = tmp_path / "killed"
    code = (
        "import json, sys\n"
        "from stablebptt.sweeps.run import SweepSpec, run_sweep\n"
        "spec = SweepSpec.from_dict(json.loads(sys.argv[1]))\n"
        "run_sweep(spec, sys.argv[2], progress=False)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec.to_dict()), str(out)])
    try:
        def finished_count() -> int:
            return len(finished_runs(spec, out)) if out.exists() else 0

        deadline = time.time() + 300
        while time.time() < deadline and finished_count() < 4 and child.poll() is None:
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)  # in the middle of the second group
    finally:
        child.wait()
    finished = {run.path for run in finished_runs(spec, out)}
    assert 4 <= len(finished) < 16, "the child was to be killed in the middle of the sweep"
    again = run_sweep(spec, out, progress=False)
    assert {run.path for run in again}.isdisjoint(finished)
    assert len(again) + len(finished) == 16
    assert numbers(out, spec) == numbers(reference_dir, spec)


def test_a_new_grid_of_the_same_protocol_joins_the_folder(uninterrupted, tmp_path):
    """--clips value on a folder of clips none,norm: only the new runs train, the table gains the column,
    every old run and its numbers stay; a run of the new grid equals its one-by-one run; another protocol is refused."""
    import shutil

    spec, out = uninterrupted
    folder = tmp_path / "grown"
    shutil.copytree(out, folder)
    before = {p: p.read_bytes() for p in (folder / "runs").rglob("*") if p.is_file()}
    more = SweepSpec(**{**TINY, "levels": (2,), "clips": ("value",), "seeds": (42,)})
    trained = run_sweep(more, folder, progress=False)
    assert sorted(r.path for r in trained) == ["runs/poles2/C-value-seed42", "runs/poles2/R-value-seed42"]
    assert all(p.read_bytes() == data for p, data in before.items())  # nothing already there was touched
    held = json.loads((folder / "sweep.json").read_text())
    assert held["clips"] == ["none", "norm", "value"] and len(held["grids"]) == 2
    union = SweepSpec.from_dict(held)
    assert len(union.grid()) == 16 + 2 and union.seeds_of(1, "R", "value") == () and union.seeds_of(2, "R", "value") == (42,)
    rows = report.write_report(union, folder)
    cells = {(r["level"], r["method"], r["clip"]): r for r in rows}
    assert (1, "R", "value") not in cells and cells[(2, "R", "value")]["seeds"] == 1
    old = {(r["level"], r["method"], r["clip"]): r for r in report.summary_table(spec, out)}
    assert all(cells[k] == old[k] for k in old)  # the old cells keep their numbers
    md = (folder / "table.md").read_text()
    assert "| clip none | clip norm | clip value |" in md and "not run" in md and "(1 seed)" in md
    assert "mean ± std over 2 seeds where the cell names no other number" in md and "(2 seeds)" not in md  # the usual count, said once
    titles = [report.sweep_figure(s, o)._suptitle.get_text() for s, o in ((spec, out), (union, folder))]
    assert titles == ["cartpole: test loss over 2 seed(s), preset quick", "cartpole: test loss over 1 to 2 seeds per setting, preset quick"]
    one = tmp_path / "one-by-one"
    run_sweep(more, one, batched=False, progress=False)
    assert_same_numbers(numbers(folder, more), numbers(one, more))
    assert run_sweep(SweepSpec(**{**TINY, "clips": ("value", "none", "norm")}), folder, progress=False)  # the rest of poles 1
    assert "grids" not in json.loads((folder / "sweep.json").read_text())  # the grids now fill the product
    with pytest.raises(RunDirError, match=r"holds a sweep with different settings: n_train \(16 vs 24\)"):
        run_sweep(SweepSpec(**{**TINY, "n_train": 24}), folder, progress=False)


def test_merged_sweeps():
    a = SweepSpec(**{**TINY, "clips": ("none",)})
    b = SweepSpec(**{**TINY, "levels": (2,), "methods": ("C", "S"), "clips": ("value", "norm"), "seeds": (44,)})
    ab = a.merge(b)
    assert ab.levels == (1, 2) and ab.methods == ("R", "C", "S") and ab.clips == ("none", "value", "norm") and ab.seeds == (42, 43, 44)
    assert len(ab.grid()) == len(a.grid()) + len(b.grid()) == 8 + 4
    assert {r.path for r in ab.grid()} == {r.path for r in a.grid()} | {r.path for r in b.grid()}
    assert ab.merge(a) == ab and a.merge(a) == a  # what is held already adds nothing
    # the seeds most settings run: a tie goes to the larger count; more settings with one seed make it 1
    assert a.usual_seeds() == 2 and ab.usual_seeds() == 2
    assert a.merge(SweepSpec(**{**b.to_dict(), "levels": (1, 2), "grids": ()})).usual_seeds() == 1
    assert SweepSpec.from_dict(ab.to_dict()) == ab
    assert a.merge(SweepSpec(**{**TINY, "clips": ("norm", "none")})).grids == ()  # a grid holding another replaces it
    with pytest.raises(ValueError, match="different protocols"):
        a.merge(SweepSpec(**{**TINY, "epochs": 3}))
    with pytest.raises(ValueError, match="a sub-grid's seeds \\[7\\] are not all among the sweep's"):
        SweepSpec(**{**TINY, "grids": ({"levels": [1], "methods": ["R"], "clips": ["none"], "seeds": [7]},)})
