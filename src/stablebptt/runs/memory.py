"""How much memory a run needs, estimated from its settings before any array is built, and the check against the machine's.

One run, with the task's sizes in numbers (:meth:`~stablebptt.tasks.TaskConfig.sizes`:
``state`` and ``intermediates`` per sample and step, ``weights``) and ``b``
bytes per number (4 for float32, 8 for float64), needs at least::

    arrays  = b · ((n_train + n_test) · (state + intermediates)    the training and test sets, and a step of evaluating them
                   + batch_size · kept · (state + intermediates)    what the rollout keeps for the backward pass
                   + 4 · weights)                                   weights, update and Adam's two moments
              + 16 · n_steps                                        the flow's two float64 gates per step
    history = 400 · epochs                                          one metrics row per epoch (456 bytes measured)

with ``kept = n_steps + 1`` steps, or ``ceil(n_steps / k) + k`` with ``remat``
segments of ``k`` steps. Runs trained together as one program (a sweep's
group, ``bench --runs``) need ``together · (arrays + apart · history)``,
where ``apart`` counts the runs trained one after another whose histories
are all held. It is a lower bound: XLA's own buffers come on top.

:func:`check_fits` refuses, in one line, settings whose estimate exceeds the
machine's memory, naming the setting whose default would save the most.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

from ..engine.remat import segment_length
from ..tasks import task_config

__all__ = ["FLAGS", "HISTORY_ROW_BYTES", "GATE_BYTES_PER_STEP", "machine_memory", "run_bytes", "estimate", "check_fits", "format_bytes"]

HISTORY_ROW_BYTES = 400
"""Bytes of one epoch's metrics row held in memory, rounded down (tracemalloc measured 456 for a dict of the 7 metrics)."""

GATE_BYTES_PER_STEP = 16
"""The flow's gates ``(net, sim)``: one float64 each per step (:meth:`~stablebptt.engine.flows.AbstractFlow.gate_schedule`)."""

FLAGS = {
    "n_train": "--n-train", "n_test": "--n-test", "batch_size": "--batch-size", "epochs": "--epochs",
    "n_steps": "--steps", "n_poles": "--poles", "n_drivers": "--drivers", "n_evaders": "--evaders",
    "seeds": "--seeds", "runs": "--runs", "warmup": "--warmup",
}  # fmt: skip
"""The command-line option of each setting the estimate can name (the others are named as ``config.json`` spells them)."""

_RUN_SIZES = ("n_train", "n_test", "batch_size", "epochs")


def machine_memory() -> int:
    """This machine's physical memory [bytes] (``SC_PHYS_PAGES × SC_PAGE_SIZE``)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def run_bytes(task: str, task_options: Mapping[str, Any], *, n_train: int, n_test: int, batch_size: int, epochs: int,
              remat: bool | int = 0, dtype: str = "float32") -> tuple[int, int]:  # fmt: skip
    """``(arrays, history)`` of one run [bytes]: what its training program holds, and its metrics (the module's formula)."""
    config = task_config(task, **task_options)
    sizes, n_steps = config.sizes(), config.n_steps
    segment = segment_length(n_steps, remat)
    kept = n_steps + 1 if segment is None else -(-n_steps // segment) + segment
    per_step = sizes.state + sizes.intermediates
    numbers = (n_train + n_test) * per_step + batch_size * kept * per_step + 4 * sizes.weights
    itemsize = {"float32": 4, "float64": 8}[dtype]
    return itemsize * numbers + GATE_BYTES_PER_STEP * n_steps, HISTORY_ROW_BYTES * epochs


def estimate(config: Any, together: int = 1, apart: int = 1, **changes: Any) -> int:
    """Bytes that ``together`` copies of the run ``config`` (a :class:`~stablebptt.runs.config.RunConfig`) need as one
    program, with the histories of ``apart`` such programs held: ``together · (arrays + apart · history)``.

    ``changes``: settings replaced for the estimate (e.g. ``n_train=256``), without a RunConfig's checks.
    """
    settings = {key: changes.get(key, getattr(config, key)) for key in ("task_options", "remat", "dtype", *_RUN_SIZES)}
    arrays, history = run_bytes(config.task, **settings)
    return together * (arrays + apart * history)


def format_bytes(n: float) -> str:
    """``25769803776`` → ``"24 GiB"``: three significant digits (``"1.5e+03 EiB"`` beyond), binary units up to EiB."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = min(int(math.log(max(n, 1), 1024)), len(units) - 1)
    value = n / 1024**power
    return f"{value:.0f} {units[power]}" if 1000 <= value < 1024 else f"{value:.3g} {units[power]}"


def check_fits(config: Any, *, together: Mapping[str, int] | None = None, apart: Mapping[str, int] | None = None) -> None:
    """One-line ``ValueError`` if :func:`estimate` of ``config`` exceeds :func:`machine_memory`.

    ``together``/``apart``: the counts that multiply the run, by name (e.g.
    ``{"seeds": 3, "clips": 3}`` for a sweep's group), each named if it is
    the setting to lower. The message names the setting whose default (1
    for a count) saves the most, the estimate, the machine's memory and the fix.
    """
    together, apart = dict(together or {}), dict(apart or {})
    t, a = math.prod(together.values()), math.prod(apart.values())
    need, have = estimate(config, t, a), machine_memory()
    if need <= have:
        return
    name, label, value = _culprit(config, together, apart, need)
    fix = f"give a smaller {FLAGS.get(name, name)}" if name else "give smaller sizes"
    if not config.remat and estimate(config, t, a, remat=True) <= have:
        fix += " or add --remat (checkpointed rollouts)"
    what = "states, the rollout kept for the backward pass, weights, metrics"
    who = f"{label}={value} needs" if name else "these settings need"
    raise ValueError(f"{who} about {format_bytes(need)} of memory ({what}), more than this machine's {format_bytes(have)}; {fix}")


def _culprit(config: Any, together: dict[str, int], apart: dict[str, int], need: int) -> tuple[str, str, Any]:
    """``(name, label, value)`` of the setting whose default (a count's: 1) would save the most memory."""
    t, a = math.prod(together.values()), math.prod(apart.values())
    defaults = {f.name: f.default for f in dataclasses.fields(type(config))}
    task = task_config(config.task, **config.task_options)
    without = lambda name: {k: v for k, v in config.task_options.items() if k != name}  # noqa: E731 - the task's default
    trials = [(n, n, getattr(config, n), lambda n=n: estimate(config, t, a, **{n: defaults[n]})) for n in _RUN_SIZES]
    trials += [
        (f.name, f"{config.task}: {f.name}", getattr(task, f.name), lambda n=f.name: estimate(config, t, a, task_options=without(n)))
        for f in dataclasses.fields(task) if isinstance(getattr(task, f.name), int) and not isinstance(getattr(task, f.name), bool)
    ]  # fmt: skip
    trials += [(n, n, v, lambda v=v: estimate(config, t // v, a)) for n, v in together.items()]
    trials += [(n, n, v, lambda v=v: estimate(config, t, a // v)) for n, v in apart.items()]
    best, saved = ("", "", None), 0
    for name, label, value, smaller in trials:
        try:
            gain = need - smaller()
        except ValueError:  # the default does not go with the other settings (e.g. a quantum target beyond fewer grid points)
            continue
        if gain > saved:
            best, saved = (name, label, value), gain
    return best
