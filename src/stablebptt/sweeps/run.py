"""Sweeps: the paper's experiment grids, batched, resumable, written run by run.

A sweep runs difficulty × method × clipping × seeds. Runs of one difficulty
and method train in one compiled program (their clip modes and seeds are
data of one ``vmap``; :func:`stablebptt.training.train_batched`), or with
``group_by="level"`` every run of a difficulty, the methods' flows stacked
as data too;
a *group* is either finished completely or continued from its runs'
common checkpoint, so a restarted sweep gives the same numbers as an
uninterrupted one. Every run is an ordinary run directory (``stablebptt
evaluate`` and ``animate`` work on it), written atomically, and a finished
run is never trained again.

Layout of a sweep directory::

    sweep.json                     the sweep's settings: its protocol (a restart must match it) and
                                   the grids of runs it holds (a new grid of the same protocol joins them)
    runs/<level>/<method>-<clip>-seed<k>/   one run directory each
    table.csv, table.md            final test loss, mean ± std over seeds
    figure.png                     one panel per difficulty (+ update sizes for quantum)

The pieces: :mod:`~.presets` (the grids), :mod:`~.spec` (settings, runs,
groups, what is finished), :mod:`~.groups` (training one group),
:mod:`~.backends` (where groups train: this process or a Ray cluster). This
module decides once which runs still need training and hands them to a
backend.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from tqdm.auto import tqdm

from ..runs import rundir
from .backends import Backend, LocalBackend, make_backend
from .groups import GroupsFailedError, train_group
from .presets import EXPERIMENTS, PRESETS, Experiment, parse_levels
from .spec import SWEEP_CONFIG, Run, SweepSpec, claim_folder, finished_runs, group_name, read_sweep

__all__ = [
    "Experiment",
    "EXPERIMENTS",
    "PRESETS",
    "SweepSpec",
    "Run",
    "SWEEP_CONFIG",
    "read_sweep",
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

log = logging.getLogger(__name__)


def run_sweep(
    spec: SweepSpec,
    out: Path,
    *,
    batched: bool = True,
    progress: bool = True,
    backend: Backend | str = "local",
    group_by: str = "method",
) -> list[Run]:
    """Train every unfinished run of ``spec`` into ``out``; returns the runs trained now.

    ``group_by``: ``"method"`` (default) trains one program per difficulty
    and method; ``"level"`` every run of one difficulty as one program (the
    numbers agree to float rounding; see :mod:`~.spec` for which is faster). ``batched=False`` trains the same runs
    one after another with :func:`stablebptt.runs.single.train_run` (for
    comparison). ``progress``: a progress bar (tqdm, on stderr); the count of
    finished runs is logged (INFO). ``backend``
    (a :class:`Backend` or its name, ``"local"`` or ``"ray"``) says where the
    groups train. Raises :class:`GroupsFailedError` after writing every
    group that finished if some could not be trained.
    """
    if isinstance(backend, str):
        backend = make_backend(backend)
    planned = spec.groups(group_by)
    out = Path(out)
    claim_folder(spec, out)

    done = {run.path for run in finished_runs(spec, out)}
    todo = [[run for run in group if run.path not in done] for group in planned]
    todo = [group for group in todo if group]
    total = len(spec.grid())
    remaining = sum(len(g) for g in todo)
    log.info("%s sweep (%s): %d of %d runs finished, %d to train", spec.experiment, spec.preset, total - remaining, total, remaining)
    bar = tqdm(total=remaining * spec.epochs, unit="run-epoch", disable=not progress, desc=spec.experiment)

    def advance(group: list[Run], n: int) -> None:
        bar.set_postfix_str(group_name(group), refresh=n == 0)
        bar.update(n)

    trained: list[Run] = []
    try:
        with contextlib.closing(backend.train_groups(todo, out, batched=batched, progress=advance)) as finished:
            for group in finished:
                trained.extend(group)
    finally:
        bar.close()
    return trained

