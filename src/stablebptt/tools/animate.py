"""Animate a trained run: roll its controller out from one test state and write a GIF."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from .. import validate
from ..plots.animations import write_gif
from ..engine.rollouts import rollout
from ..runs import rundir
from ..runs.single import load_run

__all__ = ["ANIMATION", "animate_run"]

ANIMATION = "animation.gif"


def animate_run(run_dir: Path, out: Path | None = None, *, sample: int = 0, fps: int = 20) -> tuple[Path, int]:
    """Write the animation of test sample ``sample`` of a finished run; returns ``(path, frames)``.

    Default path: ``run_dir/animation.gif``.
    """
    path = Path(out) if out is not None else Path(run_dir) / ANIMATION
    rundir.claim_output(path, file=True)
    if path.is_file() and path.read_bytes()[:4] != b"GIF8":
        raise rundir.RunDirError(f"--out {path} exists and is not a GIF; choose another --out (an existing GIF is replaced)")
    setup, policy, _ = load_run(run_dir)
    n_test = int(jax.tree.leaves(setup.test_x)[0].shape[0])
    validate.integer("sample", sample, low=0, high=n_test - 1, expected=f"a test state of this run, 0..{n_test - 1}")
    validate.positive_int("fps", fps)
    x0 = jax.tree.map(lambda a: a[sample : sample + 1], setup.test_x)
    problem = setup.task.problem
    states = np.asarray(rollout(policy, problem.step, x0, problem.n_steps).states)[:, 0]
    frames = write_gif(setup.task.name, states, setup.task.config, setup.task.config.dt, path, fps=fps)
    return path, frames
