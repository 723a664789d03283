"""Guidance by repulsion: the authors' physics, symmetries, every force term by hand, gradients, learning."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb
from stablebptt.tasks import repulsion

from ..conftest import reference, tol
from ..helpers import assert_regular_gradient_matches_finite_differences, assert_step_and_rollout_match

pytestmark = pytest.mark.long  # a minute or more of compiling: scheduled first (tests/conftest.py)

CONFIG = repulsion.RepulsionConfig()


def test_step_and_rollout_match_reference(dtype):
    ref = reference("repulsion_step")
    assert CONFIG.dt == pytest.approx(float(ref["dt"]))
    vectors = [ref[name] for name in ("x0", "u", "x1", "U", "rollout")]
    assert_step_and_rollout_match(functools.partial(repulsion.step, CONFIG), *vectors, dtype, atol=1e-6, rollout_atol=5e-6, rtol=1e-5)


step = jax.jit(repulsion.step, static_argnums=0)  # one compiled step, not its operations one by one


def roll(x, controls, config=CONFIG):
    out = [x]
    for c in controls:
        x = step(config, x, c)
        out.append(x)
    return jnp.stack(out)


def random_setup(key, dtype, steps=20):
    k1, k2 = jax.random.split(key)
    x0 = repulsion.sample_initial_states(CONFIG, k1, 5, dtype)
    x0 = x0.at[:, :, 1, :].set(0.3 * jax.random.normal(k2, x0[:, :, 1, :].shape, dtype))
    controls = jax.random.normal(jax.random.key(9), (steps, 5, CONFIG.n_drivers, 2), dtype)
    return x0, controls


def test_rotating_the_start_rotates_the_trajectory(dtype):
    x0, controls = random_setup(jax.random.key(0), dtype)
    rot = lambda s: jnp.stack([-s[..., 1], s[..., 0]], axis=-1)  # noqa: E731  (90°: (x, y) → (−y, x))
    plain = roll(x0, controls)
    turned = roll(rot(x0), controls)
    assert plain.dtype == dtype
    np.testing.assert_allclose(turned, rot(plain), atol=tol(dtype, 2e-5, 1e-12))
    assert float(jnp.max(jnp.abs(plain[-1] - x0))) > 0.5  # things moved


def test_permuting_evaders_permutes_the_trajectory(dtype):
    x0, controls = random_setup(jax.random.key(1), dtype)
    nd = CONFIG.n_drivers
    order = np.r_[np.arange(nd), nd + np.array([2, 0, 3, 1])]
    np.testing.assert_allclose(roll(x0[:, order], controls), roll(x0, controls)[:, :, order], atol=tol(dtype, 2e-5, 1e-12))


def isolated(term: str) -> repulsion.RepulsionConfig:
    """The default constants with every force coefficient but ``term`` set to 0."""
    zero = {"driver_spread": 0.0, "driver_friction": 0.0, "evader_flee": 0.0, "evader_pair": 0.0, "evader_friction": 0.0}
    keep = {k: getattr(CONFIG, k) for k in zero if k == term}
    return dataclasses.replace(CONFIG, n_evaders=2, **{**zero, **keep})


# Drivers D1 = (1, 0), D2 = (−1, 0); evaders E1 = (0, 0.5), E2 = (0, −0.5);
# velocities (0.1, −0.2), (0.3, 0), (−0.4, 0.1), (0, 0.2); controls (a, b) = (1, 2) and (−1, 0.5).
POS = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.5], [0.0, -0.5]])
VEL = np.array([[0.1, -0.2], [0.3, 0.0], [-0.4, 0.1], [0.0, 0.2]])
CONTROL = np.array([[[1.0, 2.0], [-1.0, 0.5]]])
FLEE = 15 / (0.1 + np.sqrt(1.25)) ** 2  # |E1 − D| = √1.25 for both drivers
PAIR = 0.2 * (0.5 / 1.1 - 1) / 1.1  # |E2 − E1| = 1 → d = 1.1
HAND = {
    # r = D − (E1 + E2) = D; a·r + b·perp(r): (1,0) + 2·(0,1) and −(−1,0) + 0.5·(0,−1)
    "control": [[1.0, 2.0], [1.0, -0.5], [0, 0], [0, 0]],
    # 0.2 (D1 − D2)/(0.1 + 2)²
    "driver_spread": [[0.2 * 2 / 2.1**2, 0], [-0.2 * 2 / 2.1**2, 0], [0, 0], [0, 0]],
    "driver_friction": [[-0.1, 0.2], [-0.3, 0.0], [0, 0], [0, 0]],
    # 15 Σ (E − D)/d²: x parts cancel, y parts add
    "evader_flee": [[0, 0], [0, 0], [0, 2 * 0.5 * FLEE], [0, -2 * 0.5 * FLEE]],
    # 0.2 p(d) (E_other − E): E2 − E1 = (0, −1)
    "evader_pair": [[0, 0], [0, 0], [0, -PAIR], [0, PAIR]],
    "evader_friction": [[0, 0], [0, 0], [1.6, -0.4], [0.0, -0.8]],
}


@pytest.mark.parametrize("term", list(HAND))
def test_each_force_term_by_hand(x64, term):
    config = isolated("none" if term == "control" else term)
    control = CONTROL if term == "control" else np.zeros_like(CONTROL)
    state = jnp.asarray(np.stack([POS, VEL], axis=1)[None])
    new = repulsion.step(config, state, jnp.asarray(control))
    dt = config.dt
    np.testing.assert_allclose(new[0, :, 0], POS + dt * VEL, rtol=1e-12)  # positions use the old velocity
    np.testing.assert_allclose((new[0, :, 1] - VEL) / dt, HAND[term], rtol=1e-9, atol=1e-12)


def test_all_terms_add_up(x64):
    config = dataclasses.replace(CONFIG, n_evaders=2)
    state = jnp.asarray(np.stack([POS, VEL], axis=1)[None])
    new = repulsion.step(config, state, jnp.asarray(CONTROL))
    np.testing.assert_allclose((new[0, :, 1] - VEL) / config.dt, sum(np.asarray(v) for v in HAND.values()), rtol=1e-9, atol=1e-12)


def test_loss_terms():
    config = dataclasses.replace(CONFIG, rc=0.5, n_steps=10)
    state = jnp.zeros((3, 6, 2, 2)).at[:, 2:, 0, :].set(2.0).at[:, :2, 0, :].set(7.0)  # drivers do not count
    control = jnp.full((3, 2, 2), 3.0)
    np.testing.assert_allclose(float(repulsion.step_loss(config, state, control)), (4.0 + 0.5 * 9.0) / 10, rtol=1e-6)


def test_sampler_ranges():
    x = np.asarray(repulsion.sample_initial_states(CONFIG, jax.random.key(0), 2048))
    radius = np.linalg.norm(x[:, :2, 0], axis=-1)
    assert np.all((radius >= 3 - 1e-5) & (radius <= 4 + 1e-5))
    centre = x[:, 2:, 0].mean(axis=1)
    spread = x[:, 2:, 0] - x[:, 2:, 0].mean(axis=1, keepdims=True)
    assert np.all(np.abs(spread) <= 1.0)
    assert np.all((np.linalg.norm(centre, axis=-1) > 0.4) & (np.linalg.norm(centre, axis=-1) < 2.6))
    assert np.all(x[:, :, 1] == 0)


def test_initial_network_outputs_zero_controls():
    net = repulsion.make_policy(CONFIG, jax.random.key(0))
    out = net(repulsion.sample_initial_states(CONFIG, jax.random.key(1), 3))
    assert out.shape == (3, 2, 2)
    np.testing.assert_array_equal(out, 0.0)


def test_regular_gradient_matches_finite_differences(x64):
    config = dataclasses.replace(CONFIG, n_steps=10, horizon=10 * CONFIG.dt)
    task = repulsion.make_task(config)
    net = sb.DenseNet(24, 4, (16, 16), key=jax.random.key(1), dtype=jnp.float64, out_shape=(2, 2))
    x0 = repulsion.sample_initial_states(config, jax.random.key(2), 4, jnp.float64)
    assert_regular_gradient_matches_finite_differences(net, task.problem, x0, eps=1e-6)



def test_combined_update_learns():
    task = repulsion.make_task(CONFIG)
    k_train, k_test, k_init = jax.random.split(jax.random.key(42), 3)
    result = sb.train(
        task.make_policy(k_init), task.problem, task.sample_initial_states(k_train, 64), task.sample_initial_states(k_test, 64),
        flow=sb.C(), optimizer=sb.make_optimizer("none"), epochs=20,
    )  # fmt: skip
    assert result.history[-1]["test_loss"] < result.initial["test_loss"] / 2


def test_bad_settings_and_shapes():
    with pytest.raises(ValueError, match="rc=-0.1; expected rc >= 0"):
        repulsion.RepulsionConfig(rc=-0.1)
    with pytest.raises(ValueError, match="drivers=0; expected a positive integer"):
        repulsion.RepulsionConfig(n_drivers=0)
    with pytest.raises(ValueError, match="evaders=0; expected a positive integer"):
        repulsion.RepulsionConfig(n_evaders=0)
    with pytest.raises(ValueError, match=r"repulsion state has shape \(3, 5, 2, 2\); expected \(batch, 6, 2, 2\)"):
        repulsion.step(CONFIG, jnp.zeros((3, 5, 2, 2)), jnp.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match=r"repulsion control has shape \(3, 4\); expected \(3, 2, 2\)"):
        repulsion.step(CONFIG, jnp.zeros((3, 6, 2, 2)), jnp.zeros((3, 4)))
