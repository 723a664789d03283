"""Tasks: one module per physical system, and a registry by name.

Each task module holds a frozen configuration dataclass, its public one-step
physics on batched arrays, its loss, its initial-state sampler and the paper's
default network, and ``make_task(config) -> Task``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import brax_env, cartpole, linear, quantum, repulsion
from .. import validate
from .base import Task, TaskConfig, TaskSizes, check_shape

__all__ = ["Task", "TaskConfig", "TaskSizes", "check_shape", "DIFFICULTY", "TASKS", "task_config", "make_task", "cartpole", "repulsion", "quantum", "brax_env", "linear"]

DIFFICULTY: dict[str, str] = {"cartpole": "n_poles", "repulsion": "rc", "quantum": "target", "brax": "env", "linear": "control_cost"}
"""The configuration field that is each task's difficulty knob."""

TASKS: dict[str, tuple[type, Any]] = {
    "cartpole": (cartpole.CartPoleConfig, cartpole.make_task),
    "repulsion": (repulsion.RepulsionConfig, repulsion.make_task),
    "quantum": (quantum.QuantumConfig, quantum.make_task),
    "brax": (brax_env.BraxConfig, brax_env.make_task),  # needs the extra .[brax] (pip install '.[brax]' from the checkout)
    "linear": (linear.LinearConfig, linear.make_task),
}


def _lookup(name: str):
    return TASKS[validate.choice("task", name, TASKS)]


def task_config(name: str, **options: Any) -> TaskConfig:
    """The frozen configuration of task ``name`` with ``options`` overriding its defaults."""
    config_cls, _ = _lookup(name)
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"task {name!r} has no option {unknown[0]!r}; its options are {', '.join(sorted(known))}")
    return config_cls(**options)


def make_task(name: str, **options: Any) -> Task:
    """Build task ``name`` (``"cartpole"``, ...) from keyword options of its configuration."""
    _, factory = _lookup(name)
    return factory(task_config(name, **options))
