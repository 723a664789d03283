"""What a run spends compiling, against a plain ``jax.jit(jax.grad(loss))`` step of the same rollout.

    python benchmarks/compile_time.py [--cases cartpole pendulum] [--flows R C] [--repeats 3]

Cases: cart pole from the task registry (``sb.make_task("cartpole")``, its
default 2 poles and 100 steps) and the README's pendulum ("your own simulator")
at 80 steps; 256 training and 256 test states, mini-batches of 8.

For every case and flow, each figure is measured in a fresh process (JAX's
caches empty, the persistent compilation cache off, XLA warmed up by one
trivial program), the repeats interleaved, and the median printed:

- plain: ``jax.jit(lambda p, batch, test: (jax.grad(loss)(p, batch), loss(p, test)))``
  lowered and compiled, ``loss`` a hand-written ``lax.scan`` of the controller
  and the simulator: one gradient of a mini-batch plus a forward evaluation.
- plain + optimizer: the plain step with the run's optimizer applied to its
  gradient (``sb.make_optimizer("norm")``: Keras-form Adam after global-norm
  clipping, the optimizer state an argument), i.e. what a user's own training
  step with the same optimizer compiles.
- run: ``sb.train(..., epochs=1)``: the call's wall time less the epoch's own
  execution (``result.seconds["epochs"]`` and ``["record"]``), i.e. what a
  run spends before and around training (checks, laying out the data,
  tracing, compiling, the losses before training).

Beside the wall times: XLA's own compile time summed over every program the
call compiled, and how many programs that was (JAX's
``/jax/core/compile/backend_compile_duration`` events). Wall times move with
other load on the machine; the ratio of run to plain is the figure to read.

``--split`` also prints where the run's program's compile time goes: XLA's
compile time of its parts built up one by one, each compiled alone in one
fresh process (caches cleared between): one update of a mini-batch
(``value_and_update``), that update with the optimizer step, the scan of an
epoch's updates, and the whole epoch program (``compile_epoch``: the scan,
then the losses of both sets, and the ``lax.cond`` that also gives the losses
before training); beside them, for comparison only, the scan of 32 with the
optimizer wrapped in ``optax.flatten`` (one vector instead of one array per
layer: not what runs execute, and not bit-identical to it).

Measured on the project's 2-core CPU machine, shared with other jobs (load 5
to 17 while measuring: one figure moves by 20 % and more between runs, so
compare only interleaved runs), JAX 0.10.2. Before and after the optimizer's
initial state became one jitted program, each figure in interleaved fresh
processes, median of 3:

| case | flow | version | plain [s] | run [s] | run / plain | programs compiled by the run |
|---|---|---|---:|---:|---:|---:|
| cartpole | R | before | 1.63 | 2.73 | 1.68 | 4 |
| cartpole | R | after | 1.56 | 3.12 | 2.00 | 3 |
| cartpole | C | before | 1.63 | 3.63 | 2.23 | 4 |
| cartpole | C | after | 1.56 | 3.96 | 2.54 | 3 |
| pendulum | R | before | 1.56 | 2.54 | 1.63 | 5 |
| pendulum | R | after | 1.36 | 2.53 | 1.86 | 3 |
| pendulum | C | before | 1.56 | 3.23 | 2.07 | 5 |
| pendulum | C | after | 1.36 | 3.22 | 2.37 | 3 |

(a quiet spell; the plain step is the same code in both versions, so its
1.56 against 1.36 s is the machine's noise; under heavier load the same
comparison gave run / plain R 2.03 / 2.33, C 3.03 / 2.43, pendulum R 2.17 /
2.43, C 2.86 / 3.17: the epoch program is unchanged). The change removes programs
(from empty caches a run lowers 3 instead of 10), not seconds: the optimizer's
initial state costs 0.1 to 0.25 s either way.

The same against a plain step that also applies the run's optimizer (the
"plain + optimizer" column; two back-to-back invocations of
``python benchmarks/compile_time.py``, each the median of 3 interleaved fresh
processes, with three sweeps at nice 19 on the machine):

| case | flow | plain [s] | plain + optimizer [s] | run [s] | run / plain | run / (plain + optimizer) |
|---|---|---:|---:|---:|---:|---:|
| cartpole | R | 1.44; 1.44 | 2.20; 1.95 | 2.92; 2.73 | 2.03; 1.90 | 1.33; 1.40 |
| cartpole | C | 1.44; 1.44 | 2.20; 1.95 | 2.63; 3.67 | 1.83; 2.55 | 1.20; 1.88 |
| pendulum | R | 1.01; 0.93 | 1.86; 1.91 | 2.06; 2.44 | 2.04; 2.64 | 1.11; 1.28 |
| pendulum | C | 1.01; 0.93 | 1.86; 1.91 | 2.99; 2.98 | 2.96; 3.21 | 1.61; 1.55 |

Against the plain gradient step alone a run compiles 1.8 to 3.2 times as
long (the target of 1.5x is not met); against a user's own step with the same
optimizer, R's run is within 1.5x (1.11 to 1.40) and C's is not (1.20 to
1.88: C's second lane and its sign rule, below).

On a second 2-core machine (AMD EPYC with AVX-512, JAX 0.10.2, two sweeps at
nice 19 beside it), ``python benchmarks/compile_time.py``, median of 3:

| case | flow | plain [s] | plain + optimizer [s] | run [s] | run / plain | run / (plain + optimizer) |
|---|---|---:|---:|---:|---:|---:|
| cartpole | R | 0.85 | 1.74 | 1.86 | 2.20 | 1.07 |
| cartpole | C | 0.85 | 1.74 | 1.99 | 2.36 | 1.15 |
| pendulum | R | 0.68 | 1.68 | 2.05 | 2.99 | 1.22 |
| pendulum | C | 0.68 | 1.68 | 2.20 | 3.22 | 1.31 |

There every run, C's included, compiles within 1.5x of a user's own step
with the same optimizer, and the optimizer alone more than doubles the plain
step's compile (0.85 to 1.74 s): compiled on its own, ``make_optimizer("norm")``'s
update of the cart pole's six arrays is 41 XLA kernels (per array: the clip,
a partial sum of squares, the scaled gradient, each moment, the new weight).

Where the gap to 1.5x stays (``--split --repeats 3``, after):

| case | flow | plain step | one update | + optimizer | + scan of 32 | + losses, cond (the program) | scan of 32, flat optimizer |
|---|---|---:|---:|---:|---:|---:|---:|
| cartpole | R | 1.19 | 1.08 | 1.89 | 2.02 | 2.17 | 1.60 |
| cartpole | C | 1.18 | 1.55 | 2.35 | 2.62 | 2.84 | 1.90 |
| pendulum | R | 1.23 | 1.08 | 1.83 | 2.17 | 2.48 | 1.82 |
| pendulum | C | 1.04 | 1.56 | 2.19 | 2.45 | 2.79 | 2.22 |

- The optimizer is the largest part (0.6 to 0.8 s here, 1.2 to 2.1 s under
  load): the clipping and Keras's Adam of ``make_optimizer``, with every
  number in the state, are about three compiled kernels per parameter array
  (20 for cart pole's six), and XLA:CPU compiles each kernel with LLVM on its
  own. The same optimizer on one flat vector (``optax.flatten``, last
  column) compiles 0.2 to 0.7 s faster (1.2 s under load), but its numbers
  differ: the global norm is then one sum instead of one per array, and even
  unclipped XLA fuses a bias's gradient sum differently (one moment differs
  in its last bit after two updates; after 3 epochs cart pole's weights
  differ by up to 6e-5 with R). Runs must reproduce their recorded numbers,
  so they keep the per-array form.
- C's second lane (0.5 s in one update): the batched adjoint, the sign rule
  and the cosine (three sums per array) and update norm (one per array).
- The losses of both sets and the ``lax.cond`` of the losses before training
  (0.15 to 0.35 s): the forward evaluation is the plain step's own test
  evaluation; evaluating without the gates saves 0.1 s but turns an infinite
  state's NaN loss into inf, so it stays.
- Tracing and lowering the program: about 1 s against 0.6 s for the plain step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = ("cartpole", "pendulum")


def _case(name: str):
    """``(policy, problem, train_x, test_x)`` of a case."""
    import jax
    import jax.numpy as jnp

    import stablebptt as sb

    if name == "cartpole":
        task = sb.make_task("cartpole")
        k_train, k_test, k_init = jax.random.split(jax.random.key(42), 3)
        return task.make_policy(k_init), task.problem, task.sample_initial_states(k_train, 256), task.sample_initial_states(k_test, 256)

    def step(x, force):  # the README's pendulum
        velocity = x[:, 1] + 0.1 * (force[:, 0] - jnp.sin(x[:, 0]))
        return jnp.stack([x[:, 0] + 0.1 * velocity, velocity], axis=1)

    problem = sb.ControlProblem(step=step, n_steps=80, final_loss=lambda x: jnp.mean(x**2))
    policy = sb.DenseNet(2, 1, hidden=(32, 32), key=jax.random.key(0), zero_last_kernel=True)
    train_x, test_x = jax.random.uniform(jax.random.key(1), (2, 256, 2), minval=-1, maxval=1)
    return policy, problem, train_x, test_x


def _plain_loss(policy, problem):
    """``loss(params, x)``: the rollout's total loss, written as a user would, with the policy's structure fixed."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    params, static = eqx.partition(policy, eqx.is_inexact_array)

    def loss(params, x):
        controller = eqx.combine(params, static)

        def body(carry, _):
            x, total = carry
            c = controller(x)
            x = problem.step(x, c)
            if problem.step_loss is not None:
                total = total + problem.step_loss(x, c)
            return (x, total), None

        (x, total), _ = jax.lax.scan(body, (x, jnp.zeros(())), None, length=problem.n_steps)
        return total if problem.final_loss is None else total + problem.final_loss(x)

    return params, loss


def _child(case: str, flow: str, what: str) -> dict:
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    compiles: list[float] = []

    def listen(event: str, duration: float, **_: object) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    import stablebptt as sb

    policy, problem, train_x, test_x = _case(case)
    jax.block_until_ready((train_x, test_x))
    jax.jit(lambda x: x + 1).lower(1.0).compile()  # XLA's one-time start, outside both measurements
    jax.monitoring.register_event_duration_secs_listener(listen)
    began = time.perf_counter()
    if what == "plain":
        params, loss = _plain_loss(policy, problem)
        step = jax.jit(lambda p, batch, test: (jax.grad(loss)(p, batch), loss(p, test)))
        step.lower(params, train_x[:8], test_x).compile()
        wall = time.perf_counter() - began
    elif what == "plain+optimizer":
        import optax

        params, loss = _plain_loss(policy, problem)
        optimizer = sb.make_optimizer("norm")

        def step(p, s, batch, test):
            u, s = optimizer.update(jax.grad(loss)(p, batch), s, p)
            return optax.apply_updates(p, u), s, loss(p, test)

        jax.jit(step).lower(params, optimizer.init(params), train_x[:8], test_x).compile()
        wall = time.perf_counter() - began
    else:
        result = sb.train(policy, problem, train_x, test_x, flow=sb.flow_from_name(flow), optimizer=sb.make_optimizer("norm"), epochs=1)
        wall = time.perf_counter() - began - result.seconds["epochs"] - result.seconds["record"]
    return {"wall": wall, "xla": sum(compiles), "programs": len(compiles)}


def _split(case: str, flow_name: str) -> dict:
    """XLA compile seconds of the run's program built up part by part (see the module's docstring)."""
    import equinox as eqx
    import jax
    import optax

    import stablebptt as sb
    from stablebptt.engine.updates import trainable, value_and_update
    from stablebptt.training import compile_epoch, make_epoch_functions, split_batches

    jax.config.update("jax_enable_compilation_cache", False)
    policy, problem, train_x, test_x = _case(case)
    flow, optimizer = sb.flow_from_name(flow_name), sb.make_optimizer("norm")
    flat = optax.flatten(optimizer)
    params, static = trainable(policy)
    state = optimizer.init(params)
    batches = split_batches(train_x, 8)
    plain_params, loss = _plain_loss(policy, problem)

    def update(p, batch):
        return value_and_update(flow, eqx.combine(p, static), problem, batch)

    def step(p, s, batch):
        value, u, info = update(p, batch)
        u, s = optimizer.update(u, s, p)
        return optax.apply_updates(p, u), s, value, info

    parts = {
        "plain step": lambda: jax.jit(lambda p, b, t: (jax.grad(loss)(p, b), loss(p, t))).lower(plain_params, batches[0], test_x).compile(),
        "one update": lambda: jax.jit(update).lower(params, batches[0]).compile(),
        "+ optimizer": lambda: jax.jit(step).lower(params, state, batches[0]).compile(),
        "+ scan of 32": lambda: jax.jit(make_epoch_functions(policy, problem, flow, optimizer).train_epoch).lower(params, state, batches).compile(),
        "+ losses, cond (the program)": lambda: compile_epoch([policy], problem, [train_x], [test_x], flows=[flow], optimizer=optimizer),
        "scan of 32, flat optimizer": lambda: jax.jit(make_epoch_functions(policy, problem, flow, flat).train_epoch).lower(params, flat.init(params), batches).compile(),
    }
    compiles: list[float] = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **_: compiles.append(duration) if event == "/jax/core/compile/backend_compile_duration" else None
    )
    jax.jit(lambda x: x + 1).lower(1.0).compile()
    out = {}
    for name, build in parts.items():
        jax.clear_caches()
        compiles.clear()
        build()
        out[name] = sum(compiles)
    return out


def _measure(case: str, flow: str, what: str) -> dict:
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
    done = subprocess.run([sys.executable, __file__, "--child", case, flow, what], capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--flows", nargs="+", default=["R", "C"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--split", action="store_true", help="also print where the run's program's compile time goes")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_split(*args.child[:2]) if args.child[2] == "split" else _child(*args.child)))
        return

    import jax
    import stablebptt

    print(f"# compile time of a run against a plain jit(grad) step\n\nJAX {jax.__version__}, {jax.devices()[0].device_kind}; "
          f"stablebptt from {os.path.dirname(stablebptt.__file__)}; median of {args.repeats} fresh processes\n")  # fmt: skip
    print("| case | flow | plain [s] | plain + optimizer [s] | run [s] | run / plain | run / (plain + optimizer) | plain XLA [s] | run XLA [s] | programs compiled by the run |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    plains = ("plain", "plain+optimizer")
    for case in args.cases:
        samples: dict[str, list[dict]] = {name: [] for name in (*plains, *args.flows)}
        for _ in range(args.repeats):  # interleaved, so that a change of load on the machine touches every figure
            for name, found in samples.items():
                found.append(_measure(case, "R" if name in plains else name, name if name in plains else "run"))
        med = {name: {k: statistics.median(s[k] for s in found) for k in ("wall", "xla", "programs")} for name, found in samples.items()}
        plain, with_opt = med["plain"], med["plain+optimizer"]
        for flow in args.flows:
            run = med[flow]
            print(f"| {case} | {flow} | {plain['wall']:.2f} | {with_opt['wall']:.2f} | {run['wall']:.2f} | {run['wall'] / plain['wall']:.2f} "
                  f"| {run['wall'] / with_opt['wall']:.2f} | {plain['xla']:.2f} | {run['xla']:.2f} | {run['programs']:.0f} |", flush=True)  # fmt: skip
    if not args.split:
        return
    print("\n## where the run's program's compile time goes (XLA seconds, each part compiled alone; median)\n")
    print("| case | flow | plain step | one update | + optimizer | + scan of 32 | + losses, cond (the program) | scan of 32, flat optimizer |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for case in args.cases:
        for flow in args.flows:
            found = [_measure(case, flow, "split") for _ in range(args.repeats)]
            cells = " | ".join(f"{statistics.median(f[name] for f in found):.2f}" for name in found[0])
            print(f"| {case} | {flow} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
