"""``--keep best``: the controller of the lowest test loss is saved beside the final one, evaluated by
``evaluate --best``, kept through a restart byte for byte, and off by default."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from stablebptt.cli import main
from stablebptt.runs import resume, rundir

# R at a high learning rate: the test loss falls to its lowest at epoch 8 of 12, then rises again
TRAIN = ["train", "cartpole", "--poles", "1", "--method", "R", "--steps", "10", "--epochs", "12", "--n-train", "16", "--n-test", "8",
         "--lr", "0.03", "--quiet"]  # fmt: skip
EVERY = 5  # checkpoints after epochs 5 and 10


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def losses_of(run_dir) -> list[str]:
    with open(run_dir / rundir.METRICS) as f:
        return [row["test_loss"] for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    out = tmp_path_factory.mktemp("keep") / "run"
    assert main([*TRAIN, "--keep", "best", "--checkpoint-every", str(EVERY), "--out", str(out)]) == 0
    return out


def test_evaluate_best_gives_the_minimum_of_the_test_loss_column_and_its_epoch(kept, capsys):
    column = losses_of(kept)
    lowest = min(column, key=float)
    epoch = column.index(lowest) + 1
    assert lowest != column[-1] and 1 < epoch < len(column)  # not monotone: the best is not the final one
    assert json.loads((kept / rundir.CONFIG).read_text())["keep"] == "best" and rundir.run_gaps(kept) == []
    code, out, _ = run(capsys, "evaluate", kept, "--best")
    assert code == 0 and out.strip() == f"test loss {lowest} (the best controller, epoch {epoch} of {len(column)})"
    code, out, _ = run(capsys, "evaluate", kept)
    assert code == 0 and out.strip() == f"test loss {column[-1]}"
    assert (kept / rundir.BEST_PARAMS).read_bytes() != (kept / rundir.PARAMS).read_bytes()


def test_a_stopped_run_continues_to_the_same_best_controller(kept, tmp_path, monkeypatch):
    """Stopped right after the checkpoint of epoch 10, after the best epoch (8): the best comes back from the checkpoint."""
    import stablebptt.runs.single as single

    class Stop(Exception):
        pass

    out = tmp_path / "run"
    original = single.RunWriter.checkpoint

    def stop_at_ten(self, state):
        original(self, state)
        if state.epoch == 10:
            raise Stop

    monkeypatch.setattr(single.RunWriter, "checkpoint", stop_at_ten)
    with pytest.raises(Stop):
        main([*TRAIN, "--keep", "best", "--checkpoint-every", str(EVERY), "--out", str(out)])
    monkeypatch.undo()
    partial = rundir.partial_path(out)
    config = rundir.read_config(partial)
    state = resume.load_checkpoint(partial, config, *single.fresh_state(single.build(config)))
    assert state.epoch == 10 and state.best_params is not None
    assert losses_of(kept).index(min(losses_of(kept), key=float)) + 1 < 10  # the best epoch is inside the checkpoint

    assert main([*TRAIN, "--keep", "best", "--checkpoint-every", str(EVERY), "--out", str(out)]) == 0
    assert [r["seconds"] for r in rundir.read_metrics(out / rundir.METRICS)[:10]] == [r["seconds"] for r in state.history]  # continued
    assert (out / rundir.BEST_PARAMS).read_bytes() == (kept / rundir.BEST_PARAMS).read_bytes()
    assert (out / rundir.PARAMS).read_bytes() == (kept / rundir.PARAMS).read_bytes()


def test_a_default_run_keeps_only_the_final_controller(kept, tmp_path, capsys):
    """Keeping the best changes no number: the same run without it has the same final controller, a config.json
    without the setting (as before the option existed), and no best controller to evaluate."""
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    assert not (out / rundir.BEST_PARAMS).exists() and rundir.run_gaps(out) == []
    config = json.loads((out / rundir.CONFIG).read_text())
    assert "keep" not in config and config == {k: v for k, v in json.loads((kept / rundir.CONFIG).read_text()).items() if k != "keep"}
    assert rundir.read_config(out).keep == "final"
    assert (out / rundir.PARAMS).read_bytes() == (kept / rundir.PARAMS).read_bytes()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run(capsys, "evaluate", out, "--best")
    assert code == 2 and "was trained without --keep best, so it kept no best controller (no best_params.eqx)" in one_line(err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    code, _, err = run(capsys, "train", *TRAIN[1:], "--keep", "best", "--out", out)
    assert code == 2 and "already holds a different run (differs in keep ('final' vs 'best'))" in one_line(err)


def test_a_kept_run_without_its_best_controller_is_not_finished(kept, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(kept, out)
    (out / rundir.BEST_PARAMS).unlink()
    assert rundir.run_gaps(out) == ["best_params.eqx missing (the run keeps its best controller)"]
    code, _, err = run(capsys, "evaluate", out, "--best")
    assert code == 2 and "is a finished run that has lost its best_params.eqx; run its command again" in one_line(err)
    assert main([*TRAIN, "--keep", "best", "--out", str(out)]) == 0  # trained again, to the same bytes
    assert (out / rundir.BEST_PARAMS).read_bytes() == (kept / rundir.BEST_PARAMS).read_bytes()


def test_compare_keeps_every_methods_best(kept, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, _ = run(capsys, "compare", *TRAIN[1:], "--keep", "best", "--methods", "R", "--out", out)
    assert code == 0 and json.loads((out / "compare.json").read_text())["base"]["keep"] == "best"
    assert (out / "R" / rundir.BEST_PARAMS).read_bytes() == (kept / rundir.BEST_PARAMS).read_bytes()
    code, stdout, _ = run(capsys, "evaluate", out / "R", "--best")
    assert code == 0 and stdout.startswith(f"test loss {min(losses_of(kept), key=float)} ")
