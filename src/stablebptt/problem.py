"""What a controller is trained for: a simulator step, a horizon and a loss."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

__all__ = ["ControlProblem"]

State = Any
Control = Any


@dataclasses.dataclass(frozen=True)
class ControlProblem:
    """A differentiable simulator unrolled for ``n_steps`` under a controller.

    Attributes:
        step: ``step(x, c) -> x_next``, any JAX-differentiable function of pytrees.
            It sees the whole state as you store it (e.g. a batch ``(batch, ...)``).
        n_steps: number of simulator steps ``n``; ``x_0 .. x_n``.
        final_loss: ``final_loss(x_n) -> scalar`` (the final-state loss), or None.
        step_loss: ``step_loss(x_{i+1}, c_i) -> scalar``, summed over
            ``i = 0 .. n-1`` (the continuous loss, including any regularizer on
            the controls), or None.

    The total loss is ``Σ_i step_loss(x_{i+1}, c_i) + final_loss(x_n)``; at
    least one of the two must be given.
    """

    step: Callable[[State, Control], State]
    n_steps: int
    final_loss: Callable[[State], jax.Array] | None = None
    step_loss: Callable[[State, Control], jax.Array] | None = None

    def __post_init__(self):
        if not callable(self.step):
            raise TypeError("ControlProblem: step must be a function step(x, c) -> x_next")
        if isinstance(self.n_steps, bool) or not isinstance(self.n_steps, int) or self.n_steps < 1:
            raise ValueError(f"ControlProblem: n_steps={self.n_steps!r}; expected a positive integer")
        if self.final_loss is None and self.step_loss is None:
            raise ValueError("ControlProblem: give final_loss, step_loss, or both")
