"""The pieces of the shared backward pass, each against ``jax.vjp`` of the same computation on random inputs."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb
from stablebptt.engine import backward
from stablebptt.engine.flows import gate
from stablebptt.engine.rollouts import gated_loss

from ..conftest import tol
from ..helpers import assert_trees_close

B = 5  # batch


def problem(step_loss: bool = True) -> sb.ControlProblem:
    """A damped 2-D point mass (dict state with an integer counter), a step loss with a control penalty."""

    def step(x, c):
        acc = c - 0.5 * jnp.sin(x["pos"]) - 0.1 * x["vel"] * x["pos"]
        vel = x["vel"] + 0.1 * acc
        return {"pos": x["pos"] + 0.1 * vel, "vel": vel, "t": x["t"] + 1}

    def loss(x, c):
        return jnp.mean(x["pos"] ** 2 * x["vel"]) + 0.01 * jnp.mean(c**3)

    return sb.ControlProblem(step=step, n_steps=7, step_loss=loss if step_loss else None, final_loss=lambda x: jnp.mean(jnp.cos(x["vel"])))


class DictNet(sb.DenseNet):
    def __call__(self, x):
        return super().__call__(jnp.concatenate([x["pos"], x["vel"]], axis=1))


def inputs(dtype, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    net = DictNet(4, 2, (16,), key=keys[0], dtype=dtype)
    x = {"pos": jax.random.normal(keys[1], (B, 2), dtype), "vel": jax.random.normal(keys[2], (B, 2), dtype), "t": jnp.zeros((B,), jnp.int32)}
    params, static = eqx.partition(net, eqx.is_inexact_array)
    return params, (lambda p, y: eqx.combine(p, static)(y)), x, keys[3]


def floats(x):
    """The floating-point part of a state, as the backward pass carries it (the counter is None)."""
    return eqx.partition(x, eqx.is_inexact_array)[0]


def with_floats(x, d):
    return eqx.combine(d, eqx.partition(x, eqx.is_inexact_array)[1])


def normal_like(key, tree, lead=()):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, lead + a.shape, a.dtype) for k, a in zip(keys, leaves, strict=True)])


def test_forward_residuals_are_the_rollout(dtype):
    params, apply, x, _ = inputs(dtype)
    prob = problem()
    x_end, acc, xs, cs = backward.forward_residuals(apply, params, prob, x, jnp.asarray(0.5, dtype), prob.n_steps)
    y, total = x, 0.5
    for i in range(prob.n_steps):
        assert_trees_close(jax.tree.map(lambda a: a[i], xs), y, tol(dtype, 1e-6, 1e-14))
        c = apply(params, y)
        assert_trees_close(cs[i], c, tol(dtype, 1e-6, 1e-14))
        y = prob.step(y, c)
        total += float(prob.step_loss(y, c))
    assert_trees_close(x_end, y, tol(dtype, 1e-6, 1e-14))
    np.testing.assert_array_equal(x_end["t"], np.full(B, prob.n_steps))
    assert float(acc) == pytest.approx(total, rel=tol(dtype, 1e-5, 1e-13))


@pytest.mark.parametrize("step_loss", [True, False], ids=["step loss", "final loss only"])
@pytest.mark.parametrize("batch_lanes", [True, False], ids=["vmapped lanes", "looped lanes"])
@pytest.mark.parametrize("lanes", [(1.0, 0.0, 0.3), (0.0, 0.0, 0.0), (0.7,)], ids=["mixed", "no network lane", "one lane"])
def test_adjoint_step_equals_vjp_of_the_gated_step(step_loss, batch_lanes, lanes, dtype):
    """(λ_i, μ_i) from λ_{i+1}: μ is the cotangent reaching c, λ_i that reaching x through the gated step."""
    params, apply, x, key = inputs(dtype)
    prob = problem(step_loss)
    k = len(lanes)
    k_lam, k_sim = jax.random.split(key)
    g_net = np.asarray(lanes)
    g_sim = np.asarray(jax.random.uniform(k_sim, (k,)), np.float64)
    c = apply(params, x)
    x1 = prob.step(x, c)
    lam = normal_like(k_lam, floats(x1), (k,))
    f = backward.adjoint_step(apply, params, prob, backward.network_lanes(g_net[:, None]), batch_lanes=batch_lanes)
    lam_prev, mu = f(lam, (x, c, x1, jnp.asarray(g_net, dtype), jnp.asarray(g_sim, dtype)))

    for lane in range(k):
        cot = jax.tree.map(lambda a: a[lane], lam)

        def through_c(cc):
            y = prob.step(x, cc)
            return floats(y), (prob.step_loss(y, cc) if step_loss else jnp.zeros((), dtype))

        def through_x(d):
            y = with_floats(x, d)
            y1 = prob.step(gate(y, g_sim[lane]), apply(params, gate(y, g_net[lane])))
            return floats(y1), (prob.step_loss(y1, apply(params, gate(y, g_net[lane]))) if step_loss else jnp.zeros((), dtype))

        one = jnp.ones((), dtype)
        (want_mu,) = jax.vjp(through_c, c)[1]((cot, one))
        (want_lam,) = jax.vjp(through_x, floats(x))[1]((cot, one))
        assert_trees_close(mu[lane], want_mu, tol(dtype, 1e-5, 1e-12))
        assert_trees_close(jax.tree.map(lambda a: a[lane], lam_prev), want_lam, tol(dtype, 1e-5, 1e-12))


def test_param_grads_equal_vjp_of_the_network_over_the_steps(dtype):
    params, apply, x, key = inputs(dtype)
    k_x, k_mu = jax.random.split(key)
    xs = with_floats(jax.tree.map(lambda a: jnp.broadcast_to(a, (6,) + a.shape), x), normal_like(k_x, floats(x), (6,)))
    mus = jax.random.normal(k_mu, (3, 6, B, 2), dtype)
    got = jax.jit(backward.param_grads, static_argnums=0)(apply, params, xs, mus)

    @jax.jit  # one compiled reference per lane's cotangents, not its operations one by one
    def want(mu):
        total = jax.vjp(lambda p: sum(jnp.vdot(apply(p, jax.tree.map(lambda a: a[i], xs)), mu[i]) for i in range(6)), params)[1]
        return total(jnp.ones((), dtype))[0]

    for lane in range(3):
        assert_trees_close(jax.tree.map(lambda a: a[lane], got), want(mus[lane]), tol(dtype, 1e-5, 1e-12))


def test_final_adjoint_is_the_gradient_of_the_final_loss(dtype):
    _, _, x, _ = inputs(dtype)
    prob = problem()
    loss, lam = backward.final_adjoint(prob, x, jnp.asarray(0.25, dtype), 3)
    value, grad = jax.value_and_grad(lambda d: prob.final_loss(with_floats(x, d)))(floats(x))
    assert float(loss) == pytest.approx(0.25 + float(value), rel=tol(dtype, 1e-6, 1e-14))
    for lane in range(3):
        assert_trees_close(jax.tree.map(lambda a: a[lane], lam), grad, tol(dtype, 1e-6, 1e-14))


@pytest.mark.parametrize("segment", [2, 3, 7])
def test_checkpointed_segment_loop_equals_autodiff_per_lane(segment, dtype):
    """The remat loop (7 steps in segments of 2 or 3: a tail of 1; 7: no checkpointing) against jax.grad of each lane."""
    params, apply, x, key = inputs(dtype)
    prob = problem()
    net = np.stack([np.ones(7), np.zeros(7), np.linspace(0, 1, 7)])
    sim = np.stack([np.ones(7), np.ones(7), np.asarray(jax.random.uniform(key, (7,)), np.float64)])
    loss, grads = eqx.filter_jit(backward.value_and_grads)(apply, params, prob, x, net, sim, remat=segment)
    reference = jax.jit(jax.value_and_grad(lambda p, g_net, g_sim: gated_loss(lambda y: apply(p, y), prob, x, g_net, g_sim)))
    for lane in range(3):
        want_loss, want = reference(params, net[lane], sim[lane])
        assert float(loss) == pytest.approx(float(want_loss), rel=tol(dtype, 1e-5, 1e-13))
        assert_trees_close(jax.tree.map(lambda a: a[lane], grads), want, tol(dtype, 2e-5, 1e-12))
