"""The memory estimate of a run (stablebptt.runs.memory) against the peak memory of one epoch of it.

    PYTHONPATH=src python benchmarks/memory_estimate.py

Each setting runs in a fresh interpreter: one epoch of cart pole (2 poles, method R); printed are the
estimate and the growth of the process's peak resident memory over that of the same interpreter with
the default sizes (JAX, XLA and the compiled programs subtracted that way). Both in MiB.
"""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import resource, sys
from stablebptt.runs.config import RunConfig
from stablebptt.runs import memory
from stablebptt.runs.single import build
from stablebptt.training import train
config = RunConfig.from_options(task="cartpole", task_options={"n_poles": 2, "n_steps": int(sys.argv[2])}, method="R",
                                epochs=1, n_train=int(sys.argv[1]), n_test=256)
setup = build(config)
train(setup.policy, setup.task.problem, setup.train_x, setup.test_x, flow=config.flow(), optimizer=config.optimizer(),
      epochs=1, batch_size=config.batch_size, backward=config.backward(setup.task))
print(memory.estimate(config), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def measure(n_train: int, n_steps: int) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n_train), str(n_steps)], capture_output=True, text=True, check=True).stdout
    estimate, peak = out.split()[-2:]
    return int(estimate), int(peak)


def main() -> None:
    base_estimate, base_peak = measure(256, 100)
    print("n_train  n_steps  estimate [MiB]  measured peak growth [MiB]")
    for n_train, n_steps in [(2**18, 100), (256, 20_000)]:
        estimate, peak = measure(n_train, n_steps)
        print(f"{n_train:7d}  {n_steps:7d}  {(estimate - base_estimate) / 2**20:14.1f}  {(peak - base_peak) / 2**20:26.1f}")


if __name__ == "__main__":
    main()
