"""The paper's experiment grids: which task, which difficulty levels, and the sizes of each preset."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from .. import validate
from ..tasks import DIFFICULTY

__all__ = ["Experiment", "EXPERIMENTS", "PRESETS", "parse_levels"]

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
    exp = EXPERIMENTS[validate.choice("experiment", experiment, EXPERIMENTS)]
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


