"""Several training runs of the same shape as one compiled program (``vmap`` over runs).

Runs may differ in initial weights, data (e.g. seeds) and in every number an
optimizer from :func:`stablebptt.make_optimizer` keeps in its state (clip mode,
learning rate, Adam's β and ε); they share the problem, the flow and the
network's structure. Each run's losses are evaluated with the very program
:func:`stablebptt.train` uses, so a batched run's logged losses are those of its
saved weights.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..flows import Flow
from ..problem import ControlProblem
from ..updates import Backward, SharedBackward, trainable
from .batching import batch_count, split_batches
from .sharding import data_mesh, replicate, shard_leading
from .trainer import TrainResult, TrainState, check_data, check_start, checkpoint_due, epoch_row, make_epoch_functions, row_is_finite

__all__ = ["train_batched"]


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _lane(tree: Any, i: int) -> Any:
    return jax.tree.map(lambda a: a[i], tree)


def _check_same_rule(optimizers: Sequence[optax.GradientTransformation], params_list: list, opt_states: list) -> None:
    """Refuse optimizers whose update rules differ outside their states: the batch applies the first one's rule."""
    rng = np.random.default_rng(0)
    for i, (opt, params, state) in enumerate(zip(optimizers, params_list, opt_states, strict=True)):
        if opt is optimizers[0]:
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


def train_batched(
    policies: Sequence[Any],
    problem: ControlProblem,
    train_xs: Sequence[Any],
    test_xs: Sequence[Any],
    *,
    flow: Flow,
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
    """Train ``len(policies)`` runs together; run ``i`` is ``(policies[i], train_xs[i], test_xs[i], optimizers[i])``.

    ``optimizers`` must come from :func:`stablebptt.make_optimizer` with the
    same ``adam`` form (they may differ in clip mode and numbers): the first
    one's update rule is used for all, with each run's own state. Optimizers
    that would update differently under that rule (e.g. ``optax.adam`` with
    different learning rates) are refused.

    A run whose loss becomes non-finite is marked (``diverged_at_epoch``) and
    its history ends there; the others go on. ``on_epoch`` receives one row
    per run each epoch (None for runs that have already diverged); ``seconds``
    is the wall time of the whole batched epoch. ``devices``: as for
    :func:`stablebptt.train`, every run's mini-batches are split across them.
    ``starts`` (one :class:`TrainState` per run, all at the same epoch) continues
    saved runs; ``checkpoint`` receives every run's state every
    ``checkpoint_every`` epochs (not after the last).
    """
    n = len(policies)
    if n < 1 or not (len(train_xs) == len(test_xs) == len(optimizers) == n):
        raise ValueError("train_batched needs one policy, training set, test set and optimizer per run (at least one run)")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r}; expected a positive integer")
    for x in train_xs:
        batch_count(int(jax.tree.leaves(x)[0].shape[0]), batch_size)

    split = [trainable(p) for p in policies]
    params_list = [p for p, _ in split]
    shapes = {jax.tree.structure(p) for p in params_list}
    if len(shapes) != 1 or any(jax.tree.structure(s) != jax.tree.structure(split[0][1]) for _, s in split):
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

    fns = make_epoch_functions(policies[0], problem, flow, optimizers[0], backward=backward)
    mesh = data_mesh(batch_size, devices)
    params, opt_state = replicate((_stack(params_list), _stack(opt_states)), mesh)
    batches = shard_leading(_stack([split_batches(x, batch_size) for x in train_xs]), mesh, axis=2)
    train_xs, test_xs = shard_leading((list(train_xs), list(test_xs)), mesh)

    t0 = time.perf_counter()
    train_epoch = jax.jit(jax.vmap(fns.train_epoch)).lower(params, opt_state, batches).compile()
    evaluate = jax.jit(fns.evaluate)

    def losses_of(stacked):
        pending = [(evaluate(_lane(stacked, i), train_xs[i]), evaluate(_lane(stacked, i), test_xs[i])) for i in range(n)]
        return jax.device_get(pending)  # one host sync for all runs

    if starts is None:
        initial = [{"train_loss": float(a), "test_loss": float(b)} for a, b in losses_of(params)]
    else:
        initial = [dict(s.initial) for s in starts]
    compile_seconds = time.perf_counter() - t0

    histories: list[list[dict]] = [[] for _ in range(n)] if starts is None else [list(s.history) for s in starts]
    diverged: list[int | None] = [None] * n if starts is None else [s.diverged_at for s in starts]
    first = 1 if starts is None else starts[0].epoch + 1
    for epoch in range(first, epochs + 1):
        began = time.perf_counter()
        params, opt_state, stats = train_epoch(params, opt_state, batches)
        jax.block_until_ready(stats)
        seconds = time.perf_counter() - began
        stats = jax.device_get(stats)
        losses = losses_of(params)
        rows: list[dict | None] = []
        for i in range(n):
            if diverged[i] is not None:
                rows.append(None)
                continue
            row = epoch_row(epoch, [s[i] for s in stats], losses[i], seconds, flow.n_passes > 1)
            histories[i].append(row)
            rows.append(row)
            if not row_is_finite(row):
                diverged[i] = epoch
        if on_epoch is not None:
            on_epoch(rows)
        if all(d is not None for d in diverged):
            break
        if checkpoint is not None and checkpoint_due(epoch, epochs, checkpoint_every):
            host_params, host_state = jax.device_get((params, opt_state))
            checkpoint([
                TrainState(epoch, _lane(host_params, i), _lane(host_state, i), list(histories[i]), initial[i], diverged[i])
                for i in range(n)
            ])  # fmt: skip

    return [
        TrainResult(
            eqx.combine(_lane(params, i), split[i][1]),
            _lane(opt_state, i),
            histories[i],
            initial[i],
            compile_seconds,
            diverged[i],
            n_devices=1 if mesh is None else mesh.devices.size,
        )
        for i in range(n)
    ]
