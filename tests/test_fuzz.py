"""Property-based tests: drawn command lines and drawn data either reach the work or are refused in one line."""

from __future__ import annotations

import contextlib
import io
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import stablebptt as sb
from stablebptt.cli import main

CLI_CASES = 150
DATA_CASES = 120


class Reached(Exception):
    """The command line was valid: it got to the training (stubbed here) or other work."""


WORK = [
    ("stablebptt.runs.single", "train_run"),
    ("stablebptt.runs.compare", "compare"),
    ("stablebptt.runs.single", "evaluate_run"),
    ("stablebptt.sweeps.run", "run_sweep"),
    ("stablebptt.paper.toy", "reproduce_toy"),
    ("stablebptt.paper.lq", "run_lq"),
    ("stablebptt.paper.brax_peer", "run_peer"),
    ("stablebptt.sweeps.report", "write_report"),
    ("stablebptt.tools.bench", "run_bench"),
    ("stablebptt.tools.animate", "animate_run"),
    ("stablebptt.engine.precision", "set_float64"),  # a drawn --x64 must not switch this test process to float64
]

TRICKY = st.sampled_from(
    ["1", "2", "0", "-1", "3", "0.5", "1e-3", "nan", "inf", "-inf", "1e309", "abc", "", " ", "R", "R,M", "C,X", ",", "none",
     "norm,value", "1,2", "1,9", "0.01", "paper", "quick", "cartpole", "reacher", "cheetah", "local", "ray", "out", "notes.txt",
     "notes.txt/x", "run", "--epochs", "ü", "9" * 30]
)  # fmt: skip
VALUES = st.one_of(st.sampled_from(["1", "2", "8", "R", "C", "none", "0.01", "run"]), TRICKY)  # half plausible
FLAGS = st.sampled_from(
    ["--epochs", "--seed", "--lr", "--batch-size", "--n-train", "--n-test", "--steps", "--poles", "--rc", "--target",
     "--drivers", "--evaders", "--env", "--backend", "--method", "--methods", "--clip", "--clips", "--levels", "--seeds",
     "--preset", "--adam", "--remat", "--checkpoint-every", "--out", "--sample", "--fps", "--tasks", "--address",
     "--overwrite", "--quiet", "--x64", "--one-by-one", "--bogus"]
)  # fmt: skip
HEADS = st.sampled_from(
    [["train", "cartpole"], ["train", "repulsion"], ["train", "quantum"], ["compare", "cartpole"], ["train", "nosuchtask"],
     ["reproduce", "toy"], ["reproduce", "lq"], ["reproduce", "cartpole"], ["reproduce", "quantum"], ["reproduce", "nope"],
     ["evaluate"], ["animate"], ["bench"], ["report"], ["frobnicate"], []]
)  # fmt: skip


@st.composite
def argvs(draw):
    argv = list(draw(HEADS))
    if argv[:1] in (["evaluate"], ["animate"], ["report"]) and draw(st.booleans()):
        argv.append(draw(VALUES))
    for _ in range(draw(st.integers(0, 3))):
        argv.append(draw(FLAGS))
        if draw(st.booleans()):
            argv.append(draw(VALUES))
    return argv


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    def reached(*args, **kwargs):
        raise Reached

    import importlib

    for module, name in WORK:
        monkeypatch.setattr(importlib.import_module(module), name, reached if name != "set_float64" else lambda: None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a user's file\n")
    return tmp_path


def test_drawn_command_lines_reach_the_work_or_fail_in_one_line(stubbed):
    seen = {"reached": 0, "refused": 0, "help": 0}

    @settings(max_examples=CLI_CASES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(argvs())
    def check(argv):
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
        except Reached:
            seen["reached"] += 1
            return
        text = err.getvalue()
        assert "Traceback" not in text, (argv, text)
        if code == 0:  # --help or --version
            seen["help"] += 1
            assert out.getvalue(), argv
            return
        seen["refused"] += 1
        lines = [line for line in text.splitlines() if line.strip()]
        assert code == 2, (argv, code, text)
        assert len(lines) == 1 and lines[0].startswith("stablebptt") and ": error: " in lines[0], (argv, text)

    check()
    print(f"\nfuzzed command lines: {seen}")
    assert sum(seen.values()) == CLI_CASES and seen["reached"] > 0 and seen["refused"] > 0


def pendulums(x, force):
    velocity = x[:, 1] + 0.1 * (force[:, 0] - jnp.sin(x[:, 0]))
    return jnp.stack([x[:, 0] + 0.1 * velocity, velocity], axis=1)


PROBLEM = sb.ControlProblem(step=pendulums, n_steps=3, final_loss=lambda x: jnp.mean(x**2))
POLICY = sb.DenseNet(2, 1, hidden=(4,), key=jax.random.key(0))


@st.composite
def data_sets(draw):
    n = draw(st.integers(0, 9))
    shape = draw(st.sampled_from([(n, 2)] * 4 + [(n, 3), (n, 1), (n,), (n, 2, 1)]))
    dtype = draw(st.sampled_from([np.float32] * 4 + [np.float64, np.int32, np.bool_, np.float16]))
    x = np.asarray(draw(st.lists(st.floats(-2, 2, width=32), min_size=math.prod(shape), max_size=math.prod(shape)))).reshape(shape)
    if x.size and draw(st.integers(0, 2)) == 0:
        x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return x.astype(dtype) if dtype is not np.bool_ else (x > 0)


def valid(x: np.ndarray) -> bool:
    return x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 2 and bool(np.all(np.isfinite(x)))


def test_drawn_data_is_accepted_exactly_when_it_can_train():
    """float32 arrays of shape (n, 2), all finite, are accepted; everything else is refused in one line (float16
    too: the float32 controller's output turns the pendulums' state into float32, a change of layout)."""
    from stablebptt.training.trainer import check_data

    seen = {"accepted": 0, "refused": 0}

    @settings(max_examples=DATA_CASES, deadline=None, derandomize=True)
    @given(data_sets(), data_sets())
    @example(np.zeros((8, 2), np.float32), np.ones((3, 2), np.float32))  # accepted whatever Hypothesis draws
    def check(train_x, test_x):
        expect = valid(train_x) and valid(test_x) and len(train_x) > 0 and len(test_x) > 0
        try:
            check_data(POLICY, PROBLEM, jnp.asarray(train_x) if train_x.dtype != np.float64 else train_x, test_x)
        except ValueError as err:
            assert not expect, (train_x, test_x, err)
            assert "\n" not in str(err) and ("training set" in str(err) or "test set" in str(err)), str(err)
            seen["refused"] += 1
            return
        assert expect, (train_x.dtype, train_x.shape, test_x.dtype, test_x.shape)
        seen["accepted"] += 1

    check()
    print(f"\nfuzzed data sets: {seen}")
    assert sum(seen.values()) >= DATA_CASES and seen["accepted"] > 1 and seen["refused"] > 0
