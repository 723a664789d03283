"""The backward pass of a rollout, written out so that several flows share one forward pass.

For a loss over a rollout ``x_{i+1} = S(x_i, c_i)``, ``c_i = N(x_i; θ)``, every
flow's gradient is

    λ_n = ∂L/∂x_n
    μ_i = (∂S/∂c_i)ᵀ λ_{i+1} + ∂L/∂c_i                    (what reaches the control)
    λ_i = g_sim,i (∂S/∂x_i)ᵀ λ_{i+1} + g_net,i (∂N/∂x_i)ᵀ μ_i + ∂L/∂x_i
    ∂L/∂θ = Σ_i (∂N/∂θ at x_i)ᵀ μ_i

with the flow's gates ``g``. Only the adjoints ``λ`` differ between flows; the
forward states, the controls and the linearisation points are shared. The
pass is four pieces, each checkable on its own:

1. :func:`forward_residuals`: the forward scan, keeping each step's state and
   control;
2. :func:`adjoint_step`: one reverse step, ``λ_{i+1} → (λ_i, μ_i)``, for all
   lanes (flows) at once;
3. :func:`param_grads`: ``∂L/∂θ`` of a stretch of steps for every lane, as one
   batched network VJP rather than one small accumulation per step;
4. :func:`checkpointed_grads`: the segment loop of ``remat``: the forward pass
   keeps one state per segment and each segment is recomputed just before
   its reverse scan (:mod:`stablebptt.engine.remat`).

:func:`value_and_grads` puts them together. The reverse step recomputes one
simulator step and one network evaluation instead of storing their
residuals from the forward scan: on CPU that measured faster (cart pole, R:
4.0 ms against 5.0 ms per update), and memory holds only the states. The
network's input-Jacobian is only evaluated for the lanes that the flow
declares may use the network (``network_lanes``, known when the program is
traced, whether or not the gates are).

Shapes: a state ``x`` is any pytree; its floating-point leaves carry
adjoints, the others (integers, booleans, PRNG keys) pass through. With
``k`` lanes, an adjoint ``λ`` is the floating-point part of ``x`` with a
leading axis ``k``, ``μ`` the control's shape with a leading axis ``k``, and
gradients have the parameters' shapes with a leading axis ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .remat import segment_length, split_segments
from .problem import ControlProblem
from .rollouts import loss_dtype

__all__ = ["value_and_grads", "forward_residuals", "adjoint_step", "param_grads", "final_adjoint", "checkpointed_grads", "network_lanes"]

Apply = Callable[[Any, Any], Any]


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


def _add(a: Any, b: Any) -> Any:
    return jax.tree.map(jnp.add, a, b)


def network_lanes(net_gates: np.ndarray) -> list[int]:
    """The lanes whose network gate is not identically zero, read from concrete gates ``(n_lanes, n_steps)``."""
    return [i for i in range(int(np.shape(net_gates)[0])) if np.any(np.asarray(net_gates[i]) != 0)]


def forward_residuals(apply: Apply, params: Any, problem: ControlProblem, x: Any, acc: jax.Array, length: int) -> tuple[Any, jax.Array, Any, Any]:
    """``length`` steps of the rollout from ``x``, keeping what the reverse pass needs.

    Returns ``(x_end, acc, xs, cs)``: the state after the last step, ``acc``
    plus the step losses of these steps (a scalar), the visited states
    ``x_i`` (every leaf with a leading time axis ``length``) and the controls
    ``c_i = apply(params, x_i)`` (likewise).
    """
    step, step_loss = problem.step, problem.step_loss

    def forward(carry, _):
        x, acc = carry
        c = apply(params, x)
        x1 = step(x, c)
        if step_loss is not None:
            acc = acc + jnp.asarray(step_loss(x1, c)).astype(acc.dtype)
        return (x1, acc), (x, c)

    (x_end, acc), (xs, cs) = lax.scan(forward, (x, acc), None, length=length)
    return x_end, acc, xs, cs


def adjoint_step(apply: Apply, params: Any, problem: ControlProblem, net_lanes: Sequence[int], *, batch_lanes: bool = True) -> Callable:
    """One step of the reverse scan, for ``k`` lanes at once.

    Returns ``f(lam, (x, c, x1, g_net, g_sim)) -> (lam_prev, mu)``, where
    ``x`` is a state ``x_i``, ``c = c_i`` its control, ``x1 = x_{i+1}``,
    ``g_net, g_sim`` the lanes' gates at step ``i`` (shape ``(k,)``) and
    ``lam`` the adjoint of ``x_{i+1}`` (leading axis ``k``). ``mu`` is what
    reaches the control (``(∂S/∂c)ᵀ λ + ∂ℓ/∂c``, leading axis ``k``) and
    ``lam_prev`` the adjoint of ``x_i`` (``g_sim (∂S/∂x)ᵀ λ + g_net (∂N/∂x)ᵀ μ``,
    with ``∂ℓ/∂x_{i+1}`` of a step loss ``ℓ`` added to ``lam`` first).

    ``net_lanes``: the lanes whose network gate may be non-zero (a flow's
    ``network_lanes``); the others skip the network's input-Jacobian.
    ``batch_lanes``: ``vmap`` the simulator's VJP over lanes (fastest for
    small simulators) or call it once per lane (``False``: compiles far
    faster for big ones such as Brax's pipelines).
    """
    step, step_loss = problem.step, problem.step_loss
    picked = np.asarray(net_lanes, dtype=np.int32)

    def per_lane(vjp, cotangents, k):
        if batch_lanes and k > 1:
            return jax.vmap(vjp)(cotangents)
        outputs = [vjp(jax.tree.map(lambda a, i=i: a[i], cotangents)) for i in range(k)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)

    def f(lam, inputs):
        x, c, x1, g_net, g_sim = inputs
        k = int(np.shape(g_sim)[0])
        x_d, x_s = _split(x)
        if step_loss is not None:
            x1_d, x1_s = _split(x1)
            value, loss_vjp = jax.vjp(lambda a, cc: step_loss(eqx.combine(a, x1_s), cc), x1_d, c)
            d_x1, d_c = loss_vjp(jnp.ones_like(value))
            lam = _add(lam, d_x1)
        _, sim_vjp = jax.vjp(lambda a, cc: _split(step(eqx.combine(a, x_s), cc))[0], x_d, c)
        lam_x, mu = per_lane(sim_vjp, lam, k)
        if step_loss is not None:
            mu = _add(mu, d_c)
        lam_prev = _lanes(g_sim, lam_x)
        if not net_lanes:
            return lam_prev, mu
        _, net_vjp = jax.vjp(lambda y: apply(params, eqx.combine(y, x_s)), x_d)
        (through_net,) = per_lane(net_vjp, jax.tree.map(lambda a: a[picked], mu), len(net_lanes))
        through_net = _lanes(g_net[picked], through_net)
        if len(net_lanes) == k:
            return _add(lam_prev, through_net), mu
        slot = {lane: j for j, lane in enumerate(net_lanes)}
        lam_prev = jax.tree.map(
            lambda a, b: jnp.stack([a[i] + b[slot[i]] if i in slot else a[i] for i in range(k)]), lam_prev, through_net
        )
        return lam_prev, mu

    return f


def param_grads(apply: Apply, params: Any, xs: Any, mus: Any) -> Any:
    """``Σ_i (∂N/∂θ at x_i)ᵀ μ_i`` over a stretch of ``T`` steps, for every lane, in one batched VJP.

    ``xs``: the stretch's states (leading axis ``T``); ``mus``: the
    cotangents of their controls, leading axes ``(k, T)``. Returns the
    gradients with the parameters' shapes and a leading axis ``k``.
    """
    _, vjp = jax.vjp(lambda p: jax.vmap(lambda y: apply(p, y))(xs), params)
    (grads,) = jax.vmap(vjp)(mus)
    return grads


def final_adjoint(problem: ControlProblem, x_n: Any, acc: jax.Array, k: int) -> tuple[jax.Array, Any]:
    """``(loss, λ_n)``: the total loss (``acc`` plus the final loss of ``x_n``) and its adjoint, copied to ``k`` lanes."""
    x_d, x_s = _split(x_n)
    loss = acc
    if problem.final_loss is not None:
        value, vjp = jax.vjp(lambda a: problem.final_loss(eqx.combine(a, x_s)), x_d)
        loss = loss + jnp.asarray(value).astype(acc.dtype)
        (lam_n,) = vjp(jnp.ones_like(value))
    else:
        lam_n = jax.tree.map(jnp.zeros_like, x_d)
    return loss, jax.tree.map(lambda a: jnp.broadcast_to(a, (k,) + a.shape), lam_n)


def _reverse(reverse_step: Callable, apply: Apply, params: Any, lam_end: Any, xs: Any, cs: Any, x_end: Any, gates: tuple) -> tuple[Any, Any]:
    """Adjoint at a stretch's first state and the stretch's share of ``∂L/∂θ`` (leading axis ``k``)."""
    xs_next = jax.tree.map(lambda a, b: jnp.concatenate([a[1:], b[None]]), xs, x_end)
    lam_start, mus = lax.scan(reverse_step, lam_end, (xs, cs, xs_next) + gates, reverse=True)
    mus = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), mus)  # (T, k, ...) -> (k, T, ...)
    return lam_start, param_grads(apply, params, xs, mus)


def checkpointed_grads(
    apply: Apply, params: Any, problem: ControlProblem, x0: Any, gates: tuple, reverse_step: Callable, segment: int, k: int
) -> tuple[jax.Array, Any]:
    """The remat segment loop: ``(loss, grads)`` keeping one state per segment of ``segment`` steps.

    ``gates``: ``(net, sim)``, each time-major ``(n_steps, k)``. The forward
    pass stores each segment's first state; the backward pass recomputes a
    segment's states (:func:`forward_residuals`), runs its reverse scan and
    adds its share of the gradient. A tail shorter than a segment is kept
    from the forward pass.
    """
    n = problem.n_steps
    dtype = loss_dtype(x0)
    acc0 = jnp.zeros((), dtype)
    n_segments, rest = divmod(n, segment)

    def forward_segment(carry, _):
        x, acc = carry
        x_end, acc, _, _ = forward_residuals(apply, params, problem, x, acc, segment)
        return (x_end, acc), x

    (x_tail, acc), starts = lax.scan(forward_segment, (x0, acc0), None, length=n_segments)
    if rest:
        x_n, acc, tail_xs, tail_cs = forward_residuals(apply, params, problem, x_tail, acc, rest)
    else:
        x_n = x_tail
    loss, lam = final_adjoint(problem, x_n, acc, k)
    body_gates, tail_gates = split_segments(gates, n_segments, segment)
    if rest:
        lam, grads = _reverse(reverse_step, apply, params, lam, tail_xs, tail_cs, x_n, tail_gates)
    else:
        grads = jax.tree.map(lambda p: jnp.zeros((k,) + jnp.shape(p), jnp.result_type(p)), params)

    def backward_segment(carry, inputs):
        lam_end, grads = carry
        x_start, seg_gates = inputs
        x_end, _, xs, cs = forward_residuals(apply, params, problem, x_start, acc0, segment)
        lam_start, seg_grads = _reverse(reverse_step, apply, params, lam_end, xs, cs, x_end, seg_gates)
        return (lam_start, _add(grads, seg_grads)), None

    (_, grads), _ = lax.scan(backward_segment, (lam, grads), (starts, body_gates), reverse=True)
    return loss, grads


def value_and_grads(
    apply: Apply,
    params: Any,
    problem: ControlProblem,
    x0: Any,
    net_gates: np.ndarray | jax.Array,
    sim_gates: np.ndarray | jax.Array,
    *,
    remat: bool | int | None = False,
    batch_lanes: bool = True,
    network_lanes: Sequence[int] | None = None,
) -> tuple[jax.Array, Any]:
    """Loss and one parameter gradient per lane of gates, from one shared forward pass.

    Args:
        apply: ``apply(params, x) -> c``, the controller.
        params: its trainable parameters (pytree of arrays).
        problem: step, horizon and loss.
        x0: initial state.
        net_gates, sim_gates: ``(n_lanes, n_steps)``, concrete or traced.
        remat: checkpoint the rollout in segments (:func:`checkpointed_grads`).
        batch_lanes: see :func:`adjoint_step`.
        network_lanes: the lanes whose network gate may be non-zero (every
            lane if None); the others skip the network's input-Jacobian.

    Returns:
        ``(loss, grads)`` with ``grads`` shaped like ``params`` plus a leading
        ``n_lanes`` axis. Equals ``jax.value_and_grad`` of
        :func:`stablebptt.engine.rollouts.gated_loss` lane by lane.
    """
    n = problem.n_steps
    k = int(np.shape(net_gates)[0])
    if np.shape(net_gates) != (k, n) or np.shape(sim_gates) != (k, n):
        raise ValueError(f"gates must have shape (n_lanes, {n}); got {np.shape(net_gates)} and {np.shape(sim_gates)}")
    if network_lanes is None:
        network_lanes = range(k)
    elif not all(0 <= i < k for i in network_lanes):
        raise ValueError(f"network_lanes {tuple(network_lanes)} name lanes outside 0..{k - 1}")
    reverse_step = adjoint_step(apply, params, problem, sorted(set(network_lanes)), batch_lanes=batch_lanes)
    gates = (jnp.asarray(net_gates).T, jnp.asarray(sim_gates).T)  # time-major: (n, lanes)
    segment = segment_length(n, remat)
    if segment is not None and segment < n:
        return checkpointed_grads(apply, params, problem, x0, gates, reverse_step, segment, k)
    x_n, acc, xs, cs = forward_residuals(apply, params, problem, x0, jnp.zeros((), loss_dtype(x0)), n)
    loss, lam_n = final_adjoint(problem, x_n, acc, k)
    return loss, _reverse(reverse_step, apply, params, lam_n, xs, cs, x_n, gates)[1]
