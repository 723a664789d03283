"""Where one training epoch's time goes: XLA's own per-operation profile, summarised.

    python benchmarks/profile_epoch.py [--tasks cartpole repulsion quantum] [--methods R C] [--runs 1 12] [--top 8]

For each task × method (paper settings: 256 states, batches of 8, 32 updates)
it compiles the epoch program of ``--runs`` runs trained together (1: a
single run; more: a batch of that many runs as one ``vmap``ped program, as
a sweep group) with the builder runs use (``stablebptt.training.compile_epoch``,
through ``stablebptt.tools.bench.bench_program``: the run's backward pass, its
updates and the losses after them), times it without the profiler (median of
3 epochs after a warm-up), then records one epoch with ``jax.profiler`` and reads XLA's trace:
how many operations (thunks) ran per update and per rollout step, their
median duration, the share of the time spent in matrix products, and the
operations that took longest in total.

It also times a floor that no rollout of this shape can beat: a scan of one
``(8·runs) × 100 @ 100 × 100`` product and tanh, the inner layer of the
cart-pole controller, as GFLOP/s and share of a 1024² matrix product.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp

from stablebptt.runs.config import RunConfig
from stablebptt.tools.bench import bench_program, matmul_peak
from stablebptt.tools.flops import program_flops
from stablebptt.training import EpochProgram

UPDATES = 32


def epoch_program(task: str, method: str, runs: int) -> tuple[EpochProgram, float, int]:
    config = RunConfig.from_options(task=task, method=method)
    program = bench_program(config, runs)
    return program, program_flops(program.epoch_fn, *program.args), config.task_options["n_steps"]


def timed_epochs(program: EpochProgram, k=3) -> float:
    params, state = program.params, program.opt_state
    times = []
    for i in range(k + 1):
        start = time.perf_counter()
        params, state, stats, losses = program.epoch(params, state)
        jax.block_until_ready((stats, losses))
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def trace_ops(program: EpochProgram) -> dict[str, list[float]]:
    """Durations [µs] of every XLA operation of one epoch, by operation name."""
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            jax.block_until_ready(program.epoch(program.params, program.opt_state))
        (path,) = glob.glob(f"{d}/**/*perfetto_trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    ops: dict[str, list[float]] = collections.defaultdict(list)
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or name.startswith(("$", "Thunk", "while", "Slinky", "conditional", "cond.")):
            continue  # Python frames, executor bookkeeping and loop containers (their bodies are counted)
        ops[name].append(float(e.get("dur", 0)))
    return ops


def op_sources(compiled) -> dict[str, str]:
    """XLA operation name -> the JAX operation it came from (the end of its ``op_name`` metadata)."""
    sources = {}
    for match in re.finditer(r"%([\w.\-]+) = [^\n]*?metadata=\{op_name=\"([^\"]+)\"", compiled.as_text()):
        parts = match.group(2).split("/")
        sources[match.group(1)] = "/".join(p for p in parts[-2:] if p)
    return sources


def dense_floor(rows: int, peak: float) -> tuple[float, float]:
    w = jax.random.normal(jax.random.key(0), (100, 100)) * 0.1
    x = jax.random.normal(jax.random.key(1), (rows, 100))
    loop = jax.jit(lambda w, x: jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=1000)[0])
    jax.block_until_ready(loop(w, x))
    seconds = statistics.median(timed(lambda: loop(w, x)) for _ in range(5)) / 1000
    gflops = 2 * rows * 100 * 100 / seconds / 1e9
    return seconds * 1e6, gflops / peak


def timed(call) -> float:
    start = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["cartpole", "repulsion", "quantum"])
    parser.add_argument("--methods", nargs="+", default=["R", "C"])
    parser.add_argument("--runs", type=int, nargs="+", default=[1])
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()

    peak = matmul_peak()["gflops_per_second"]
    device = jax.devices()[0]
    print(f"# epoch profile\n\njax {jax.__version__} on {device.device_kind}; matmul peak {peak:.1f} GFLOP/s; {UPDATES} updates per epoch\n")
    for runs in args.runs:
        us, share = dense_floor(8 * runs, peak)
        print(f"floor, {8 * runs}×100 @ 100×100 + tanh in a scan: {us:.2f} µs per step, {100 * share:.1f} % of peak")
    for task in args.tasks:
        for method in args.methods:
            for runs in args.runs:
                program, flops, n_steps = epoch_program(task, method, runs)
                seconds = timed_epochs(program)
                ops = trace_ops(program)
                sources = op_sources(program.compiled)
                durations = [d for ds in ops.values() for d in ds]
                total = sum(durations)
                dots = sum(sum(ds) for name, ds in ops.items() if "dot" in name or "ynn" in name or "xnn" in name or "gemm" in name)
                print(f"\n## {task} {method}, {runs} run(s): {seconds * 1e3:.1f} ms/epoch, {flops / seconds / 1e9:.1f} GFLOP/s ({100 * flops / seconds / 1e9 / peak:.1f} % of peak)\n")
                print(f"- {len(durations) / UPDATES:.0f} operations per update, {len(durations) / UPDATES / n_steps:.1f} per rollout step; median {statistics.median(durations):.2f} µs each")
                print(f"- traced operation time {total / 1e3:.1f} ms (the profiler's own overhead included); matrix products {100 * dots / total:.0f} % of it")
                print("- longest in total:")
                for name, ds in sorted(ops.items(), key=lambda kv: -sum(kv[1]))[: args.top]:
                    where = f" ({sources[name]})" if name in sources else ""
                    print(f"  - `{name}`{where}: {len(ds) / UPDATES:.0f} per update, {statistics.median(ds):.2f} µs each, {100 * sum(ds) / total:.1f} %")


if __name__ == "__main__":
    main()
