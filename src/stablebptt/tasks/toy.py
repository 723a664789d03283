"""The paper's toy examples (docs/tasks.md, "The toy examples"): reconstructions of its Figures 1 and 2.

Figure 1: one scalar state, ``S(x, c) = x + c``, controller
``N(x; θ) = θ₁x² + θ₂x``, ``x₀ = −0.3``, 4 steps, loss ``½(x₄ − 2)²``.
Figure 2: the loss ``L(θ) = θ₁² + θ₂²``, its gradient field, a rotated field
``g + 2·rot90(g)`` and their combination by the sign rule.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ..engine.flows import combine_by_sign
from ..engine.networks import FunctionPolicy
from ..engine.problem import ControlProblem

__all__ = ["Figure1Config", "figure1_problem", "figure1_policy", "quadratic_loss", "gradient_field", "rotated_field", "combined_field"]


@dataclasses.dataclass(frozen=True)
class Figure1Config:
    x0: float = -0.3
    target: float = 2.0
    n_steps: int = 4


def figure1_problem(config: Figure1Config = Figure1Config()) -> ControlProblem:
    """``x_{i+1} = x_i + c_i`` for ``n_steps``, loss ``½(x_n − target)²`` (scalar state)."""
    return ControlProblem(step=lambda x, c: x + c, n_steps=config.n_steps, final_loss=lambda x: 0.5 * (x - config.target) ** 2)


def figure1_policy(theta: jax.Array) -> FunctionPolicy:
    """``N(x; θ) = θ₁x² + θ₂x`` with ``θ`` of shape ``(2,)``."""
    return FunctionPolicy(lambda th, x: th[0] * x**2 + th[1] * x, jnp.asarray(theta))


def quadratic_loss(theta: jax.Array) -> jax.Array:
    """``L(θ) = θ₁² + θ₂²``."""
    return jnp.sum(theta**2)


def gradient_field(theta: jax.Array) -> jax.Array:
    """``∇L = 2θ``."""
    return jax.grad(quadratic_loss)(theta)


def rotated_field(theta: jax.Array) -> jax.Array:
    """``g + 2·rot90(g)`` with ``rot90(a, b) = (−b, a)``: same minimum, but it circles."""
    g = gradient_field(theta)
    return g + 2.0 * jnp.stack([-g[1], g[0]])


def combined_field(theta: jax.Array) -> jax.Array:
    """The rotated field combined with the gradient by the sign rule (docs/method.md, "The combined update")."""
    return combine_by_sign(rotated_field(theta), gradient_field(theta))
