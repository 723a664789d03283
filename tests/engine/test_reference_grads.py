"""Losses, updates and Adam steps of every method against the authors' TensorFlow code (cart pole, 2 poles)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import stablebptt as sb
from stablebptt.tasks import cartpole

from ..conftest import reference
from ..helpers import dense_leaves, max_rel_err, with_reference_weights, value_and_update

LETTERS = {"F": sb.R(), "P": sb.M(), "S": sb.S(), "C": sb.C()}


@pytest.fixture
def setup(dtype):
    """Reference data cast to ``dtype``: float64 runs take the same float32 inputs, computed in float64."""
    ref = reference("cartpole_grads")
    config = cartpole.CartPoleConfig(n_poles=int(ref["NC"]), n_steps=int(ref["Nt"]), horizon=float(ref["T"]))
    task = cartpole.make_task(config)
    net = with_reference_weights(task.make_policy(jax.random.key(0), dtype), ref)
    ref = {k: v.astype(dtype) if v.dtype == np.float32 else v for k, v in ref.items()}
    return ref, task, net


def test_forward_rollout(setup):
    ref, task, net = setup
    traj = sb.rollout(net, task.problem.step, jnp.asarray(ref["x0"]), task.problem.n_steps)
    assert traj.states.dtype == net.layers[0].kernel.dtype
    states = np.moveaxis(np.asarray(traj.states), 0, 1)
    forces = np.moveaxis(np.asarray(traj.controls), 0, 1)[..., 0]
    np.testing.assert_allclose(states, ref["rollout_states"], atol=2e-5)
    np.testing.assert_allclose(forces, ref["rollout_forces"], atol=2e-5)
    np.testing.assert_allclose(float(cartpole.loss(traj.states[-1])), float(ref["loss_forward"]), rtol=1e-6)


@pytest.mark.parametrize("remat", [False, True], ids=["plain", "checkpointed"])
@pytest.mark.parametrize("letter", LETTERS)
def test_update_of_each_method(setup, letter, remat):
    ref, task, net = setup
    backward = sb.SharedBackward(remat=remat)
    loss, update, info = value_and_update(LETTERS[letter], net, task.problem, jnp.asarray(ref["x0"]), backward=backward)
    assert loss.dtype == update.layers[0].kernel.dtype == net.layers[0].kernel.dtype
    np.testing.assert_allclose(float(loss), float(ref[f"{letter}_loss"]), rtol=1e-6)
    for i, got in enumerate(dense_leaves(update)):
        assert max_rel_err(got, ref[f"{letter}_grad_{i}"]) < 1e-5, (letter, i)
    if letter == "C":
        # a cosine of two ~10⁴-entry vectors: float32 sums in another order (XLA of JAX 0.4.30) differ by 1.6e-6
        np.testing.assert_allclose(float(info.cosine), float(ref["cos_PF"]), atol=2e-6)


@pytest.mark.parametrize("letter", LETTERS)
def test_three_keras_adam_steps(setup, letter):
    ref, task, net = setup
    params, static = eqx.partition(net, eqx.is_inexact_array)
    opt = sb.make_optimizer("none", float(ref["lr"]))
    state = opt.init(params)
    step = jax.jit(opt.update)  # one compiled Adam step
    losses = []
    for k in range(3):
        loss, update, _ = value_and_update(LETTERS[letter], eqx.combine(params, static), task.problem, jnp.asarray(ref["batches"][k]))
        losses.append(float(loss))
        updates, state = step(update, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(losses, ref[f"{letter}_adam_losses"], rtol=1e-6)
    for i, got in enumerate(dense_leaves(params)):
        np.testing.assert_allclose(got, ref[f"{letter}_adam_weights_after_{i}"], atol=1e-4)
        # and much closer than the tolerance the reference suggests
        assert np.max(np.abs(got - ref[f"{letter}_adam_weights_after_{i}"])) < 1e-6
