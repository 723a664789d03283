"""The backward pass of a rollout, written out so that several flows share one forward pass.

For a loss over a rollout ``x_{i+1} = S(x_i, c_i)``, ``c_i = N(x_i; θ)``, every
flow's gradient is

    λ_n = ∂L/∂x_n
    μ_i = (∂S/∂c_i)ᵀ λ_{i+1} + ∂L/∂c_i                    (what reaches the control)
    λ_i = g_sim,i (∂S/∂x_i)ᵀ λ_{i+1} + g_net,i (∂N/∂x_i)ᵀ μ_i + ∂L/∂x_i
    ∂L/∂θ = Σ_i (∂N/∂θ at x_i)ᵀ μ_i

with the flow's gates ``g``. Only the adjoints ``λ`` differ between flows; the
forward states, the controls and the linearisation points are shared. So this
module runs the forward scan once, then one reverse scan that carries the
adjoints of all requested flows as a batch (lane axis first), and finally
computes ``∂L/∂θ`` for all steps and lanes in one batched network VJP rather
than one small accumulation per step. The network's input-Jacobian is only
evaluated for lanes whose network gate is not identically zero.

The reverse scan recomputes one simulator step and one network evaluation
per step instead of storing their residuals from the forward scan: on CPU
that measured faster (cart pole, R: 4.0 ms against 5.0 ms per update), and
memory holds only the states. With ``remat``, not even those: the forward
pass keeps one state per segment and each segment is recomputed just before
its reverse scan (:mod:`stablebptt.checkpointing`).
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .checkpointing import segment_length, split_segments
from .problem import ControlProblem
from .rollout import loss_dtype

__all__ = ["value_and_grads"]


def _lanes(g: jax.Array, tree: Any) -> Any:
    """Multiply each lane (leading axis) of every leaf of ``tree`` by ``g[lane]``."""

    def leaf(a):
        gg = jnp.asarray(g, jnp.finfo(a.dtype).dtype)
        return gg.reshape(gg.shape + (1,) * (a.ndim - gg.ndim)) * a

    return jax.tree.map(leaf, tree)


def _split(x: Any) -> tuple[Any, Any]:
    """``(inexact, rest)``: the floating-point leaves of a state, which carry adjoints, and the rest
    (integer, boolean, PRNG-key leaves), which pass through the backward pass untouched."""
    return eqx.partition(x, eqx.is_inexact_array)


def _broadcast_lanes(k: int, tree: Any) -> Any:
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (k,) + a.shape), tree)


def value_and_grads(
    apply: Callable[[Any, Any], Any],
    params: Any,
    problem: ControlProblem,
    x0: Any,
    net_gates: np.ndarray | jax.Array,
    sim_gates: np.ndarray | jax.Array,
    *,
    remat: bool | int | None = False,
    batch_lanes: bool = True,
) -> tuple[jax.Array, Any]:
    """Loss and one parameter gradient per lane of gates, from one shared forward pass.

    Args:
        apply: ``apply(params, x) -> c``, the controller.
        params: its trainable parameters (pytree of arrays).
        problem: step, horizon and loss.
        x0: initial state.
        net_gates, sim_gates: ``(n_lanes, n_steps)``. Concrete (NumPy) gates let
            lanes whose network gate is identically 0 skip the network's
            input-Jacobian.
        remat: checkpoint the rollout in segments (see
            :mod:`stablebptt.checkpointing`): the forward pass keeps only each
            segment's first state, the backward pass recomputes one segment
            at a time and adds its share of ``∂L/∂θ``.
        batch_lanes: apply the simulator's VJP to all lanes at once (``vmap``,
            fastest for small simulators) or once per lane (``False``: compiles
            far faster for big ones such as Brax's pipelines).

    Returns:
        ``(loss, grads)`` with ``grads`` shaped like ``params`` plus a leading
        ``n_lanes`` axis. Equals ``jax.value_and_grad`` of
        :func:`stablebptt.rollout.gated_loss` lane by lane.
    """
    n = problem.n_steps
    k = int(np.shape(net_gates)[0])
    if np.shape(net_gates) != (k, n) or np.shape(sim_gates) != (k, n):
        raise ValueError(f"gates must have shape (n_lanes, {n}); got {np.shape(net_gates)} and {np.shape(sim_gates)}")
    try:
        needs_net = [i for i in range(k) if np.any(np.asarray(net_gates[i]) != 0)]
    except jax.errors.TracerArrayConversionError:
        needs_net = list(range(k))
    net_lanes = np.asarray(needs_net, dtype=np.int32)
    step, step_loss, final_loss = problem.step, problem.step_loss, problem.final_loss
    dtype = loss_dtype(x0)
    gates = (jnp.asarray(net_gates).T, jnp.asarray(sim_gates).T)  # time-major: (n, lanes)
    segment = segment_length(n, remat)

    def forward(carry, _):
        x, acc = carry
        c = apply(params, x)
        x1 = step(x, c)
        if step_loss is not None:
            acc = acc + jnp.asarray(step_loss(x1, c)).astype(dtype)
        return (x1, acc), (x, c)

    def unroll(x, acc, length):
        """``length`` steps from ``x``: final state and loss sum, and the visited states and controls."""
        (x_end, acc), (xs, cs) = lax.scan(forward, (x, acc), None, length=length)
        return x_end, acc, xs, cs

    def backward_step(lam, inputs):
        # Adjoints live on the floating-point leaves only; the other leaves of x and x1 are constants here.
        x, c, x1, g_net, g_sim = inputs
        x_d, x_s = _split(x)
        if step_loss is not None:
            x1_d, x1_s = _split(x1)
            value, loss_vjp = jax.vjp(lambda a, cc: step_loss(eqx.combine(a, x1_s), cc), x1_d, c)
            d_x1, d_c = loss_vjp(jnp.ones_like(value))
            lam = jax.tree.map(lambda a, b: a + b, lam, d_x1)
        _, sim_vjp = jax.vjp(lambda a, cc: _split(step(eqx.combine(a, x_s), cc))[0], x_d, c)
        if batch_lanes and k > 1:
            lam_x, mu = jax.vmap(sim_vjp)(lam)
        else:  # one VJP call per lane: no batching transform of a big simulator's backward pass (much faster to compile)
            per_lane = [sim_vjp(jax.tree.map(lambda a, i=i: a[i], lam)) for i in range(k)]
            lam_x, mu = jax.tree.map(lambda *xs: jnp.stack(xs), *per_lane)
        if step_loss is not None:
            mu = jax.tree.map(lambda a, b: a + b, mu, d_c)
        lam_prev = _lanes(g_sim, lam_x)
        if needs_net:
            _, net_vjp = jax.vjp(lambda y: apply(params, eqx.combine(y, x_s)), x_d)
            pick = jax.tree.map(lambda a: a[net_lanes], mu)
            if len(needs_net) == 1:
                (through_net,) = net_vjp(jax.tree.map(lambda a: a[0], pick))
                through_net = jax.tree.map(lambda a: a[None], through_net)
            else:
                (through_net,) = jax.vmap(net_vjp)(pick)
            through_net = _lanes(g_net[net_lanes], through_net)
            slot = {lane: j for j, lane in enumerate(needs_net)}
            lam_prev = jax.tree.map(
                lambda a, b: jnp.stack([a[i] + b[slot[i]] if i in slot else a[i] for i in range(k)]),
                lam_prev,
                through_net,
            )
        return lam_prev, mu

    def reverse(lam_end, xs, cs, x_end, seg_gates):
        """Adjoint at a stretch's first state and its share of ∂L/∂θ, from its states and controls."""
        xs_next = jax.tree.map(lambda a, b: jnp.concatenate([a[1:], b[None]]), xs, x_end)
        lam_start, mus = lax.scan(backward_step, lam_end, (xs, cs, xs_next) + seg_gates, reverse=True)
        # mus: (steps, lanes, ...) -> (lanes, steps, ...); one batched VJP over the stretch's steps.
        mus = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), mus)
        _, param_vjp = jax.vjp(lambda p: jax.vmap(lambda y: apply(p, y))(xs), params)
        (grads,) = jax.vmap(param_vjp)(mus)
        return lam_start, grads

    def final_adjoint(x_n, acc):
        loss = acc
        x_d, x_s = _split(x_n)
        if final_loss is not None:
            final_value, final_vjp = jax.vjp(lambda a: final_loss(eqx.combine(a, x_s)), x_d)
            loss = loss + jnp.asarray(final_value).astype(dtype)
            (lam_n,) = final_vjp(jnp.ones_like(final_value))
        else:
            lam_n = jax.tree.map(jnp.zeros_like, x_d)
        return loss, _broadcast_lanes(k, lam_n)

    acc0 = jnp.zeros((), dtype)
    if segment is None or segment >= n:
        x_n, acc, xs, cs = unroll(x0, acc0, n)
        loss, lam_n = final_adjoint(x_n, acc)
        return loss, reverse(lam_n, xs, cs, x_n, gates)[1]

    n_segments, rest = divmod(n, segment)

    def forward_segment(carry, _):
        x, acc = carry
        x_end, acc, _, _ = unroll(x, acc, segment)
        return (x_end, acc), x

    (x_tail, acc), starts = lax.scan(forward_segment, (x0, acc0), None, length=n_segments)
    if rest:
        x_n, acc, tail_xs, tail_cs = unroll(x_tail, acc, rest)
    else:
        x_n = x_tail
    loss, lam = final_adjoint(x_n, acc)
    body_gates, tail_gates = split_segments(gates, n_segments, segment)
    if rest:
        lam, grads = reverse(lam, tail_xs, tail_cs, x_n, tail_gates)
    else:
        grads = jax.tree.map(lambda p: jnp.zeros((k,) + jnp.shape(p), jnp.result_type(p)), params)

    def backward_segment(carry, inputs):
        lam_end, grads = carry
        x_start, seg_gates = inputs
        x_end, _, xs, cs = unroll(x_start, acc0, segment)
        lam_start, seg_grads = reverse(lam_end, xs, cs, x_end, seg_gates)
        return (lam_start, jax.tree.map(jnp.add, grads, seg_grads)), None

    (_, grads), _ = lax.scan(backward_segment, (lam, grads), (starts, body_gates), reverse=True)
    return loss, grads
