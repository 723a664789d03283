"""The paper's training loop: fixed-order mini-batches, one compiled program for every epoch.

A whole epoch (all mini-batch updates, then the training and test losses) is
one program (:func:`stablebptt.training.program.compile_epoch`), compiled
once per call, the losses before training included; the host syncs once per
epoch, for the metrics. Knows no task: it takes a policy, a
:class:`ControlProblem`, data, a flow and an optax optimizer.

One loop serves one run (:func:`train`) and a batch of runs
(:func:`train_batched`): runs are stacked along a leading axis and their
epoch is one ``vmap``ped program. Runs may differ in initial weights, data
(e.g. seeds), their flows and every hyperparameter the one optimizer keeps
in its state (:func:`stablebptt.make_optimizer`'s clip limits, learning rate,
Adam's β and ε); they share the problem and the network's structure. The
losses are computed with the evaluation a later evaluation of the saved
weights runs, ``vmap``ped: the logged losses are those of the saved weights
to float rounding (1e-6 relative).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Mapping, Sequence

import equinox as eqx
import jax
import numpy as np
import optax

from .. import validate
from ..engine.flows import Combined, AbstractFlow, Regular
from ..engine.problem import ControlProblem, check_flow, check_optimizer, check_policy, check_states, sample_axes
from ..engine.updates import AbstractBackward, SharedBackward, trainable
from .batching import batch_count, sample_count
from .program import EpochProgram, compile_epoch

__all__ = [
    "METRIC_COLUMNS",
    "TIME_KEYS",
    "TrainResult",
    "TrainState",
    "NonFiniteLossError",
    "ZeroUpdateError",
    "best_epoch",
    "epoch_row",
    "row_is_finite",
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


def best_epoch(history: Sequence[dict]) -> int | None:
    """The epoch of the lowest finite ``test_loss`` among the metric rows (the earliest on ties), or None if none is finite.

    Row ``k``'s test loss is that of the parameters the epoch program evaluated after epoch ``k``'s updates
    (those epoch ``k + 1`` starts from): the parameters :func:`train` keeps with ``keep_best=True``. The
    weights before training (``initial``) are not a candidate.
    """
    best = None
    for row in history:
        if math.isfinite(row["test_loss"]) and (best is None or row["test_loss"] < best["test_loss"]):
            best = row
    return None if best is None else best["epoch"]


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
    best_policy, best_epoch: with ``keep_best=True``, the policy of the lowest test loss in
        ``history`` and its epoch (:func:`best_epoch`); else None.
    """

    policy: Any
    opt_state: Any
    history: list[dict]
    initial: dict
    compile_seconds: float
    diverged_at_epoch: int | None = None
    n_devices: int = 1
    seconds: dict = dataclasses.field(default_factory=dict)
    best_policy: Any = None
    best_epoch: int | None = None


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Where a run stands after ``epoch`` epochs: enough to continue it to the same numbers.

    params: the trainable leaves (``trainable(policy)[0]``). opt_state: the
    optimizer's state. history: the metric rows of epochs 1..epoch.
    initial: the losses before any update. diverged_at: the epoch whose loss
    was not finite, or None. best_params: with ``keep_best``, the trainable
    leaves of epoch :func:`best_epoch` ``(history)`` (None if no row is finite);
    None without it.
    """

    epoch: int
    params: Any
    opt_state: Any
    history: list[dict]
    initial: dict
    diverged_at: int | None = None
    best_params: Any = None


def checkpoint_due(epoch: int, epochs: int, every: int) -> bool:
    """Whether to save after ``epoch``: every ``every`` epochs (0: never), not after the last one."""
    return every > 0 and epoch % every == 0 and epoch < epochs


def _zero_means_no_gradient(flow: AbstractFlow) -> bool:
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


def check_start(start: TrainState, params: Any, opt_state: Any, epochs: int, keep_best: bool = False) -> None:
    def like(tree):
        leaves, treedef = jax.tree.flatten(tree)
        return treedef, [(np.shape(a), a.dtype if hasattr(a, "dtype") else np.result_type(type(a))) for a in leaves]

    if like((start.params, start.opt_state)) != like((params, opt_state)):
        raise ValueError("the start state's parameters or optimizer state do not match this policy and optimizer; start afresh")
    if keep_best and best_epoch(start.history) is not None and (start.best_params is None or like(start.best_params) != like(params)):
        raise ValueError(
            "keep_best=True, but the start state holds no best parameters matching this policy (it was saved without keep_best); "
            "start afresh or continue without keep_best"
        )
    rows = start.epoch if start.diverged_at is None else start.diverged_at
    if not 0 <= start.epoch <= epochs or len(start.history) != rows:
        raise ValueError(
            f"the start state is at epoch {start.epoch} with {len(start.history)} metric rows; "
            f"expected an epoch in 0..{epochs} and one row per epoch trained"
        )


@dataclasses.dataclass(frozen=True)
class _Runs:
    """The runs of one training call, one entry per run (a single run: lists of one)."""

    policies: Sequence[Any]
    problem: ControlProblem
    train_xs: Sequence[Any]
    test_xs: Sequence[Any]
    flows: Sequence[AbstractFlow]


@dataclasses.dataclass(frozen=True)
class _Hooks:
    """What the loop hands over after each epoch, and what it does when a run diverges."""

    on_epoch: Callable[[list[dict | None]], None] | None
    checkpoint: Callable[[list[TrainState]], None] | None
    checkpoint_every: int
    raise_on_divergence: bool


@dataclasses.dataclass(frozen=True)
class _Best:
    """One run's best so far: the epoch of its lowest finite test loss (:func:`best_epoch`), that loss, and the
    parameters it was evaluated on (on the host)."""

    epoch: int | None = None
    test_loss: float = math.inf
    params: Any = None

    @classmethod
    def of(cls, start: TrainState) -> "_Best":
        epoch = best_epoch(start.history)
        return cls() if epoch is None else cls(epoch, start.history[epoch - 1]["test_loss"], start.best_params)


@dataclasses.dataclass
class _Progress:
    """Where the runs stand after ``epoch`` epochs: the program's parameters and optimizer states, and each run's
    record; ``best``: each run's :class:`_Best` (None: not kept)."""

    epoch: int
    params: Any
    opt_state: Any
    histories: list[list[dict]]
    initial: list[dict]
    diverged: list[int | None]
    best: list[_Best] | None = None


def _validate(runs: _Runs, epochs: int, batch_size: int) -> None:
    """One-line ValueErrors for runs that cannot train: counts, epochs, set sizes, structures, data."""
    n = len(runs.policies)
    if n < 1 or not (len(runs.train_xs) == len(runs.test_xs) == len(runs.flows) == n):
        raise ValueError("train_batched needs one policy, training set, test set and flow per run (at least one run)")
    for flow in runs.flows:
        check_flow(flow)
    for policy in runs.policies:
        check_policy(policy)
    validate.positive_int("epochs", epochs)
    axes = sample_axes(runs.problem, runs.policies[0], runs.train_xs[0])
    for x, t in zip(runs.train_xs, runs.test_xs, strict=True):
        batch_count(sample_count(x, axes, "training set"), batch_size)
        if sample_count(t, sample_axes(runs.problem, runs.policies[0], t), "test set") < 1:
            raise ValueError("the test set is empty; give at least one test sample")
    split = [trainable(p) for p in runs.policies]
    if len({jax.tree.structure(p) for p, _ in split}) != 1 or any(jax.tree.structure(s) != jax.tree.structure(split[0][1]) for _, s in split):
        raise ValueError("train_batched: all policies must have the same structure")
    for policy, train_x, test_x in zip(runs.policies, runs.train_xs, runs.test_xs, strict=True):
        check_data(policy, runs.problem, train_x, test_x)


def _starting_states(
    runs: _Runs,
    optimizer: optax.GradientTransformation,
    starts: Sequence[TrainState] | None,
    epochs: int,
    keep_best: bool,
) -> tuple[list, list | None]:
    """Each run's parameters and optimizer state to train from: its policy's weights (the state: None, for
    the epoch program to compute), or its start state (checked against those)."""
    n = len(runs.policies)
    params = [trainable(p)[0] for p in runs.policies]
    if starts is None:
        return params, None
    if len(starts) != n or len({s.epoch for s in starts}) != 1:
        raise ValueError("train_batched: give one start state per run, all at the same epoch")
    state = jax.eval_shape(optimizer.init, params[0])
    for start, p in zip(starts, params, strict=True):
        check_start(start, p, state, epochs, keep_best)
    return [s.params for s in starts], [s.opt_state for s in starts]


def _begin(program: EpochProgram, starts: Sequence[TrainState] | None, keep_best: bool) -> _Progress:
    """The runs before the first epoch to train: the losses before any update come from the epoch program itself."""
    n = program.n_runs
    if starts is not None:
        best = [_Best.of(s) for s in starts] if keep_best else None
        return _Progress(starts[0].epoch, program.params, program.opt_state, [list(s.history) for s in starts],
                         [dict(s.initial) for s in starts], [s.diverged_at for s in starts], best)  # fmt: skip
    losses = program.per_run(program.initial_losses)
    initial = [{"train_loss": float(a), "test_loss": float(b)} for a, b in losses]
    best = [_Best() for _ in range(n)] if keep_best else None
    return _Progress(0, program.params, program.opt_state, [[] for _ in range(n)], initial, [None] * n, best)


def _keep_best(progress: _Progress, rows: list[dict | None], program: EpochProgram) -> None:
    """Keep, on the host, the parameters of each run whose test loss this epoch is below its best so far (ties keep
    the earlier): the parameters the epoch's losses were evaluated on, which the epoch program returned."""
    better = [i for i, row in enumerate(rows) if row is not None and math.isfinite(row["test_loss"]) and row["test_loss"] < progress.best[i].test_loss]
    if not better:
        return
    host = program.per_run(jax.device_get(progress.params))
    for i in better:
        params = host[i] if program.n_runs == 1 else jax.tree.map(np.copy, host[i])  # not a view that keeps every run's arrays
        progress.best[i] = _Best(progress.epoch, rows[i]["test_loss"], params)


def _record(progress: _Progress, stats: Sequence, losses: Any, seconds: float, program: EpochProgram) -> list[dict | None]:
    """The epoch's row of every run not yet diverged (None for the others), appended to its history; marks new divergence."""
    rows: list[dict | None] = []
    for i, (run_stats, run_losses) in enumerate(zip(program.per_run(stats), program.per_run(losses), strict=True)):
        if progress.diverged[i] is not None:
            rows.append(None)
            continue
        row = epoch_row(progress.epoch, run_stats, run_losses, seconds)
        progress.histories[i].append(row)
        rows.append(row)
        if not row_is_finite(row):
            progress.diverged[i] = progress.epoch
    return rows


def _loop(program: EpochProgram, flows: Sequence[AbstractFlow], progress: _Progress, epochs: int, hooks: _Hooks, spent: dict) -> _Progress:
    """Run epochs ``progress.epoch + 1 .. epochs`` (fewer if every run diverged), handing each epoch over to the hooks."""
    n = program.n_runs
    while progress.epoch < epochs:
        began = time.perf_counter()
        progress.params, progress.opt_state, stats, losses = program.epoch(progress.params, progress.opt_state)
        stats, losses = jax.device_get((stats, losses))  # the one host sync of the epoch
        seconds = time.perf_counter() - began
        spent["epochs"] += seconds
        began = time.perf_counter()
        progress.epoch += 1
        rows = _record(progress, stats, losses, seconds, program)
        if progress.best is not None:
            _keep_best(progress, rows, program)
        if progress.epoch == 1:
            for i, row in enumerate(rows):
                if row is not None and row["update_sq_norm"] == 0.0 and _zero_means_no_gradient(flows[i]):
                    raise ZeroUpdateError(None if n == 1 else i)
        if hooks.on_epoch is not None:
            hooks.on_epoch(rows)
        if hooks.raise_on_divergence and progress.epoch in progress.diverged:
            i = progress.diverged.index(progress.epoch)
            raise NonFiniteLossError(progress.epoch, progress.histories[i], progress.initial[i])
        if all(d is not None for d in progress.diverged):
            break
        if hooks.checkpoint is not None and checkpoint_due(progress.epoch, epochs, hooks.checkpoint_every):
            host = program.per_run(jax.device_get((progress.params, progress.opt_state)))
            hooks.checkpoint([
                TrainState(progress.epoch, p, o, list(progress.histories[i]), progress.initial[i], progress.diverged[i],
                           None if progress.best is None else progress.best[i].params)
                for i, (p, o) in enumerate(host)
            ])  # fmt: skip
        spent["record"] += time.perf_counter() - began
    return progress


def _fit(
    runs: _Runs,
    optimizer: optax.GradientTransformation,
    *,
    epochs: int,
    batch_size: int,
    backward: AbstractBackward,
    devices: Sequence[jax.Device] | None,
    hyperparams: Sequence[Mapping[str, float]] | None,
    starts: Sequence[TrainState] | None,
    hooks: _Hooks,
    keep_best: bool,
) -> list[TrainResult]:
    """The training behind :func:`train` (one run) and :func:`train_batched` (several): validate, compile one program, loop."""
    check_optimizer(optimizer)
    validate.integer("checkpoint_every", hooks.checkpoint_every, low=0, expected="0 (never) or a positive integer")
    if not isinstance(keep_best, bool):
        raise TypeError(f"keep_best={keep_best!r}; expected True (keep the parameters of the lowest test loss) or False")
    _validate(runs, epochs, batch_size)
    params, opt_states = _starting_states(runs, optimizer, starts, epochs, keep_best)
    static = trainable(runs.policies[0])[1]
    spent = dict.fromkeys(TIME_KEYS, 0.0)
    began = time.perf_counter()
    program = compile_epoch(
        [eqx.combine(p, static) for p in params], runs.problem, runs.train_xs, runs.test_xs, flows=runs.flows,
        optimizer=optimizer, backward=backward, batch_size=batch_size, opt_states=opt_states,
        hyperparams=None if starts is not None else hyperparams, devices=devices,
    )  # fmt: skip
    progress = _begin(program, starts, keep_best)
    spent["compile"] = time.perf_counter() - began
    progress = _loop(program, runs.flows, progress, epochs, hooks, spent)
    finals = [jax.device_put(run) for run in program.per_run((progress.params, progress.opt_state))]  # several runs: sliced on the host
    bests = progress.best or [_Best()] * program.n_runs
    results = []
    for i, ((p, o), policy, best) in enumerate(zip(finals, runs.policies, bests, strict=True)):
        own = trainable(policy)[1]
        kept = None if best.params is None else eqx.combine(jax.device_put(best.params), own)
        results.append(TrainResult(eqx.combine(p, own), o, progress.histories[i], progress.initial[i], spent["compile"], progress.diverged[i],
                                   program.n_devices, dict(spent), kept, best.epoch))  # fmt: skip
    return results


def train(
    policy: Any,
    problem: ControlProblem,
    train_x: Any,
    test_x: Any,
    *,
    flow: AbstractFlow,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: int = 8,
    on_epoch: Callable[[dict], None] | None = None,
    backward: AbstractBackward = SharedBackward(),
    devices: Sequence[jax.Device] | None = None,
    start: TrainState | None = None,
    checkpoint: Callable[[TrainState], None] | None = None,
    checkpoint_every: int = 10,
    keep_best: bool = False,
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
        keep_best: also keep the parameters of the lowest test loss in the
            history (:attr:`TrainResult.best_policy`, :func:`best_epoch`): row
            ``k``'s test loss belongs to the parameters after epoch ``k``'s
            updates, which the epoch program evaluated; ties keep the earlier
            epoch. Kept on the host each epoch the loss improves (no extra
            compile), saved in checkpoints, so a continued run keeps the same.

    A single run is a batch of one of :func:`train_batched`'s loop, with one
    difference: a run whose loss becomes non-finite raises.

    Raises:
        NonFiniteLossError: a loss became NaN or infinite; the epoch's row has
            already been passed to ``on_epoch``.
    """
    hooks = _Hooks(
        on_epoch=None if on_epoch is None else (lambda rows: on_epoch(rows[0])),
        checkpoint=None if checkpoint is None else (lambda states: checkpoint(states[0])),
        checkpoint_every=checkpoint_every, raise_on_divergence=True,
    )  # fmt: skip
    runs = _Runs([policy], problem, [train_x], [test_x], [flow])
    return _fit(
        runs, optimizer, epochs=epochs, batch_size=batch_size, backward=backward, devices=devices, hyperparams=None,
        starts=None if start is None else [start], hooks=hooks, keep_best=keep_best,
    )[0]  # fmt: skip


def train_batched(
    policies: Sequence[Any],
    problem: ControlProblem,
    train_xs: Sequence[Any],
    test_xs: Sequence[Any],
    *,
    flow: AbstractFlow | Sequence[AbstractFlow],
    optimizer: optax.GradientTransformation,
    hyperparams: Sequence[Mapping[str, float]] | None = None,
    epochs: int,
    batch_size: int = 8,
    on_epoch: Callable[[list[dict | None]], None] | None = None,
    backward: AbstractBackward = SharedBackward(),
    devices: Sequence[jax.Device] | None = None,
    starts: Sequence[TrainState] | None = None,
    checkpoint: Callable[[list[TrainState]], None] | None = None,
    checkpoint_every: int = 10,
    keep_best: bool = False,
) -> list[TrainResult]:
    """Train ``len(policies)`` runs as one compiled program; run ``i`` is ``(policies[i], train_xs[i], test_xs[i], hyperparams[i])``.

    ``flow``: one flow for every run, or one per run (e.g. ``[R(), M(), C()]``):
    runs of different flows train side by side as stacked
    :class:`~stablebptt.engine.flows.Schedule` values, every run with as many
    backward passes as the flow that needs most.

    ``optimizer``: the one update rule of every run. ``hyperparams``: one
    mapping per run of the numbers that differ, set in that run's optimizer
    state (:func:`stablebptt.engine.optim.with_hyperparams`): hyperparameters
    the optimizer injects with ``optax.inject_hyperparams``, e.g.
    ``optimizer_hyperparams(clip, learning_rate)`` for :func:`stablebptt.make_optimizer`
    (clip limits, learning rate, β, ε) or ``{"learning_rate": 0.1}`` for
    ``optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)``. None: every
    run uses the optimizer's own numbers.

    A run whose loss becomes non-finite is marked (``diverged_at_epoch``) and
    its history ends there; the others go on. ``on_epoch`` receives one row
    per run each epoch (None for runs that have already diverged); ``seconds``
    is the wall time of the whole batched epoch. ``devices``: as for
    :func:`train`, every run's mini-batches are split across them.
    ``starts`` (one :class:`TrainState` per run, all at the same epoch) continues
    saved runs; ``checkpoint`` receives every run's state every
    ``checkpoint_every`` epochs (not after the last). ``keep_best``: as for
    :func:`train`, each run keeps its own best parameters.
    """
    flows = [flow] * len(policies) if isinstance(flow, AbstractFlow) else list(flow)
    runs = _Runs(list(policies), problem, list(train_xs), list(test_xs), flows)
    hooks = _Hooks(on_epoch, checkpoint, checkpoint_every, raise_on_divergence=False)
    return _fit(
        runs, optimizer, epochs=epochs, batch_size=batch_size, backward=backward, devices=devices, hyperparams=hyperparams,
        starts=starts, hooks=hooks, keep_best=keep_best,
    )  # fmt: skip
