"""Brax on the command line: short training learns; missing extra and bad names are one line."""

from __future__ import annotations

import json

import pytest

from ..helpers import without_brax

pytestmark = pytest.mark.long  # minutes of compiling: scheduled first (tests/conftest.py)


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stablebptt: error:"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", ["train", "compare"])
def test_without_the_extra_one_line_names_the_install(command, monkeypatch, capsys, tmp_path):
    from stablebptt.cli import main

    without_brax(monkeypatch)
    code = main([command, "brax", "--env", "reacher", "--out", str(tmp_path / "run")])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "pip install '.[brax]'" in line
    assert not (tmp_path / "run").exists()


def test_unknown_environment_lists_the_valid_ones(capsys, tmp_path):
    from stablebptt.cli import main

    code = main(["train", "brax", "--env", "cheetah", "--out", str(tmp_path / "run")])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "unknown Brax environment 'cheetah'; choose one of ant," in line and "reacher" in line
    code = main(["train", "brax", "--backend", "mjx", "--out", str(tmp_path / "run")])
    assert code == 2 and "Brax backend 'mjx' cannot be differentiated here" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_train_brax_learns(capsys, tmp_path):
    """Inverted pendulum with the state-based loss (its reward is constant), 30 steps: the poles' squared
    angles fall (0.40 to about 0.002 in 3 epochs); a zero or reversed update would not."""
    from stablebptt.cli import main
    from stablebptt.runs.rundir import read_metrics

    out = tmp_path / "run"
    argv = ["train", "brax", "--env", "inverted_pendulum", "--loss", "upright", "--steps", "30", "--epochs", "3"]
    argv += ["--n-train", "32", "--n-test", "32", "--lr", "1e-2", "--method", "R"]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    initial = json.loads((out / "summary.json").read_text())["initial"]["test_loss"]
    final = read_metrics(out / "metrics.csv")[-1]["test_loss"]
    assert 0 <= final < initial / 10


def test_a_loss_without_gradient_is_refused(capsys, tmp_path):
    from stablebptt.cli import main

    code = main(["train", "brax", "--env", "inverted_pendulum", "--out", str(tmp_path / "run")])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "inverted_pendulum's reward has no gradient (its reward is a constant +1 per step" in line
    assert line.endswith("use a state-based loss: --loss upright")
    code = main(["train", "brax", "--env", "reacher", "--loss", "upright", "--out", str(tmp_path / "run")])
    assert code == 2 and "the upright loss needs a cart-pole environment" in one_line(capsys.readouterr().err)
    code = main(["train", "brax", "--loss", "height", "--out", str(tmp_path / "run")])
    assert code == 2 and "unknown Brax loss 'height'; choose one of reward, upright" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()
