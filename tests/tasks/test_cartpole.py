"""Cart pole: the authors' physics, equilibria, energy, finite differences, shape errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb
from stablebptt.tasks import cartpole

from ..conftest import reference, tol
from ..helpers import assert_regular_gradient_matches_finite_differences, assert_step_and_rollout_match


@pytest.mark.parametrize("poles", [1, 2, 3, 4])
def test_step_and_rollout_match_reference(poles, dtype):
    ref = reference("cartpole_step")
    config = cartpole.CartPoleConfig(n_poles=poles)
    assert config.dt == pytest.approx(float(ref["dt"]))
    vectors = [ref[f"poles{poles}_{name}"] for name in ("x0", "u", "x1", "U", "rollout")]
    assert_step_and_rollout_match(functools.partial(cartpole.step, config), *vectors, dtype, atol=1e-6, rollout_atol=3e-6)


@pytest.mark.parametrize("poles", [1, 3])
def test_equilibria(poles, dtype):
    config = cartpole.CartPoleConfig(n_poles=poles)
    force = jnp.zeros(2, dtype)
    upright = jnp.zeros((2, 1 + poles, 2), dtype)
    hanging = upright.at[:, 1:, 0].set(jnp.pi)
    up, down = upright, hanging
    for _ in range(100):
        up = cartpole.step(config, up, force)
        down = cartpole.step(config, down, force)
    np.testing.assert_array_equal(up, upright)  # exactly: every term vanishes
    np.testing.assert_allclose(down, hanging, atol=tol(dtype, 1e-5, 1e-13))  # rounded sin(π) ≠ 0, the pendulum stays down
    # ... while a slightly tilted upright pole falls (the equilibrium is unstable)
    tilted = upright.at[:, 1, 0].set(0.01)
    for _ in range(100):
        tilted = cartpole.step(config, tilted, force)
    assert float(jnp.abs(tilted[0, 1, 0])) > 0.05


def energy(config, s):
    m, M, l, g = config.pole_mass, config.total_mass, config.pole_length, config.gravity
    xd, th, thd = s[:, 0, 1], s[:, 1, 0], s[:, 1, 1]
    # cart + rod of length 2l (inertia m l²/3 about its centre), θ = 0 upright
    return 0.5 * M * xd**2 + m * l * jnp.cos(th) * xd * thd + 2 / 3 * m * l**2 * thd**2 + m * g * l * jnp.cos(th)


def test_energy_drift_is_small_and_first_order(x64):
    drifts = []
    for n in (100, 1000):
        config = cartpole.CartPoleConfig(n_poles=1, n_steps=n, horizon=1.0)
        s = cartpole.sample_initial_states(config, jax.random.key(0), 8, jnp.float64)
        e0 = energy(config, s)
        worst = 0.0
        for _ in range(n):
            s = cartpole.step(config, s, jnp.zeros(8))
            worst = max(worst, float(jnp.max(jnp.abs(energy(config, s) - e0) / jnp.abs(e0))))
        drifts.append(worst)
    assert drifts[1] < 2e-3
    assert 5 < drifts[0] / drifts[1] < 20  # error ∝ dt: semi-implicit Euler of the right equations


def test_regular_gradient_matches_finite_differences(x64):
    config = cartpole.CartPoleConfig(n_poles=2, n_steps=20, horizon=0.2)
    task = cartpole.make_task(config)
    net = sb.DenseNet(6, 1, (16, 16), key=jax.random.key(1), dtype=jnp.float64)
    x0 = task.sample_initial_states(jax.random.key(2), 4, jnp.float64)
    assert_regular_gradient_matches_finite_differences(net, task.problem, x0, eps=1e-5)



def test_sampler_ranges():
    config = cartpole.CartPoleConfig(n_poles=3)
    x = np.asarray(cartpole.sample_initial_states(config, jax.random.key(0), 4096))
    assert x.shape == (4096, 4, 2)
    assert np.all(np.abs(x[:, 0, :]) <= 1) and np.all(np.abs(x[:, 1:, 1]) <= 1)
    assert np.all(np.abs(x[:, 1:, 0] - np.pi) <= np.pi / 6 + 1e-6)
    assert abs(x[:, 1:, 0].mean() - np.pi) < 0.02 and x[:, 1:, 0].std() > 0.25


def test_initial_network_outputs_zero_force():
    config = cartpole.CartPoleConfig(n_poles=2)
    net = cartpole.make_policy(config, jax.random.key(0))
    x = cartpole.sample_initial_states(config, jax.random.key(1), 5)
    np.testing.assert_array_equal(net(x), np.zeros((5, 1)))
    k = np.asarray(net.layers[0].kernel)
    limit = np.sqrt(6 / (6 + 100))
    assert k.shape == (6, 100) and np.all(np.abs(k) <= limit) and np.abs(k).max() > 0.9 * limit


def test_loss_values():
    s = jnp.zeros((2, 3, 2))
    assert float(cartpole.loss(s)) == 0.0
    assert float(cartpole.loss(s.at[:, 1:, 0].set(jnp.pi))) == pytest.approx(2.0)


def test_bad_shapes_and_settings():
    config = cartpole.CartPoleConfig(n_poles=2)
    with pytest.raises(ValueError, match=r"cartpole state has shape \(4, 2, 2\); expected \(batch, 3, 2\)"):
        cartpole.step(config, jnp.zeros((4, 2, 2)), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"cartpole force has shape \(3,\); expected \(4,\) or \(4, 1\)"):
        cartpole.step(config, jnp.zeros((4, 3, 2)), jnp.zeros(3))
    with pytest.raises(ValueError, match="poles=0; expected a positive integer"):
        cartpole.CartPoleConfig(n_poles=0)
    with pytest.raises(ValueError, match="pole_length"):
        cartpole.CartPoleConfig(pole_length=-1.0)
