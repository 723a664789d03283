"""The linear-quadratic task: its loss is the polynomial written out in NumPy, its optimum known;
R reaches it, M vanishes there (and, at zero loss, is repelled from it)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb
from stablebptt.paper.lq import optimum, polynomial_loss
from stablebptt.tasks import linear

from ..helpers import value_and_update


def setup(rho):
    config = linear.LinearConfig(control_cost=rho)
    task = linear.make_task(config)
    x0 = linear.sample_initial_states(config, jax.random.key(42), 64, jnp.float64)
    return config, task, x0


def update(flow, task, x0, theta):
    return np.asarray(value_and_update(flow, linear.LinearFeedback(jnp.asarray(theta, jnp.float64)), task.problem, x0)[1].gain)


@pytest.mark.parametrize("rho", [0.0, 0.1])
def test_rollout_loss_is_the_numpy_polynomial(rho, x64):
    config, task, x0 = setup(rho)
    for theta in np.random.default_rng(0).normal(size=(3, 1, 2)):
        got = sb.rollout_loss(linear.LinearFeedback(jnp.asarray(theta)), task.problem, x0)
        assert float(got) == pytest.approx(polynomial_loss(config, np.asarray(x0), theta), rel=1e-13)


def test_zero_loss_optimum_is_the_deadbeat_gain_and_a_fixed_point_of_every_flow(x64):
    config, task, x0 = setup(0.0)
    theta_star, loss_star = optimum(config, np.asarray(x0))
    np.testing.assert_allclose(theta_star, linear.deadbeat_gain(config), atol=1e-3)
    np.testing.assert_allclose(linear.deadbeat_gain(config), [[-4.0, -3.0]], atol=1e-12)
    assert loss_star < 1e-12
    for flow in (sb.R(), sb.M(), sb.C()):
        assert np.max(np.abs(update(flow, task, x0, linear.deadbeat_gain(config)))) < 1e-12


def test_regular_gradient_reaches_the_zero_loss_optimum(x64):
    config, task, x0 = setup(0.0)
    result = sb.train(
        linear.make_policy(config, None, jnp.float64), task.problem, x0, x0,
        flow=sb.R(), optimizer=sb.make_optimizer("none", 0.05), epochs=2000, batch_size=64,
    )  # fmt: skip
    theta = np.asarray(result.policy.gain)
    assert polynomial_loss(config, np.asarray(x0), theta) < 1e-4 < result.initial["test_loss"]
    assert np.linalg.norm(theta - linear.deadbeat_gain(config)) < 0.6


def test_modified_field_is_repelled_from_the_zero_loss_optimum(x64):
    """M vanishes at θ*, but its Jacobian there has a negative eigenvalue: descending along M leaves θ*."""
    config, task, x0 = setup(0.0)
    star, h = linear.deadbeat_gain(config), 1e-5
    for flow, sign in ((sb.R(), 1), (sb.M(), -1)):
        jac = np.stack([(update(flow, task, x0, star + h * e) - update(flow, task, x0, star - h * e)).ravel() / (2 * h) for e in np.eye(2)], axis=1)
        extreme = np.max(np.linalg.eigvals(jac).real) if sign > 0 else np.min(np.linalg.eigvals(jac).real)
        assert sign * extreme > 0.1  # R: a positive curvature; M: a negative eigenvalue


def test_with_a_control_cost_the_modified_update_does_not_vanish_at_the_optimum(x64):
    config, task, x0 = setup(0.1)
    theta_star, loss_star = optimum(config, np.asarray(x0))
    assert loss_star > 0.1
    assert np.max(np.abs(update(sb.R(), task, x0, theta_star))) < 1e-6
    assert np.max(np.abs(update(sb.M(), task, x0, theta_star))) > 1e-2
