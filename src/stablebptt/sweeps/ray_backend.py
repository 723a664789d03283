"""Sweeps on a Ray cluster: each group of runs is one Ray task.

A task trains its group into a temporary folder on the worker and returns
the finished run directories' files; the driver writes them into the sweep
layout (``.NAME.partial``, then a rename), so no shared filesystem is needed
and a worker that dies mid-group leaves nothing behind. Ray retries such a
task (``max_retries``); a group that still fails is reported at the end,
after every other group is written. Ray is imported only when a sweep runs
(``pip install '.[ray]'``).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Sequence

from ..atomic import atomic_write_bytes
from ..engine.precision import set_float64
from ..runs import rundir
from .groups import GroupsFailedError, train_group
from .spec import Run, group_name

__all__ = ["RayBackend", "RayNotInstalledError", "import_ray"]

RunFiles = dict[str, dict[str, bytes]]  # run path -> {path inside the run directory: contents}


class RayNotInstalledError(ImportError):
    """``--backend ray`` without Ray installed."""


def import_ray() -> ModuleType:
    """The ``ray`` module, or :class:`RayNotInstalledError` naming the install command."""
    try:
        import ray
    except ImportError:
        raise RayNotInstalledError("the ray backend needs Ray, which is not installed: pip install '.[ray]'") from None
    return ray


@dataclasses.dataclass(frozen=True)
class RayBackend:
    """Train a sweep's groups as Ray tasks, in parallel.

    ``address``: the cluster (``"auto"``, ``"HOST:PORT"``, ``"ray://HOST:10001"``);
    ``None`` starts a local Ray instance (or uses ``RAY_ADDRESS``). If Ray is
    already initialized in this process, that connection is used as it is.
    ``num_cpus``/``num_gpus``: what each group's task reserves. ``max_retries``:
    how often Ray restarts a group whose worker died. ``before_group(runs)``
    runs on the worker before each attempt at a group (e.g. logging setup,
    or fault injection in tests).
    """

    address: str | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    max_retries: int = 3
    before_group: Callable[[list[Run]], None] | None = None

    def train_groups(
        self, groups: Sequence[list[Run]], out: Path, *, batched: bool, progress: Callable[[list[Run], int], None]
    ) -> Iterator[list[Run]]:
        """Submit every group, write each one as it finishes, and yield it (see :class:`~.sweep.Backend`).

        Raises :class:`ValueError` if the cluster cannot be reached.
        """
        ray = import_ray()
        if not groups:
            return
        connected_here = not ray.is_initialized()
        if connected_here:
            local = {"include_dashboard": False} if self.address is None else {}
            try:
                ray.init(address=self.address, logging_level=logging.WARNING, **local)
            except ConnectionError as err:
                raise ValueError(f"cannot connect to Ray at {self.address or 'RAY_ADDRESS'}: {_first_line(err)}") from None
        task = ray.remote(_train_group_task)
        resources = dict(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries)
        pending: dict[Any, list[Run]] = {}
        failures: list[tuple[str, str]] = []
        try:
            for group in groups:
                ref = task.options(name=f"stablebptt {group_name(group)}", **resources).remote(group, batched, self.before_group)
                pending[ref] = group
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                group = pending.pop(ref)
                try:
                    files = ray.get(ref)
                except ray.exceptions.RayError as err:
                    failures.append((group_name(group), _reason(ray, err, self.max_retries)))
                    continue
                _write_group(group, files, Path(out))
                progress(group, sum(run.config.epochs for run in group))
                yield group
        finally:
            for ref in pending:  # interrupted: nothing of these groups is written
                ray.cancel(ref)
            if connected_here:
                ray.shutdown()
        if failures:
            raise GroupsFailedError(failures)


def _train_group_task(group: list[Run], batched: bool, before_group: Callable[[list[Run]], None] | None) -> RunFiles:
    """On a worker: train ``group`` into a temporary folder and return its run directories' files."""
    if before_group is not None:
        before_group(group)
    # workers are reused across tasks: set the precision of this group either way
    set_float64(group[0].config.dtype == "float64")
    with tempfile.TemporaryDirectory(prefix="stablebptt-group-") as tmp:
        train_group(group, Path(tmp), batched=batched)
        return {run.path: _read_files(Path(tmp) / run.path) for run in group}


def _read_files(run_dir: Path) -> dict[str, bytes]:
    return {f.relative_to(run_dir).as_posix(): f.read_bytes() for f in sorted(run_dir.rglob("*")) if f.is_file()}


def _write_group(group: list[Run], files: RunFiles, out: Path) -> None:
    """Write each run of ``group`` to ``.NAME.partial`` and rename it into place."""
    for run in group:
        target = out / run.path
        partial = rundir.partial_path(target)
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        for name, data in files[run.path].items():
            path = partial / name
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
        rundir.finalize(partial, target)


def _reason(ray: Any, err: Exception, max_retries: int) -> str:
    """One line on why a group's task failed."""
    if isinstance(err, ray.exceptions.WorkerCrashedError):
        return f"its worker died on each of {max_retries + 1} attempts"
    if isinstance(err, ray.exceptions.RayTaskError) and err.cause is not None:
        err = err.cause
    return f"{type(err).__name__}: {_first_line(err)}"


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else "no message"
