"""Rollouts: one ``jax.lax.scan`` of controller and simulator under a flow's gates."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .remat import segment_length, segmented_scan
from .flows import AbstractFlow, Regular, gate
from .. import validate
from .problem import ControlProblem, check_controller, check_policy, check_states

__all__ = ["Trajectory", "rollout", "rollout_loss", "gated_loss"]


class Trajectory(NamedTuple):
    """A rollout, time-major: ``states[i]`` is ``x_i`` (``n+1`` of them), ``controls[i]`` is ``c_i`` (``n``)."""

    states: Any
    controls: Any


def loss_dtype(x0: Any):
    """The real dtype losses of a rollout from ``x0`` accumulate in (that of its first inexact leaf)."""
    for a in jax.tree.leaves(x0):
        a = jnp.asarray(a)
        if jnp.issubdtype(a.dtype, jnp.inexact):
            return jnp.finfo(a.dtype).dtype
    return jnp.result_type(float)


def _body(policy: Callable, step: Callable, step_loss: Callable | None):
    def body(carry, gates):
        x, acc = carry
        g_net, g_sim = gates
        c = policy(gate(x, g_net))
        x_next = step(gate(x, g_sim), c)
        if step_loss is not None:
            acc = acc + jnp.asarray(step_loss(x_next, c)).astype(acc.dtype)
        return (x_next, acc), c

    return body


def gated_loss(
    policy: Callable,
    problem: ControlProblem,
    x0: Any,
    net_gates: jax.Array,
    sim_gates: jax.Array,
    *,
    remat: bool | int | None = False,
) -> jax.Array:
    """Total loss of one rollout with explicit gate arrays of shape ``(n_steps,)``.

    The forward value does not depend on the gates; the gradient does. This is
    the one program behind every flow (see :mod:`stablebptt.engine.flows`). ``remat``
    checkpoints the rollout in segments (:mod:`stablebptt.engine.remat`).
    """
    body = _body(policy, problem.step, problem.step_loss)
    acc0 = jnp.zeros((), loss_dtype(x0))
    gates = (jnp.asarray(net_gates), jnp.asarray(sim_gates))
    segment = segment_length(problem.n_steps, remat)
    x_n, acc = segmented_scan(body, (x0, acc0), gates, problem.n_steps, segment)
    if problem.final_loss is not None:
        acc = acc + jnp.asarray(problem.final_loss(x_n)).astype(acc.dtype)
    return acc


def rollout_loss(policy: Callable, problem: ControlProblem, x0: Any, flow: AbstractFlow = Regular()) -> jax.Array:
    """Total loss of a rollout whose gradient follows ``flow`` (a single-pass flow)."""
    if flow.n_passes != 1:
        raise ValueError(
            f"rollout_loss needs a single-pass flow; {flow.name} is a combination of "
            "several: use value_and_update"
        )
    net, sim = flow.gate_schedule(problem.n_steps)
    return gated_loss(policy, problem, x0, net[0], sim[0])


def rollout(policy: Callable, step: Callable, x0: Any, n_steps: int) -> Trajectory:
    """Unroll ``x_{i+1} = step(x_i, policy(x_i))`` for ``n_steps`` and return the trajectory.

    States and controls are stacked on a new leading (time) axis.
    """
    validate.positive_int("n_steps", n_steps)
    check_policy(policy, trained=False)
    check_states(x0)
    check_controller(policy, step, x0)

    def record(x, _):
        c = policy(x)
        x1 = step(x, c)
        return x1, (x1, c)

    _, (after, controls) = lax.scan(record, x0, None, length=n_steps)
    states = jax.tree.map(lambda a, b: jnp.concatenate([jnp.asarray(a)[None], b]), x0, after)
    return Trajectory(states, controls)
