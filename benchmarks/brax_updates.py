"""Seconds per policy update on a Brax environment: stablebptt's R, M, C against Brax's APG, equal batch and horizon.

    python benchmarks/brax_updates.py [--env inverted_double_pendulum] [--horizon 32 100] [--batch 8] [--updates 16]

Needs ``pip install 'stablebptt[brax]'``. stablebptt: one training epoch of
``--updates`` mini-batch updates (a compiled ``lax.scan``), timed after a
warm-up epoch, median of 3. APG: ``brax.training.agents.apg.train`` with
``num_envs = batch`` and ``horizon_length = horizon``; its own ``training/sps``
of the second training epoch (the first includes compilation). Prints seconds
per update and simulator steps per second (batch × horizon per update).
"""

from __future__ import annotations

import argparse
import statistics

import jax

import stablebptt as sb
from stablebptt.paper.brax_peer import import_apg
from stablebptt.simulators import brax as brax_sim
from stablebptt.tasks.brax_env import BraxConfig, make_policy


def ours(env, name: str, horizon: int, batch: int, updates: int) -> dict[str, float]:
    problem = brax_sim.brax_problem(env, horizon)
    policy = make_policy(env, BraxConfig(env=name, n_steps=horizon), jax.random.key(0))
    train_x = brax_sim.reset(env, jax.random.key(1), batch * updates)
    test_x = brax_sim.reset(env, jax.random.key(2), batch)
    out = {}
    for method in ("R", "M", "C"):
        result = sb.train(policy, problem, train_x, test_x, flow=sb.flow_from_name(method), optimizer=sb.make_optimizer("none"), epochs=4, batch_size=batch)
        out[method] = statistics.median(r["seconds"] for r in result.history[1:]) / updates
    return out


def apg(env, horizon: int, batch: int, updates: int) -> float:
    apg_train = import_apg()

    seen = []
    apg_train.train(
        environment=env, episode_length=horizon, policy_updates=2 * updates, horizon_length=horizon,
        num_envs=batch, num_evals=3, num_eval_envs=batch, progress_fn=lambda it, m: seen.append(m),
    )  # fmt: skip
    return batch * horizon / float(seen[-1]["training/sps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="inverted_double_pendulum")
    parser.add_argument("--horizon", type=int, nargs="+", default=[32, 100])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--updates", type=int, default=16)
    args = parser.parse_args()
    env = brax_sim.get_env(args.env)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.env}, batches of {args.batch}")
    print(f"{'horizon':>7}  {'method':<8} {'s/update':>9} {'sim steps/s':>12}")
    for horizon in args.horizon:
        times = {**ours(env, args.env, horizon, args.batch, args.updates), "APG": apg(env, horizon, args.batch, args.updates)}
        for method, seconds in times.items():
            print(f"{horizon:>7}  {method:<8} {seconds:>9.4f} {args.batch * horizon / seconds:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
