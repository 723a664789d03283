"""The paper's training loop: fixed-order mini-batches, one compiled program per epoch.

A whole epoch (all mini-batch updates) is one ``lax.scan`` inside one ``jit``;
the host syncs once per epoch, for the metrics. Knows no task: it takes a
policy, a :class:`ControlProblem`, data, a flow and an optax optimizer.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import numpy as np
import optax

from ..flows import Flow, Regular
from ..problem import ControlProblem
from ..rollout import rollout_loss
from ..updates import Backward, SharedBackward, trainable, value_and_update
from .batching import batch_count, split_batches
from .sharding import data_mesh, replicate, shard_leading

__all__ = [
    "METRIC_COLUMNS",
    "EpochFunctions",
    "TrainResult",
    "TrainState",
    "NonFiniteLossError",
    "epoch_row",
    "row_is_finite",
    "make_epoch_functions",
    "check_data",
    "train",
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
updates (compiled in advance, so compilation is not counted).
"""


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
    flow: Flow,
    optimizer: optax.GradientTransformation,
    *,
    backward: Backward = SharedBackward(),
) -> EpochFunctions:
    """Build (unjitted) epoch and evaluation functions for a policy's structure."""
    _, static = trainable(policy)

    def update_step(carry, batch):
        params, opt_state = carry
        loss, update, info = value_and_update(flow, eqx.combine(params, static), problem, batch, backward=backward)
        updates, opt_state = optimizer.update(update, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), (loss, info.sq_norm, info.cosine)

    def train_epoch(params, opt_state, batches):
        (params, opt_state), stats = jax.lax.scan(update_step, (params, opt_state), batches)
        return params, opt_state, stats

    def evaluate(params, x):
        return rollout_loss(eqx.combine(params, static), problem, x, Regular())

    return EpochFunctions(train_epoch, evaluate, static)


def epoch_row(epoch: int, stats: Sequence, losses: Sequence, seconds: float, combined: bool) -> dict:
    """One metrics row from an epoch's per-update stats and the train/test losses after it."""
    return {
        "epoch": epoch,
        "batch_loss": float(np.mean(stats[0])),
        "train_loss": float(losses[0]),
        "test_loss": float(losses[1]),
        "update_sq_norm": float(np.mean(stats[1])),
        "cosine_mr": float(np.mean(stats[2])) if combined else math.nan,
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
    """

    policy: Any
    opt_state: Any
    history: list[dict]
    initial: dict
    compile_seconds: float
    diverged_at_epoch: int | None = None
    n_devices: int = 1


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


def _leading(x: Any) -> int:
    return int(jax.tree.leaves(x)[0].shape[0])


def check_data(policy: Any, problem: ControlProblem, train_x: Any, test_x: Any) -> None:
    """One-line ValueErrors, naming the set, for data that cannot train: float64 arrays while 64-bit
    JAX is off (they would be computed in float32), NaN or infinite values, a layout that the
    controller or the simulator refuses."""
    x64 = jax.config.read("jax_enable_x64")
    for name, x in (("training set", train_x), ("test set", test_x)):
        for leaf in jax.tree.leaves(x):
            dtype = getattr(leaf, "dtype", None)
            if dtype is None or not np.issubdtype(dtype, np.inexact):
                continue
            if dtype == np.float64 and not x64:
                raise ValueError(
                    f"the {name} is float64 but 64-bit JAX is off, so it would be computed in float32; "
                    "call stablebptt.set_float64() first (--x64 on the command line), or pass float32 data"
                )
            bad = np.argwhere(~np.isfinite(np.atleast_1d(np.asarray(leaf))))
            if len(bad):
                raise ValueError(f"the {name} holds NaN or infinite values (sample {bad[0][0]}); give finite initial states")
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

    Raises:
        NonFiniteLossError: a loss became NaN or infinite; the epoch's row has
            already been passed to ``on_epoch``.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r}; expected a positive integer")
    batch_count(_leading(train_x), batch_size)
    if _leading(test_x) < 1:
        raise ValueError("the test set is empty; give at least one test sample")
    check_data(policy, problem, train_x, test_x)

    fns = make_epoch_functions(policy, problem, flow, optimizer, backward=backward)
    mesh = data_mesh(batch_size, devices)
    params, _ = trainable(policy)
    opt_state = optimizer.init(params)
    if start is not None:
        check_start(start, params, opt_state, epochs)
        params, opt_state = start.params, start.opt_state
    params, opt_state = replicate((params, opt_state), mesh)
    batches = shard_leading(split_batches(train_x, batch_size), mesh, axis=1)
    train_x, test_x = shard_leading((train_x, test_x), mesh)

    t0 = time.perf_counter()
    train_epoch = jax.jit(fns.train_epoch).lower(params, opt_state, batches).compile()
    evaluate = jax.jit(fns.evaluate)  # the same program as a later evaluation of saved weights
    if start is None:
        initial_losses = jax.device_get((evaluate(params, train_x), evaluate(params, test_x)))
        initial = {"train_loss": float(initial_losses[0]), "test_loss": float(initial_losses[1])}
    else:
        initial = dict(start.initial)
    compile_seconds = time.perf_counter() - t0

    history: list[dict] = [] if start is None else list(start.history)
    for epoch in range(1 if start is None else start.epoch + 1, epochs + 1):
        began = time.perf_counter()
        params, opt_state, stats = train_epoch(params, opt_state, batches)
        jax.block_until_ready(stats)
        seconds = time.perf_counter() - began
        stats, losses = jax.device_get((stats, (evaluate(params, train_x), evaluate(params, test_x))))
        row = epoch_row(epoch, stats, losses, seconds, flow.n_passes > 1)
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if not row_is_finite(row):
            raise NonFiniteLossError(epoch, history, initial)
        if checkpoint is not None and checkpoint_due(epoch, epochs, checkpoint_every):
            checkpoint(TrainState(epoch, *jax.device_get((params, opt_state)), list(history), initial))

    n_devices = 1 if mesh is None else mesh.devices.size
    return TrainResult(eqx.combine(params, fns.static), opt_state, history, initial, compile_seconds, n_devices=n_devices)
