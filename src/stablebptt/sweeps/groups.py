"""Training one group of a sweep's runs into their run directories (the work every backend does)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..engine.optim import optimizer_hyperparams
from ..training import NonFiniteLossError, train_batched
from ..runs import resume
from ..runs.single import RunWriter, build, fresh_state, train_run
from .spec import Run

__all__ = ["train_group", "GroupsFailedError"]


def _train_group(runs: list[Run], out: Path, on_epoch: Callable[[int], None], checkpoint_every: int) -> None:
    setups = [build(run.config) for run in runs]
    writers = [RunWriter(run.config, out / run.path, template=fresh_state(setup)) for run, setup in zip(runs, setups, strict=True)]
    starts = [w.start for w in writers]
    if any(s is None for s in starts) or len({s.epoch for s in starts}) != 1:
        if any(s is not None for s in starts):  # killed between two runs' checkpoints: the group starts afresh
            writers = [w.restart() for w in writers]
        starts = None
    config = runs[0].config
    if starts is not None:
        on_epoch(starts[0].epoch)

    def record(rows):
        for writer, row in zip(writers, rows, strict=True):
            if row is not None:
                writer.epoch(row)
        on_epoch(1)

    def checkpoint(states):
        for writer, state in zip(writers, states, strict=True):
            writer.checkpoint(state)

    try:
        results = train_batched(
            [s.policy for s in setups],
            setups[0].task.problem,
            [s.train_x for s in setups],
            [s.test_x for s in setups],
            flow=[run.config.flow() for run in runs],
            optimizer=config.optimizer(),
            hyperparams=[optimizer_hyperparams(run.config.clip, run.config.learning_rate) for run in runs],
            epochs=config.epochs,
            batch_size=config.batch_size,
            on_epoch=record,
            backward=config.backward(setups[0].task),
            starts=starts,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            keep_best=config.keep == "best",
        )
    except BaseException:
        for writer in writers:
            writer.abandon()
        raise
    for writer, result in zip(writers, results, strict=True):
        writer.finish(
            result.history,
            policy=result.policy,
            initial=result.initial,
            compile_seconds=result.compile_seconds,
            diverged_at=result.diverged_at_epoch,
            batch_runs=len(runs),
            seconds=result.seconds,
            best_policy=result.best_policy,
        )


def train_group(
    group: list[Run],
    out: Path,
    *,
    batched: bool = True,
    on_epochs: Callable[[int], None] = lambda n: None,
    checkpoint_every: int = resume.DEFAULT_EVERY,
) -> None:
    """Train one group's runs into their directories under ``out``.

    ``batched=False`` trains them one after another with :func:`train_run`.
    A diverged run is written with status ``"diverged"`` either way.
    ``on_epochs(n)`` reports ``n`` more finished run-epochs. Every
    ``checkpoint_every`` epochs the runs are saved in their partial folders,
    and a group killed halfway continues from there.
    """
    if batched:
        _train_group(group, out, lambda k: on_epochs(k * len(group)), checkpoint_every)
        return
    for run in group:
        try:
            train_run(run.config, out / run.path, overwrite=True, progress=False, announce=False, checkpoint_every=checkpoint_every)
        except NonFiniteLossError:
            pass  # recorded in the run directory as diverged
        on_epochs(run.config.epochs)


class GroupsFailedError(RuntimeError):
    """Groups that could not be trained; every other group's runs were written.

    ``failures`` holds ``(group name, reason)`` pairs.
    """

    def __init__(self, failures: list[tuple[str, str]]):
        self.failures = failures
        listed = "; ".join(f"{name}: {reason}" for name, reason in failures)
        super().__init__(
            f"{len(failures)} group(s) of runs failed and were not written ({listed}); "
            "the other groups' runs are in place: run the same command again to retry the failed ones"
        )


