"""A run is finished only when it is whole: a missing or damaged part is named and the run is trained again."""

from __future__ import annotations

import json

import pytest

from stablebptt.cli import main
from stablebptt.runs import rundir

TRAIN = ["train", "cartpole", "--poles", "1", "--method", "R", "--steps", "5", "--epochs", "3", "--n-train", "8", "--n-test", "8", "--quiet"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


DAMAGE = {
    "params removed": (lambda run: (run / rundir.PARAMS).unlink(), "params.eqx missing"),
    "params garbage": (lambda run: (run / rundir.PARAMS).write_text("{}"), "params.eqx damaged"),
    "params cut short": (
        lambda run: (run / rundir.PARAMS).write_bytes((run / rundir.PARAMS).read_bytes()[:-5]), "params.eqx damaged"
    ),
    "metrics garbage": (lambda run: (run / rundir.METRICS).write_text("epoch,batch_loss\nnot,a number\n"), "metrics.csv missing or damaged"),
    "a metric row lost": (
        lambda run: (run / rundir.METRICS).write_text("".join((run / rundir.METRICS).read_text().splitlines(keepends=True)[:-1])),
        "metrics.csv has 2 rows for 3 epochs",
    ),
    "diverged without an epoch": (lambda run: (run / rundir.SUMMARY).write_text('{"status": "diverged", "epochs_run": 3}'), "says diverged but names no epoch"),
    "summary empty": (lambda run: (run / rundir.SUMMARY).write_text("{}"), "not a finished run's summary"),
}


def copy_of(finished, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return run


def test_a_whole_run_has_no_gaps(finished):
    assert rundir.run_gaps(finished) == []


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_is_not_finished_and_is_trained_again(finished, tmp_path, damage):
    run = copy_of(finished, tmp_path)
    harm, gap = DAMAGE[damage]
    harm(run)
    gaps = rundir.run_gaps(run)
    assert any(gap in g for g in gaps), gaps
    assert main([*TRAIN, "--out", str(run)]) == 0
    assert rundir.run_gaps(run) == []
    assert (run / rundir.METRICS).read_bytes().count(b"\n") == (finished / rundir.METRICS).read_bytes().count(b"\n")


def test_a_garbage_config_is_refused_without_overwrite_and_replaced_with_it(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    (run / rundir.CONFIG).write_text("garbage")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main([*TRAIN, "--out", str(run)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0], err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert main([*TRAIN, "--out", str(run), "--overwrite"]) == 0
    assert rundir.run_gaps(run) == [] and json.loads((run / rundir.CONFIG).read_text())["task"] == "cartpole"
