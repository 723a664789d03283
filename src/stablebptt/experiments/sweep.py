"""Sweeps: the paper's experiment grids, batched, resumable, written run by run.

A sweep runs difficulty × method × clipping × seeds. Runs that share a
difficulty and a method have the same shape, so they train together as one
compiled program (:func:`stablebptt.training.train_batched`); a *group* is
either finished completely or trained again completely, so a restarted sweep
gives the same numbers as an uninterrupted one. Every run is an ordinary run
directory (``stablebptt evaluate`` and ``animate`` work on it), written
atomically, and a finished run is never trained again.

Layout of a sweep directory::

    sweep.json                     the sweep's settings (a restart must match them)
    runs/<level>/<method>-<clip>-seed<k>/   one run directory each
    table.csv, table.md            final test loss, mean ± std over seeds
    figure.png                     one panel per difficulty (+ update sizes for quantum)

Where the groups train is a *backend*: :class:`LocalBackend` (this process,
one group after another) or :class:`stablebptt.experiments.ray_backend.RayBackend`
(a Ray cluster). Either way the results land in the same layout, and which
runs still need training is decided here, once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Protocol, Sequence

from tqdm.auto import tqdm

from ..atomic import atomic_write_text
from ..flows import flow_from_name
from ..optim import CLIP_MODES
from ..tasks import DIFFICULTY
from ..training import NonFiniteLossError, train_batched
from . import resume, rundir
from .config import RunConfig
from .single import RunWriter, build, fresh_state, train_run

__all__ = [
    "Experiment",
    "EXPERIMENTS",
    "PRESETS",
    "SweepSpec",
    "Run",
    "SWEEP_CONFIG",
    "run_sweep",
    "finished_runs",
    "train_group",
    "group_name",
    "Backend",
    "LocalBackend",
    "GroupsFailedError",
    "make_backend",
    "parse_levels",
]

SWEEP_CONFIG = "sweep.json"
PRESETS = ("quick", "paper")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One of the paper's experiments: a task, the levels of its difficulty option, and presets.

    ``presets[name]`` gives ``epochs``, ``seeds`` (how many), ``n_train`` and ``n_test``.
    """

    task: str
    levels: tuple
    label: str
    presets: dict

    @property
    def difficulty(self) -> str:
        """The task option the levels set."""
        return DIFFICULTY[self.task]

    def level_name(self, level: Any) -> str:
        return self.label.format(level)


EXPERIMENTS: dict[str, Experiment] = {
    "cartpole": Experiment(
        "cartpole", (1, 2, 3, 4), "poles: {}",
        {"quick": dict(epochs=50, seeds=2, n_train=128, n_test=128), "paper": dict(epochs=1000, seeds=3, n_train=256, n_test=256)},
    ),
    "repulsion": Experiment(
        "repulsion", (1.0, 0.1, 0.01, 0.001), "rc = {}",
        {"quick": dict(epochs=50, seeds=2, n_train=128, n_test=128), "paper": dict(epochs=1000, seeds=3, n_train=256, n_test=256)},
    ),
    "quantum": Experiment(
        "quantum", (3, 4, 5), "target {}",
        {"quick": dict(epochs=20, seeds=2, n_train=64, n_test=64), "paper": dict(epochs=1000, seeds=3, n_train=256, n_test=256)},
    ),
}  # fmt: skip


def parse_levels(experiment: str, text: str | Sequence[Any]) -> tuple:
    """``"1,3"`` (or a list) to the difficulty levels of ``experiment``, typed like its own levels.

    Raises a one-line ValueError naming the experiment's levels.
    """
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of toy, {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[experiment]
    kind = type(exp.levels[0])
    items = [str(v).strip() for v in (text.split(",") if isinstance(text, str) else text)]
    items = [v for v in items if v]
    paper = ", ".join(str(v) for v in exp.levels)
    if not items:
        raise ValueError(f"--levels names no level; the paper's {exp.difficulty} levels are {paper}")
    try:
        return tuple(kind(v) if kind is float else int(v) for v in items)
    except ValueError:
        raise ValueError(
            f"--levels {','.join(items)}: {exp.difficulty} takes {'numbers' if kind is float else 'integers'}; the paper's levels are {paper}"
        ) from None


class Run(NamedTuple):
    level: Any
    method: str
    clip: str
    seed: int
    config: RunConfig
    path: str  # relative to the sweep directory


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """Everything that determines a sweep's numbers (what ``sweep.json`` holds)."""

    experiment: str
    preset: str
    epochs: int
    seeds: tuple[int, ...]
    n_train: int
    n_test: int
    levels: tuple
    methods: tuple[str, ...] = ("R", "M", "C", "S")
    clips: tuple[str, ...] = CLIP_MODES
    task_options: dict = dataclasses.field(default_factory=dict)
    batch_size: int = 8
    learning_rate: float = 1e-3
    adam: str = "keras"
    dtype: str = "float32"
    remat: bool | int = 0

    def __post_init__(self):
        if self.experiment not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {self.experiment!r}; choose one of toy, {', '.join(EXPERIMENTS)}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        for name, values in (("seeds", self.seeds), ("levels", self.levels), ("methods", self.methods), ("clips", self.clips)):
            if len(values) == 0:
                raise ValueError(f"a sweep needs at least one of {name}; use --seeds 1 or more")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} {list(values)} names one value twice")
        for m in self.methods:
            flow_from_name(m)
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "levels", tuple(self.levels))
        object.__setattr__(self, "methods", tuple(m.upper() for m in self.methods))
        object.__setattr__(self, "clips", tuple(self.clips))
        self.grid()  # validates every run's configuration

    @classmethod
    def from_preset(cls, experiment: str, preset: str = "quick", *, epochs: int | None = None, seeds: int | None = None, **overrides: Any) -> "SweepSpec":
        """The grid of ``experiment`` with a preset's sizes; ``epochs``/``seeds`` (a count) override it."""
        if experiment not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {experiment!r}; choose one of toy, {', '.join(EXPERIMENTS)}")
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        exp = EXPERIMENTS[experiment]
        sizes = dict(exp.presets[preset])
        if epochs is not None:
            sizes["epochs"] = epochs
        if seeds is not None:
            sizes["seeds"] = seeds
        count = sizes.pop("seeds")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"seeds={count!r}; a sweep needs a positive number of seeds (--seeds 1 or more)")
        fields = dict(experiment=experiment, preset=preset, seeds=tuple(range(42, 42 + count)), levels=exp.levels, **sizes)
        fields.update(overrides)
        return cls(**fields)

    # --- the grid ----------------------------------------------------------
    def run_config(self, level: Any, method: str, clip: str, seed: int) -> RunConfig:
        exp = EXPERIMENTS[self.experiment]
        return RunConfig(
            task=exp.task,
            task_options={**self.task_options, exp.difficulty: level},
            method=method,
            clip=clip,
            epochs=self.epochs,
            seed=seed,
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            n_train=self.n_train,
            n_test=self.n_test,
            adam=self.adam,
            dtype=self.dtype,
            remat=self.remat,
        ).resolved()

    def level_dir(self, level: Any) -> str:
        name = EXPERIMENTS[self.experiment].difficulty.replace("n_", "")
        return f"{name}{level}"

    def grid(self) -> list[Run]:
        """Every run, ordered by difficulty, method, clip, seed."""
        return [
            Run(level, m, c, s, self.run_config(level, m, c, s), f"runs/{self.level_dir(level)}/{m}-{c}-seed{s}")
            for level in self.levels
            for m in self.methods
            for c in self.clips
            for s in self.seeds
        ]

    def groups(self) -> list[list[Run]]:
        """Runs of one difficulty and method: one compiled program each."""
        out: dict[tuple, list[Run]] = {}
        for run in self.grid():
            out.setdefault((run.level, run.method), []).append(run)
        return list(out.values())

    # --- JSON --------------------------------------------------------------
    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "SweepSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        if set(data) - known:
            raise ValueError(f"sweep settings have unknown keys {sorted(set(data) - known)}")
        data = dict(data)
        for key in ("seeds", "levels", "methods", "clips"):
            data[key] = tuple(data[key])
        return cls(**data)


def _is_finished(path: Path, config: RunConfig) -> bool:
    try:
        summary = rundir.read_summary(path)
    except rundir.RunDirError:
        return False  # damaged: trained again
    if summary is None or summary.get("status") not in ("finished", "diverged"):
        return False
    try:
        return not rundir.read_config(path).differences(config)
    except rundir.RunDirError:
        return False


def finished_runs(spec: SweepSpec, out: Path) -> list[Run]:
    """The runs of ``spec`` whose directories in ``out`` are complete."""
    out = Path(out)
    return [run for run in spec.grid() if _is_finished(out / run.path, run.config)]


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
            flow=config.flow(),
            optimizers=[run.config.optimizer() for run in runs],
            epochs=config.epochs,
            batch_size=config.batch_size,
            on_epoch=record,
            backward=config.backward(setups[0].task),
            starts=starts,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
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
            train_run(run.config, out / run.path, overwrite=True, progress=False, say=lambda _: None, checkpoint_every=checkpoint_every)
        except NonFiniteLossError:
            pass  # recorded in the run directory as diverged
        on_epochs(run.config.epochs)


def group_name(group: list[Run]) -> str:
    """``"poles2 C"``: the difficulty folder and the method that a group shares."""
    return f"{group[0].path.split('/')[1]} {group[0].method}"


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


class Backend(Protocol):
    """Where a sweep's groups train.

    :meth:`train_groups` trains ``groups`` into their run directories under
    ``out``, calls ``progress(group, n)`` for ``n`` more finished run-epochs
    of ``group``, and yields each group once all its runs are written. It
    raises :class:`GroupsFailedError` at the end if some groups failed.
    """

    def train_groups(
        self, groups: Sequence[list[Run]], out: Path, *, batched: bool, progress: Callable[[list[Run], int], None]
    ) -> Iterator[list[Run]]: ...


@dataclasses.dataclass(frozen=True)
class LocalBackend:
    """Train the groups in this process, one after another, saving each every ``checkpoint_every`` epochs."""

    checkpoint_every: int = resume.DEFAULT_EVERY

    def train_groups(
        self, groups: Sequence[list[Run]], out: Path, *, batched: bool, progress: Callable[[list[Run], int], None]
    ) -> Iterator[list[Run]]:
        for group in groups:
            progress(group, 0)  # shows the group while it compiles
            train_group(
                group, out, batched=batched, on_epochs=lambda n, g=group: progress(g, n), checkpoint_every=self.checkpoint_every
            )
            yield group


def make_backend(name: str, **options: Any) -> Backend:
    """``"local"`` → :class:`LocalBackend`; ``"ray"`` → ``RayBackend(**options)`` (e.g. ``address=``)."""
    if name == "local":
        if set(options) - {"checkpoint_every"}:
            raise ValueError(f"the local backend takes only checkpoint_every (got {', '.join(sorted(options))})")
        return LocalBackend(**options)
    if name == "ray":
        from .ray_backend import RayBackend

        return RayBackend(**options)
    raise ValueError(f"unknown backend {name!r}; choose local or ray")


def run_sweep(
    spec: SweepSpec,
    out: Path,
    *,
    batched: bool = True,
    progress: bool = True,
    say: Callable[[str], None] = print,
    backend: Backend | str = "local",
) -> list[Run]:
    """Train every unfinished run of ``spec`` into ``out``; returns the runs trained now.

    ``batched=False`` trains the same runs one after another with
    :func:`stablebptt.experiments.train_run` (for comparison). ``backend``
    (a :class:`Backend` or its name, ``"local"`` or ``"ray"``) says where the
    groups train. Raises :class:`GroupsFailedError` after writing every
    group that finished if some could not be trained.
    """
    if isinstance(backend, str):
        backend = make_backend(backend)
    out = Path(out)
    rundir.check_output_place(out)
    rundir.refuse_other_settings(out, SWEEP_CONFIG, "sweep", spec.to_dict())
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SWEEP_CONFIG, json.dumps(spec.to_dict(), indent=2, sort_keys=True) + "\n")

    done = {run.path for run in finished_runs(spec, out)}
    todo = [[run for run in group if run.path not in done] for group in spec.groups()]
    todo = [group for group in todo if group]
    total = len(spec.grid())
    remaining = sum(len(g) for g in todo)
    say(f"{spec.experiment} sweep ({spec.preset}): {total - remaining} of {total} runs finished, {remaining} to train")
    bar = tqdm(total=remaining * spec.epochs, unit="run-epoch", disable=not progress, desc=spec.experiment)

    def advance(group: list[Run], n: int) -> None:
        bar.set_postfix_str(group_name(group), refresh=n == 0)
        bar.update(n)

    trained: list[Run] = []
    try:
        with contextlib.closing(backend.train_groups(todo, out, batched=batched, progress=advance)) as groups:
            for group in groups:
                trained.extend(group)
    finally:
        bar.close()
    return trained

