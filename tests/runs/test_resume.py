"""A run or a sweep group killed with SIGKILL continues from its checkpoint to byte-identical results."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stablebptt.runs import resume, rundir
from stablebptt.sweeps.backends import LocalBackend
from stablebptt.sweeps.spec import SweepSpec
from stablebptt.sweeps.run import run_sweep

pytestmark = pytest.mark.long  # a quarter of a minute or more: scheduled first (tests/conftest.py)

EVERY = 10

KILL_AT = EVERY + 3  # the checkpoint is after epoch 10; rows 11..13 are to be cut back

HOOK = f"""
import os, signal, sys
import stablebptt.runs.single as single
original = single.RunWriter.epoch
def epoch(self, row):
    original(self, row)
    if row["epoch"] == {KILL_AT}:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind, as kill -9
single.RunWriter.epoch = epoch
"""


def run_killed(code: str, *args: str) -> None:
    """Run ``code`` in a child process that SIGKILLs itself once a run has written epoch 13's metrics."""
    child = subprocess.run([sys.executable, "-c", HOOK + code, *args], capture_output=True, timeout=600)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]


TRAIN = ["train", "cartpole", "--poles", "1", "--method", "R", "--steps", "10", "--epochs", "30", "--n-train", "16", "--n-test", "8", "--quiet"]


def test_a_killed_train_run_continues_to_the_same_bytes(tmp_path):
    from stablebptt.cli import main
    from stablebptt.runs.single import build, fresh_state

    reference = tmp_path / "reference"
    assert main([*TRAIN, "--out", str(reference)]) == 0
    out = tmp_path / "killed"
    partial = rundir.partial_path(out)
    run_killed("from stablebptt.cli import main; main(sys.argv[1:])", *TRAIN, "--out", str(out), "--checkpoint-every", str(EVERY))
    assert not out.exists() and (partial / rundir.CHECKPOINT).is_file(), "the child was to be killed in the middle of the run"
    killed_rows = rundir.read_metrics(partial / rundir.METRICS)
    config = rundir.read_config(partial)
    checkpoint_epoch = resume.load_checkpoint(partial, config, *fresh_state(build(config))).epoch
    assert checkpoint_epoch == EVERY and len(killed_rows) == KILL_AT  # rows past the checkpoint, to be cut back

    assert main([*TRAIN, "--out", str(out), "--checkpoint-every", str(EVERY)]) == 0
    rows = rundir.read_metrics(out / rundir.METRICS)
    # continued, not retrained: the epochs up to the checkpoint keep the killed process's wall times
    assert [r["seconds"] for r in rows[:checkpoint_epoch]] == [r["seconds"] for r in killed_rows[:checkpoint_epoch]]
    assert rundir.trained_numbers(out / rundir.METRICS) == rundir.trained_numbers(reference / rundir.METRICS)
    assert (out / rundir.PARAMS).read_bytes() == (reference / rundir.PARAMS).read_bytes()
    assert not (out / rundir.CHECKPOINT).exists()


def test_a_killed_sweep_group_continues_to_the_same_bytes(tmp_path):
    spec = SweepSpec(
        experiment="cartpole", preset="quick", epochs=30, seeds=(42, 43), n_train=16, n_test=8,
        levels=(1,), methods=("R",), clips=("none",), task_options={"n_steps": 10},
    )  # fmt: skip
    reference = tmp_path / "reference"
    run_sweep(spec, reference, progress=False, backend=LocalBackend(checkpoint_every=0))
    out = tmp_path / "killed"
    code = (
        "import json\n"
        "from stablebptt.sweeps.run import LocalBackend, SweepSpec, run_sweep\n"
        "spec = SweepSpec.from_dict(json.loads(sys.argv[1]))\n"
        f"run_sweep(spec, sys.argv[2], progress=False, backend=LocalBackend(checkpoint_every={EVERY}))\n"
    )
    partials = [rundir.partial_path(out / run.path) for run in spec.grid()]
    run_killed(code, json.dumps(spec.to_dict()), str(out))
    assert all((p / rundir.CHECKPOINT).is_file() for p in partials), "the child was to be killed in the middle of the group"
    killed = [rundir.read_metrics(p / rundir.METRICS) for p in partials]

    trained = run_sweep(spec, out, progress=False, backend=LocalBackend(checkpoint_every=EVERY))
    assert len(trained) == 2
    for run, killed_rows in zip(spec.grid(), killed, strict=True):
        rows = rundir.read_metrics(out / run.path / rundir.METRICS)
        assert rows[0]["seconds"] == killed_rows[0]["seconds"]  # continued from the checkpoint, not retrained
        assert rundir.trained_numbers(out / run.path / rundir.METRICS) == rundir.trained_numbers(reference / run.path / rundir.METRICS)
        assert (out / run.path / rundir.PARAMS).read_bytes() == (reference / run.path / rundir.PARAMS).read_bytes()


def test_a_damaged_checkpoint_is_not_trusted(tmp_path, monkeypatch):
    """Truncated, extended or empty checkpoint files, other settings, or metrics shorter than the checkpoint:
    nothing to continue (the writer then starts the run afresh)."""
    from stablebptt.runs.config import RunConfig
    from stablebptt.runs.single import build, fresh_state, train_run

    config = RunConfig(task="cartpole", task_options={"n_poles": 1, "n_steps": 10}, epochs=6, n_train=16, n_test=8).resolved()
    out = tmp_path / "run"
    partial = rundir.partial_path(out)

    class Stop(Exception):
        pass

    def stop_after_checkpoint(state):
        resume.save_checkpoint(partial, state)
        raise Stop

    import stablebptt.runs.single as single

    monkeypatch.setattr(single.RunWriter, "checkpoint", lambda self, state: stop_after_checkpoint(state))
    with pytest.raises(Stop):
        train_run(config, out, progress=False, checkpoint_every=3)
    monkeypatch.undo()
    template = fresh_state(build(config))
    good = resume.load_checkpoint(partial, config, *template)
    assert good is not None and good.epoch == 3 and len(good.history) == 3
    data = (partial / rundir.CHECKPOINT).read_bytes()
    for damaged in (data[: len(data) // 2], data + b"\0", b""):
        (partial / rundir.CHECKPOINT).write_bytes(damaged)
        assert resume.load_checkpoint(partial, config, *template) is None
    (partial / rundir.CHECKPOINT).write_bytes(data)
    other = RunConfig(task="cartpole", task_options={"n_poles": 1, "n_steps": 10}, epochs=6, n_train=16, n_test=8, seed=7).resolved()
    assert resume.load_checkpoint(partial, other, *template) is None
    rows = (partial / rundir.METRICS).read_text().splitlines()
    (partial / rundir.METRICS).write_text("\n".join(rows[:3]) + "\n")  # two epochs: fewer than the checkpoint's
    assert resume.load_checkpoint(partial, config, *template) is None
