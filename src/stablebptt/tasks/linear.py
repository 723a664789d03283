"""A linear-quadratic task whose optimum is known: a double integrator under linear feedback.

``x_{i+1} = A x_i + B c_i`` with ``A = [[1, dt], [0, 1]]``, ``B = [[dt²/2], [dt]]``
(position and velocity of a unit mass pushed by the force ``c``), the
controller ``c = θ · x`` (a gain ``θ`` of shape ``(1, 2)``, no bias), and the
loss ``mean |x_n|² + ρ · Σ_i mean c_i²`` over a fixed set of initial states.
The loss is a polynomial in ``θ``, so its minimum can be found without the
training code (:mod:`stablebptt.paper.lq`).

With ``ρ = 0`` (``control_cost``) the loss reaches 0 at the deadbeat gain
(``(A + Bθ)² = 0``: every start is at rest in the origin after two steps);
with ``ρ > 0`` the optimum has a positive loss.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import validate
from .base import Task, TaskConfig, TaskSizes, bind_task, check_config, check_shape

__all__ = ["LinearConfig", "LinearFeedback", "matrices", "deadbeat_gain", "step", "loss", "control_loss", "sample_initial_states", "make_policy", "make_task"]


@dataclasses.dataclass(frozen=True)
class LinearConfig(TaskConfig):
    """The double integrator's time step ``dt`` [s], horizon ``n_steps`` and control cost ``ρ`` (≥ 0)."""

    control_cost: float = 0.0
    dt: float = 0.5
    n_steps: int = 3

    def __post_init__(self):
        check_config("linear", self, positive_ints=("n_steps",), positive=("dt",), finite=("control_cost",), flags={"n_steps": "steps"})
        validate.number("linear: control_cost", self.control_cost, low=0)

    def sizes(self) -> TaskSizes:
        return TaskSizes(2, 2, 1)  # (position, velocity), the gain, the force


def matrices(config: LinearConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` in float64: ``A`` is ``(2, 2)``, ``B`` is ``(2, 1)``."""
    dt = config.dt
    return np.array([[1.0, dt], [0.0, 1.0]]), np.array([[dt * dt / 2], [dt]])


def deadbeat_gain(config: LinearConfig) -> np.ndarray:
    """The gain with ``(A + Bθ)² = 0`` (Ackermann's formula for both poles at 0), shape ``(1, 2)``."""
    a, b = matrices(config)
    controllability = np.hstack([b, a @ b])
    return -np.array([[0.0, 1.0]]) @ np.linalg.inv(controllability) @ a @ a


class LinearFeedback(eqx.Module):
    """``c = x @ gainᵀ`` on a batch: states ``(batch, 2)`` → controls ``(batch, 1)``."""

    gain: jax.Array

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.gain.T


def step(config: LinearConfig, state: jax.Array, control: jax.Array) -> jax.Array:
    """``A x + B c`` for states ``(batch, 2)`` = (position [m], velocity [m/s]) and forces ``(batch, 1)`` [N]."""
    check_shape("linear state", state, (None, 2), "(batch, [position, velocity])")
    check_shape("linear control", control, (state.shape[0], 1), "(batch, 1) force")
    a, b = (jnp.asarray(m, state.dtype) for m in matrices(config))
    return state @ a.T + control @ b.T


def loss(state: jax.Array) -> jax.Array:
    """Final-state loss: mean over the batch of ``|x_n|²``."""
    return jnp.mean(jnp.sum(state**2, axis=1))


def control_loss(config: LinearConfig, state: jax.Array, control: jax.Array) -> jax.Array:
    """``ρ · mean c_i²``, summed over the steps by the rollout."""
    del state
    return jnp.asarray(config.control_cost, control.dtype) * jnp.mean(jnp.sum(control**2, axis=1))


def sample_initial_states(config: LinearConfig, key: jax.Array, n: int, dtype=None) -> jax.Array:
    """``n`` starts, position and velocity each ``U[−1, 1]``."""
    return jax.random.uniform(key, (n, 2), dtype or jnp.result_type(float), -1.0, 1.0)


def make_policy(config: LinearConfig, key: jax.Array, dtype=None) -> LinearFeedback:
    """The zero gain (no control at first); ``key`` is unused."""
    del key
    return LinearFeedback(jnp.zeros((1, 2), dtype or jnp.result_type(float)))


def make_task(config: LinearConfig) -> Task:
    return bind_task(
        "linear",
        config,
        step=step,
        sample_initial_states=sample_initial_states,
        make_policy=make_policy,
        final_loss=loss,
        step_loss=control_loss if config.control_cost > 0 else None,
    )
