"""Guidance by repulsion (equations: docs/tasks.md): drivers herd evaders to the origin; difficulty = smaller ``rc``.

State layout ``(batch, n_drivers + n_evaders, 2, 2)``: axis 1 is the agent
(drivers first), axis 2 is ``[position, velocity]``, axis 3 is ``[x, y]``
(dimensionless units; every agent has unit mass, so forces are accelerations).
Control layout ``(batch, n_drivers, 2)``: coefficients ``(a, b)`` per driver
of its control force ``a·r + b·perp(r)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .. import validate
from ..engine.networks import DenseNet, dense_size
from .base import Task, TaskConfig, TaskSizes, bind_task, check_config, check_shape

__all__ = ["RepulsionConfig", "step", "step_loss", "sample_initial_states", "make_policy", "make_task"]


@dataclasses.dataclass(frozen=True)
class RepulsionConfig(TaskConfig):
    """Constants of guidance by repulsion.

    ``rc`` weighs the control regularizer ``rc · mean(c²)`` (the paper uses 1,
    0.1, 0.01, 0.001; smaller is harder). Distances enter as
    ``d(r) = distance_offset + |r|``; the evader pair term is
    ``p(d) = (pair_range/d − 1)/d`` (**as published**: attracts when closer
    than about ``pair_range``, repels when farther). ``dt = horizon / n_steps``.
    """

    n_drivers: int = 2
    n_evaders: int = 4
    rc: float = 0.01
    horizon: float = 4.0
    n_steps: int = 60
    driver_spread: float = 0.2
    driver_friction: float = 1.0
    evader_flee: float = 15.0
    evader_pair: float = 0.2
    evader_friction: float = 4.0
    distance_offset: float = 0.1
    pair_range: float = 0.5

    def __post_init__(self):
        check_config(
            "repulsion",
            self,
            positive_ints=("n_drivers", "n_evaders", "n_steps"),
            positive=("horizon", "distance_offset"),
            finite=("rc", "driver_spread", "driver_friction", "evader_flee", "evader_pair", "evader_friction", "pair_range"),
            flags={"n_drivers": "drivers", "n_evaders": "evaders"},
        )
        validate.number("repulsion: rc", self.rc, low=0, expected="rc >= 0 (the paper uses 1, 0.1, 0.01, 0.001)")

    @property
    def dt(self) -> float:
        return self.horizon / self.n_steps

    @property
    def n_agents(self) -> int:
        return self.n_drivers + self.n_evaders

    def sizes(self) -> TaskSizes:
        state, nd, ne = 4 * self.n_agents, self.n_drivers, self.n_evaders
        pairs = 3 * (nd * nd + nd * ne + ne * ne)  # every pair's offset (x, y) and distance, in forces()
        return TaskSizes(state, dense_size(state, 2 * nd, HIDDEN), sum(HIDDEN) + pairs)


HIDDEN = (100, 100)
"""The controller's hidden layers (as published)."""


def _safe_norm(v: jax.Array) -> jax.Array:
    """``|v|`` over the last axis with a finite (zero) gradient at ``v = 0``."""
    sq = jnp.sum(v**2, axis=-1)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _perp(v: jax.Array) -> jax.Array:
    return jnp.stack([-v[..., 1], v[..., 0]], axis=-1)


def forces(config: RepulsionConfig, state: jax.Array, control: jax.Array) -> jax.Array:
    """Accelerations of every agent, ``(batch, n_agents, 2)``; see :func:`step` for the terms."""
    nd = config.n_drivers
    dtype = state.dtype
    pos, vel = state[:, :, 0, :], state[:, :, 1, :]
    p_d, p_e = pos[:, :nd], pos[:, nd:]
    v_d, v_e = vel[:, :nd], vel[:, nd:]
    offset = jnp.asarray(config.distance_offset, dtype)

    # drivers: control force on r = x_driver − Σ_evaders x_e (as published: the sum)
    r = p_d - jnp.sum(p_e, axis=1, keepdims=True)
    a, b = control[..., 0:1], control[..., 1:2]
    f_control = a * r + b * _perp(r)
    # drivers spread: Σ_{i≠k} (x_k − x_i) / d(x_k − x_i)²
    diff = p_d[:, :, None, :] - p_d[:, None, :, :]
    d = offset + _safe_norm(diff)
    others = 1.0 - jnp.eye(nd, dtype=dtype)[None, :, :, None]
    f_spread = config.driver_spread * jnp.sum(others * diff / d[..., None] ** 2, axis=2)
    f_drivers = f_control + f_spread - config.driver_friction * v_d

    # evaders flee every driver: Σ_d (x_j − x_d) / d(x_d − x_j)²
    away = p_e[:, :, None, :] - p_d[:, None, :, :]
    d = offset + _safe_norm(away)
    f_flee = config.evader_flee * jnp.sum(away / d[..., None] ** 2, axis=2)
    # evader pairs: Σ_{i≠k} p(d)(x_i − x_k), p(d) = (range/d − 1)/d
    towards = p_e[:, None, :, :] - p_e[:, :, None, :]
    d = offset + _safe_norm(towards)
    p = (config.pair_range / d - 1.0) / d
    mask = 1.0 - jnp.eye(config.n_evaders, dtype=dtype)[None]
    f_pair = config.evader_pair * jnp.sum((mask * p)[..., None] * towards, axis=2)
    f_evaders = f_flee + f_pair - config.evader_friction * v_e
    return jnp.concatenate([f_drivers, f_evaders], axis=1)


def step(config: RepulsionConfig, state: jax.Array, control: jax.Array) -> jax.Array:
    """One explicit Euler step of guidance by repulsion.

    Args:
        config: the task's constants.
        state: ``(batch, n_drivers + n_evaders, 2, 2)``, see the module docstring.
        control: ``(batch, n_drivers, 2)``, the ``(a, b)`` of each driver.

    Returns:
        the state after ``config.dt``: ``x += dt·v`` with the *old* velocity,
        ``v += dt·F`` with

        * drivers: ``a·r + b·perp(r)`` with ``r = x_driver − Σ_evaders x_e``,
            ``+ 0.2·Σ_{i≠k} (x_k − x_i)/d(x_k − x_i)²`` (spreading), ``− 1.0·v``;
        * evaders: ``15·Σ_drivers (x_j − x_d)/d(x_d − x_j)²`` (fleeing),
            ``+ 0.2·Σ_{i≠k} p(d)(x_i − x_k)`` (pairs), ``− 4.0·v``;

        with ``d(r) = 0.1 + |r|`` and ``perp(x, y) = (−y, x)``.
    """
    check_shape("repulsion state", state, (None, config.n_agents, 2, 2), "(batch, drivers + evaders, [position, velocity], [x, y])")
    check_shape("repulsion control", control, (state.shape[0], config.n_drivers, 2), "(batch, drivers, [a, b])")
    control = control.astype(state.dtype)
    dt = jnp.asarray(config.dt, state.dtype)
    acc = forces(config, state, control)
    pos = state[:, :, 0, :] + dt * state[:, :, 1, :]
    vel = state[:, :, 1, :] + dt * acc
    return jnp.stack([pos, vel], axis=2)


def step_loss(config: RepulsionConfig, state: jax.Array, control: jax.Array) -> jax.Array:
    """Per-step share of the loss: ``(mean x_e² + rc·mean c²) / n_steps``.

    Summed over the steps this is the mean over batch, steps, evaders and
    x/y of the squared evader positions plus ``rc`` times the mean of all
    squared controls.
    """
    evaders = state[:, config.n_drivers :, 0, :]
    return (jnp.mean(evaders**2) + config.rc * jnp.mean(control**2)) / config.n_steps


def _annulus(key: jax.Array, shape: tuple, r_min: float, r_max: float, dtype) -> jax.Array:
    k_r, k_a = jax.random.split(key)
    radius = jax.random.uniform(k_r, shape, dtype, r_min, r_max)
    angle = jax.random.uniform(k_a, shape, dtype, 0.0, 2 * jnp.pi)
    return jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=-1)


def sample_initial_states(config: RepulsionConfig, key: jax.Array, n: int, dtype=None) -> jax.Array:
    """Drivers uniform in the annulus ``3 ≤ r ≤ 4`` (radius and angle uniform); evaders at one
    centre drawn the same way in ``1 ≤ r ≤ 2`` plus each an offset ``U[−0.5, 0.5]²``; at rest."""
    dtype = dtype or jnp.result_type(float)
    k_d, k_c, k_o = jax.random.split(key, 3)
    drivers = _annulus(k_d, (n, config.n_drivers), 3.0, 4.0, dtype)
    centre = _annulus(k_c, (n, 1), 1.0, 2.0, dtype)
    evaders = centre + jax.random.uniform(k_o, (n, config.n_evaders, 2), dtype, -0.5, 0.5)
    pos = jnp.concatenate([drivers, evaders], axis=1)
    return jnp.stack([pos, jnp.zeros_like(pos)], axis=2)


def make_policy(config: RepulsionConfig, key: jax.Array, dtype=None) -> DenseNet:
    """Flattened state → 100 tanh → 100 tanh → ``2·n_drivers`` outputs as ``(n_drivers, 2)``;
    last kernel zero (as published)."""
    return DenseNet(
        4 * config.n_agents,
        2 * config.n_drivers,
        HIDDEN,
        key=key,
        zero_last_kernel=True,
        dtype=dtype,
        out_shape=(config.n_drivers, 2),
    )


def make_task(config: RepulsionConfig) -> Task:
    return bind_task(
        "repulsion",
        config,
        step=step,
        sample_initial_states=sample_initial_states,
        make_policy=make_policy,
        step_loss=step_loss,
    )
