"""Quantum control: the authors' physics, unitarity, eigenstates, the tridiagonal solve, gradients, learning."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb
from stablebptt.tasks import quantum

from ..conftest import reference, tol
from ..helpers import assert_regular_gradient_matches_finite_differences, assert_step_and_rollout_match, value_and_update

pytestmark = pytest.mark.long  # a minute or more of compiling: scheduled first (tests/conftest.py)

CONFIG = quantum.QuantumConfig()


def test_grid_eigenstates_step_and_rollout_match_reference(dtype):
    ref = reference("quantum_step")
    assert CONFIG.dt == pytest.approx(float(ref["dt"]))
    np.testing.assert_allclose(quantum.grid(CONFIG, dtype), ref["x_grid"], atol=1e-7)
    for k in range(1, 5):
        np.testing.assert_allclose(quantum.eigenstate(CONFIG, k, dtype), ref[f"eigenstate_{k}"], atol=2e-7)
    vectors = [ref[name] for name in ("x0", "u", "x1", "U", "rollout")]
    assert_step_and_rollout_match(functools.partial(quantum.step, CONFIG), *vectors, dtype, atol=1e-6, rollout_atol=3e-6)


def test_norm_is_kept_over_128_steps_with_random_controls(dtype):
    x = quantum.sample_initial_states(CONFIG, jax.random.key(0), 16, dtype)
    np.testing.assert_allclose(jnp.sum(x**2, axis=(1, 2)), 1.0, atol=tol(dtype, 1e-6, 1e-14))
    controls = 10 * jax.random.normal(jax.random.key(1), (128, 16), dtype)
    step = jax.jit(quantum.step, static_argnums=0)  # one compiled step, not its operations one by one
    for t in range(128):
        x = step(CONFIG, x, controls[t])
        # rounding: a few ulps per step (Crank–Nicolson is unitary)
        assert float(jnp.max(jnp.abs(jnp.sum(x**2, axis=(1, 2)) - 1))) < tol(dtype, 2e-5, 1e-13)
    # the controls did something: the state is far from where it started
    assert float(jnp.mean(quantum.infidelity(quantum.QuantumConfig(target=1), x))) > 0.1


def all_eigenstates(dtype):
    return jnp.stack([quantum.eigenstate(CONFIG, k, dtype) for k in range(1, CONFIG.n_points + 1)])


def test_eigenstates_are_orthonormal(dtype):
    phis = all_eigenstates(dtype)
    np.testing.assert_allclose(phis @ phis.T, np.eye(CONFIG.n_points), atol=tol(dtype, 1e-6, 1e-13))


def test_zero_control_keeps_every_eigenstate_up_to_phase(dtype):
    phis = all_eigenstates(dtype)
    x = jnp.stack([phis, jnp.zeros_like(phis)], axis=-1)
    for _ in range(128):
        x = quantum.step(CONFIG, x, jnp.zeros(CONFIG.n_points, dtype))
    overlap = (x[..., 0] * phis).sum(1) ** 2 + (x[..., 1] * phis).sum(1) ** 2
    np.testing.assert_allclose(overlap, 1.0, atol=tol(dtype, 1e-4, 1e-11))
    # ... with a phase that does turn: the imaginary part is not zero any more
    assert float(jnp.max(jnp.abs(x[..., 1]))) > 0.1


def test_step_equals_a_dense_crank_nicolson_solve(x64):
    rng = np.random.default_rng(0)
    psi = rng.normal(size=(4, 32)) + 1j * rng.normal(size=(4, 32))
    c = rng.normal(size=4) * 3
    dx, dt = CONFIG.dx, CONFIG.dt
    x = np.arange(1, 33) * dx
    got = quantum.step(CONFIG, jnp.asarray(np.stack([psi.real, psi.imag], -1)), jnp.asarray(c))
    for b in range(4):
        lap = (np.diag(np.full(32, 2.0)) - np.diag(np.ones(31), 1) - np.diag(np.ones(31), -1)) / dx**2
        h = lap + np.diag(c[b] * x)
        want = np.linalg.solve(np.eye(32) + 0.5j * dt * h, (np.eye(32) - 0.5j * dt * h) @ psi[b])
        np.testing.assert_allclose(np.asarray(got[b, :, 0]) + 1j * np.asarray(got[b, :, 1]), want, rtol=1e-12, atol=1e-12)


def loss_from_eigenstate(target: int, start: int, dtype) -> float:
    config = quantum.QuantumConfig(target=target)
    task = quantum.make_task(config)
    phi = quantum.eigenstate(config, start, dtype)
    x0 = jnp.stack([phi, jnp.zeros_like(phi)], axis=-1)[None].repeat(2, axis=0)
    policy = sb.FunctionPolicy(lambda p, x: p * jnp.zeros((x.shape[0], 1), x.dtype), jnp.zeros((), dtype))
    return float(sb.rollout_loss(policy, task.problem, x0))


@pytest.mark.parametrize("target", [1, 3, 5])
def test_loss_is_zero_at_the_target_without_control(target, x64):
    assert loss_from_eigenstate(target, target, jnp.float64) < 1e-10
    # away from the target the infidelity is 1 at each of the 128 steps
    np.testing.assert_allclose(loss_from_eigenstate(target, target % 5 + 1, jnp.float64), 128.0, rtol=1e-10)


def test_loss_at_the_target_in_float32_is_rounding():
    assert loss_from_eigenstate(4, 4, jnp.float32) / 128 < 5e-5


def test_sampler_superposes_the_two_lowest_states():
    x = quantum.sample_initial_states(CONFIG, jax.random.key(3), 512, jnp.float32)
    phis = all_eigenstates(jnp.float32)
    weights = jnp.einsum("bjc,kj->bkc", x, phis)
    power = jnp.sum(weights**2, axis=-1)  # (batch, k)
    np.testing.assert_allclose(power[:, 0] + power[:, 1], 1.0, atol=1e-5)
    assert float(jnp.max(power[:, 2:])) < 1e-10
    phase = jnp.arctan2(weights[:, 0, 1], weights[:, 0, 0])
    assert float(jnp.std(phase)) > 1.5  # uniform on the circle: std π/√3 ≈ 1.81


def test_controller_layout():
    net = quantum.make_policy(CONFIG, jax.random.key(0))
    assert net.conv2d.kernel.shape == (3, 2, 1, 60) and net.conv1d.kernel.shape == (3, 60, 60)
    assert net.dense.kernel.shape == (7 * 60, 1)
    x = quantum.sample_initial_states(CONFIG, jax.random.key(1), 5)
    assert net(x).shape == (5, 1)
    assert float(jnp.max(jnp.abs(net(x)))) > 0  # the last layer is not zero for this task


def test_regular_gradient_matches_finite_differences(x64):
    config = quantum.QuantumConfig(target=1, n_steps=8, horizon=0.5)
    task = quantum.make_task(config)
    net = quantum.make_policy(config, jax.random.key(1), jnp.float64)
    x0 = quantum.sample_initial_states(config, jax.random.key(2), 3, jnp.float64)
    # truncation O(eps²) and rounding O(1e-16/eps) both well below 1e-6
    assert_regular_gradient_matches_finite_differences(net, task.problem, x0, eps=2e-5)



def test_combined_update_learns_target_3():
    task = quantum.make_task(quantum.QuantumConfig(target=3))
    k_train, k_test, k_init = jax.random.split(jax.random.key(42), 3)
    result = sb.train(
        task.make_policy(k_init), task.problem, task.sample_initial_states(k_train, 32), task.sample_initial_states(k_test, 32),
        flow=sb.C(), optimizer=sb.make_optimizer("none"), epochs=8,
    )  # fmt: skip
    steps = task.config.n_steps
    fidelity_before = 1 - result.initial["test_loss"] / steps
    fidelity_after = 1 - result.history[-1]["test_loss"] / steps
    assert fidelity_before < 0.01  # the start has no overlap with φ_3
    assert fidelity_after > 0.25, fidelity_after  # mean fidelity over the 128 steps


def test_bad_settings_and_shapes():
    for target in (0, 33, -2):
        with pytest.raises(ValueError, match=rf"target={target}; expected an eigenstate 1..32"):
            quantum.QuantumConfig(target=target)
    with pytest.raises(ValueError, match=r"quantum state has shape \(4, 31, 2\); expected \(batch, 32, 2\)"):
        quantum.step(CONFIG, jnp.zeros((4, 31, 2)), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"quantum state has shape \(4, 32\)"):
        quantum.step(CONFIG, jnp.zeros((4, 32)), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"quantum control has shape \(4, 2\); expected \(4,\) or \(4, 1\)"):
        quantum.step(CONFIG, jnp.zeros((4, 32, 2)), jnp.zeros((4, 2)))


def test_targets_above_5_do_not_move_and_runs_refuse_them(capsys, tmp_path):
    """The reason for the refusal, measured: from the task's initial states the loss is exactly 128 and R's update tiny."""
    from stablebptt.cli import main
    from stablebptt.runs.config import RunConfig

    norms = {}
    k_states, k_init = jax.random.split(jax.random.key(42))
    for target in (5, 6, 9):
        task = quantum.make_task(quantum.QuantumConfig(target=target))  # the task accepts any resolved eigenstate
        x0 = task.sample_initial_states(k_states, 8)
        loss, _, info = value_and_update(sb.R(), task.make_policy(k_init), task.problem, x0)
        norms[target] = float(info.sq_norm) ** 0.5
        if target > 5:
            assert float(loss) == 128.0
    assert norms[5] > 1e-6 and norms[6] < 1e-7 and norms[9] < 1e-7
    with pytest.raises(ValueError, match="quantum target 6 cannot be learned"):  # a run always starts from those states
        RunConfig(task="quantum", task_options={"target": 6})
    for argv in (["train", "quantum", "--target", "6"], ["reproduce", "quantum", "--levels", "3,7", "--out", str(tmp_path / "q")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "cannot be learned from this task's initial states" in err and "choose a target of 1..5" in err
    assert not (tmp_path / "q").exists()
