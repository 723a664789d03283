"""One training run from a :class:`RunConfig` into a run directory, and reading it back."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
from tqdm.auto import tqdm

from .. import plots
from ..atomic import atomic_write_bytes, atomic_write_text
from ..tasks import DIFFICULTY, Task
from ..training import NonFiniteLossError, TrainState, best_epoch, evaluate_losses, train
from ..engine.updates import trainable
from . import resume, rundir
from .config import RunConfig

__all__ = ["Setup", "build", "RunOutcome", "RunWriter", "fresh_state", "train_run", "load_run", "evaluate_run"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a config turns into: task, initial controller and data (all from ``config.seed``)."""

    config: RunConfig
    task: Task
    policy: Any
    train_x: Any
    test_x: Any


def build(config: RunConfig) -> Setup:
    """Task, data and initial weights of a run; identical for every method and clip mode.

    Keys: ``split(key(seed), 3)`` → training states, test states, initial weights.
    """
    dtype = config.jnp_dtype()
    task = config.make_task()
    k_train, k_test, k_init = jax.random.split(jax.random.key(config.seed), 3)
    return Setup(
        config=config,
        task=task,
        policy=task.make_policy(k_init, dtype),
        train_x=task.sample_initial_states(k_train, config.n_train, dtype),
        test_x=task.sample_initial_states(k_test, config.n_test, dtype),
    )


@dataclasses.dataclass
class RunOutcome:
    """status: ``"finished"``, ``"diverged"`` or ``"skipped"`` (the run was already there)."""

    status: str
    out: Path
    history: list[dict]
    summary: dict


def run_title(config: RunConfig, *, method: bool = True) -> str:
    """``"cartpole (n_poles=2) — C, clip none, seed 42"`` (without the method if ``method=False``)."""
    knob = DIFFICULTY[config.task]
    who = f"{config.method}, " if method else ""
    return f"{config.task} ({knob}={config.task_options.get(knob)}) — {who}clip {config.clip}, seed {config.seed}"


def train_run(
    config: RunConfig,
    out: Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    announce: bool = True,
    checkpoint_every: int = resume.DEFAULT_EVERY,
) -> RunOutcome:
    """Train one run and write its directory.

    Every ``checkpoint_every`` epochs (0: never) the run's state is saved in
    its partial folder; the same call after a kill continues from there to
    the same numbers (:mod:`stablebptt.runs.resume`). ``progress``: a
    progress bar (tqdm, on stderr). ``announce``: log (at INFO, to this
    module's logger) whether the run starts, continues or is there already;
    callers that report their own progress (sweeps, the Brax comparison) pass False.

    Raises :class:`rundir.RunDirError` if ``out`` holds something else and
    :class:`NonFiniteLossError` (after writing the run, status ``"diverged"``)
    if the loss became non-finite.
    """
    config = config.resolved()
    out = Path(out)
    rundir.check_movable(out)
    rundir.claim_output(out)
    state = rundir.existing_run_state(out, config, overwrite)
    if state == "same":
        history, summary = rundir.read_metrics(out / rundir.METRICS), rundir.read_summary(out)
        if summary.get("status") == "diverged":  # the same numbers again: report it the same way
            raise NonFiniteLossError(summary["diverged_at_epoch"], history)
        if announce:
            log.info("%s already holds this finished run; nothing to do (pass --overwrite to train it again)", out)
        return RunOutcome("skipped", out, history, summary)

    setup = build(config)
    writer = RunWriter(config, out, template=fresh_state(setup))
    if announce and writer.start is None:
        log.info("training %s with %s (clip %s) into %s", config.task, config.method, config.clip, out)
    elif announce:
        log.info("continuing %s from its checkpoint after epoch %d of %d", out, writer.start.epoch, config.epochs)
    bar = tqdm(
        total=config.epochs, initial=writer.start.epoch if writer.start else 0,
        desc=f"{config.task} {config.method}", unit="epoch", disable=not progress, leave=True,
    )  # fmt: skip

    def on_epoch(row: dict) -> None:
        writer.epoch(row)
        bar.update(1)
        bar.set_postfix(test_loss=f"{row['test_loss']:.4g}")

    try:
        result = train(
            setup.policy,
            setup.task.problem,
            setup.train_x,
            setup.test_x,
            flow=config.flow(),
            optimizer=config.optimizer(),
            epochs=config.epochs,
            batch_size=config.batch_size,
            on_epoch=on_epoch,
            backward=config.backward(setup.task),
            start=writer.start,
            checkpoint=writer.checkpoint,
            checkpoint_every=checkpoint_every,
            keep_best=config.keep == "best",
        )
    except NonFiniteLossError as err:
        writer.finish(err.history, policy=None, initial=err.initial, compile_seconds=None, diverged_at=err.epoch)
        raise
    except BaseException:
        writer.abandon()
        raise
    finally:
        bar.close()
    summary = writer.finish(
        result.history, policy=result.policy, initial=result.initial, compile_seconds=result.compile_seconds, seconds=result.seconds,
        best_policy=result.best_policy,
    )  # fmt: skip
    return RunOutcome("finished", out, result.history, summary)


def fresh_state(setup: Setup) -> tuple[Any, Any]:
    """The trainable parameters and optimizer state a run of ``setup`` starts from."""
    params, _ = trainable(setup.policy)
    return params, setup.config.optimizer().init(params)


class RunWriter:
    """Writes one run directory as training goes.

    ``config.json`` first, one metrics row per epoch (flushed), a checkpoint
    now and then (:meth:`checkpoint`), then at :meth:`finish` the parameters
    (and the best ones, for ``config.keep == "best"``), the learning curve and ``summary.json``, and the folder is renamed from
    ``.NAME.partial`` to ``NAME``. An unfinished run (:meth:`abandon`, or a
    killed process) stays partial. Given ``template`` (a fresh run's
    parameters and optimizer state), a partial folder of the same run with a
    checkpoint is continued: :attr:`start` is its state (else None and the
    folder starts afresh).
    """

    def __init__(self, config: RunConfig, out: Path, *, template: tuple[Any, Any] | None = None):
        self.config, self.out = config, Path(out)
        self.partial = rundir.partial_path(self.out)
        self.start: TrainState | None = None
        if template is not None and self.partial.is_dir():
            self.start = resume.load_checkpoint(self.partial, config, *template)
        if self.start is None:
            if self.partial.exists():
                shutil.rmtree(self.partial)
            self.partial.mkdir(parents=True)
            atomic_write_text(self.partial / rundir.CONFIG, config.to_json() + "\n")
        self.metrics = rundir.MetricsWriter(self.partial / rundir.METRICS, rows=self.start.history if self.start else ())
        self.started = time.perf_counter()

    def restart(self) -> "RunWriter":
        """A writer of the same run that starts afresh (drops the checkpoint)."""
        self.metrics.close()
        return RunWriter(self.config, self.out)

    def epoch(self, row: dict) -> None:
        self.metrics.write(row)

    def checkpoint(self, state: TrainState) -> None:
        resume.save_checkpoint(self.partial, state, keep_best=self.config.keep == "best")

    def abandon(self) -> None:
        self.metrics.close()

    def finish(
        self,
        history: list[dict],
        *,
        policy: Any,
        initial: dict,
        compile_seconds: float | None,
        diverged_at: int | None = None,
        batch_runs: int = 1,
        seconds: dict | None = None,
        best_policy: Any = None,
    ) -> dict:
        """Complete the run (``diverged_at`` marks a non-finite loss) and move it into place; ``best_policy``:
        the controller of the lowest test loss, needed by a finished run of ``config.keep == "best"``."""
        self.metrics.close()
        partial = self.partial
        (partial / rundir.CHECKPOINT).unlink(missing_ok=True)
        if policy is not None and diverged_at is None:
            if self.config.keep == "best":
                if best_policy is None:
                    raise ValueError(f"the run into {self.out} keeps its best controller, but none was given; train with keep_best=True")
                atomic_write_bytes(partial / rundir.BEST_PARAMS, _serialise(best_policy))
            atomic_write_bytes(partial / rundir.PARAMS, _serialise(policy))
        plots.save_figure(plots.learning_curve_figure(history, run_title(self.config)), partial / rundir.CURVE)
        last = history[-1] if history else {}
        summary = {
            "status": "finished" if diverged_at is None else "diverged",
            "epochs_run": len(history),
            "initial": initial,
            "final": {k: last.get(k) for k in ("batch_loss", "train_loss", "test_loss")},
            "diverged_at_epoch": diverged_at,
            "compile_seconds": compile_seconds,
            "seconds_per_epoch": (sum(r["seconds"] for r in history) / len(history)) if history else None,
            "batch_runs": batch_runs,
            "wall_seconds": time.perf_counter() - self.started,
            "seconds_split": seconds or {},
            "jax_version": jax.__version__,
            "backend": jax.default_backend(),
        }
        atomic_write_text(partial / rundir.SUMMARY, json.dumps(_finite_or_null(summary), indent=2, allow_nan=False) + "\n")
        rundir.finalize(partial, self.out)
        return summary


def _finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, so that the JSON is standard."""
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _serialise(policy: Any) -> bytes:
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, policy)
    return buf.getvalue()


def load_run(run_dir: Path, *, best: bool = False) -> tuple[Setup, Any, list[dict]]:
    """The setup of a finished run, its trained controller (``best``: the one of the lowest test loss,
    ``best_params.eqx`` of a run of ``keep="best"``) and its metrics."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise rundir.RunDirError(f"{run_dir} is not a directory; give the --out of a finished 'stablebptt train'")
    config = rundir.read_config(run_dir)
    name = rundir.BEST_PARAMS if best else rundir.PARAMS
    if best and config.keep != "best":
        raise rundir.RunDirError(
            f"{run_dir} was trained without --keep best, so it kept no best controller (no {name}); "
            "train it again with --keep best (and --overwrite) to keep one, or evaluate its final controller without --best"
        )
    params_path = run_dir / name
    if not params_path.is_file():
        summary = rundir.read_summary(run_dir) or {}
        status = summary.get("status")
        if status == "finished" and best:
            raise rundir.RunDirError(f"{run_dir} is a finished run that has lost its {name}; run its command again to train it again")
        if status == "finished":
            raise rundir.RunDirError(
                f"{run_dir} is a finished run whose parameters were not kept (no {name}, as in a committed results folder); "
                f"its metrics are in {rundir.METRICS}: train it again with the settings of its {rundir.CONFIG} to get a controller"
            )
        if status == "diverged":
            raise rundir.RunDirError(
                f"{run_dir} diverged at epoch {summary.get('diverged_at_epoch')} and has no {name}; the same settings "
                "diverge the same way: train it with clipping (--clip norm) or a smaller --lr"
            )
        raise rundir.RunDirError(f"{run_dir} has no {name} (the run did not finish); run its command again to train it")
    setup = build(config)
    try:
        with open(params_path, "rb") as f:
            policy = eqx.tree_deserialise_leaves(f, setup.policy)
            extra = f.read(1)
    except Exception as err:  # noqa: BLE001 — truncated, random, or another controller's file: Equinox raises many kinds
        while err.__cause__ is not None or err.__context__ is not None:  # Equinox wraps the reader's error
            err = err.__cause__ or err.__context__
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise rundir.RunDirError(
            f"{params_path} is damaged or belongs to another controller ({reason[:120]}); "
            "train the run again (--overwrite) or restore the file"
        ) from None
    if extra:
        raise rundir.RunDirError(f"{params_path} has bytes after the controller's arrays, so it is not the file this run wrote; train the run again (--overwrite) or restore the file")
    return setup, policy, rundir.read_metrics(run_dir / rundir.METRICS)


def evaluate_run(run_dir: Path, *, best: bool = False) -> dict:
    """Reload a trained controller (``best``: the one of the lowest test loss) and compute its test (and train)
    loss as training logged them; ``epoch``: the epoch whose row logged ``logged_test_loss`` for it."""
    setup, policy, history = load_run(run_dir, best=best)
    train_loss, test_loss = evaluate_losses(policy, setup.task.problem, setup.train_x, setup.test_x)
    epoch = best_epoch(history) if best else len(history)
    return {
        "test_loss": test_loss,
        "train_loss": train_loss,
        "logged_test_loss": history[epoch - 1]["test_loss"] if epoch else float("nan"),
        "epoch": epoch,
        "epochs": len(history),
    }
