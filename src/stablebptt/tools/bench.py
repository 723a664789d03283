"""Throughput of training: seconds per epoch, updates per second, FLOPs and the share of a matmul peak.

Every task × method is timed at the paper's settings (256 training states,
mini-batches of 8, 32 updates per epoch, each task's default difficulty). The
program timed is the one a run executes: :func:`stablebptt.training.compile_epoch`
builds it from the run's configuration (its backward pass, ``remat`` and the
task's own settings included), an epoch's updates and then the training and
test losses; it is run once to warm up, then the median of ``epochs`` runs is taken.

FLOPs come from :mod:`stablebptt.tools.flops`.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from .. import tables, validate
from .flops import program_flops
from ..engine.flows import FLOW_NAMES
from ..tasks import DIFFICULTY, TASKS
from ..training import EpochProgram, compile_epoch
from ..runs import memory
from ..runs.config import RunConfig
from ..runs.single import build

__all__ = [
    "bench_program",
    "format_bench_table",
    "is_bench_table",
    "matmul_peak",
    "parse_names",
    "run_bench",
]

log = logging.getLogger(__name__)

TITLE = "# stablebptt bench"
"""The first line of every table :func:`format_bench_table` writes."""


# --- matmul peak -------------------------------------------------------------
def _default_matmul_size(platform: str) -> int:
    return 1024 if platform == "cpu" else 8192


def matmul_peak(
    dtype: str = "float32", *, size: int | None = None, repeats: int = 5
) -> dict:
    """Speed of one jitted ``size × size`` matrix product on the default device.

    Returns ``{"size", "seconds", "gflops_per_second"}``: the median time of
    ``repeats`` calls after one warm-up [s] and ``2·size³ / seconds / 1e9``.
    ``size`` defaults to 1024 on CPU and 8192 on accelerators.
    """
    size = size or _default_matmul_size(jax.devices()[0].platform)
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (size, size), dtype)
    b = jax.random.normal(kb, (size, size), dtype)
    matmul = jax.jit(jnp.matmul).lower(a, b).compile()
    jax.block_until_ready(matmul(a, b))
    seconds = statistics.median(_timed(lambda: matmul(a, b)) for _ in range(repeats))
    return {
        "size": size,
        "seconds": seconds,
        "gflops_per_second": 2.0 * size**3 / seconds / 1e9,
    }


def _timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - start


# --- the benchmark -------------------------------------------------------------
def parse_names(text: str | Sequence[str], kind: str) -> list[str]:
    """``"cartpole,quantum"`` (or a list) to validated names; ``kind`` is ``"task"`` or ``"method"``.

    Raises a one-line ValueError naming the valid choices.
    """
    valid = tuple(TASKS) if kind == "task" else FLOW_NAMES
    return list(dict.fromkeys(validate.names(text, kind, valid, upper=kind == "method")))


def _time_epochs(program: EpochProgram, epochs: int) -> list[float]:
    """Seconds of ``epochs`` consecutive epochs after one warm-up epoch; training state carried on."""
    params, opt_state = program.params, program.opt_state
    times = []
    for i in range(epochs + 1):
        start = time.perf_counter()
        params, opt_state, stats, losses = program.epoch(params, opt_state)
        jax.block_until_ready((params, opt_state, stats, losses))
        if i:
            times.append(time.perf_counter() - start)
    return times


def bench_program(config: RunConfig, runs: int = 1) -> EpochProgram:
    """The epoch program a run of ``config`` executes, for ``runs`` copies of the run trained together."""
    setup = build(config)
    return compile_epoch(
        [setup.policy] * runs, setup.task.problem, [setup.train_x] * runs, [setup.test_x] * runs,
        flows=[config.flow()] * runs, optimizer=config.optimizer(), backward=config.backward(setup.task), batch_size=config.batch_size,
    )  # fmt: skip


def run_bench(
    tasks: str | Sequence[str] = ("cartpole", "repulsion", "quantum"),
    methods: str | Sequence[str] = ("R", "M", "C", "S"),
    *,
    epochs: int = 3,
    dtype: str = "float32",
    n_train: int = 256,
    batch_size: int = 8,
    task_options: dict[str, dict] | None = None,
    runs: int = 1,
    remat: bool | int = 0,
    peak: dict | None = None,
) -> list[dict]:
    """Time one epoch of every task × method; one dict per pair.

    Args:
        tasks, methods: names (or comma-separated strings) to benchmark.
        epochs: timed epochs per pair (after one warm-up epoch); the median is reported.
        dtype: ``"float32"`` or ``"float64"`` (needs 64-bit JAX enabled).
        n_train, batch_size: training states and samples per update (the paper: 256, 8).
        task_options: per task, overrides of its configuration (e.g. ``{"cartpole": {"n_steps": 10}}``).
        runs: how many runs train together as one ``vmap``ped program, as in a
            sweep group (1: a single run). Seconds are per epoch of all of
            them; updates/s and GFLOP/s count every run's work.
        remat: the runs' ``remat`` setting (:class:`~stablebptt.runs.config.RunConfig`).
        peak: a :func:`matmul_peak` result to compare with; measured here if None.

    A line of progress is logged (INFO) after each pair.

    Returns:
        Rows with ``task, difficulty, n_steps, method, runs, updates_per_epoch,
        seconds_per_epoch`` [s] (an epoch of the run's program: its updates,
        then the training and test losses), ``updates_per_second``, ``compile_seconds``
        [s], ``flops_per_epoch`` [FLOP], ``gflops_per_second``,
        ``peak_gflops_per_second``, ``peak_fraction`` and the ``device``,
        ``dtype``, ``jax_version``, ``n_train``, ``batch_size``, ``epochs`` and
        ``peak_size`` of the measurement.
    """
    validate.positive_int("epochs", epochs)
    validate.positive_int("runs", runs)
    tasks, methods = parse_names(tasks, "task"), parse_names(methods, "method")
    task_options = task_options or {}
    settings = dict(dtype=dtype, n_train=n_train, batch_size=batch_size, remat=remat)
    configs = [RunConfig.from_options(settings, task=t, task_options=task_options.get(t, {}), method=m) for t in tasks for m in methods]
    for config in configs:
        memory.check_fits(config, together={"runs": runs})  # the runs train as one program
    # a float64 run without 64-bit JAX fails here, before any work
    configs[0].jnp_dtype()
    peak = peak or matmul_peak(dtype)
    device = jax.devices()[0]
    rows = []
    for config in configs:
        program = bench_program(config, runs)  # copies of the run: identical copies are computed like any others
        compile_seconds = program.compile_seconds
        seconds = statistics.median(_time_epochs(program, epochs))
        flops = program_flops(program.epoch_fn, *program.args)
        updates = config.n_train // config.batch_size
        knob = DIFFICULTY[config.task]
        row = {
            "task": config.task,
            "difficulty": f"{knob}={config.task_options[knob]}",
            "n_steps": config.task_options["n_steps"],
            "method": config.method,
            "runs": runs,
            "updates_per_epoch": updates,
            "seconds_per_epoch": seconds,
            "updates_per_second": runs * updates / seconds,
            "compile_seconds": compile_seconds,
            "flops_per_epoch": flops,
            "gflops_per_second": flops / seconds / 1e9,
            "peak_gflops_per_second": peak["gflops_per_second"],
            "peak_fraction": flops / seconds / 1e9 / peak["gflops_per_second"],
            "device": f"{device.device_kind} ({device.platform})",
            "dtype": config.dtype,
            "jax_version": jax.__version__,
            "n_train": config.n_train,
            "batch_size": config.batch_size,
            "epochs": epochs,
            "peak_size": peak["size"],
        }
        rows.append(row)
        log.info("%s %s: %.4g s/epoch, %.3g GFLOP/s", config.task, config.method, seconds, row["gflops_per_second"])
    return rows


def _num(x: float) -> str:
    """Four significant digits, never in exponent notation (more digits for large numbers)."""
    if not math.isfinite(x) or x == 0:
        return str(x)
    return f"{x:.{max(0, 3 - math.floor(math.log10(abs(x))))}f}"


def is_bench_table(path: Path) -> bool:
    """Whether the file at ``path`` begins as a table of :func:`format_bench_table` does (so that ``bench --out`` may replace it)."""
    with open(path, "rb") as f:
        return f.read(len(TITLE) + 1) == (TITLE + "\n").encode()


def format_bench_table(rows: Sequence[dict]) -> str:
    """The rows of :func:`run_bench` as markdown: a header naming device, dtype and JAX, then the table."""
    if not rows:
        raise ValueError("no benchmark rows to format")
    first = rows[0]
    size = first["peak_size"]
    epochs = f"{first['epochs']} timed epoch" + ("s" if first["epochs"] != 1 else "")
    lines = [
        TITLE,
        "",
        f"device: {first['device']}; dtype {first['dtype']}; JAX {first['jax_version']}  ",
        f"matmul peak: {_num(first['peak_gflops_per_second'])} GFLOP/s ({size}×{size} {first['dtype']} matrix product)  ",
        f"settings: {first['n_train']} training states, mini-batches of {first['batch_size']}, "
        + f"{first['updates_per_epoch']} updates per epoch and run, then the training and test losses (the run's program); "
        + f"median of {epochs} after one warm-up epoch; "
        + "runs: trained together as one vmapped program",
        "",
    ]
    table = tables.render(
        ("task", "difficulty", "steps", "method", "runs", "s/epoch", "updates/s", "GFLOP/epoch", "GFLOP/s", "% of peak"),
        (
            (r["task"], r["difficulty"], r["n_steps"], r["method"], r["runs"], _num(r["seconds_per_epoch"]), _num(r["updates_per_second"]),
             _num(r["flops_per_epoch"] / 1e9), _num(r["gflops_per_second"]), _num(100 * r["peak_fraction"]))
            for r in rows
        ),
        right=(2, 4, 5, 6, 7, 8, 9),
    )  # fmt: skip
    return "\n".join([*lines, table]) + "\n"
