"""The paper's training loop: fixed-order mini-batches, one compiled program per epoch.

A whole epoch (all mini-batch updates) is one ``lax.scan`` inside one ``jit``;
the host syncs once per epoch, for the metrics. Knows no task: it takes a
policy, a :class:`ControlProblem`, data, a flow and an optax optimizer.

One loop serves one run (:func:`train`) and a batch of runs
(:func:`train_batched`): runs are stacked along a leading axis and their
epoch is one ``vmap``ped program. Runs may differ in initial weights, data
(e.g. seeds), every number an optimizer from :func:`stablebptt.make_optimizer`
keeps in its state (clip mode, learning rate, Adam's β and ε) and in their
flows; they share the problem and the network's structure. The training and
test losses after each epoch are computed inside the same compiled program
(one rollout of both sets where they share a shape), with the evaluation a
later evaluation of the saved weights runs, ``vmap``ped: the logged losses are
those of the saved weights to float rounding (1e-6 relative).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..engine.flows import Combined, Flow, Regular, stack_flows
from ..engine.problem import ControlProblem, check_flow, check_optimizer, check_policy, check_positive_int, check_states, sample_axes
from ..engine.rollouts import rollout_loss
from ..engine.updates import Backward, SharedBackward, trainable, value_and_update
from .batching import batch_count, sample_count, split_batches
from .sharding import data_mesh, replicate, shard_leading

__all__ = [
    "METRIC_COLUMNS",
    "TIME_KEYS",
    "EpochFunctions",
    "TrainResult",
    "TrainState",
    "NonFiniteLossError",
    "ZeroUpdateError",
    "epoch_row",
    "evaluate_losses",
    "row_is_finite",
    "make_epoch_functions",
    "check_data",
    "check_start",
    "train",
    "train_batched",
]

METRIC_COLUMNS = (
    "epoch",
    "batch_loss",
    "train_loss",
    "test_loss",
    "update_sq_norm",
    "cosine_mr",
    "seconds",
)
"""Columns of the per-epoch metrics, in order.

epoch: 1-based epoch number. batch_loss: mean of the mini-batch losses seen
by the updates of the epoch (before each update). train_loss / test_loss:
loss on the whole training / test set after the epoch. update_sq_norm: mean
over the epoch's updates of the squared L2 norm of the update before clipping
(the authors' "grad size"). cosine_mr: mean cosine similarity of the M and R
gradients (combined flows only, else NaN). seconds: wall time of the epoch's
compiled program, its updates and the losses after them (compilation is not counted).
"""


TIME_KEYS = ("compile", "epochs", "record")
"""Where a training call's wall time goes: compiling the epoch program (and the losses before
training); running the epochs (each one compiled program: the updates, then the training and test
losses); handing the rows and checkpoints over (``on_epoch``, ``checkpoint``: writing, in a run folder)."""


class NonFiniteLossError(RuntimeError):
    """Training produced a non-finite loss; ``epoch`` names where, ``history`` holds the rows so far."""

    def __init__(self, epoch: int, history: list[dict], initial: dict | None = None):
        self.epoch = epoch
        self.history = history
        self.initial = initial or {}
        super().__init__(
            f"non-finite loss at epoch {epoch}: the updates diverged; "
            "try clipping (--clip norm or --clip value) or a smaller learning rate"
        )


class ZeroUpdateError(ValueError):
    """The first epoch's updates were exactly zero: the loss does not depend on the controller's parameters."""

    def __init__(self, run: int | None = None):
        self.run = run
        which = "" if run is None else f" of run {run}"
        super().__init__(
            f"every update{which} in the first epoch is exactly zero, so training would not change the controller: "
            "its loss does not depend on the parameters (a reward with no gradient, e.g. a constant reward per step, "
            "or a controller whose output does not reach the state); give a loss that depends on the controlled state"
        )


@dataclasses.dataclass(frozen=True)
class EpochFunctions:
    """The compiled pieces of training, pure functions of arrays (vmappable).

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
    flow: Flow | None,
    optimizer: optax.GradientTransformation,
    *,
    backward: Backward = SharedBackward(),
) -> EpochFunctions:
    """Build (unjitted) epoch and evaluation functions for a policy's structure.

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


def epoch_row(epoch: int, stats: Sequence, losses: Sequence, seconds: float) -> dict:
    """One metrics row from an epoch's per-update stats and the train/test losses after it."""
    return {
        "epoch": epoch,
        "batch_loss": float(np.mean(stats[0])),
        "train_loss": float(losses[0]),
        "test_loss": float(losses[1]),
        "update_sq_norm": float(np.mean(stats[1])),
        "cosine_mr": float(np.mean(stats[2])),  # NaN unless the flow is combined
        "seconds": seconds,
    }


def row_is_finite(row: dict) -> bool:
    return all(math.isfinite(row[k]) for k in ("batch_loss", "train_loss", "test_loss"))


@dataclasses.dataclass
class TrainResult:
    """Outcome of :func:`train`.

    policy: the trained policy. opt_state: the optimizer's final state.
    history: one dict per epoch with the keys of :data:`METRIC_COLUMNS`.
    initial: ``{"train_loss", "test_loss"}`` before any update.
    compile_seconds: time spent compiling the epoch program.
    diverged_at_epoch: the epoch whose loss was not finite (batched training
        only; :func:`train` raises :class:`NonFiniteLossError` instead).
    n_devices: how many devices each mini-batch was split across.
    seconds: wall time of this call by :data:`TIME_KEYS` (shared by every run of a batch).
    """

    policy: Any
    opt_state: Any
    history: list[dict]
    initial: dict
    compile_seconds: float
    diverged_at_epoch: int | None = None
    n_devices: int = 1
    seconds: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Where a run stands after ``epoch`` epochs: enough to continue it to the same numbers.

    params: the trainable leaves (``trainable(policy)[0]``). opt_state: the
    optimizer's state. history: the metric rows of epochs 1..epoch.
    initial: the losses before any update. diverged_at: the epoch whose loss
    was not finite, or None.
    """

    epoch: int
    params: Any
    opt_state: Any
    history: list[dict]
    initial: dict
    diverged_at: int | None = None


def checkpoint_due(epoch: int, epochs: int, every: int) -> bool:
    """Whether to save after ``epoch``: every ``every`` epochs (0: never), not after the last one."""
    return every > 0 and epoch % every == 0 and epoch < epochs


def _zero_means_no_gradient(flow: Flow) -> bool:
    """Whether a zero update of ``flow`` means the loss has no gradient: R's update is the gradient, and C's
    is zero wherever its reference R is; M's or S's zero update may be the flow's own doing."""
    return isinstance(flow, Regular) or (isinstance(flow, Combined) and isinstance(flow.reference, Regular))


def check_data(policy: Any, problem: ControlProblem, train_x: Any, test_x: Any) -> None:
    """One-line ValueErrors, naming the set, for data that cannot train: float64 arrays while 64-bit
    JAX is off (they would be computed in float32), NaN or infinite values, a layout that the
    controller or the simulator refuses."""
    for name, x in (("training set", train_x), ("test set", test_x)):
        check_states(x, f"the {name}")
        try:
            problem.check(policy, x)
        except ValueError as err:
            raise ValueError(f"the {name}: {err}") from None


def check_start(start: TrainState, params: Any, opt_state: Any, epochs: int) -> None:
    def like(tree):
        leaves, treedef = jax.tree.flatten(tree)
        return treedef, [(np.shape(a), a.dtype if hasattr(a, "dtype") else np.result_type(type(a))) for a in leaves]

    if like((start.params, start.opt_state)) != like((params, opt_state)):
        raise ValueError("the start state's parameters or optimizer state do not match this policy and optimizer; start afresh")
    rows = start.epoch if start.diverged_at is None else start.diverged_at
    if not 0 <= start.epoch <= epochs or len(start.history) != rows:
        raise ValueError(
            f"the start state is at epoch {start.epoch} with {len(start.history)} metric rows; "
            f"expected an epoch in 0..{epochs} and one row per epoch trained"
        )



def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _run(tree: Any, i: int) -> Any:
    return jax.tree.map(lambda a: a[i], tree)


def _check_same_rule(optimizers: Sequence[optax.GradientTransformation], params_list: list, opt_states: list) -> None:
    """Refuse optimizers whose update rules differ outside their states: the batch applies the first one's rule."""
    rng = np.random.default_rng(0)
    for i, (opt, params, state) in enumerate(zip(optimizers, params_list, opt_states, strict=True)):
        if opt.update is optimizers[0].update:  # one update function: one rule (make_optimizer's optimizers share it)
            continue
        probe = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), params)
        own, _ = opt.update(probe, state, params)
        first, _ = optimizers[0].update(probe, state, params)
        if not all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(own), jax.tree.leaves(first), strict=True)):
            raise ValueError(
                f"train_batched: optimizer {i} updates differently from optimizer 0 with the same state (its settings live "
                "outside its state, e.g. optax.adam(1e-1)); build them with stablebptt.make_optimizer, which keeps clip "
                "limits and learning rate in the state, or train the runs separately"
            )


def _one_flow(flows: Sequence[Flow]) -> Flow | None:
    """The flow every run shares, or None if they differ (then they train as stacked schedules)."""
    first = flows[0]
    return first if all(f is first or eqx.tree_equal(f, first) is True for f in flows[1:]) else None


def _epoch_program(fns: EpochFunctions, flows: Sequence[Flow], n_steps: int, n_runs: int) -> tuple[Callable, Any]:
    """``(epoch, flow_arg)``: an epoch of all runs, ``epoch(params, opt_state, batches, flow_arg)`` on stacked runs.

    One run is the unbatched program (the leading run axis is dropped inside
    ``jit``); several runs of one flow ``vmap`` over parameters, optimizer
    states and data with the flow fixed (its concrete gates let M and S skip
    network Jacobians); runs of different flows also ``vmap`` over the
    flows' stacked :class:`~stablebptt.engine.flows.Schedule`.
    """
    shared = _one_flow(flows)
    if shared is not None and n_runs == 1:

        def single(params, opt_state, batches, _):
            out = fns.train_epoch(_run(params, 0), _run(opt_state, 0), _run(batches, 0), shared)
            return jax.tree.map(lambda a: a[None], out)

        return single, None
    if shared is not None:
        return jax.vmap(lambda p, o, b, _: fns.train_epoch(p, o, b, shared), in_axes=(0, 0, 0, None)), None
    return jax.vmap(fns.train_epoch), stack_flows(flows, n_steps)


def _stack_sets(train_xs: Sequence[Any], test_xs: Sequence[Any]) -> Any:
    """The runs' evaluation sets as few arrays as their shapes allow.

    ``(stacked,)`` with leaves ``(runs, 2, samples, ...)`` when every run's
    training and test sets have one shape (one rollout per run evaluates
    both); ``(train, test)`` stacked over runs when only the runs agree;
    else ``[(train, test), ...]`` per run.
    """
    like = lambda a, b: jax.tree.structure(a) == jax.tree.structure(b) and all(  # noqa: E731
        np.shape(u) == np.shape(v) and getattr(u, "dtype", type(u)) == getattr(v, "dtype", type(v))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    everything = [*train_xs, *test_xs]
    if all(like(everything[0], x) for x in everything[1:]):
        return (_stack([_stack([a, b]) for a, b in zip(train_xs, test_xs, strict=True)]),)
    if all(like(train_xs[0], x) for x in train_xs[1:]) and all(like(test_xs[0], x) for x in test_xs[1:]):
        return (_stack(train_xs), _stack(test_xs))
    return [(a, b) for a, b in zip(train_xs, test_xs, strict=True)]


def _losses_program(evaluate: Callable, n_runs: int, sets: Any) -> Callable:
    """``losses(params, sets) -> (runs, 2)``: every run's training and test loss, for :func:`_stack_sets`'s layout.

    ``evaluate(params, x)`` is the loss of a whole set; it is ``vmap``ped over
    the two sets (one rollout of both when they share a shape) and the runs.
    """
    both = jax.vmap(evaluate, in_axes=(None, 0))
    pair = lambda p, a, b: jnp.stack([evaluate(p, a), evaluate(p, b)])  # noqa: E731
    if isinstance(sets, list):
        return lambda params, sets: jnp.stack([pair(_run(params, i), a, b) for i, (a, b) in enumerate(sets)])
    if n_runs == 1:
        if len(sets) == 1:
            return lambda params, sets: both(_run(params, 0), _run(sets[0], 0))[None]
        return lambda params, sets: pair(_run(params, 0), _run(sets[0], 0), _run(sets[1], 0))[None]
    if len(sets) == 1:
        return lambda params, sets: jax.vmap(both)(params, sets[0])
    return lambda params, sets: jax.vmap(pair)(params, *sets)


def evaluate_losses(policy: Any, problem: ControlProblem, train_x: Any, test_x: Any) -> tuple[float, float]:
    """The training and test loss of ``policy``, computed as training logs them after each epoch
    (the same evaluation, both sets in one program)."""
    params, _ = trainable(policy)
    fns = make_epoch_functions(policy, problem, None, optax.identity())
    sets = _stack_sets([train_x], [test_x])
    losses = jax.jit(_losses_program(fns.evaluate, 1, sets))(_stack([params]), sets)
    train_loss, test_loss = np.asarray(losses)[0]
    return float(train_loss), float(test_loss)


def _fit(
    policies: Sequence[Any],
    problem: ControlProblem,
    train_xs: Sequence[Any],
    test_xs: Sequence[Any],
    *,
    flows: Sequence[Flow],
    optimizers: Sequence[optax.GradientTransformation],
    epochs: int,
    batch_size: int,
    on_epoch: Callable[[list[dict | None]], None] | None,
    backward: Backward,
    devices: Sequence[jax.Device] | None,
    starts: Sequence[TrainState] | None,
    checkpoint: Callable[[list[TrainState]], None] | None,
    checkpoint_every: int,
    raise_on_divergence: bool,
) -> list[TrainResult]:
    """The training loop behind :func:`train` (one run) and :func:`train_batched` (several)."""
    n = len(policies)
    for flow in flows:
        check_flow(flow)
    for optimizer in optimizers:
        check_optimizer(optimizer)
    for policy in policies:
        check_policy(policy)
    check_positive_int(checkpoint_every, "checkpoint_every")
    if n < 1 or not (len(train_xs) == len(test_xs) == len(optimizers) == len(flows) == n):
        raise ValueError("train_batched needs one policy, training set, test set, optimizer and flow per run (at least one run)")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r}; expected a positive integer")
    axes = sample_axes(problem, policies[0], train_xs[0])
    for x, t in zip(train_xs, test_xs, strict=True):
        batch_count(sample_count(x, axes, "training set"), batch_size)
        if sample_count(t, sample_axes(problem, policies[0], t), "test set") < 1:
            raise ValueError("the test set is empty; give at least one test sample")

    split = [trainable(p) for p in policies]
    params_list = [p for p, _ in split]
    if len({jax.tree.structure(p) for p in params_list}) != 1 or any(jax.tree.structure(s) != jax.tree.structure(split[0][1]) for _, s in split):
        raise ValueError("train_batched: all policies must have the same structure")
    opt_states = [opt.init(p) for opt, p in zip(optimizers, params_list, strict=True)]
    if len({jax.tree.structure(s) for s in opt_states}) != 1:
        raise ValueError("train_batched: optimizers must be built alike (make_optimizer with the same adam form)")
    _check_same_rule(optimizers, params_list, opt_states)
    if starts is not None:
        if len(starts) != n or len({s.epoch for s in starts}) != 1:
            raise ValueError("train_batched: give one start state per run, all at the same epoch")
        for start, params, state in zip(starts, params_list, opt_states, strict=True):
            check_start(start, params, state, epochs)
        params_list, opt_states = [s.params for s in starts], [s.opt_state for s in starts]
    for policy, train_x, test_x in zip(policies, train_xs, test_xs, strict=True):
        check_data(policy, problem, train_x, test_x)

    fns = make_epoch_functions(policies[0], problem, None, optimizers[0], backward=backward)
    epoch_fn, flow_arg = _epoch_program(fns, flows, problem.n_steps, n)
    mesh = data_mesh(batch_size, devices)
    params, opt_state = replicate((_stack(params_list), _stack(opt_states)), mesh)
    batches = shard_leading(_stack([split_batches(x, batch_size, axes) for x in train_xs]), mesh, axis=2)
    sets = _stack_sets(train_xs, test_xs)
    sets = shard_leading(sets, mesh, axis=0 if isinstance(sets, list) else 2 if len(sets) == 1 else 1)  # the sample axis
    losses_fn = _losses_program(fns.evaluate, n, sets)

    def epoch_and_losses(params, opt_state, batches, flow_arg, sets):
        params, opt_state, stats = epoch_fn(params, opt_state, batches, flow_arg)
        return params, opt_state, stats, losses_fn(params, sets)

    spent = dict.fromkeys(TIME_KEYS, 0.0)
    t0 = time.perf_counter()
    train_epoch = jax.jit(epoch_and_losses).lower(params, opt_state, batches, flow_arg, sets).compile()
    if starts is None:  # the losses before any update: the same evaluation, compiled on its own
        initial = [{"train_loss": float(a), "test_loss": float(b)} for a, b in np.asarray(jax.jit(losses_fn)(params, sets))]
    else:
        initial = [dict(s.initial) for s in starts]
    compile_seconds = spent["compile"] = time.perf_counter() - t0

    histories: list[list[dict]] = [[] for _ in range(n)] if starts is None else [list(s.history) for s in starts]
    diverged: list[int | None] = [None] * n if starts is None else [s.diverged_at for s in starts]
    for epoch in range(1 if starts is None else starts[0].epoch + 1, epochs + 1):
        began = time.perf_counter()
        params, opt_state, stats, losses = train_epoch(params, opt_state, batches, flow_arg, sets)
        stats, losses = jax.device_get((stats, losses))  # the one host sync of the epoch
        seconds = time.perf_counter() - began
        spent["epochs"] += seconds
        began = time.perf_counter()
        rows: list[dict | None] = []
        for i in range(n):
            if diverged[i] is not None:
                rows.append(None)
                continue
            row = epoch_row(epoch, [s[i] for s in stats], losses[i], seconds)
            histories[i].append(row)
            rows.append(row)
            if not row_is_finite(row):
                diverged[i] = epoch
        if epoch == 1:
            for i, row in enumerate(rows):
                if row is not None and row["update_sq_norm"] == 0.0 and _zero_means_no_gradient(flows[i]):
                    raise ZeroUpdateError(None if n == 1 else i)
        if on_epoch is not None:
            on_epoch(rows)
        if raise_on_divergence and any(d == epoch for d in diverged):
            i = diverged.index(epoch)
            raise NonFiniteLossError(epoch, histories[i], initial[i])
        if all(d is not None for d in diverged):
            break
        if checkpoint is not None and checkpoint_due(epoch, epochs, checkpoint_every):
            host_params, host_state = jax.device_get((params, opt_state))
            checkpoint([
                TrainState(epoch, _run(host_params, i), _run(host_state, i), list(histories[i]), initial[i], diverged[i])
                for i in range(n)
            ])  # fmt: skip
        spent["record"] += time.perf_counter() - began

    n_devices = 1 if mesh is None else mesh.devices.size
    return [
        TrainResult(eqx.combine(_run(params, i), split[i][1]), _run(opt_state, i), histories[i], initial[i], compile_seconds, diverged[i], n_devices, dict(spent))
        for i in range(n)
    ]


def train(
    policy: Any,
    problem: ControlProblem,
    train_x: Any,
    test_x: Any,
    *,
    flow: Flow,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: int = 8,
    on_epoch: Callable[[dict], None] | None = None,
    backward: Backward = SharedBackward(),
    devices: Sequence[jax.Device] | None = None,
    start: TrainState | None = None,
    checkpoint: Callable[[TrainState], None] | None = None,
    checkpoint_every: int = 10,
) -> TrainResult:
    """Train ``policy`` on ``problem`` with the paper's protocol.

    Args:
        policy: controller (Equinox module or other callable pytree).
        problem: the simulator, horizon and loss.
        train_x, test_x: initial states, samples on axis 0 of every leaf.
        flow: the gradient flow, e.g. ``C()``.
        optimizer: an optax optimizer, e.g. :func:`stablebptt.make_optimizer`.
        epochs: number of passes over ``train_x``.
        batch_size: samples per update; mini-batches are taken in the stored order.
        on_epoch: called with each epoch's metrics dict right after the epoch.
        backward: how the backward passes are computed (default: shared forward pass).
        devices: split each mini-batch across these devices (data parallel,
            :mod:`stablebptt.training.sharding`); default: as many visible
            devices as divide ``batch_size``. ``[jax.devices()[0]]`` forces one.
        start: continue from this state (a saved checkpoint) instead of from
            ``policy``'s weights; the result equals the uninterrupted run's.
        checkpoint: called with the :class:`TrainState` every
            ``checkpoint_every`` epochs (not after the last).

    A single run is a batch of one of :func:`train_batched`'s loop, with one
    difference: a run whose loss becomes non-finite raises.

    Raises:
        NonFiniteLossError: a loss became NaN or infinite; the epoch's row has
            already been passed to ``on_epoch``.
    """
    return _fit(
        [policy], problem, [train_x], [test_x], flows=[flow], optimizers=[optimizer], epochs=epochs, batch_size=batch_size,
        on_epoch=None if on_epoch is None else (lambda rows: on_epoch(rows[0])), backward=backward, devices=devices,
        starts=None if start is None else [start], checkpoint=None if checkpoint is None else (lambda states: checkpoint(states[0])),
        checkpoint_every=checkpoint_every, raise_on_divergence=True,
    )[0]  # fmt: skip


def train_batched(
    policies: Sequence[Any],
    problem: ControlProblem,
    train_xs: Sequence[Any],
    test_xs: Sequence[Any],
    *,
    flow: Flow | Sequence[Flow],
    optimizers: Sequence[optax.GradientTransformation],
    epochs: int,
    batch_size: int = 8,
    on_epoch: Callable[[list[dict | None]], None] | None = None,
    backward: Backward = SharedBackward(),
    devices: Sequence[jax.Device] | None = None,
    starts: Sequence[TrainState] | None = None,
    checkpoint: Callable[[list[TrainState]], None] | None = None,
    checkpoint_every: int = 10,
) -> list[TrainResult]:
    """Train ``len(policies)`` runs as one compiled program; run ``i`` is ``(policies[i], train_xs[i], test_xs[i], optimizers[i])``.

    ``flow``: one flow for every run, or one per run (e.g. ``[R(), M(), C()]``):
    runs of different flows train side by side as stacked
    :class:`~stablebptt.engine.flows.Schedule` values, every run with as many
    backward passes as the flow that needs most.

    ``optimizers`` must come from :func:`stablebptt.make_optimizer` with the
    same ``adam`` form (they may differ in clip mode and numbers): the first
    one's update rule is used for all, with each run's own state. Optimizers
    that would update differently under that rule (e.g. ``optax.adam`` with
    different learning rates) are refused.

    A run whose loss becomes non-finite is marked (``diverged_at_epoch``) and
    its history ends there; the others go on. ``on_epoch`` receives one row
    per run each epoch (None for runs that have already diverged); ``seconds``
    is the wall time of the whole batched epoch. ``devices``: as for
    :func:`train`, every run's mini-batches are split across them.
    ``starts`` (one :class:`TrainState` per run, all at the same epoch) continues
    saved runs; ``checkpoint`` receives every run's state every
    ``checkpoint_every`` epochs (not after the last).
    """
    flows = [flow] * len(policies) if isinstance(flow, Flow) else list(flow)
    return _fit(
        policies, problem, train_xs, test_xs, flows=flows, optimizers=optimizers, epochs=epochs, batch_size=batch_size,
        on_epoch=on_epoch, backward=backward, devices=devices, starts=starts, checkpoint=checkpoint,
        checkpoint_every=checkpoint_every, raise_on_divergence=False,
    )  # fmt: skip
