"""Property-based tests: drawn command lines and drawn data either reach the work or are refused in one line."""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import stat
from pathlib import Path

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
    ("stablebptt.runs.single", "build"),  # diagnose builds its task and controller itself
    ("stablebptt.engine.precision", "set_float64"),  # a drawn --x64 must not switch this test process to float64
]

HUGE = [str(2**70), str(2**64), str(2**63), "1000000000000", "1e12", "9" * 30, f"-{2**70}"]  # sizes up to 2**70
TRICKY = st.sampled_from(
    ["1", "2", "0", "-1", "3", "0.5", "1e-3", "nan", "inf", "-inf", "1e309", "abc", "", " ", "R", "R,M", "C,X", ",", "none",
     "norm,value", "1,2", "1,9", "0.01", "paper", "quick", "cartpole", "reacher", "cheetah", "local", "ray", "out", "notes.txt",
     "notes.txt/x", "run", "--epochs", "ü", "fifo", "fifo/x", *HUGE]
)  # fmt: skip
VALUES = st.one_of(st.sampled_from(["1", "2", "8", "R", "C", "none", "0.01", "run"]), TRICKY)  # half plausible
FLAGS = st.sampled_from(
    ["--epochs", "--seed", "--lr", "--batch-size", "--n-train", "--n-test", "--steps", "--poles", "--rc", "--target",
     "--drivers", "--evaders", "--env", "--backend", "--method", "--methods", "--clip", "--clips", "--levels", "--seeds",
     "--preset", "--adam", "--remat", "--checkpoint-every", "--out", "--sample", "--fps", "--tasks", "--address",
     "--overwrite", "--quiet", "--x64", "--one-by-one", "--bogus", "--runs", "--warmup", "--batches", "--group-by",
     "--config", "--params", "--loss", "--n-train", "--seed", "--steps", "--epochs"]
)  # fmt: skip
HEADS = st.sampled_from(
    [["train", "cartpole"], ["train", "repulsion"], ["train", "quantum"], ["train", "brax"], ["compare", "cartpole"],
     ["train", "nosuchtask"], ["reproduce", "toy"], ["reproduce", "lq"], ["reproduce", "cartpole"], ["reproduce", "quantum"],
     ["reproduce", "brax"], ["reproduce", "nope"], ["diagnose", "cartpole"], ["diagnose", "quantum"], ["evaluate"], ["animate"],
     ["bench"], ["report"], ["frobnicate"], []]
)  # fmt: skip

@st.composite
def argvs(draw):
    argv = list(draw(HEADS))
    if argv[:1] in (["evaluate"], ["animate"], ["report"]) and draw(st.booleans()):
        argv.append(draw(VALUES))
    for _ in range(draw(st.integers(0, 3))):
        flag = draw(FLAGS)
        argv.append(flag)
        if draw(st.booleans()):
            argv.append(draw(VALUES))
    return argv


def checksums(root: Path) -> dict:
    """sha256 of every regular file under ``root`` (a FIFO or link by its kind, never opened), lock files aside."""
    sums = {}
    for p in sorted(root.rglob("*")):
        if p.name.endswith(".lock"):
            continue
        mode = p.lstat().st_mode
        sums[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(mode) else stat.S_IFMT(mode)
    return sums


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    def reached(*args, **kwargs):
        raise Reached

    import importlib

    modules = [importlib.import_module(module) for module, _ in WORK]  # all imported first: none binds a stub by name
    for module, (_, name) in zip(modules, WORK):
        monkeypatch.setattr(module, name, reached if name != "set_float64" else lambda: None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a user's file\n")
    os.mkfifo(tmp_path / "fifo")
    return tmp_path


def test_drawn_command_lines_reach_the_work_or_fail_in_one_line(stubbed):
    seen = {"reached": 0, "refused": 0, "help": 0}
    before = checksums(stubbed)

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
    after = checksums(stubbed)
    assert {k: after[k] for k in before} == before  # the user's file and the FIFO, whatever the drawn --out


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


SIZE_CASES = 40
# Writers with valid options otherwise, and the size options each takes.
SIZED = [
    (["train", "cartpole", "--quiet", "--out", "run"], ["--epochs", "--n-train", "--n-test", "--steps", "--poles", "--batch-size", "--seed", "--checkpoint-every", "--remat"]),
    (["train", "repulsion", "--quiet", "--out", "run"], ["--drivers", "--evaders", "--steps", "--n-train"]),
    (["compare", "quantum", "--quiet", "--out", "cmp"], ["--epochs", "--n-train", "--n-test", "--steps", "--target", "--seed"]),
    (["diagnose", "cartpole", "--out", "diag"], ["--n-train", "--batches", "--batch-size", "--warmup", "--seed", "--steps", "--poles"]),
    (["reproduce", "cartpole", "--quiet", "--out", "sweep"], ["--epochs", "--seeds", "--levels", "--remat", "--checkpoint-every"]),
    (["reproduce", "brax", "--quiet", "--out", "peer"], ["--epochs", "--seeds", "--steps", "--n-train", "--checkpoint-every"]),
    (["reproduce", "lq", "--quiet", "--out", "lq"], ["--epochs"]),
    (["bench", "--out", "bench.md"], ["--epochs", "--runs"]),
    (["animate", "run", "--out", "a.gif"], ["--sample", "--fps"]),
]


@st.composite
def sized_argvs(draw):
    head, flags = draw(st.sampled_from(SIZED))
    argv = list(head)
    for flag in draw(st.lists(st.sampled_from(flags), min_size=1, max_size=2, unique=True)):
        size = draw(st.one_of(st.integers(-3, 2**70), st.integers(2**62, 2**70), st.sampled_from(HUGE)))
        argv += [flag, str(size)]
    return argv


def test_drawn_sizes_up_to_2_70_reach_the_stubbed_work_or_fail_in_one_line(stubbed):
    """Nothing is allocated here (the work is stubbed): a size is either refused in one line or handed on."""
    seen = {"reached": 0, "refused": 0}
    before = checksums(stubbed)

    @settings(max_examples=SIZE_CASES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(sized_argvs())
    def check(argv):
        err = io.StringIO()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                code = main(argv)
        except Reached:
            seen["reached"] += 1
            return
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and ": error: " in lines[0] and "Traceback" not in err.getvalue(), (argv, code, err.getvalue())
        seen["refused"] += 1

    check()
    print(f"\nfuzzed sizes: {seen}")
    assert sum(seen.values()) == SIZE_CASES and seen["reached"] > 0 and seen["refused"] > 0
    assert checksums(stubbed) == before


# --- damaged and missing files -------------------------------------------------------------------------------------
FILE_CASES = 50
SAME = ["cartpole", "--poles", "1", "--steps", "5", "--epochs", "2", "--n-train", "8", "--n-test", "8", "--method", "R", "--quiet"]
SWEEP = ["reproduce", "cartpole", "--epochs", "1", "--seeds", "1", "--levels", "1", "--methods", "R", "--clips", "none", "--quiet"]
# file → the commands that read it
READERS = {
    "run/config.json": [["evaluate", "run"], ["train", "--config", "run", "--out", "new"], ["train", *SAME, "--out", "run"]],
    "run/summary.json": [["evaluate", "run"], ["train", *SAME, "--out", "run"], ["compare", *SAME[:-3], "--methods", "R", "--quiet", "--out", "cmp"]],
    "run/metrics.csv": [["evaluate", "run"], ["train", *SAME, "--out", "run"]],
    "run/params.eqx": [["evaluate", "run"], ["train", *SAME, "--out", "run"]],
    ".part.partial/checkpoint.eqx": [["train", *SAME, "--out", "part"]],
    ".part.partial/config.json": [["train", *SAME, "--out", "part"]],
    "sweep/sweep.json": [["report", "sweep"], [*SWEEP, "--out", "sweep"], ["report", "."]],
    "cmp/compare.json": [["compare", "--config", "cmp", "--out", "new"], ["compare", *SAME[:-3], "--methods", "R", "--quiet", "--out", "cmp"]],
    "cmp/R/summary.json": [["compare", *SAME[:-3], "--methods", "R", "--quiet", "--out", "cmp"]],
}
WRONG = st.sampled_from(["x", -1, 0, None, [], {}, 2**70, 1.5, True, "nan"])


class Trained(Exception):
    """A command got to training or evaluating (stubbed)."""


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """A finished run, a killed run with its checkpoint, a comparison of R and a sweep's folder, written by the commands
    themselves with the training replaced by a stand-in that reports two epochs (no program is compiled)."""
    import stablebptt.runs.single as single
    import stablebptt.sweeps.backends as backends
    from stablebptt.training import TrainResult, TrainState

    root = tmp_path_factory.mktemp("whole")
    rows = [{"epoch": e, "batch_loss": 1.0 / e, "train_loss": 1.0 / e, "test_loss": 1.0 / e, "update_sq_norm": 1.0, "cosine_mr": 1.0, "seconds": 0.1} for e in (1, 2)]

    def stand_in(policy, problem, train_x, test_x, *, optimizer, on_epoch, checkpoint, **kwargs):
        params, _ = sb.trainable(policy)
        for row in rows:
            on_epoch(row)
            if kill:
                checkpoint(TrainState(1, params, optimizer.init(params), rows[:1], {"train_loss": 2.0, "test_loss": 2.0}, None))
                raise KeyboardInterrupt
        return TrainResult(policy, optimizer.init(params), rows, {"train_loss": 2.0, "test_loss": 2.0}, 0.0, None, 1, {})

    def no_groups(self, groups, out, **kwargs):
        yield from ()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(single, "train", stand_in)
        mp.setattr(backends.LocalBackend, "train_groups", no_groups)
        mp.chdir(root)
        kill = False
        assert main(["train", *SAME, "--out", "run"]) == 0
        assert main(["compare", *SAME[:-3], "--methods", "R", "--quiet", "--out", "cmp"]) == 0
        assert main([*SWEEP, "--out", "sweep"]) == 0
        kill = True
        assert main(["train", *SAME, "--out", "part"]) == 130
    assert (root / ".part.partial" / "checkpoint.eqx").is_file() and (root / "run" / "params.eqx").is_file()
    return root


@st.composite
def damages(draw):
    name = draw(st.sampled_from(sorted(READERS)))
    how = draw(st.sampled_from(["missing", "empty", "truncated", "garbage", "{}", "[]", "null", "wrong type", "a folder"]))
    garbage = draw(st.binary(min_size=1, max_size=64))
    wrong = draw(WRONG)
    key_index = draw(st.integers(0, 50))
    return name, how, garbage, wrong, key_index, draw(st.sampled_from(READERS[name]))


def damage(path: Path, how: str, garbage: bytes, wrong, key_index: int) -> None:
    import json

    data = path.read_bytes()
    if how == "missing":
        path.unlink()
    elif how == "a folder":
        path.unlink()
        path.mkdir()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(garbage)
    elif how in ("{}", "[]", "null"):
        path.write_text(how)
    elif path.suffix == ".json":  # one setting of the wrong type
        obj = json.loads(data)
        key = sorted(obj)[key_index % len(obj)]
        obj[key] = wrong
        path.write_text(json.dumps(obj))
    else:
        path.write_bytes(data + json.dumps(wrong).encode())


def test_damaged_or_missing_files_are_refused_in_one_line_and_change_nothing(whole, tmp_path, monkeypatch):
    """Each command that reads a file of a run, a checkpoint, a comparison or a sweep, with that file damaged: it refuses in
    one line changing nothing, says there is nothing to do (exit 0, nothing changed), or gets to its training or evaluation
    (stubbed) with every file of a finished run, comparison or sweep as it was (a damaged checkpoint is dropped by design)."""
    import shutil

    import stablebptt.runs.single as single
    import stablebptt.sweeps.backends as backends
    import stablebptt.sweeps.report as report

    def trained(*args, **kwargs):
        raise Trained

    monkeypatch.setattr(single, "train", trained)
    monkeypatch.setattr(single, "evaluate_losses", trained)
    monkeypatch.setattr(backends.LocalBackend, "train_groups", trained)
    monkeypatch.setattr(report, "write_report", trained)
    monkeypatch.setattr("stablebptt.paper.claims.write_claims", trained)
    seen = {"refused": 0, "nothing to do": 0, "trained": 0}
    kept = set()  # damages that leave a run, comparison or sweep usable as it is
    counter = iter(range(10**6))

    @settings(max_examples=FILE_CASES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(damages())
    def check(case):
        name, how, garbage, wrong, key_index, argv = case
        root = tmp_path / str(next(counter))
        shutil.copytree(whole, root, symlinks=True)
        damage(root / name, how, garbage, wrong, key_index)
        monkeypatch.chdir(root)
        before = checksums(root)
        err = io.StringIO()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                code = main(argv)
        except Trained:
            after = checksums(root)
            assert {k: after.get(k) for k in before if ".partial" not in k} == {k: v for k, v in before.items() if ".partial" not in k}, (name, how, argv)
            seen["trained"] += 1
            return
        text = err.getvalue()
        lines = [line for line in text.splitlines() if line.strip()]
        assert "Traceback" not in text, (name, how, argv, text)
        assert checksums(root) == before, (name, how, argv, text)
        if code == 0:
            seen["nothing to do"] += 1
            kept.add(f"{argv[0]} with {name} {how}")
            return
        assert code in (2, 3) and len(lines) == 1 and lines[0].startswith("stablebptt: error: "), (name, how, argv, code, text)
        seen["refused"] += 1

    check()
    print(f"\nfuzzed damaged files: {seen}; nothing to do: {sorted(kept)}")
    assert sum(seen.values()) == FILE_CASES and seen["refused"] > 0 and seen["trained"] > 0
    assert not [k for k in kept if k.startswith("train with run/") and "wrong type" not in k], kept  # a damaged run is never "finished"


HOLD = """
import sys, time
from pathlib import Path
from stablebptt.runs.lock import hold
with hold(Path(sys.argv[1])):
    print("held", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.02)
"""
WRITERS = [
    ["train", *SAME, "--out", "run"],
    ["train", *SAME, "--overwrite", "--out", "run"],
    ["compare", *SAME[:-3], "--methods", "R", "--quiet", "--out", "run"],
    [*SWEEP, "--out", "run"],
    ["reproduce", "toy", "--out", "run"],
    ["reproduce", "lq", "--epochs", "1", "--out", "run"],
    ["reproduce", "brax", "--out", "run"],
    ["bench", "--out", "run"],
]


def test_a_second_writer_of_a_held_folder_is_refused_in_one_line_and_changes_nothing(whole, tmp_path, monkeypatch, capsys):
    """Another process holds ``run`` (a finished run): every command that would write there exits 2 naming its pid, before any work."""
    import shutil
    import subprocess
    import sys

    root = tmp_path / "w"
    shutil.copytree(whole, root, symlinks=True)
    monkeypatch.chdir(root)
    before = checksums(root)
    go = tmp_path / "go"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root / "run"), str(go)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv in WRITERS:
            capsys.readouterr()
            assert main(argv) == 2, argv
            lines = capsys.readouterr().err.strip().splitlines()
            assert len(lines) == 1 and f"pid {holder.pid}" in lines[0], (argv, lines)
            assert checksums(root) == before, argv
    finally:
        go.touch()
        holder.wait(timeout=60)
    assert holder.returncode == 0
