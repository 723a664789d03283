"""Gradient health of a control problem: how the adjoint grows along the horizon under R and under M.

DRAFT
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from ..engine.backward import adjoint_step, final_adjoint, forward_residuals, network_lanes, param_grads
from ..engine.flows import combine_by_sign, cosine_similarity
from ..engine.problem import ControlProblem, sample_axes
from ..engine.rollouts import loss_dtype
from ..engine.updates import trainable
from ..training.batching import split_batches

__all__ = ["Diagnosis", "diagnose"]

# lane 0: R (network and simulator gates 1), lane 1: M (network gate 0)
_LANES = ("R", "M")


def _lane_norms(tree: Any) -> jax.Array:
    """L2 norm of each lane (leading axis) over every leaf."""
    sq = [jnp.sum(jnp.reshape(a, (a.shape[0], -1))** 2, axis=1) for a in jax.tree.leaves(tree)]
    return jnp.sqrt(sum(sq))


def _scale_lanes(tree: Any, s: jax.Array) -> Any:
    return jax.tree.map(lambda a: a * s.astype(a.dtype).reshape((-1,) + (1,) * (a.ndim - 1)), tree)


def _last_adjoint(problem: ControlProblem, c_last: Any, x_n: Any) -> Any:
    """``∂L/∂x_n`` of the final loss and the last step's loss: where the backward pass starts."""
    x_d, x_s = eqx.partition(x_n, eqx.is_inexact_array)
    lam = jax.tree.map(jnp.zeros_like, x_d)
    if problem.final_loss is not None:
        lam = jax.grad(lambda a: jnp.asarray(problem.final_loss(eqx.combine(a, x_s))).astype(loss_dtype(x_n)))(x_d)
    if problem.step_loss is not None:
        d = jax.grad(lambda a: jnp.asarray(problem.step_loss(eqx.combine(a, x_s), c_last)).astype(loss_dtype(x_n)))(x_d)
        lam = jax.tree.map(jnp.add, lam, d)
    return lam


def _one_batch(apply, params, problem: ControlProblem, x0: Any, batch_lanes: bool):
    n = problem.n_steps
    net = np.stack([np.ones(n), np.zeros(n)])
    sim = np.ones((2, n))
    gates = (jnp.asarray(net.T), jnp.asarray(sim.T))
    x_n, acc, xs, cs = forward_residuals(apply, params, problem, x0, jnp.zeros((), loss_dtype(x0)), n)
    xs_next = jax.tree.map(lambda a, b: jnp.concatenate([a[1:], b[None]]), xs, x_n)
    inputs = (xs, cs, xs_next) + gates

    # the update of each lane: the engine's reverse scan, recording nothing
    loss, lam_n = final_adjoint(problem, x_n, acc, 2)
    reverse = adjoint_step(apply, params, problem, network_lanes(net), batch_lanes=batch_lanes)
    _, mus = lax.scan(reverse, lam_n, inputs, reverse=True)
    grads = param_grads(apply, params, xs, jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), mus))

    # the growth: the last state's adjoint carried back with no loss added on the way (linear in λ), renormalised
    # every step so that nothing overflows; log ‖λ_t‖ - log ‖λ_n‖ accumulates in float32 or wider
    carry_back = adjoint_step(apply, params, dataclasses.replace(problem, step_loss=None), network_lanes(net), batch_lanes=batch_lanes)
    c_last = jax.tree.map(lambda a: a[-1], cs)
    start = _last_adjoint(problem, c_last, x_n)
    start = jax.tree.map(lambda a: jnp.broadcast_to(a, (2,) + a.shape), start)
    norm0 = _lane_norms(start)
    start = _scale_lanes(start, 1.0 / jnp.where(norm0 > 0, norm0, 1.0))

    def back(lam, step_inputs):
        lam_prev, _ = carry_back(lam, step_inputs)
        size = _lane_norms(lam_prev)
        return _scale_lanes(lam_prev, 1.0 / jnp.where(size > 0, size, 1.0)), jnp.log(size)

    _, log_sizes = lax.scan(back, start, inputs, reverse=True)  # (n, 2): log ‖λ_i‖ / ‖λ_{i+1}‖
    log_adjoint = jnp.concatenate([jnp.cumsum(log_sizes[::-1], axis=0)[::-1], jnp.zeros((1, 2), log_sizes.dtype)]).T  # (2, n + 1)

    r, m = jax.tree.map(lambda a: a[0], grads), jax.tree.map(lambda a: a[1], grads)
    c = combine_by_sign(m, r)
    agree = sum(jnp.sum((jnp.sign(a) == jnp.sign(b)) & ((a != 0) | (b != 0))) for a, b in zip(jax.tree.leaves(m), jax.tree.leaves(r)))
    counted = sum(jnp.sum((a != 0) | (b != 0)) for a, b in zip(jax.tree.leaves(m), jax.tree.leaves(r)))
    norms = jnp.stack([optax.tree_utils.tree_norm(u) for u in (r, m, c)]).astype(loss.dtype)
    return {
        "loss": loss,
        "log_adjoint": log_adjoint,
        "sign_agreement": (agree / jnp.maximum(counted, 1)).astype(loss.dtype),
        "cosine": cosine_similarity(m, r).astype(loss.dtype),
        "update_norms": norms,
        "start_norm": norm0[0],
    }


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    loss: np.ndarray
    log_adjoint: np.ndarray
    sign_agreement: np.ndarray
    cosine: np.ndarray
    update_norms: np.ndarray
    start_norm: np.ndarray

    @property
    def n_steps(self) -> int:
        return self.log_adjoint.shape[-1] - 1

    @property
    def rates(self) -> np.ndarray:
        """Per-step growth rate of each lane (R, M): ``exp`` of the least-squares slope of ``log ‖λ_t‖`` against steps back."""
        y = np.mean(self.log_adjoint, axis=0)  # (2, n + 1)
        k = np.arange(self.n_steps, -1, -1, dtype=np.float64)  # steps back from the end
        k0 = k - k.mean()
        slope = (y - y.mean(axis=1, keepdims=True)) @ k0 / (k0 @ k0)
        return np.exp(slope)

    @property
    def growth(self) -> np.ndarray:
        """``‖λ_0‖ / ‖λ_n‖`` of each lane (R, M), the geometric mean over batches."""
        return np.exp(np.mean(self.log_adjoint[:, :, 0], axis=0))


def diagnose(policy: Any, problem: ControlProblem, x0: Any, *, batches: int = 1, batch_lanes: bool = True) -> Diagnosis:
    problem.check(policy, x0)
    flags = sample_axes(problem, policy, x0)
    from ..training.batching import sample_count

    n = sample_count(x0, flags)
    xb = split_batches(x0, n // batches, flags)
    params, static = trainable(policy)

    def apply(p, x):
        return eqx.combine(p, static)(x)

    @jax.jit
    def run(params, xb):
        return lax.map(lambda x: _one_batch(apply, params, problem, x, batch_lanes), xb)

    out = jax.device_get(run(params, xb))
    return Diagnosis(**{k: np.asarray(v) for k, v in out.items()})
