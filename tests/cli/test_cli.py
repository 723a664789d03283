"""The command line: files written, evaluation, and every bad input as a one-line error."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from stablebptt.cli import main
from stablebptt.training import METRIC_COLUMNS

pytestmark = pytest.mark.long  # minutes of compiling: scheduled first (tests/conftest.py)

SMALL = ["--poles", "1", "--steps", "20", "--epochs", "3", "--n-train", "16", "--n-test", "16", "--quiet"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("stablebptt")
    return lines[0]


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "cartpole", *SMALL, "--method", "C", "--seed", "7", "--out", str(out)])
    assert code == 0
    return out


def test_train_writes_the_run(trained):
    names = {p.name for p in trained.iterdir()}
    assert names == {"config.json", "metrics.csv", "params.eqx", "learning_curve.png", "summary.json"}
    config = json.loads((trained / "config.json").read_text())
    assert config["method"] == "C" and config["seed"] == 7 and config["epochs"] == 3
    assert config["task_options"]["n_poles"] == 1 and config["task_options"]["total_mass"] == 1.1
    with open(trained / "metrics.csv") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == METRIC_COLUMNS
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3]
    assert all(math.isfinite(float(x)) for r in rows[1:] for x in r)
    assert (trained / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["final"]["test_loss"] == float(rows[-1][3])
    assert not any(p.name.startswith(".") for p in trained.parent.iterdir())  # no partial left behind


def test_a_recorded_run_reruns_from_its_config(trained, capsys, tmp_path):
    """``train --config RUN/config.json`` trains the same settings to the same numbers (the same program, in-memory cache)."""
    code, out, _ = run(capsys, "train", "--config", trained / "config.json", "--out", tmp_path / "again", "--quiet")
    assert code == 0 and f"results in {tmp_path / 'again'}" in out
    assert (tmp_path / "again" / "config.json").read_text() == (trained / "config.json").read_text()
    losses = lambda d: [row[1:4] for row in csv.reader(open(d / "metrics.csv"))]  # noqa: E731 - batch, train, test loss
    assert losses(tmp_path / "again") == losses(trained)
    (tmp_path / "bad.json").write_text(json.dumps({**json.loads((trained / "config.json").read_text()), "epochz": 3}))
    code, _, err = run(capsys, "train", "--config", tmp_path / "bad.json", "--out", tmp_path / "bad")
    assert code == 2 and "bad.json is not a valid run configuration (config has unknown setting 'epochz')" in one_line_error(err)
    code, _, err = run(capsys, "train", "--config", tmp_path / "missing.json")
    assert code == 2 and "missing.json does not exist; give a run's config.json" in one_line_error(err)
    code, _, err = run(capsys, "train")
    assert code == 2 and "choose a task (cartpole, repulsion, quantum, brax) or rerun a recorded run with --config" in one_line_error(err)
    assert not (tmp_path / "bad").exists()


def test_evaluate_reproduces_last_test_loss(trained, capsys):
    code, out, _ = run(capsys, "evaluate", trained)
    assert code == 0
    with open(trained / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]["test_loss"]
    assert out.strip() == f"test loss {last}"


def test_same_command_again_changes_nothing(trained, capsys):
    before = snapshot(trained)
    code, out, _ = run(capsys, "train", "cartpole", *SMALL, "--method", "C", "--seed", "7", "--out", trained)
    assert code == 0 and "already holds this finished run" in out
    assert snapshot(trained) == before


def test_refuses_a_different_run_unless_overwrite(trained, capsys, tmp_path):
    before = snapshot(trained)
    code, _, err = run(capsys, "train", "cartpole", *SMALL, "--method", "R", "--seed", "7", "--out", trained)
    line = one_line_error(err)
    assert code == 2 and "already holds a different run" in line and "method ('C' vs 'R')" in line and "--overwrite" in line
    assert snapshot(trained) == before
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, data in before.items():
        (copy / name).write_bytes(data)
    code, _, _ = run(capsys, "train", "cartpole", *SMALL, "--method", "R", "--seed", "7", "--out", copy, "--overwrite")
    assert code == 0 and json.loads((copy / "config.json").read_text())["method"] == "R"


def test_interrupted_run_leaves_the_old_one_intact(trained, capsys, tmp_path, monkeypatch):
    import stablebptt.runs.single as single

    copy = tmp_path / "kept"
    copy.mkdir()
    before = snapshot(trained)
    for name, data in before.items():
        (copy / name).write_bytes(data)
    original = single.train

    def interrupted(*args, on_epoch, **kwargs):
        def stop(row):
            on_epoch(row)
            raise KeyboardInterrupt

        return original(*args, on_epoch=stop, **kwargs)

    monkeypatch.setattr(single, "train", interrupted)
    code, _, err = run(capsys, "train", "cartpole", *SMALL, "--method", "S", "--out", copy, "--overwrite")
    assert code == 130 and "interrupted" in err
    assert snapshot(copy) == before
    partial = tmp_path / ".kept.partial"
    assert not (partial / "summary.json").exists()  # never looks finished
    assert len(list(csv.reader(open(partial / "metrics.csv")))) == 2  # header + the one finished epoch


def test_non_finite_loss_stops_keeps_metrics_and_fails(capsys, tmp_path):
    out = tmp_path / "nan"
    code, _, err = run(capsys, "train", "cartpole", *SMALL, "--method", "R", "--lr", "1e30", "--out", out)
    line = one_line_error(err)
    assert code == 3
    assert "non-finite loss at epoch 1" in line and "--clip norm" in line
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["test_loss"] == "nan"
    text = (out / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"summary.json holds bare {c}"))
    assert summary["status"] == "diverged" and summary["final"]["test_loss"] is None
    assert math.isfinite(summary["initial"]["test_loss"])  # the losses before training are kept
    code, _, err = run(capsys, "evaluate", out)
    assert code == 2 and "diverged at epoch 1" in one_line_error(err) and "--clip norm" in err
    # the same command again reports the same divergence and keeps the files
    before = snapshot(out)
    code, _, err = run(capsys, "train", "cartpole", *SMALL, "--method", "R", "--lr", "1e30", "--out", out)
    assert code == 3 and "non-finite loss at epoch 1" in one_line_error(err)
    assert snapshot(out) == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "pendulum"], "invalid choice: 'pendulum'"),
        (["train", "cartpole", "--method", "Q"], "invalid choice: 'Q'"),
        (["train", "cartpole", "--clip", "max"], "invalid choice: 'max'"),
        (["train", "cartpole", "--epochs", "0"], "0 must be a positive integer"),
        (["train", "cartpole", "--poles", "0"], "0 must be a positive integer"),
        (["train", "cartpole", "--batch-size", "-3"], "-3 must be a positive integer"),
        (["train", "cartpole", "--n-test", "0"], "0 must be a positive integer"),
        (["train", "cartpole", "--epochs", "ten"], "'ten' is not an integer"),
        (["compare", "cartpole", "--epochs", "1"], "--out"),
    ],
)
def test_bad_arguments(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    line = one_line_error(err)
    assert code == 2 and message in line and "--help" in line


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", "32"], "batch size 32 is larger than the training set (16 samples)"),
        (["--batch-size", "5"], "does not split into batches of 5"),
        (["--lr", "-1"], "argument --lr: -1.0 must be a positive finite number"),
        (["--lr", "nan"], "argument --lr: nan must be a positive finite number"),
    ],
)
def test_impossible_settings(capsys, tmp_path, argv, message):
    code, _, err = run(capsys, "train", "cartpole", *SMALL, *argv, "--out", tmp_path / "x")
    line = one_line_error(err)
    assert code == 2 and message in line
    assert not (tmp_path / "x").exists()


def test_out_that_is_not_a_run(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "train", "cartpole", *SMALL, "--out", tmp_path)
    assert code == 2 and "is not empty and holds no stablebptt run" in one_line_error(err)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("out", [".", ".."])
def test_out_that_is_the_current_folder_is_refused_before_training(capsys, tmp_path, monkeypatch, out):
    """A run is moved into place by a rename, which cannot replace the folder one is in: refused before any work."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    code, _, err = run(capsys, "train", "cartpole", *SMALL, "--out", out)
    assert code == 2 and "is the folder you are in" in one_line_error(err) and "--out run" in err
    assert [p.name for p in tmp_path.rglob("*")] == ["here"]  # nothing trained, nothing left behind


def test_evaluate_bad_dirs(capsys, tmp_path):
    code, _, err = run(capsys, "evaluate", tmp_path / "missing")
    assert code == 2 and "is not a directory" in one_line_error(err)
    code, _, err = run(capsys, "evaluate", tmp_path)
    assert code == 2 and "holds no config.json" in one_line_error(err)


def test_compare_trains_every_method_on_the_same_start(capsys, tmp_path):
    out = tmp_path / "cmp"
    code, stdout, _ = run(capsys, "compare", "cartpole", *SMALL, "--out", out)
    assert code == 0
    for method in "RMCS":
        assert f"\n{method} " in stdout
    with open(out / "final_test_loss.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["R", "M", "C", "S"]
    initial = set()
    for row in table:
        with open(out / row["method"] / "metrics.csv") as f:
            last = list(csv.DictReader(f))[-1]
        assert float(row["final_test_loss"]) == float(last["test_loss"])
        initial.add(json.loads((out / row["method"] / "summary.json").read_text())["initial"]["test_loss"])
    assert len(initial) == 1  # same data and initial weights for every method
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    # a different comparison into the same folder is refused
    code, _, err = run(capsys, "compare", "cartpole", *SMALL, "--seed", "1", "--out", out)
    assert code == 2 and "holds a comparison with different settings: base.seed (42 vs 1); pass --overwrite" in one_line_error(err)
    # the recorded comparison reruns from its compare.json to the same table (the same programs, compiled once)
    code, _, _ = run(capsys, "compare", "--config", out / "compare.json", "--out", tmp_path / "again", "--quiet")
    assert code == 0 and (tmp_path / "again" / "compare.json").read_text() == (out / "compare.json").read_text()
    losses = lambda d: [row[:3] for row in csv.reader(open(d / "final_test_loss.csv"))]  # noqa: E731 - method, final, best
    assert losses(tmp_path / "again") == losses(out)
    code, _, err = run(capsys, "compare", "--config", out)
    assert code == 2 and "compare --config needs --out DIR" in one_line_error(err)
    code, _, err = run(capsys, "train", "--config", out, "--out", tmp_path / "one")
    assert code == 2 and "it records a comparison; rerun it with 'stablebptt compare --config'" in one_line_error(err)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["repulsion", "--rc", "-1"], "rc=-1.0; expected rc >= 0"),
        (["repulsion", "--drivers", "0"], "drivers=0; expected a positive integer"),
        (["repulsion", "--evaders", "0"], "evaders=0; expected a positive integer"),
        (["quantum", "--target", "0"], "target=0; expected an eigenstate 1..32"),
        (["quantum", "--target", "33"], "target=33; expected an eigenstate 1..32"),
        (["quantum", "--target", "3.5"], "'3.5' is not an integer"),
        (["quantum", "--poles", "2"], "train quantum takes no --poles"),
    ],
)
def test_bad_task_options(capsys, tmp_path, argv, message):
    code, _, err = run(capsys, "train", *argv, "--quiet", "--out", tmp_path / "x")
    line = one_line_error(err)
    assert code == 2 and message in line
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("task, options", [("repulsion", ["--rc", "0.1", "--evaders", "3"]), ("quantum", ["--target", "4"])])
def test_train_and_evaluate_other_tasks(capsys, tmp_path, task, options):
    out = tmp_path / task
    small = ["--steps", "6", "--epochs", "2", "--n-train", "16", "--n-test", "16", "--quiet"]
    code, _, _ = run(capsys, "train", task, *options, *small, "--out", out)
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == task and config["task_options"]["n_steps"] == 6
    if task == "repulsion":
        assert config["task_options"]["rc"] == 0.1 and config["task_options"]["n_evaders"] == 3
    else:
        assert config["task_options"]["target"] == 4
    code, stdout, _ = run(capsys, "evaluate", out)
    with open(out / "metrics.csv") as f:
        assert stdout.strip() == f"test loss {list(csv.DictReader(f))[-1]['test_loss']}"


@pytest.mark.parametrize("task", ["repulsion", "quantum"])
def test_compare_other_tasks(capsys, tmp_path, task):
    out = tmp_path / "cmp"
    small = ["--steps", "4", "--epochs", "1", "--n-train", "8", "--n-test", "8", "--quiet"]
    code, stdout, _ = run(capsys, "compare", task, *small, "--methods", "R,C", "--out", out)
    assert code == 0
    with open(out / "final_test_loss.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["R", "C"]
    assert json.loads((out / "C" / "config.json").read_text())["task"] == task


def test_x64_end_to_end(capsys, tmp_path, x64):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from stablebptt.runs.single import load_run

    out = tmp_path / "f64"
    code, _, _ = run(capsys, "train", "cartpole", *SMALL, "--x64", "--out", out)
    assert code == 0
    assert json.loads((out / "config.json").read_text())["dtype"] == "float64"
    setup, policy, history = load_run(out)
    leaves = jax.tree.leaves(eqx.filter(policy, eqx.is_inexact_array))
    assert leaves and all(a.dtype == jnp.float64 for a in leaves)
    assert setup.train_x.dtype == jnp.float64
    jax.config.update("jax_enable_x64", False)  # evaluate turns it on by itself for a float64 run
    code, stdout, _ = run(capsys, "evaluate", out)
    assert stdout.strip() == f"test loss {history[-1]['test_loss']!r}"


def test_remat_option_gives_the_plain_numbers(capsys, tmp_path):
    from stablebptt.runs.rundir import read_metrics

    code, _, _ = run(capsys, "train", "cartpole", *SMALL, "--out", tmp_path / "plain")
    assert code == 0
    for argv, segment in ((["--remat"], 5), (["--remat", "3"], 3)):  # 20 steps: ceil(sqrt(20)) = 5
        out = tmp_path / f"remat{segment}"
        code, _, _ = run(capsys, "train", "cartpole", *SMALL, *argv, "--out", out)
        assert code == 0
        assert json.loads((out / "config.json").read_text())["remat"] == segment
        plain, checkpointed = read_metrics(tmp_path / "plain" / "metrics.csv"), read_metrics(out / "metrics.csv")
        for a, b in zip(plain, checkpointed, strict=True):
            for key in ("batch_loss", "train_loss", "test_loss", "update_sq_norm", "cosine_mr"):
                assert b[key] == pytest.approx(a[key], rel=1e-5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reproduce", "pendulum"], "invalid choice: 'pendulum'"),
        (["train", "cartpole", "--remat", "0"], "argument --remat: 0 must be a positive integer"),
        (["reproduce", "cartpole", "--preset", "fast"], "invalid choice: 'fast'"),
        (["reproduce", "cartpole", "--seeds", "0"], "0 must be a positive integer"),
        (["reproduce", "toy", "--seeds", "2"], "reproduce toy takes no --seeds"),
        (["reproduce", "toy", "--remat", "4"], "reproduce toy takes no --remat"),
        (["reproduce", "toy", "--methods", "C"], "reproduce toy takes no --methods"),
        (["reproduce", "cartpole", "--methods", "R,X"], "unknown method 'X'"),
        (["reproduce", "cartpole", "--clips", "none,max"], "argument --clips: unknown clip mode 'max'; choose one of none, value, norm"),
        (["reproduce", "cartpole", "--levels", "1,two"], "--levels 1,two: n_poles takes integers; the paper's levels are 1, 2, 3, 4"),
        (["reproduce", "cartpole", "--levels", "0"], "poles=0; expected a positive integer"),
        (["reproduce", "repulsion", "--levels", "1,1.0"], "levels [1.0, 1.0] names one value twice"),
        (["reproduce", "cartpole", "--one-by-one", "--group-by", "level"], "--group-by has no effect with --one-by-one"),
    ],
)
def test_bad_reproduce_arguments(capsys, tmp_path, argv, message):
    code, _, err = run(capsys, *argv, "--out", tmp_path / "x")
    assert code == 2 and message in one_line_error(err)
    assert not (tmp_path / "x").exists()


def test_reproduce_refuses_a_folder_with_another_sweep(capsys, tmp_path):
    from stablebptt.sweeps.spec import SweepSpec

    (tmp_path / "sweep.json").write_text(json.dumps(SweepSpec.from_preset("cartpole", epochs=3).to_dict()))
    code, _, err = run(capsys, "reproduce", "cartpole", "--out", tmp_path, "--quiet")
    line = one_line_error(err)
    assert code == 2 and "holds a sweep with different settings: epochs (3 vs 50)" in line
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"]


def test_reproduce_a_sub_grid(capsys, tmp_path):
    """--levels/--methods/--clips: the table holds exactly what ran; a grid the folder holds already trains
    nothing, a new grid of the same protocol joins it, and a grid of another protocol is refused."""
    out = tmp_path / "sub"
    argv = ["reproduce", "cartpole", "--out", out, "--epochs", "1", "--seeds", "1", "--quiet"]
    code, printed, _ = run(capsys, *argv, "--levels", "1", "--methods", "C,R", "--clips", "none")
    assert code == 0 and "| poles: 1 | C |" in printed
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["level"], r["method"], r["clip"], r["seeds"]) for r in rows] == [("1", "C", "none", "1"), ("1", "R", "none", "1")]
    assert sorted(p.name for p in (out / "runs" / "poles1").iterdir()) == ["C-none-seed42", "R-none-seed42"]
    assert not (out / "runs" / "poles2").exists()
    tree = lambda: {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}  # noqa: E731
    before = tree()
    code, printed, _ = run(capsys, *argv, "--levels", "1", "--methods", "C", "--clips", "none")
    assert code == 0 and "1 of 1 runs finished, 0 to train" in printed and tree() == before
    code, printed, _ = run(capsys, *argv, "--levels", "1", "--methods", "R", "--clips", "norm")
    final = printed.split("Best test loss")[0]
    assert code == 0 and "| clip none | clip norm |" in final
    c_row, r_row = (next(line for line in final.splitlines() if line.startswith(f"| poles: 1 | {m} |")) for m in "CR")
    assert c_row.endswith("| not run |") and "not run" not in r_row and r_row.count("|") == 5  # the new cell, and C's old one
    assert sorted(p.name for p in (out / "runs" / "poles1").iterdir()) == ["C-none-seed42", "R-none-seed42", "R-norm-seed42"]
    assert all(tree()[k] == v for k, v in before.items() if k.startswith("runs/"))
    code, _, err = run(capsys, "reproduce", "cartpole", "--out", out, "--epochs", "2", "--seeds", "1", "--quiet", "--levels", "1")
    line = one_line_error(err)
    assert code == 2 and "holds a sweep with different settings: epochs (1 vs 2)" in line


def test_version(capsys):
    import stablebptt

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"stablebptt {stablebptt.__version__}"


def test_reproduce_toy(capsys, tmp_path):
    code, out, _ = run(capsys, "reproduce", "toy", "--out", tmp_path)
    assert code == 0
    finals = {line.split()[3]: float(line.split()[-1]) for line in out.splitlines() if line.startswith("Adam on the")}
    assert set(finals) == {"gradient", "rotated", "combined"}
    assert finals["gradient"] < finals["combined"] < finals["rotated"]
    assert {p.name for p in tmp_path.iterdir()} == {"figure1_fields.png", "figure2_adam.png", "toy.json"}


@pytest.mark.parametrize("quiet", [False, True])
def test_reproduce_lq_shows_progress_unless_quiet(capsys, tmp_path, monkeypatch, quiet):
    from stablebptt.paper import lq

    asked = []
    monkeypatch.setattr(lq, "run_lq", lambda spec, out, *, progress: asked.append((spec.epochs, progress)) or [])
    code, _, _ = run(capsys, "reproduce", "lq", "--epochs", "5", "--out", tmp_path, *(["--quiet"] if quiet else []))
    assert code == 0 and asked == [(5, not quiet)]


def test_animate(trained, capsys, tmp_path):
    from PIL import Image

    gif = tmp_path / "run.gif"
    code, out, _ = run(capsys, "animate", trained, "--out", gif, "--sample", "3")
    assert code == 0 and out.strip() == f"wrote {gif} (21 frames)"  # 20 steps
    with Image.open(gif) as image:
        assert image.n_frames == 21
    code, _, err = run(capsys, "animate", trained, "--sample", "16", "--out", gif)
    assert code == 2 and "sample=16; expected a test state of this run, 0..15" in one_line_error(err)


def test_ctrl_c_while_jax_is_still_importing_is_one_line_and_exit_130(tmp_path):
    """SIGINT delivered at the moment the command starts importing JAX (an import hook sends it, so no race)."""
    import subprocess
    import sys

    code = (
        "import os, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal: the test worker may ignore SIGINT\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'jax':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from stablebptt.cli import main\n"
        "assert 'jax' not in sys.modules\n"
        "sys.exit(main(['train', 'cartpole', '--epochs', '1', '--out', sys.argv[1]]))\n"
    )
    child = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert child.returncode == 130, child.stderr
    assert "Traceback" not in child.stderr
    assert child.stderr.strip().startswith("stablebptt: interrupted") and child.stderr.strip().count("\n") == 0
