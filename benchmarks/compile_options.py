"""Do XLA's compile-time options buy a faster compile without changing what a run learns?

    python benchmarks/compile_options.py [--flows R C] [--epochs 20] [--repeats 2]

Each XLA option below is handed to the run's epoch program only (through
``jax.stages.Lowered.compile(compiler_options=...)``), and a cart pole run
(``sb.make_task("cartpole")``, 256 + 256 states, seed 42, clip norm) trains
``--epochs`` epochs in a fresh process (caches empty). Printed per option and
flow: the seconds ``sb.train`` reports for compiling and for the epochs
(medians), a hash of the trained weights and the final test loss. A hash
that differs from the row without options means the option changed the
arithmetic (reduction order, emitted kernels), and after a few epochs the run
ends elsewhere: such an option cannot be used for runs that must reproduce
their committed numbers.

Measured on the project's 2-core CPU (shared with two sweeps at nice 19),
JAX 0.10.2, with the defaults (``--epochs 20 --repeats 2``):

| option | flow | compile [s] | epochs [s] | test loss | same weights as without options |
|---|---|---:|---:|---:|---|
| none | R | 2.06 | 2.79 | 0.3262 | yes |
| none | C | 2.36 | 3.15 | 0.4302 | yes |
| ``xla_llvm_disable_expensive_passes`` | R | 1.78 | 2.70 | 0.3262 | yes |
| ``xla_llvm_disable_expensive_passes`` | C | 2.13 | 2.98 | 0.4302 | yes |
| ``xla_backend_optimization_level=1`` | R | 1.79 | 2.46 | 0.4056 | no |
| ``xla_backend_optimization_level=1`` | C | 2.32 | 3.40 | 0.4180 | no |
| ``xla_cpu_use_fusion_emitters=false`` | R | 1.51 | 3.60 | 0.4490 | no |
| ``xla_cpu_use_fusion_emitters=false`` | C | 1.77 | 4.04 | 0.4049 | no |
| ``xla_cpu_parallel_codegen_split_count=1`` | R | 2.23 | 3.40 | 0.3262 | yes |
| ``xla_cpu_parallel_codegen_split_count=1`` | C | 2.76 | 3.87 | 0.4302 | yes |

The options that compile markedly faster change the numbers: the test loss
after 20 epochs moves by a quarter and more, as last-bit differences grow in
training. Of those that keep them, skipping LLVM's expensive passes saves
0.2 to 0.3 s (about a tenth of the compile; the run against the plain step of
``compile_time.py`` stays near 2x) and ran these epochs no slower, but it is
not measured on the other tasks' long programs, where a paper-scale run
spends its hours, so it is not taken. Runs compile with XLA's defaults (the
test suite, which compares with tolerances, compiles with the older emitters:
``tests/conftest.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys

OPTIONS = {
    "none": {},
    "xla_llvm_disable_expensive_passes": {"xla_llvm_disable_expensive_passes": True},
    "xla_backend_optimization_level=1": {"xla_backend_optimization_level": 1},
    "xla_cpu_use_fusion_emitters=false": {"xla_cpu_use_fusion_emitters": False},
    "xla_cpu_parallel_codegen_split_count=1": {"xla_cpu_parallel_codegen_split_count": 1},
}


def _child(option: str, flow: str, epochs: int) -> dict:
    import equinox as eqx
    import jax
    import jax.stages
    import numpy as np

    jax.config.update("jax_enable_compilation_cache", False)
    compile_ = jax.stages.Lowered.compile
    extra = OPTIONS[option]

    def with_options(self, compiler_options=None):
        return compile_(self, compiler_options={**extra, **(compiler_options or {})} or None)

    jax.stages.Lowered.compile = with_options

    import stablebptt as sb

    jax.jit(lambda x: x + 1).lower(1.0).compile()  # XLA's one-time start
    task = sb.make_task("cartpole")
    k_train, k_test, k_init = jax.random.split(jax.random.key(42), 3)
    policy = task.make_policy(k_init)
    train_x, test_x = task.sample_initial_states(k_train, 256), task.sample_initial_states(k_test, 256)
    result = sb.train(policy, task.problem, train_x, test_x, flow=sb.flow_from_name(flow), optimizer=sb.make_optimizer("norm"), epochs=epochs)
    weights = b"".join(np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(eqx.filter(result.policy, eqx.is_array)))
    return {
        "compile": result.seconds["compile"],
        "epochs": result.seconds["epochs"],
        "hash": hashlib.sha1(weights).hexdigest()[:12],
        "test_loss": float(result.history[-1]["test_loss"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", nargs="+", default=["R", "C"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], int(args.child[2]))))
        return

    def measure(option: str, flow: str) -> dict:
        env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
        done = subprocess.run([sys.executable, __file__, "--child", option, flow, str(args.epochs)], capture_output=True, text=True, env=env, check=False)
        if done.returncode:
            raise RuntimeError(done.stderr[-3000:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    found: dict[tuple[str, str], list[dict]] = {(o, f): [] for o in OPTIONS for f in args.flows}
    for _ in range(args.repeats):  # interleaved, so that a change of load touches every option
        for key in found:
            found[key].append(measure(*key))
    print(f"# XLA options for the epoch program: cart pole, clip norm, {args.epochs} epochs, median of {args.repeats} fresh processes\n")
    print("| option | flow | compile [s] | epochs [s] | test loss | weights hash | same weights as without options |")
    print("|---|---|---:|---:|---:|---|---|")
    for (option, flow), runs in found.items():
        hashes = {r["hash"] for r in runs}
        base = {r["hash"] for r in found[("none", flow)]}
        print(f"| {option} | {flow} | {statistics.median(r['compile'] for r in runs):.2f} | {statistics.median(r['epochs'] for r in runs):.2f} "
              f"| {runs[0]['test_loss']:.4f} | {', '.join(sorted(hashes))} | {'yes' if hashes == base else 'no'} |")  # fmt: skip


if __name__ == "__main__":
    main()
