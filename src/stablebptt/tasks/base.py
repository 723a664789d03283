"""What every task hands to the trainer."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from ..problem import ControlProblem

__all__ = ["Task", "check_shape"]


@dataclasses.dataclass(frozen=True)
class Task:
    """A physical system ready to train on.

    Attributes:
        name: registry name (``"cartpole"``, ...).
        config: the task's frozen configuration (physics constants, horizon,
            difficulty); ``dataclasses.asdict`` gives it as JSON.
        problem: step, horizon and loss as a :class:`ControlProblem`.
        sample_initial_states: ``(key, n, dtype) -> x0`` with ``n`` samples on axis 0.
        make_policy: ``(key, dtype) -> policy``, the paper's default network.
    """

    name: str
    config: Any
    problem: ControlProblem
    sample_initial_states: Callable[[jax.Array, int, Any], Any]
    make_policy: Callable[[jax.Array, Any], Any]


def check_shape(what: str, array: Any, expected: tuple, layout: str) -> None:
    """Raise a one-line ValueError unless ``array.shape`` matches ``expected`` (None = any size)."""
    shape = tuple(getattr(array, "shape", ()))
    ok = len(shape) == len(expected) and all(e is None or s == e for s, e in zip(shape, expected))
    if not ok:
        want = "(" + ", ".join("batch" if (e is None and i == 0) else ("*" if e is None else str(e)) for i, e in enumerate(expected)) + ")"
        raise ValueError(f"{what} has shape {shape}; expected {want} = {layout}")
