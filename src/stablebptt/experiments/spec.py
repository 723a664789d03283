"""A sweep's settings (what ``sweep.json`` holds), its grid of runs and groups, and which runs are done.

A *group* is the runs that train together as one compiled program: by
default the runs of one difficulty and one method (clip modes and seeds), or
with ``by="level"`` every run of one difficulty (all methods too, their flows
stacked as data). Both give the same numbers to float rounding; on a 2-core
CPU one program per method measured faster (cart pole quick sweep 353 s
against 388 s, repulsion 391 s against 489 s), because a stacked group runs
every flow with two backward lanes and every network Jacobian, about twice
the work, and batching 4× more runs gains too little on a CPU to pay for it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple

from ..flows import flow_from_name
from ..optim import CLIP_MODES
from . import rundir
from .config import RunConfig
from .presets import EXPERIMENTS, PRESETS

__all__ = ["SWEEP_CONFIG", "GROUPINGS", "Run", "SweepSpec", "finished_runs", "group_name"]

SWEEP_CONFIG = "sweep.json"
GROUPINGS = ("level", "method")


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
        settings = dataclasses.asdict(self)
        return RunConfig.from_options(
            settings, task=exp.task, task_options={**self.task_options, exp.difficulty: level}, method=method, clip=clip, seed=seed
        )

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

    def groups(self, by: str = "method") -> list[list[Run]]:
        """The runs that train as one compiled program each: those of one difficulty and method
        (``by="method"``) or every run of one difficulty (``by="level"``), in grid order."""
        if by not in GROUPINGS:
            raise ValueError(f"unknown grouping {by!r}; choose one of {', '.join(GROUPINGS)}")
        out: dict[tuple, list[Run]] = {}
        for run in self.grid():
            out.setdefault((run.level,) if by == "level" else (run.level, run.method), []).append(run)
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


def group_name(group: list[Run]) -> str:
    """``"poles2 C"``: the difficulty folder, and the method if every run of the group has the same (else ``"poles2"``)."""
    level = group[0].path.split("/")[1]
    return f"{level} {group[0].method}" if len({run.method for run in group}) == 1 else level


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


