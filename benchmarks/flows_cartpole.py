"""Seconds per epoch and updates per second of R, M, C and S on cart pole (the paper's protocol).

    python benchmarks/flows_cartpole.py [--poles 1 4] [--epochs 6] [--repeats 3]

Each method trains from the same data and initial weights; the epoch program
is compiled before timing, the first epoch is dropped and the median of the
rest is reported, and methods are interleaved over ``--repeats`` rounds so
that drifts of the machine hit all of them alike. Also prints the C/R ratio
and, for comparison, C computed with plain autodiff (two vmapped passes).
"""

from __future__ import annotations

import argparse
import statistics

import jax

import stablebptt as sb
from stablebptt.tasks import cartpole


def seconds_per_epoch(task, policy, train_x, test_x, flow, epochs, backward) -> float:
    result = sb.train(policy, task.problem, train_x, test_x, flow=flow, optimizer=sb.make_optimizer("none"), epochs=epochs, backward=backward)
    return statistics.median(r["seconds"] for r in result.history[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poles", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; 256 training states, batches of 8, 32 updates per epoch, 100 steps")
    print(f"{'poles':>5}  {'method':<12} {'s/epoch':>8} {'updates/s':>10}")
    for poles in args.poles:
        task = cartpole.make_task(cartpole.CartPoleConfig(n_poles=poles))
        k_train, k_test, k_init = jax.random.split(jax.random.key(42), 3)
        policy = task.make_policy(k_init)
        train_x = task.sample_initial_states(k_train, 256)
        test_x = task.sample_initial_states(k_test, 256)
        variants = {
            "R": (sb.R(), sb.SharedBackward()),
            "M": (sb.M(), sb.SharedBackward()),
            "C": (sb.C(), sb.SharedBackward()),
            "S": (sb.S(), sb.SharedBackward()),
            "R autodiff": (sb.R(), sb.AutodiffBackward()),
            "C autodiff": (sb.C(), sb.AutodiffBackward()),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, (flow, backward) in variants.items():
                times[name].append(seconds_per_epoch(task, policy, train_x, test_x, flow, args.epochs, backward))
        for name, ts in times.items():
            t = statistics.median(ts)
            print(f"{poles:>5}  {name:<12} {t:>8.4f} {32 / t:>10.1f}")
        ratio = statistics.median(times["C"]) / statistics.median(times["R"])
        ratio_ad = statistics.median(times["C autodiff"]) / statistics.median(times["R autodiff"])
        print(f"{poles:>5}  C/R = {ratio:.2f} (shared forward pass); with plain autodiff C/R = {ratio_ad:.2f}")


if __name__ == "__main__":
    main()
