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

import collections
import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any, NamedTuple

from .. import validate
from ..engine.flows import flow_from_name
from ..engine.optim import CLIP_MODES
from ..runs import memory, rundir
from ..runs.compare import METHODS
from ..runs.config import RunConfig
from .presets import EXPERIMENTS, PRESETS

__all__ = ["SWEEP_CONFIG", "GROUPINGS", "GRID_AXES", "Run", "SweepSpec", "finished_runs", "group_name", "read_sweep", "claim_folder"]

SWEEP_CONFIG = "sweep.json"
GROUPINGS = ("level", "method")
GRID_AXES = ("levels", "methods", "clips", "seeds")
"""The settings that say which runs a sweep holds; every other setting is its protocol."""


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
    methods: tuple[str, ...] = METHODS
    clips: tuple[str, ...] = CLIP_MODES
    task_options: dict = dataclasses.field(default_factory=dict)
    batch_size: int = 8
    learning_rate: float = 1e-3
    adam: str = "keras"
    dtype: str = "float32"
    remat: bool | int = 0
    grids: tuple[dict, ...] = ()
    """Sub-grids (dicts of :data:`GRID_AXES`) when the sweep holds several commands' grids
    (:meth:`merge`); empty: the whole product of ``levels × methods × clips × seeds``."""

    def __post_init__(self):
        validate.choice("experiment", self.experiment, EXPERIMENTS)
        validate.choice("preset", self.preset, PRESETS)
        for name, values in (("seeds", self.seeds), ("levels", self.levels), ("methods", self.methods), ("clips", self.clips)):
            if len(values) == 0:
                raise ValueError(f"a sweep needs at least one of {name}; use --seeds 1 or more")
        for level in self.levels:  # a group (one difficulty and method: every clip and seed) trains as one program
            first = self.run_config(level, self.methods[0], self.clips[0], self.seeds[0])
            memory.check_fits(first, together={"seeds": len(self.seeds), "clips": len(self.clips)})
        for name, values in (("seeds", self.seeds), ("levels", self.levels), ("methods", self.methods), ("clips", self.clips)):
            validate.distinct(name, values)
        for m in self.methods:
            flow_from_name(m)
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "levels", tuple(self.levels))
        object.__setattr__(self, "methods", tuple(m.upper() for m in self.methods))
        object.__setattr__(self, "clips", tuple(self.clips))
        object.__setattr__(self, "grids", tuple(_normal_grid(g) for g in self.grids))
        for g in self.grids:
            for axis in GRID_AXES:
                if not set(g[axis]) <= set(getattr(self, axis)):
                    raise ValueError(f"a sub-grid's {axis} {list(g[axis])} are not all among the sweep's {list(getattr(self, axis))}")
        self.grid()  # validates every run's configuration

    @classmethod
    def from_preset(cls, experiment: str, preset: str = "quick", *, epochs: int | None = None, seeds: int | None = None, **overrides: Any) -> "SweepSpec":
        """The grid of ``experiment`` with a preset's sizes; ``epochs``/``seeds`` (a count) override it."""
        exp = EXPERIMENTS[validate.choice("experiment", experiment, EXPERIMENTS)]
        sizes = dict(exp.presets[validate.choice("preset", preset, PRESETS)])
        if epochs is not None:
            sizes["epochs"] = epochs
        if seeds is not None:
            sizes["seeds"] = seeds
        count = validate.positive_int("seeds", sizes.pop("seeds"), expected="a positive number of seeds (--seeds 1 or more)")
        fields = dict(experiment=experiment, preset=preset, seeds=range(42, 42 + count), levels=exp.levels, **sizes)  # a tuple once it fits
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
            if self.holds(level, m, c, s)
        ]

    def holds(self, level: Any, method: str, clip: str, seed: int | None = None) -> bool:
        """Whether the sweep has this run (``seed=None``: any seed of this setting)."""
        if not self.grids:
            return level in self.levels and method in self.methods and clip in self.clips and (seed is None or seed in self.seeds)
        return any(
            level in g["levels"] and method in g["methods"] and clip in g["clips"] and (seed is None or seed in g["seeds"]) for g in self.grids
        )

    def seeds_of(self, level: Any, method: str, clip: str) -> tuple[int, ...]:
        """The seeds the sweep runs for one setting."""
        return tuple(s for s in self.seeds if self.holds(level, method, clip, s))

    def seed_counts(self) -> collections.Counter:
        """How many of the sweep's settings (difficulty × method × clip) run each number of seeds."""
        return collections.Counter(
            len(self.seeds_of(level, m, c)) for level in self.levels for m in self.methods for c in self.clips if self.holds(level, m, c)
        )

    def usual_seeds(self) -> int:
        """How many seeds most of the sweep's settings run (on a tie, the larger number): the count a table
        states once, naming it only in the cells that differ."""
        counts = self.seed_counts()
        return max(counts, key=lambda n: (counts[n], n)) if counts else len(self.seeds)

    def protocol(self) -> dict:
        """Every setting but which runs the sweep holds: sweeps that share it can share a folder."""
        return {k: v for k, v in self.to_dict().items() if k not in (*GRID_AXES, "grids")}

    def merge(self, other: "SweepSpec") -> "SweepSpec":
        """One sweep holding the runs of both (same protocol); the grid axes list both's values in order of first appearance."""
        if self.protocol() != other.protocol():
            raise ValueError("sweeps of different protocols cannot share a folder")
        parts: list[dict] = []
        for g in (*self.sub_grids(), *other.sub_grids()):
            if not any(_contains(h, g) for h in parts):
                parts = [h for h in parts if not _contains(g, h)] + [g]
        axes = {axis: tuple(dict.fromkeys((*getattr(self, axis), *getattr(other, axis)))) for axis in GRID_AXES}
        grids = () if _cells(*parts) == _cells(axes) else tuple(parts)  # parts that fill the product are the product
        return dataclasses.replace(self, **axes, grids=grids)

    def sub_grids(self) -> tuple[dict, ...]:
        """The sweep's grids: its sub-grids, or its one whole product."""
        return self.grids or (_normal_grid({axis: getattr(self, axis) for axis in GRID_AXES}),)

    def groups(self, by: str = "method") -> list[list[Run]]:
        """The runs that train as one compiled program each: those of one difficulty and method
        (``by="method"``) or every run of one difficulty (``by="level"``), in grid order."""
        validate.choice("grouping", by, GROUPINGS)
        out: dict[tuple, list[Run]] = {}
        for run in self.grid():
            out.setdefault((run.level,) if by == "level" else (run.level, run.method), []).append(run)
        return list(out.values())

    # --- JSON --------------------------------------------------------------
    def to_dict(self) -> dict:
        data = json.loads(json.dumps(dataclasses.asdict(self)))
        if not self.grids:
            del data["grids"]  # one whole product: the file a single command always wrote
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "SweepSpec":
        validate.known_settings("sweep", data, (f.name for f in dataclasses.fields(cls)))
        data = dict(data)
        for key in GRID_AXES:
            data[key] = tuple(data[key])
        data["grids"] = tuple(data.get("grids", ()))
        return cls(**data)


def _normal_grid(grid: dict) -> dict:
    if not isinstance(grid, dict) or set(grid) != set(GRID_AXES):
        raise ValueError(f"a sub-grid must name exactly {', '.join(GRID_AXES)}; got {grid!r}")
    return {axis: list(grid[axis]) for axis in GRID_AXES}


def _cells(*grids: dict) -> set[tuple]:
    return {cell for g in grids for cell in itertools.product(*(g[axis] for axis in GRID_AXES))}


def _contains(big: dict, small: dict) -> bool:
    return all(set(small[axis]) <= set(big[axis]) for axis in GRID_AXES)


def read_sweep(out: Path) -> SweepSpec:
    """The sweep a folder holds (its ``sweep.json``); one-line :class:`rundir.RunDirError` if it is damaged."""
    path = Path(out) / SWEEP_CONFIG
    try:
        return SweepSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise rundir.RunDirError(f"{path} is not a valid sweep description ({reason}); restore it or choose another --out") from None


def claim_folder(spec: SweepSpec, out: Path) -> SweepSpec:
    """The sweep ``out`` holds once ``spec``'s runs join it: ``spec`` itself for a free folder,
    else the union with what is there (same protocol), written to ``sweep.json``.

    Raises :class:`rundir.RunDirError` naming the differing settings if the folder holds a
    sweep of another protocol (e.g. other epochs), and leaves it untouched.
    """
    out = Path(out)
    rundir.claim_output(
        out, marker=SWEEP_CONFIG, what="sweep", settings=spec.to_dict(), ignore=(*GRID_AXES, "grids"),
        merge=lambda: read_sweep(out).merge(spec).to_dict(),
    )  # fmt: skip
    return read_sweep(out)


def group_name(group: list[Run]) -> str:
    """``"poles2 C"``: the difficulty folder, and the method if every run of the group has the same (else ``"poles2"``)."""
    level = group[0].path.split("/")[1]
    return f"{level} {group[0].method}" if len({run.method for run in group}) == 1 else level


def _is_finished(path: Path, config: RunConfig) -> bool:
    """A whole run of ``config`` (its parameters aside: a results folder keeps none)."""
    if rundir.run_gaps(path, params=False):
        return False  # unfinished or damaged: trained again
    return not rundir.read_config(path).differences(config)


def finished_runs(spec: SweepSpec, out: Path) -> list[Run]:
    """The runs of ``spec`` whose directories in ``out`` are complete."""
    out = Path(out)
    return [run for run in spec.grid() if _is_finished(out / run.path, run.config)]


