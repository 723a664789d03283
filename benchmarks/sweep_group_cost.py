"""Where a sweep group's wall time goes: compiling, training, evaluating, writing.

Trains one group of a paper-scale sweep (256/256 states, batches of 8, the
runs of one difficulty and method batched) for a few epochs through the very
code a sweep runs (:func:`stablebptt.sweeps.groups.train_group`), and prints the
split that every run's ``summary.json`` records (``seconds_split``), plus the
time spent building and finishing the run folders. The per-epoch parts are
extrapolated to the protocol's 1000 epochs.

The epoch program computes the losses after the updates; to say what that
evaluation costs, the same group's program (``stablebptt.training.compile_epoch``)
is then timed with and without its updates (the evaluation inside one compiled
program, as training runs it), against the evaluation as the trainer ran it
long ago (one jitted call per run and set).

    python benchmarks/sweep_group_cost.py --experiment cartpole --level 2 --method C --clips value,norm --epochs 50
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from stablebptt.sweeps.groups import train_group
from stablebptt.sweeps.presets import parse_levels
from stablebptt.runs.single import build, fresh_state
from stablebptt.sweeps.spec import SweepSpec
import optax

from stablebptt.training import compile_epoch, make_epoch_functions


def _median_seconds(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compiles
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def evaluation_costs(group, repeats: int) -> dict:
    """Seconds per epoch of one group's program, of its evaluation alone (fused) and as separate calls."""
    setups = [build(run.config) for run in group]
    config, problem = group[0].config, setups[0].task.problem
    states = [fresh_state(s) for s in setups]
    program = compile_epoch(
        [s.policy for s in setups], problem, [s.train_x for s in setups], [s.test_x for s in setups],
        flows=[run.config.flow() for run in group], optimizer=config.optimizer(), opt_states=[o for _, o in states],
        backward=config.backward(setups[0].task), batch_size=config.batch_size,
    )  # fmt: skip
    one = jax.jit(make_epoch_functions(setups[0].policy, problem, None, optax.identity()).evaluate)

    def separate():
        return [one(p, x) for (p, _), s in zip(states, setups, strict=True) for x in (s.train_x, s.test_x)]

    epoch = _median_seconds(lambda: program.epoch(program.params, program.opt_state), repeats)
    fused = _median_seconds(lambda: program.losses(program.params, program.opt_state), repeats)
    return {
        "updates (the epoch program less its evaluation)": epoch - fused,
        "evaluation, fused (the epoch program without updates)": fused,
        "evaluation, one call per run and set": _median_seconds(separate, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="cartpole", choices=("cartpole", "repulsion", "quantum"))
    parser.add_argument("--level", default="2", help="difficulty level (default 2)")
    parser.add_argument("--method", default="C")
    parser.add_argument("--clips", default="value,norm")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=50, help="epochs to time (default 50)")
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5, help="timings of the separate pieces (median; default 5)")
    args = parser.parse_args()

    spec = SweepSpec.from_preset(
        args.experiment, "paper", epochs=args.epochs, seeds=args.seeds,
        levels=parse_levels(args.experiment, args.level), methods=(args.method,), clips=tuple(args.clips.split(",")),
    )  # fmt: skip
    (group,) = spec.groups()
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        train_group(group, Path(tmp), checkpoint_every=args.checkpoint_every)
        wall = time.perf_counter() - began
        summary = json.loads((Path(tmp) / group[0].path / "summary.json").read_text())
    split = summary["seconds_split"]
    parts = dict(split)
    parts["build, finish and the rest"] = wall - sum(split.values())
    per_epoch = {k: split[k] / args.epochs for k in ("epochs", "record")}
    at_1000 = {
        "compile": split["compile"],
        **{k: v * 1000 for k, v in per_epoch.items()},
        "build, finish and the rest": parts["build, finish and the rest"],
    }
    total = sum(at_1000.values())
    pieces = evaluation_costs(group, args.repeats)
    print(f"{args.experiment} {spec.level_dir(spec.levels[0])} {args.method}, {len(group)} runs "
          f"(clips {args.clips} x {args.seeds} seeds), {args.epochs} epochs: {wall:.1f} s wall")  # fmt: skip
    print()
    print(f"| part | {args.epochs} epochs [s] | per epoch [ms] | at 1000 epochs [s] | share at 1000 |")
    print("|---|---|---|---|---|")
    for key, seconds in parts.items():
        per = f"{1000 * per_epoch[key]:.1f}" if key in per_epoch else ""
        print(f"| {key} | {seconds:.2f} | {per} | {at_1000[key]:.1f} | {100 * at_1000[key] / total:.1f} % |")
    print()
    print("| piece, timed apart | per epoch [ms] | share of the epochs' time |")
    print("|---|---|---|")
    for key, seconds in pieces.items():
        print(f"| {key} | {1000 * seconds:.1f} | {100 * seconds / per_epoch['epochs']:.1f} % |")
    updates = pieces["updates (the epoch program less its evaluation)"]
    evaluating = per_epoch["epochs"] - updates
    overhead = total - 1000 * updates
    print(f"\nevaluating inside the epoch program (epochs minus updates alone): {1000 * evaluating:.1f} ms per epoch")
    print(f"not updating (compiling + evaluating + writing + the rest) at 1000 epochs: {100 * overhead / total:.1f} %")


if __name__ == "__main__":
    main()
