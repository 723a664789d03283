"""Updates: the vector a flow hands to the optimizer, with its diagnostics.

A flow asks for one or more backward passes ("lanes"), each given by gate
values (:mod:`stablebptt.engine.flows`). How those passes are computed is a strategy
passed as ``backward=`` (in the style of diffrax's ``adjoint=``):

* :class:`SharedBackward` (default): one forward pass, then one reverse scan
  carrying every lane's adjoint as a batch (:mod:`stablebptt.engine.backward`). C
  costs one forward pass and a batched backward pass, not two of each as in
  the authors' code.
* :class:`AutodiffBackward`: ``jax.value_and_grad`` of
  :func:`stablebptt.engine.rollouts.gated_loss`, ``vmap``ped over lanes. The
  reference implementation.

Both take ``remat=`` to checkpoint long rollouts in segments
(:mod:`stablebptt.engine.remat`), whatever the flow. Both are final; a new
strategy subclasses :class:`AbstractBackward`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from .backward import value_and_grads
from .remat import check_remat
from .flows import AbstractFlow, cosine_similarity, flat_vector, lane, refuse_concrete_bases
from .problem import ControlProblem, check_flow, check_policy, check_states
from .rollouts import gated_loss

__all__ = [
    "AbstractBackward",
    "SharedBackward",
    "AutodiffBackward",
    "UpdateInfo",
    "value_and_update",
    "combined_cosine",
    "cosine_similarity",
    "trainable",
]


class AbstractBackward(eqx.Module):
    """How the backward passes of a flow are computed: the extension point for new strategies.

    A subclass implements :meth:`value_and_grads`, for example one
    ``jax.value_and_grad`` per lane of
    :func:`stablebptt.engine.rollouts.gated_loss`::

        class PerLane(stablebptt.AbstractBackward):
            def value_and_grads(self, apply, params, problem, x0, net_gates, sim_gates, *, network_lanes=None):
                def loss(p, net, sim):
                    return gated_loss(lambda x: apply(p, x), problem, x0, net, sim)

                lanes = [jax.value_and_grad(loss)(params, n, s) for n, s in zip(net_gates, sim_gates)]
                return lanes[0][0], jax.tree.map(lambda *g: jnp.stack(g), *(g for _, g in lanes))

    and is passed as ``backward=`` to :func:`value_and_update`,
    :func:`stablebptt.train` and :func:`stablebptt.train_batched`.
    :class:`SharedBackward` and :class:`AutodiffBackward` are final.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        refuse_concrete_bases(cls, AbstractBackward)

    @abc.abstractmethod
    def value_and_grads(
        self,
        apply: Callable[[Any, Any], Any],
        params: Any,
        problem: ControlProblem,
        x0: Any,
        net_gates: Any,
        sim_gates: Any,
        *,
        network_lanes: Sequence[int] | None = None,
    ) -> tuple[jax.Array, Any]:
        """Loss of the rollout from ``x0`` and one parameter gradient per lane.

        Args:
            apply: ``apply(params, x) -> c``, the controller.
            params: its trainable parameters (pytree of arrays).
            problem: step, horizon and loss.
            x0: initial state.
            net_gates, sim_gates: ``(n_lanes, n_steps)``, NumPy or JAX arrays (possibly traced).
            network_lanes: the lanes whose network gate may be non-zero
                (static; every lane if None); a strategy may skip the
                network's input-Jacobian in the others, or ignore this.

        Returns:
            ``(loss, grads)``: the scalar loss (identical in every lane) and
            the gradients with the parameters' structure and a leading
            ``n_lanes`` axis on every leaf.
        """


class SharedBackward(AbstractBackward):
    """Hand-written adjoint: one forward pass shared by all lanes (the default, fastest).

    ``remat``: ``False``, ``True`` (segments of ``ceil(√n)`` steps) or steps
    per checkpointed segment; see :mod:`stablebptt.engine.remat`.
    ``batch_lanes=False`` applies the simulator's VJP once per lane instead of
    ``vmap``ping it: the same numbers, much faster to compile for big
    simulators (Brax: 30 s instead of over 5 minutes for reacher).
    """

    remat: bool | int | None = eqx.field(static=True, default=False)
    batch_lanes: bool = eqx.field(static=True, default=True)

    def __post_init__(self):
        check_remat(self.remat)

    def value_and_grads(self, apply, params, problem, x0, net_gates, sim_gates, *, network_lanes=None):
        return value_and_grads(
            apply, params, problem, x0, net_gates, sim_gates, remat=self.remat, batch_lanes=self.batch_lanes, network_lanes=network_lanes
        )


class AutodiffBackward(AbstractBackward):
    """``jax.value_and_grad`` through the gated rollout, ``vmap``ped over lanes.

    ``remat`` checkpoints the rollout as for :class:`SharedBackward`.
    """

    remat: bool | int | None = eqx.field(static=True, default=False)

    def __post_init__(self):
        check_remat(self.remat)

    def value_and_grads(self, apply, params, problem, x0, net_gates, sim_gates, *, network_lanes=None):
        def loss_of(p, g_net, g_sim):
            return gated_loss(lambda x: apply(p, x), problem, x0, g_net, g_sim, remat=self.remat)

        losses, grads = jax.vmap(jax.value_and_grad(loss_of), in_axes=(None, 0, 0))(
            params, jnp.asarray(net_gates), jnp.asarray(sim_gates)
        )
        return losses[0], grads


class UpdateInfo(NamedTuple):
    """Diagnostics of one update.

    sq_norm: squared L2 norm of the update (before any clipping).
    cosine: cosine similarity of the two passes of a combined flow (M vs R
        for C) over all parameters flattened together; NaN for single-pass flows.
    """

    sq_norm: jax.Array
    cosine: jax.Array


def trainable(policy: Any) -> tuple[Any, Any]:
    """Split a policy (an Equinox module or any pytree) into ``(params, static)``.

    ``params`` holds the floating-point arrays that are trained; ``eqx.combine``
    puts the two back together.
    """
    return eqx.partition(policy, eqx.is_inexact_array)


def combined_cosine(grads: Any, combined: Any) -> jax.Array:
    """Cosine similarity of lanes 0 and 1 of a combined flow (M vs R for C), NaN otherwise.

    ``grads``: per-lane gradients (leading axis ``n_lanes`` on every leaf).
    ``combined``: whether the lanes are combined by sign (a flow's
    ``combined``; a boolean array for a traced schedule). A single lane, or
    lanes that are only padding, give NaN.
    """
    leaves = jax.tree.leaves(grads)
    if not leaves or jnp.shape(leaves[0])[0] < 2:
        return jnp.full((), jnp.nan)
    return jnp.where(combined, cosine_similarity(lane(grads, 0), lane(grads, 1)), jnp.nan)


def value_and_update(
    flow: AbstractFlow,
    policy: Callable,
    problem: ControlProblem,
    x0: Any,
    *,
    backward: AbstractBackward = SharedBackward(),
) -> tuple[jax.Array, Any, UpdateInfo]:
    """Loss of one rollout from ``x0`` and the update ``flow`` asks for.

    Args:
        flow: e.g. ``R()``, ``M()``, ``S()``, ``C()``, or a :class:`Schedule`
            (any flow as arrays, which may be traced or vmapped).
        policy: the controller, ``policy(x) -> c``: an Equinox module, or any
            callable pytree (see :class:`stablebptt.FunctionPolicy`).
        problem: simulator step, horizon and loss.
        x0: initial state, as ``problem.step`` takes it (usually a batch).
        backward: how the backward passes are computed (:class:`SharedBackward`,
            or any :class:`AbstractBackward`).

    Returns:
        ``(loss, update, info)``: the loss (identical for every flow), the
        update with the structure of ``trainable(policy)[0]`` (for R the true
        gradient), and :class:`UpdateInfo`.
    """
    check_flow(flow)
    check_policy(policy)
    check_states(x0)
    problem.check(policy, x0)
    params, static = trainable(policy)
    net, sim = flow.gate_schedule(problem.n_steps)

    def apply(p, x):
        return eqx.combine(p, static)(x)

    loss, grads = backward.value_and_grads(apply, params, problem, x0, net, sim, network_lanes=flow.network_lanes)
    update = flow.combine(grads)
    cosine = combined_cosine(grads, flow.combined).astype(loss.dtype)
    flat = flat_vector(update)
    sq_norm = jnp.vdot(flat, flat).astype(loss.dtype)
    return loss, update, UpdateInfo(sq_norm, cosine)
