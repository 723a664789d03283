"""The epoch program: one compiled program for an epoch of one run or of several runs side by side.

:func:`compile_epoch` is the one place that builds it. :func:`~stablebptt.training.train`,
:func:`~stablebptt.training.train_batched`, ``stablebptt bench`` and
``benchmarks/profile_epoch.py`` all run the program it returns, so a benchmark
times what a run executes.

The program is one ``jit``: every mini-batch update of the epoch (one
``lax.scan`` in the stored order), then the training and test losses of the
updated weights, with the evaluation a later evaluation of saved weights runs
(:func:`evaluate_losses`). Called without updates (a ``lax.cond`` on an
argument), the same program gives the losses before training and the
optimizer's first state. Its inputs are laid out on the host (NumPy) and
placed on the devices as they are: a run compiles this one program and no
other.

One run is the plain program. Several runs of one flow ``vmap`` over
parameters, optimizer states and data with the flow fixed (its concrete gates
let M and S skip network Jacobians); runs of different flows also ``vmap``
over the flows' stacked :class:`~stablebptt.engine.flows.Schedule`. The runs
share one optimizer transform: what differs between them (clip limits,
learning rate) lives in each run's optimizer state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..engine.flows import AbstractFlow, Regular, stack_flows
from ..engine.host import array_module, to_host
from ..engine.optim import with_hyperparams
from ..engine.problem import ControlProblem, sample_axes
from ..engine.rollouts import loss_dtype, rollout_loss
from ..engine.updates import AbstractBackward, SharedBackward, trainable, value_and_update
from .batching import split_batches
from .sharding import data_mesh, replicate, shard_leading

__all__ = ["EpochFunctions", "EpochProgram", "make_epoch_functions", "compile_epoch", "evaluate_losses"]


@dataclasses.dataclass(frozen=True)
class EpochFunctions:
    """The pieces of the epoch program, pure functions of arrays (vmappable).

    train_epoch(params, opt_state, batches) -> (params, opt_state, stats) with
        ``stats = (batch_loss, update_sq_norm, cosine)`` each of shape ``(n_batches,)``.
    evaluate(params, x) -> loss of the whole set ``x`` (forward only).
    """

    train_epoch: Callable
    evaluate: Callable
    static: Any


def make_epoch_functions(
    policy: Any,
    problem: ControlProblem,
    flow: AbstractFlow | None,
    optimizer: optax.GradientTransformation,
    *,
    backward: AbstractBackward = SharedBackward(),
) -> EpochFunctions:
    """The (unjitted) update epoch and evaluation for a policy's structure, which :func:`compile_epoch` assembles.

    ``train_epoch(params, opt_state, batches, flow=flow)``: with ``flow=None``
    here, the flow must be passed to every call (e.g. a traced, vmapped
    :class:`~stablebptt.engine.flows.Schedule`).
    """
    _, static = trainable(policy)

    def train_epoch(params, opt_state, batches, flow=flow):
        def update_step(carry, batch):
            params, opt_state = carry
            loss, update, info = value_and_update(flow, eqx.combine(params, static), problem, batch, backward=backward)
            updates, opt_state = optimizer.update(update, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state), (loss, info.sq_norm, info.cosine)

        (params, opt_state), stats = jax.lax.scan(update_step, (params, opt_state), batches)
        return params, opt_state, stats

    def evaluate(params, x):
        return rollout_loss(eqx.combine(params, static), problem, x, Regular())

    return EpochFunctions(train_epoch, evaluate, static)


def _stack(trees: Sequence[Any]) -> Any:
    """Trees stacked over a new leading axis, on the host (NumPy) where the leaves have a NumPy form."""

    def stack(*xs):
        xs = [to_host(x) for x in xs]
        return array_module(*xs).stack(xs)

    return jax.tree.map(stack, *trees)


def _run(tree: Any, i: int) -> Any:
    return jax.tree.map(lambda a: a[i], tree)


def _zeros(shapes: Any) -> Any:
    """Host zeros of the shapes and dtypes of a tree of ``jax.ShapeDtypeStruct``."""
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _same_layout(a: Any, b: Any) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.shape(u) == np.shape(v) and getattr(u, "dtype", type(u)) == getattr(v, "dtype", type(v))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _stack_sets(train_xs: Sequence[Any], test_xs: Sequence[Any]) -> Any:
    """The runs' evaluation sets as few arrays as their shapes allow, stacked over runs.

    ``(stacked,)`` with leaves ``(runs, 2, samples, ...)`` when every run's
    training and test sets have one shape (one rollout per run evaluates
    both); ``(train, test)`` stacked over runs when only the runs agree;
    else ``[(train, test), ...]`` per run.
    """
    everything = [*train_xs, *test_xs]
    if all(_same_layout(everything[0], x) for x in everything[1:]):
        return (_stack([_stack([a, b]) for a, b in zip(train_xs, test_xs, strict=True)]),)
    if all(_same_layout(train_xs[0], x) for x in train_xs[1:]) and all(_same_layout(test_xs[0], x) for x in test_xs[1:]):
        return (_stack(train_xs), _stack(test_xs))
    return [(a, b) for a, b in zip(train_xs, test_xs, strict=True)]


def _losses_program(evaluate: Callable, sets: Any, stacked: bool) -> Callable:
    """``losses(params, sets)``: every run's training and test loss, ``(runs, 2)`` (``(2,)`` for one unstacked run).

    ``evaluate(params, x)`` is the loss of a whole set; it is ``vmap``ped over
    the two sets (one rollout of both when they share a shape) and the runs.
    """
    both = jax.vmap(evaluate, in_axes=(None, 0))
    pair = lambda p, a, b: jnp.stack([evaluate(p, a), evaluate(p, b)])  # noqa: E731
    if isinstance(sets, list):
        return lambda params, sets: jnp.stack([pair(_run(params, i), a, b) for i, (a, b) in enumerate(sets)])
    if not stacked:
        return (lambda params, sets: both(params, sets[0])) if len(sets) == 1 else (lambda params, sets: pair(params, *sets))
    return (lambda params, sets: jax.vmap(both)(params, sets[0])) if len(sets) == 1 else (lambda params, sets: jax.vmap(pair)(params, *sets))


def _layout(params: Any, opt_states: Any, train_xs: Any, test_xs: Any, *, batch_size: int, axes: tuple, stacked: bool) -> tuple:
    """The program's inputs from the runs' own, on the host (NumPy, so no program of its own): parameters
    and optimizer states stacked over runs, each training set split into mini-batches, the evaluation sets
    as :func:`_stack_sets` lays them out; a single run keeps its own parameters and state and has no run axis."""
    train_xs, test_xs = ([jax.tree.map(to_host, x) for x in xs] for xs in (train_xs, test_xs))
    batches = [split_batches(x, batch_size, axes) for x in train_xs]
    sets = _stack_sets(train_xs, test_xs)
    if not stacked:
        return params[0], opt_states[0], batches[0], _unstacked_sets(sets)
    return _stack(params), _stack(opt_states), _stack(batches), sets


def _unstacked_sets(sets: Any) -> Any:
    """A single run's sets without the run axis :func:`_stack_sets` gives them."""
    return tuple(_run(s, 0) for s in sets)


@dataclasses.dataclass(frozen=True)
class EpochProgram:
    """The compiled epoch of ``n_runs`` runs and the inputs it was compiled for.

    epoch(params, opt_state) -> (params, opt_state, stats, losses): the
        epoch's updates, then the losses of the updated weights. ``stats =
        (batch_loss, update_sq_norm, cosine)``, each ``(runs, n_batches)``;
        ``losses``: ``(runs, 2)``, training and test loss (one run: no run axis).
    losses(params, opt_state): the same program without the updates, ``(runs, 2)``.
    params, opt_state: the runs' starting values, placed on the devices.
    initial_losses: ``losses(params, opt_state)`` of those, on the host (the
        program's first call, which also gave the optimizer's first state).
    epoch_fn: one epoch (updates, then losses) as a pure function of ``args``
        (for FLOP counting); ``args = (params, opt_state, batches, flow, sets)``.
    lowered, compiled: the program as ``jax.jit(...).lower(...)`` gave it and its compiled form.
    update, start: its last argument, placed on the devices: update; or only
        evaluate, the optimizer state returned being the optimizer's first.
    compile_seconds: wall time of laying out the inputs, tracing, compiling and the first call [s].
    n_devices: how many devices each mini-batch is split across.
    """

    epoch_fn: Callable
    args: tuple
    lowered: Any
    compiled: Any
    update: jax.Array
    start: jax.Array
    n_runs: int
    n_devices: int
    compile_seconds: float
    initial_losses: np.ndarray

    @property
    def params(self) -> Any:
        return self.args[0]

    @property
    def opt_state(self) -> Any:
        return self.args[1]

    def epoch(self, params: Any, opt_state: Any) -> tuple:
        return self.compiled(params, opt_state, *self.args[2:], self.update)

    def losses(self, params: Any, opt_state: Any) -> jax.Array:
        return self.compiled(params, opt_state, *self.args[2:], self.start)[3]

    def per_run(self, tree: Any) -> list:
        """A tree of the program's (stacked) values as one tree per run (several runs: on the host, sliced
        with NumPy, so that no program is compiled for it)."""
        if self.n_runs == 1:
            return [tree]
        host = jax.device_get(tree)
        return [_run(host, i) for i in range(self.n_runs)]


def _one_flow(flows: Sequence[AbstractFlow]) -> AbstractFlow | None:
    """The flow every run shares, or None if they differ (then they train as stacked schedules)."""
    first = flows[0]
    return first if all(f is first or eqx.tree_equal(f, first) is True for f in flows[1:]) else None


def _update_epoch(fns: EpochFunctions, flows: Sequence[AbstractFlow], n_steps: int) -> tuple[Callable, Any]:
    """``(updates, flow_arg)``: every run's updates of an epoch, ``updates(params, opt_state, batches, flow_arg)``."""
    shared = _one_flow(flows)
    if shared is not None and len(flows) == 1:
        return (lambda p, o, b, _: fns.train_epoch(p, o, b, shared)), None
    if shared is not None:
        return jax.vmap(lambda p, o, b, _: fns.train_epoch(p, o, b, shared), in_axes=(0, 0, 0, None)), None
    return jax.vmap(fns.train_epoch), stack_flows(flows, n_steps)


def _with_run_hyperparams(opt_state: Any, hyperparams: Sequence[Mapping[str, float]], stacked: bool) -> Any:
    """The (stacked) optimizer state with run ``i``'s hyperparameters set in run ``i``'s state, on the host."""
    host = jax.device_get(opt_state)
    if not stacked:
        return with_hyperparams(host, hyperparams[0])
    return _stack([with_hyperparams(_run(host, i), h) for i, h in enumerate(hyperparams)])


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (and back on after, if it was on): lowering a
    program to XLA makes many short-lived objects, and the collections they set off cost a tenth of a second."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def compile_epoch(
    policies: Sequence[Any],
    problem: ControlProblem,
    train_xs: Sequence[Any],
    test_xs: Sequence[Any],
    *,
    flows: Sequence[AbstractFlow],
    optimizer: optax.GradientTransformation,
    backward: AbstractBackward = SharedBackward(),
    batch_size: int = 8,
    opt_states: Sequence[Any] | None = None,
    hyperparams: Sequence[Mapping[str, float]] | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> EpochProgram:
    """Build and compile the epoch program of ``len(policies)`` runs (the one builder of it).

    Run ``i`` trains ``policies[i]`` (its weights; the runs share the first
    one's structure) on ``train_xs[i]`` with ``flows[i]``, in mini-batches of
    ``batch_size`` in the stored order, and is evaluated on ``train_xs[i]``
    and ``test_xs[i]``. ``optimizer`` is the update rule of every run;
    ``opt_states[i]`` holds run ``i``'s state (default: the optimizer's first,
    which the program itself computes, with ``hyperparams[i]`` set in it,
    :func:`~stablebptt.engine.optim.with_hyperparams`). ``backward``: how
    the backward passes are computed (a run's own, e.g.
    ``RunConfig.backward(task)``). ``devices``: split each mini-batch across
    them (:func:`stablebptt.training.sharding.data_mesh`).
    """
    began = time.perf_counter()
    n = len(policies)
    if opt_states is not None and hyperparams is not None:
        raise ValueError("give either opt_states (states to continue from) or hyperparams (set in the first states), not both")
    if hyperparams is not None and len(hyperparams) != n:
        raise ValueError(f"give one mapping of hyperparameters per run ({n}), not {len(hyperparams)}")
    params_list = [trainable(p)[0] for p in policies]
    fresh = opt_states is None
    if fresh:  # stand-ins of the first states' layout: the program's first call computes them
        shapes = jax.eval_shape(optimizer.init, params_list[0])
        for values in hyperparams or ():
            with_hyperparams(shapes, values)  # a name the state does not hold fails here, before compiling
        opt_states = [_zeros(shapes)] * n
    stacked = n > 1
    axes = tuple(sample_axes(problem, policies[0], train_xs[0]))
    fns = make_epoch_functions(policies[0], problem, None, optimizer, backward=backward)
    updates, flow_arg = _update_epoch(fns, flows, problem.n_steps)
    first_state = jax.vmap(optimizer.init) if stacked else optimizer.init

    mesh = data_mesh(batch_size, devices)
    params, opt_state, batches, sets = jax.device_put(
        _layout(list(params_list), list(opt_states), list(train_xs), list(test_xs), batch_size=batch_size, axes=axes, stacked=stacked)
    )
    sample_axis = 0 if isinstance(sets, list) else (1 if len(sets) == 1 else 0) + stacked
    params, opt_state, flow_arg = replicate((params, opt_state, flow_arg), mesh)
    batches = shard_leading(batches, mesh, axis=1 + stacked)
    sets = shard_leading(sets, mesh, axis=sample_axis)
    losses = _losses_program(fns.evaluate, sets, stacked)
    dtype = loss_dtype(batches)
    stats_shape = jax.tree.leaves(batches)[0].shape[: 1 + stacked]  # (runs,) n_batches

    def epoch_fn(params, opt_state, batches, flow_arg, sets):
        params, opt_state, stats = updates(params, opt_state, batches, flow_arg)
        return params, opt_state, stats, losses(params, sets)

    def program(params, opt_state, batches, flow_arg, sets, update):
        def train(params, opt_state):
            params, opt_state, stats = updates(params, opt_state, batches, flow_arg)
            return params, opt_state, tuple(jnp.asarray(s).astype(dtype) for s in stats)

        def start(params, opt_state):
            # as the state passed in: the program's output state must keep its input's types (weak types included)
            first = jax.tree.map(lambda new, old: jnp.asarray(new).astype(old.dtype), first_state(params), opt_state)
            return params, first, tuple(jnp.full(stats_shape, jnp.nan, dtype) for _ in range(3))

        params, opt_state, stats = jax.lax.cond(update, train, start, params, opt_state)
        return params, opt_state, stats, losses(params, sets)

    update, start = replicate(jax.device_put((np.asarray(True), np.asarray(False))), mesh)
    with _collector_paused():
        lowered = jax.jit(program).lower(params, opt_state, batches, flow_arg, sets, update)
    compiled = lowered.compile()
    _, first, _, initial = compiled(params, opt_state, batches, flow_arg, sets, start)
    if fresh:
        opt_state = first if hyperparams is None else replicate(jax.device_put(_with_run_hyperparams(first, hyperparams, stacked)), mesh)
    n_devices = 1 if mesh is None else mesh.devices.size
    args = (params, opt_state, batches, flow_arg, sets)
    return EpochProgram(epoch_fn, args, lowered, compiled, update, start, n, n_devices, time.perf_counter() - began, np.asarray(initial))


def evaluate_losses(policy: Any, problem: ControlProblem, train_x: Any, test_x: Any) -> tuple[float, float]:
    """The training and test loss of ``policy``, computed as training logs them after each epoch
    (the same evaluation, both sets in one program)."""
    params, _ = trainable(policy)
    fns = make_epoch_functions(policy, problem, None, optax.identity())
    sets = _unstacked_sets(_stack_sets([train_x], [test_x]))
    train_loss, test_loss = np.asarray(jax.jit(_losses_program(fns.evaluate, sets, False))(params, sets))
    return float(train_loss), float(test_loss)
