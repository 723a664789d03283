"""``stablebptt bench``: the rows, the table and bad names (FLOP counting: tests/test_flops.py)."""

from __future__ import annotations

import math
import re

import jax
import pytest

from stablebptt.cli import main
from stablebptt.tools.bench import format_bench_table, run_bench


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
