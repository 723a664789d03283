"""Peak memory and seconds per update of cart pole at long horizons, with and without checkpointing.

    python benchmarks/remat_memory.py [--steps 1000 10000 100000] [--method C] [--repeats 3]

Each configuration runs in a fresh process: one update (``value_and_update``
on a mini-batch of 8, 2 poles, the paper's network) is compiled, run once,
then timed as the median of ``--repeats`` calls. Reported: the XLA buffer
the compiled update needs (``memory_analysis().temp_size_in_bytes``: what
grows with the horizon), the peak resident memory of the whole process
(JAX runtime included), and seconds per update. ``dt`` stays the paper's
0.01 s, so the horizon is ``steps × 0.01`` s.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import jax

from stablebptt.engine.remat import segment_length


def measure(steps: int, remat: bool, method: str, repeats: int, backward: str) -> dict:
    import stablebptt as sb
    from stablebptt.tasks import cartpole

    config = cartpole.CartPoleConfig(n_poles=2, n_steps=steps, horizon=steps * 0.01)
    task = cartpole.make_task(config)
    policy = task.make_policy(jax.random.key(0))
    x0 = task.sample_initial_states(jax.random.key(1), 8)
    strategy = {"shared": sb.SharedBackward, "autodiff": sb.AutodiffBackward}[backward](remat=remat)
    flow = sb.flow_from_name(method)
    update = jax.jit(lambda p, x: sb.value_and_update(flow, p, task.problem, x, backward=strategy)[:2])
    compiled = update.lower(policy, x0).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    jax.block_until_ready(compiled(policy, x0))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(policy, x0))
        times.append(time.perf_counter() - t0)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"steps": steps, "remat": remat, "temp_bytes": temp, "peak_rss_bytes": peak_rss, "seconds": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--method", default="C")
    parser.add_argument("--backward", choices=("shared", "autodiff"), default="shared")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: "steps,remat" measured in this process
    args = parser.parse_args()
    if args.one:
        steps, remat = args.one.split(",")
        print(json.dumps(measure(int(steps), remat == "1", args.method, args.repeats, args.backward)))
        return

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; cart pole, 2 poles, batch 8, method {args.method}, {args.backward} backward pass")
    print(f"{'steps':>7}  {'remat':<16} {'XLA buffer':>11} {'peak RSS':>10} {'s/update':>9}")
    for steps in args.steps:
        for remat in (False, True):
            cmd = [sys.executable, __file__, "--one", f"{steps},{int(remat)}", "--method", args.method, "--backward", args.backward, "--repeats", str(args.repeats)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{steps:>7}  {'on' if remat else 'off':<16} failed: {done.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            label = f"segments of {segment_length(steps, True)}" if remat else "off"
            print(f"{steps:>7}  {label:<16} {r['temp_bytes'] / 2**20:>8.1f} MiB {r['peak_rss_bytes'] / 2**20:>6.0f} MiB {r['seconds']:>9.4f}", flush=True)


if __name__ == "__main__":
    main()
