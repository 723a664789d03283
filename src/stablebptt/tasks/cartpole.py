"""Cart pole with 1–4 poles on one cart (equations: docs/tasks.md, "Cart pole"); difficulty = number of poles.

State layout ``(batch, 1 + n_poles, 2)``: row 0 is the cart ``(x [m], ẋ [m/s])``,
row ``i ≥ 1`` is pole ``i`` ``(θ_i [rad], θ̇_i [rad/s])`` with θ = 0 upright.
The control is one horizontal force ``f`` [N] per sample.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ..engine.networks import DenseNet, dense_size
from .base import Task, TaskConfig, TaskSizes, bind_task, check_config, check_shape

__all__ = ["CartPoleConfig", "step", "loss", "sample_initial_states", "make_policy", "make_task"]


@dataclasses.dataclass(frozen=True)
class CartPoleConfig(TaskConfig):
    """Constants of the cart-pole task (SI units).

    ``total_mass`` is the mass ``M`` of the equations, fixed at 1.1 for any
    number of poles **(as published)**. ``dt = horizon / n_steps``.
    """

    n_poles: int = 2
    gravity: float = 9.8
    pole_mass: float = 0.1
    total_mass: float = 1.1
    pole_length: float = 0.5
    horizon: float = 1.0
    n_steps: int = 100

    def __post_init__(self):
        check_config(
            "cartpole",
            self,
            positive_ints=("n_poles", "n_steps"),
            positive=("pole_mass", "total_mass", "pole_length", "horizon"),
            finite=("gravity",),
            flags={"n_poles": "poles"},
        )

    @property
    def dt(self) -> float:
        return self.horizon / self.n_steps

    def sizes(self) -> TaskSizes:
        state = 2 * (1 + self.n_poles)
        return TaskSizes(state, dense_size(state, 1, HIDDEN), sum(HIDDEN))


HIDDEN = (100, 100)
"""The controller's hidden layers (as published)."""


def step(config: CartPoleConfig, state: jax.Array, force: jax.Array) -> jax.Array:
    """One semi-implicit Euler step of cart pole.

    Args:
        config: the task's constants.
        state: ``(batch, 1 + n_poles, 2)``, see the module docstring.
        force: ``(batch,)`` or ``(batch, 1)`` horizontal force on the cart [N].

    Returns:
        the state after ``config.dt`` seconds, same shape. Velocities are
        updated first, positions then move with the new velocities.
    """
    p = config.n_poles
    check_shape("cartpole state", state, (None, 1 + p, 2), "(batch, 1 + poles, [position, velocity])")
    batch = state.shape[0]
    if tuple(force.shape) not in ((batch,), (batch, 1)):
        raise ValueError(f"cartpole force has shape {tuple(force.shape)}; expected ({batch},) or ({batch}, 1)")
    dtype = state.dtype
    g, m, M, l = (jnp.asarray(v, dtype) for v in (config.gravity, config.pole_mass, config.total_mass, config.pole_length))
    dt = jnp.asarray(config.dt, dtype)
    f = jnp.reshape(force, (batch, 1)).astype(dtype)

    pos, vel = state[:, 0, 0], state[:, 0, 1]
    th, thd = state[:, 1:, 0], state[:, 1:, 1]
    s, c = jnp.sin(th), jnp.cos(th)
    a = (f + m * l * s * thd**2) / M
    thdd = (g * s - c * a) / (l * (4.0 / 3.0 - m * c**2 / M))
    xdd = (f[:, 0] + m * l * jnp.sum(s * thd**2 - thdd * c, axis=1)) / M

    thd = thd + dt * thdd
    th = th + dt * thd
    vel = vel + dt * xdd
    pos = pos + dt * vel
    cart = jnp.stack([pos, vel], axis=-1)[:, None, :]
    poles = jnp.stack([th, thd], axis=-1)
    return jnp.concatenate([cart, poles], axis=1)


def loss(state: jax.Array) -> jax.Array:
    """Final-state loss ``1 − mean over batch and poles of cos θ_i`` (0 when all poles are upright)."""
    return 1.0 - jnp.mean(jnp.cos(state[:, 1:, 0]))


def sample_initial_states(config: CartPoleConfig, key: jax.Array, n: int, dtype=None) -> jax.Array:
    """``n`` swing-up starts: ``x, ẋ, θ̇_i ~ U[−1, 1]``, ``θ_i = π + U[−1, 1]·π/6``."""
    dtype = dtype or jnp.result_type(float)
    u = jax.random.uniform(key, (n, 1 + config.n_poles, 2), dtype, -1.0, 1.0)
    theta = jnp.pi + u[:, 1:, 0] * (jnp.pi / 6)
    return u.at[:, 1:, 0].set(theta)


def make_policy(config: CartPoleConfig, key: jax.Array, dtype=None) -> DenseNet:
    """Flattened state → 100 tanh → 100 tanh → 1 force; last kernel zero (as published)."""
    return DenseNet(2 * (1 + config.n_poles), 1, HIDDEN, key=key, zero_last_kernel=True, dtype=dtype)


def make_task(config: CartPoleConfig) -> Task:
    return bind_task(
        "cartpole",
        config,
        step=step,
        sample_initial_states=sample_initial_states,
        make_policy=make_policy,
        final_loss=loss,
    )
