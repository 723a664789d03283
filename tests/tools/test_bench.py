"""``stablebptt bench``: the rows, the table and bad names (FLOP counting: tests/test_flops.py)."""

from __future__ import annotations

import math
import re

import jax
import pytest

from stablebptt.cli import main
from stablebptt.runs.config import RunConfig
from stablebptt.runs.single import build, train_run
from stablebptt.tasks import TASKS
from stablebptt.tools.bench import format_bench_table, run_bench
from stablebptt.training import compile_epoch

pytestmark = pytest.mark.long  # a minute or more of compiling: scheduled first (tests/conftest.py)


def test_run_bench_rows_on_a_small_setting():
    peak = {"size": 64, "seconds": 1e-3, "gflops_per_second": 1.0}
    rows = run_bench(
        "cartpole",
        "S",
        epochs=1,
        n_train=16,
        task_options={"cartpole": {"n_steps": 5, "n_poles": 1}},
        peak=peak,
    )
    (row,) = rows
    assert (row["task"], row["method"], row["n_steps"], row["updates_per_epoch"]) == (
        "cartpole",
        "S",
        5,
        2,
    )
    assert row["updates_per_second"] == pytest.approx(2 / row["seconds_per_epoch"])
    assert row["peak_fraction"] == pytest.approx(row["gflops_per_second"] / 1.0)
    assert "| cartpole | n_poles=1 | 5 | S | 1 |" in format_bench_table(rows)
    # three runs as one vmapped program: about three times the work of one (XLA fuses the batched program
    # a little differently, so its count of elementwise operations is within a few percent of 3x, not exactly)
    (batched,) = run_bench("cartpole", "S", epochs=1, n_train=16, task_options={"cartpole": {"n_steps": 5, "n_poles": 1}}, peak=peak, runs=3)
    assert batched["runs"] == 3
    assert batched["flops_per_epoch"] == pytest.approx(3 * row["flops_per_epoch"], rel=0.05)
    assert batched["updates_per_second"] == pytest.approx(3 * 2 / batched["seconds_per_epoch"])
    assert "| cartpole | n_poles=1 | 5 | S | 3 |" in format_bench_table([batched])


def table_rows(text: str) -> list[list[str]]:
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| task")
    ]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_cli_writes_the_table(tmp_path, capsys):
    out = tmp_path / "sub" / "bench.md"
    assert (
        main(
            [
                "bench",
                "--tasks",
                "cartpole",
                "--methods",
                "r,S",
                "--epochs",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    written = out.read_text()
    assert written in printed
    assert f"JAX {jax.__version__}" in written and "float32" in written
    assert re.search(r"matmul peak: [0-9.]+ GFLOP/s", written)
    rows = table_rows(written)
    assert [(r[0], r[3]) for r in rows] == [("cartpole", "R"), ("cartpole", "S")]
    for task, difficulty, steps, method, runs, *numbers in rows:
        assert difficulty == "n_poles=2" and steps == "100" and runs == "1"
        values = [float(v) for v in numbers]
        assert all(math.isfinite(v) and v > 0 for v in values)
        seconds, updates_per_second = values[0], values[1]
        assert updates_per_second == pytest.approx(32 / seconds, rel=2e-3)


@pytest.mark.parametrize(
    "argv, valid",
    [
        (["--tasks", "cartpole,pendulum"], "cartpole, repulsion, quantum"),
        (["--methods", "R,X"], "R, M, S, N, C"),
        (["--tasks", ","], "cartpole, repulsion, quantum"),
    ],
)
def test_bad_names_exit_2_with_one_line(argv, valid, capsys):
    assert main(["bench", *argv]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stablebptt bench: error:"), (
        captured.err
    )
    assert valid in lines[0]
    assert captured.out == ""


class Lowered(Exception):
    """Stops a call at the compilation of its epoch program, with the program's text."""

    def __init__(self, text: str):
        super().__init__("lowered")
        self.text = text


def lowered_text(monkeypatch, call) -> str:
    """The StableHLO text of the first program ``call`` compiles ahead of time (its epoch program), not compiling it."""

    def stop(self, *args, **kwargs):
        raise Lowered(self.as_text())

    with monkeypatch.context() as patch:
        patch.setattr(jax.stages.Lowered, "compile", stop)
        with pytest.raises(Lowered) as caught:
            call()
    return caught.value.text


# every task at the paper's 256 states, short; cart pole also with remat (segments of 2 steps); Brax with its own backward pass
PROGRAMS = [
    ("cartpole", {"n_poles": 1, "n_steps": 6}, 0),
    ("cartpole", {"n_poles": 1, "n_steps": 6}, 2),
    ("repulsion", {"n_steps": 4}, 0),
    ("quantum", {"n_steps": 4}, 0),
    ("brax", {"n_steps": 2, "width": 4, "depth": 1, "backend": "spring"}, 0),
    ("linear", {"n_steps": 3}, 0),
]


def test_every_task_is_compared():
    assert {task for task, _, _ in PROGRAMS} == set(TASKS)


@pytest.mark.parametrize("task, options, remat", PROGRAMS, ids=[f"{t}-remat{r}" for t, _, r in PROGRAMS])
def test_bench_times_the_program_a_run_compiles(task, options, remat, tmp_path, monkeypatch):
    """bench and a run build their epoch program in one place: the same program, text for text, whatever the
    task's own backward pass (Brax: lanes one at a time) or the run's remat."""
    from stablebptt.runs import single
    from stablebptt.tools import bench as bench_module

    config = RunConfig.from_options(dict(remat=remat), task=task, task_options=options, method="C", epochs=1)
    setup = build(config)  # once for both (Brax compiles its reset): the same data either way
    for module in (single, bench_module):
        monkeypatch.setattr(module, "build", lambda c: setup if c == config else build(c))
    peak = {"size": 64, "seconds": 1e-3, "gflops_per_second": 1.0}
    bench = lowered_text(monkeypatch, lambda: run_bench(task, "C", epochs=1, task_options={task: options}, remat=remat, peak=peak))
    run = lowered_text(monkeypatch, lambda: train_run(config, tmp_path / "run", progress=False, announce=False))
    assert bench == run
    if remat:  # the text tells backward passes apart: bench's program as it was built before (no backward=) is another one
        default = lowered_text(monkeypatch, lambda: compile_epoch(
            [setup.policy], setup.task.problem, [setup.train_x], [setup.test_x], flows=[config.flow()], optimizer=config.optimizer(),
        ))  # fmt: skip
        assert default != run
