"""Checkpoints of a run in training, so that a killed run continues where it was.

A run trains into ``.NAME.partial/`` (:mod:`.rundir`). Every few epochs the
trainer hands over a :class:`~stablebptt.training.TrainState`; its arrays (the
parameters, the optimizer state, the epoch, the initial losses and, for a run
that keeps its best controller, the best parameters) go into
``checkpoint.eqx`` in one atomic write, after the epoch's metrics row has been
flushed to ``metrics.csv``. Running the same command again loads the
checkpoint, cuts ``metrics.csv`` back to the checkpoint's epoch and continues:
the compiled programs and the inputs are the same, so on the same machine the
finished run's metrics (apart from timings), ``params.eqx`` and
``best_params.eqx`` are byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import equinox as eqx
import numpy as np

from ..atomic import atomic_write_bytes
from ..training import TrainState, best_epoch
from . import rundir
from .config import RunConfig

__all__ = ["DEFAULT_EVERY", "save_checkpoint", "load_checkpoint"]

DEFAULT_EVERY = 10
"""Epochs between checkpoints unless told otherwise."""


def _tree(state: TrainState, keep_best: bool) -> dict:
    """The checkpoint's arrays; with ``keep_best`` also the best parameters (the parameters in their place while
    no epoch has a finite test loss: the best epoch is read from the metrics, which then name none)."""
    tree = {
        "epoch": np.asarray(state.epoch, np.int64),
        "diverged_at": np.asarray(-1 if state.diverged_at is None else state.diverged_at, np.int64),
        "initial": np.asarray([state.initial["train_loss"], state.initial["test_loss"]], np.float64),
        "params": state.params,
        "opt_state": state.opt_state,
    }
    if keep_best:
        tree["best_params"] = state.params if state.best_params is None else state.best_params
    return tree


def save_checkpoint(partial: Path, state: TrainState, *, keep_best: bool = False) -> None:
    """Write ``state``'s arrays to ``partial/checkpoint.eqx`` atomically (its metric rows are in ``metrics.csv``);
    ``keep_best``: a run that keeps its best controller (``RunConfig.keep == "best"``)."""
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, _tree(state, keep_best))
    atomic_write_bytes(Path(partial) / rundir.CHECKPOINT, buf.getvalue())


def load_checkpoint(partial: Path, config: RunConfig, params: Any, opt_state: Any) -> TrainState | None:
    """The state saved in ``partial`` by a run of ``config``, or None if there is none to continue.

    ``params``/``opt_state``: a fresh run's, as templates of the saved arrays.
    None when the folder, its configuration, its checkpoint or its metrics are
    missing, differ from ``config`` or are damaged: the run then starts afresh.
    """
    partial = Path(partial)
    path = partial / rundir.CHECKPOINT
    if not path.is_file():
        return None
    try:
        if rundir.read_config(partial).differences(config):
            return None
        blank = TrainState(0, params, opt_state, [], {"train_loss": 0.0, "test_loss": 0.0})
        keep_best = config.keep == "best"
        with open(path, "rb") as f:
            tree = eqx.tree_deserialise_leaves(f, _tree(blank, keep_best))
            if f.read(1):
                return None  # more bytes than the arrays: not a file this run wrote
        epoch, diverged_at = int(tree["epoch"]), int(tree["diverged_at"])
        diverged_at = None if diverged_at < 0 else diverged_at
        rows = [r for r in rundir.read_metrics(partial / rundir.METRICS) if r["epoch"] <= (diverged_at or epoch)]
        if [r["epoch"] for r in rows] != list(range(1, (diverged_at or epoch) + 1)):
            return None
    except Exception:  # noqa: BLE001 — any damage means the checkpoint cannot be trusted: train afresh
        return None
    initial = {"train_loss": float(tree["initial"][0]), "test_loss": float(tree["initial"][1])}
    best = tree["best_params"] if keep_best and best_epoch(rows) is not None else None
    return TrainState(epoch, tree["params"], tree["opt_state"], rows, initial, diverged_at, best)
