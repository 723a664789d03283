"""What every task hands to the trainer."""

from __future__ import annotations

import abc
import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax

from .. import validate
from ..engine.problem import ControlProblem

__all__ = ["Task", "TaskConfig", "TaskSizes", "bind_task", "check_config", "check_shape"]


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
        batch_lanes: whether the shared backward pass ``vmap``s the simulator's
            VJP over a flow's lanes (fast for small simulators) or calls it once
            per lane (``False``: far faster to compile for big ones, e.g. Brax).
    """

    name: str
    config: Any
    problem: ControlProblem
    sample_initial_states: Callable[[jax.Array, int, Any], Any]
    make_policy: Callable[[jax.Array, Any], Any]
    batch_lanes: bool = True


def bind_task(
    name: str,
    config: Any,
    *,
    step: Callable,
    sample_initial_states: Callable,
    make_policy: Callable,
    step_loss: Callable | None = None,
    final_loss: Callable | None = None,
) -> Task:
    """A :class:`Task` from a task module's functions, each taking ``config`` first.

    ``final_loss`` takes the state only.
    """
    bind = lambda f: None if f is None else functools.partial(f, config)  # noqa: E731
    problem = ControlProblem(step=bind(step), n_steps=config.n_steps, step_loss=bind(step_loss), final_loss=final_loss)
    return Task(name, config, problem, bind(sample_initial_states), bind(make_policy))


def check_shape(what: str, array: Any, expected: tuple, layout: str) -> None:
    """Raise a one-line ValueError unless ``array.shape`` matches ``expected`` (None = any size)."""
    shape = tuple(getattr(array, "shape", ()))
    ok = len(shape) == len(expected) and all(e is None or s == e for s, e in zip(shape, expected))
    if not ok:
        want = "(" + ", ".join("batch" if (e is None and i == 0) else ("*" if e is None else str(e)) for i, e in enumerate(expected)) + ")"
        raise ValueError(f"{what} has shape {shape}; expected {want} = {layout}")


class TaskSizes(NamedTuple):
    """How big one sample of a task is, in numbers (not bytes), known from its configuration before any array is built.

    state: numbers in one sample's state. weights: numbers in the default
    controller's weights. intermediates: numbers one step computes for one
    sample besides its new state (the controller's hidden outputs, the
    simulator's own terms), which the backward pass keeps; a lower bound.
    """

    state: int
    weights: int
    intermediates: int


class TaskConfig(abc.ABC):
    """Base of every task's frozen configuration dataclass.

    :meth:`check_trainable` holds the task's own rules for a run that trains
    from the task's initial states (:class:`~stablebptt.runs.config.RunConfig`
    calls it for every run, whatever the task); the configuration itself
    checks its fields in ``__post_init__`` (:func:`check_config`);
    :meth:`sizes` gives what a run's memory estimate needs (:mod:`stablebptt.runs.memory`).
    """

    @abc.abstractmethod
    def sizes(self) -> TaskSizes:
        """One sample's state, the default controller's weights and one step's intermediates, in numbers."""

    def check_trainable(self) -> None:
        """One-line ValueError if a run cannot learn from this task's own initial states; nothing by default."""


def check_config(
    task: str,
    config: Any,
    *,
    positive_ints: tuple[str, ...] = (),
    positive: tuple[str, ...] = (),
    finite: tuple[str, ...] = (),
    flags: dict[str, str] | None = None,
) -> None:
    """One-line ValueErrors (:mod:`stablebptt.validate`) for fields that must be positive integers, positive or finite numbers.

    ``flags`` names fields as the command line spells them (``n_poles`` → ``poles``).
    """
    flags = flags or {}
    for name in positive_ints:
        validate.positive_int(f"{task}: {flags.get(name, name)}", getattr(config, name))
    for name in positive + finite:
        validate.number(f"{task}: {flags.get(name, name)}", getattr(config, name), positive=name in positive)
