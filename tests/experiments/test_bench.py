"""``stablebptt bench``: the FLOP estimate against hand counts, its scaling, the table and bad names."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import pytest
from jax import lax

import stablebptt as sb
from stablebptt.cli import main
from stablebptt.experiments import (
    epoch_flops,
    format_bench_table,
    program_flops,
    run_bench,
)

D = M = 32  # state and control size of the linear problem
BATCH = 8


def nested_matmuls(x, w, n_outer, n_inner):
    def inner(h, _):
        return h @ w, None

    def outer(h, _):
        return lax.scan(inner, h, None, length=n_inner)[0] @ w, None

    return lax.scan(outer, x, None, length=n_outer)[0] @ w


def test_program_flops_counts_every_iteration_of_nested_scans():
    x, w = jnp.ones((BATCH, 64)), jnp.ones((64, 64))
    matmuls = 5 * 7 + 5 + 1  # inner bodies, outer bodies, the one outside
    assert program_flops(
        lambda x, w: nested_matmuls(x, w, 5, 7), x, w
    ) == pytest.approx(matmuls * 2 * BATCH * 64 * 64, rel=0.01)


def linear_epoch_flops(flow, *, n_steps: int = 10, n_train: int = 16) -> float:
    """One epoch on ``x' = xA + cB``, ``c = xK``: matrix products dominate."""
    a, b = 0.9 * jnp.eye(D), 0.01 * jnp.ones((M, D))
    problem = sb.ControlProblem(
        step=lambda x, c: x @ a + c @ b,
        n_steps=n_steps,
        final_loss=lambda x: jnp.mean(x**2),
    )
    policy = sb.FunctionPolicy(lambda k, x: x @ k, jnp.zeros((D, M)))
    train_x = jnp.ones((n_train, D))
    return epoch_flops(
        policy,
        problem,
        train_x,
        flow=flow,
        optimizer=sb.make_optimizer("none"),
        batch_size=BATCH,
    )


# Per step and sample, in units of one (1×D)·(D×D) or (1×D)·(D×M) product (2·D·D or 2·D·M FLOPs):
# forward: xK, xA, cB; backward (per lane): λAᵀ, μBᵀ, and μKᵀ where the network gate is open;
# parameter gradient (per lane): xᵀμ.
LINEAR_PRODUCTS = {
    "R": (2, 5),
    "M": (2, 4),
    "S": (2, 4),
    "C": (3, 7),
}  # (D×D products, D×M products)


@pytest.mark.parametrize("method", ["R", "M", "C"])
def test_epoch_flops_match_the_hand_count_of_a_linear_problem(method):
    n_steps, n_train = 10, 16
    dd, dm = LINEAR_PRODUCTS[method]
    per_update = n_steps * BATCH * (dd * 2 * D * D + dm * 2 * D * M)
    expected = (n_train // BATCH) * per_update
    got = linear_epoch_flops(
        sb.flow_from_name(method), n_steps=n_steps, n_train=n_train
    )
    assert got == pytest.approx(expected, rel=0.1)  # the rest: elementwise ops and Adam


def test_epoch_flops_are_linear_in_steps_and_updates():
    f5, f10, f20 = (linear_epoch_flops(sb.R(), n_steps=n) for n in (5, 10, 20))
    assert f20 - f10 == pytest.approx(2 * (f10 - f5), rel=0.01)
    assert f10 - f5 > 0.9 * f5  # nearly proportional: little work outside the time loop
    assert linear_epoch_flops(sb.R(), n_train=32) == pytest.approx(
        2 * linear_epoch_flops(sb.R(), n_train=16), rel=0.01
    )


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
    assert "| cartpole | n_poles=1 | 5 | S |" in format_bench_table(rows)


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
    for task, difficulty, steps, method, *numbers in rows:
        assert difficulty == "n_poles=2" and steps == "100"
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
