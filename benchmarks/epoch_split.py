"""Where an epoch of a run's program goes: its updates and its evaluation.

    python benchmarks/epoch_split.py [--tasks cartpole repulsion quantum] [--methods R C] [--repeats 10]

For each task × method at the paper's settings (256/256 states, batches of 8,
32 updates) three programs are timed in one process, their calls interleaved
(median of ``--repeats`` after a warm-up each), so that load on the machine
touches all three alike:

- epoch: the program a run executes every epoch (``stablebptt.training.compile_epoch``):
  the updates, then the training and test losses;
- evaluation: the same compiled program without its updates (what gives a run's losses before training);
- updates alone: ``jax.jit`` of the update scan by itself
  (``make_epoch_functions(...).train_epoch``, with the run's backward pass), the
  program ``stablebptt bench`` timed before it timed the run's own.

``epoch − evaluation − updates alone`` is what holding both in one program costs (or saves).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

from stablebptt.runs.config import RunConfig
from stablebptt.runs.single import build
from stablebptt.tools.bench import bench_program
from stablebptt.training import make_epoch_functions, split_batches


def _seconds(call) -> float:
    began = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["cartpole", "repulsion", "quantum"])
    parser.add_argument("--methods", nargs="+", default=["R", "C"])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    print(f"# an epoch's split\n\nJAX {jax.__version__} on {jax.devices()[0].device_kind}; median of {args.repeats} interleaved calls [ms]\n")
    print("| task | method | epoch | evaluation | updates alone | epoch − evaluation − updates |")
    print("|---|---|---:|---:|---:|---:|")
    for task in args.tasks:
        for method in args.methods:
            config = RunConfig.from_options(task=task, method=method)
            program = bench_program(config)
            setup = build(config)
            fns = make_epoch_functions(setup.policy, setup.task.problem, config.flow(), config.optimizer(), backward=config.backward(setup.task))
            batches = split_batches(setup.train_x, config.batch_size)
            updates = jax.jit(fns.train_epoch).lower(program.params, program.opt_state, batches).compile()
            calls = {
                "epoch": lambda: program.epoch(program.params, program.opt_state),
                "evaluation": lambda: program.losses(program.params, program.opt_state),
                "updates": lambda: updates(program.params, program.opt_state, batches),
            }
            for call in calls.values():
                _seconds(call)  # warm-up
            times: dict[str, list[float]] = {name: [] for name in calls}
            for _ in range(args.repeats):
                for name, call in calls.items():
                    times[name].append(_seconds(call))
            ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
            rest = ms["epoch"] - ms["evaluation"] - ms["updates"]
            print(f"| {task} | {method} | {ms['epoch']:.1f} | {ms['evaluation']:.1f} | {ms['updates']:.1f} | {rest:+.1f} |", flush=True)


if __name__ == "__main__":
    main()
