"""Brax environments: updates against jax.grad of a rollout written directly against Brax, learning, errors."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb
from stablebptt.engine.flows import cosine_similarity
from stablebptt.simulators import brax as brax_sim

from ..helpers import assert_trees_close

pytestmark = pytest.mark.long  # minutes of compiling: scheduled first (tests/conftest.py)

STEPS, BATCH = 8, 4


@pytest.fixture(scope="module")
def env():
    return brax_sim.get_env("inverted_double_pendulum")


def direct_loss(policy, env, x0, stop):
    """Minus the mean return, stepping ``jax.vmap(env.step)`` by hand (no episode ends in these steps).

    ``stop`` 0: the network sees the state (R); 1: its input is cut from the gradient (M).
    """

    def body(x, _):
        seen = jax.tree.map(lambda a: stop * jax.lax.stop_gradient(a) + (1 - stop) * a, x)
        x = jax.vmap(env.step)(x, policy(seen))
        return x, (x.reward, x.done)

    _, (rewards, done) = jax.lax.scan(body, x0, None, length=STEPS)
    return -jnp.sum(jnp.mean(rewards, axis=1)), done


def test_updates_equal_jax_grad_of_the_brax_rollout(env):
    # float32: Brax's pipeline keeps its system constants in float32 and its frame scan refuses float64 states
    x0 = brax_sim.reset(env, jax.random.key(0), BATCH)
    net = sb.DenseNet(brax_sim.observation_size(env), env.action_size, (16,), key=jax.random.key(1))
    policy = brax_sim.ObservationPolicy(net)
    problem = brax_sim.brax_problem(env, STEPS)
    params, static = eqx.partition(policy, eqx.is_inexact_array)

    @jax.jit
    def both(p):
        """The direct R and M gradients, and stablebptt's M and R lanes from one shared forward pass."""
        # R and M of the direct rollout as one program over stop = 0, 1 (Brax's backward pass compiles slowly)
        direct = jax.vmap(
            jax.value_and_grad(lambda q, stop: direct_loss(eqx.combine(q, static), env, x0, stop), has_aux=True), in_axes=(None, 0)
        )(p, jnp.array([0.0, 1.0]))
        net, sim = sb.C().gate_schedule(STEPS)  # lanes: M, then R
        apply = lambda q, x: eqx.combine(q, static)(x)  # noqa: E731
        return direct, sb.SharedBackward().value_and_grads(apply, p, problem, x0, net, sim)

    ((loss_rm, done), grad_rm), (loss, lanes) = both(params)
    loss_r = loss_rm[0]
    grad_r, grad_m = (jax.tree.map(lambda a, i=i: a[i], grad_rm) for i in (0, 1))
    assert not np.any(np.asarray(done)), "an episode ended: the direct rollout would need masking"
    assert float(loss) == pytest.approx(float(loss_r), rel=1e-6)
    lane = lambda i: jax.tree.map(lambda a: a[i], lanes)  # noqa: E731
    assert_trees_close(lane(1), grad_r, rel=1e-4)  # R
    assert_trees_close(lane(0), grad_m, rel=1e-4)  # M
    assert_trees_close(sb.C().combine(lanes), sb.combine_by_sign(grad_m, grad_r), rel=1e-4)  # C, the update train uses
    assert float(cosine_similarity(grad_m, grad_r)) < 1 - 1e-6  # M and R differ, so C is not R


def test_an_ended_episode_stays_frozen_with_no_reward(env):
    x0 = brax_sim.reset(env, jax.random.key(2), 2)
    x0 = x0.replace(done=jnp.array([1.0, 0.0]))
    x1 = jax.jit(brax_sim.batch_step(env))(x0, jnp.ones((2, env.action_size)))
    assert brax_sim.observation_size(env) == x0.obs.shape[-1] == 8  # the double pendulum's observation (traced, not run)
    for before, after in zip(jax.tree.leaves(x0.pipeline_state), jax.tree.leaves(x1.pipeline_state), strict=True):
        np.testing.assert_array_equal(after[0], before[0])  # ended: unchanged
    assert not np.array_equal(x1.pipeline_state.q[1], x0.pipeline_state.q[1])  # running: stepped
    assert float(x1.reward[0]) == 0.0 and float(x1.reward[1]) != 0.0
