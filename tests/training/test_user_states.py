"""A user's own state pytree through the trainer: typed PRNG keys per sample, an int step counter,
leaves without a sample axis; checkpoints and resume; the R update against jax.grad of a plain scan."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb

from ..helpers import assert_trees_close, value_and_update

pytestmark = pytest.mark.long  # a quarter of a minute or more: scheduled first (tests/conftest.py)

N, STEPS = 16, 12
AXES = {"q": 0, "key": 0, "t": None, "dt": None}  # the clock and the time step are shared by every sample


def step(x, c):
    """A noisy pendulum, one sample: per-sample noise from its own typed key, a shared int clock."""
    key, sub = jax.random.split(x["key"])
    theta, omega = x["q"]
    omega = omega + x["dt"] * (-jnp.sin(theta) + c[0] + 0.01 * jax.random.normal(sub))
    theta = theta + x["dt"] * omega
    return {"q": jnp.stack([theta, omega]), "key": key, "t": x["t"], "dt": x["dt"]}


def batch_step(x, c):
    x = jax.vmap(step, in_axes=(AXES, 0), out_axes=AXES)(x, c)
    return {**x, "t": x["t"] + 1}


class Controller(eqx.Module):
    mlp: eqx.nn.MLP

    def __call__(self, x):
        return self.mlp(x["q"])


class BatchController(eqx.Module):
    """The same network written for the whole batch: it reads only the per-sample leaf."""

    mlp: eqx.nn.MLP

    def __call__(self, x):
        return jax.vmap(self.mlp)(x["q"])


def final_loss(x):
    return jnp.mean(jnp.sum(x["q"] ** 2, axis=-1))


def states(seed: int):
    return {
        "q": jax.random.normal(jax.random.key(seed), (N, 2)),
        "key": jax.random.split(jax.random.key(seed + 100), N),  # typed keys: jax.random.key, not PRNGKey
        "t": jnp.zeros((), jnp.int32),
        "dt": jnp.float32(0.1),
    }


@pytest.fixture(scope="module")
def setup():
    policy = sb.PerSample(Controller(eqx.nn.MLP(2, 1, 8, 1, activation=jnp.tanh, key=jax.random.key(1))), in_axes=AXES)
    return policy, sb.ControlProblem(step=batch_step, n_steps=STEPS, final_loss=final_loss)


def test_r_update_equals_jax_grad_of_a_plain_scan(setup):
    policy, problem = setup
    x0 = states(0)

    def plain(p):
        def body(x, _):
            return batch_step(x, p(x)), None

        x, _ = jax.lax.scan(body, x0, None, length=STEPS)
        return final_loss(x)

    params, static = eqx.partition(policy, eqx.is_inexact_array)
    loss, grad = jax.value_and_grad(lambda q: plain(eqx.combine(q, static)))(params)
    value, update, _ = value_and_update(sb.R(), policy, problem, x0)
    assert float(value) == pytest.approx(float(loss), rel=1e-6)
    assert_trees_close(update, grad, rel=1e-5)


def test_trains_and_resumes_to_the_same_numbers(setup):
    policy, problem = setup
    train_x, test_x = states(0), states(1)
    kwargs = dict(flow=sb.C(), optimizer=sb.make_optimizer("norm", 1e-2), epochs=4, batch_size=4)
    whole = sb.train(policy, problem, train_x, test_x, **kwargs)
    assert whole.history[-1]["train_loss"] < whole.initial["train_loss"]  # it learned: the loss fell

    saved: list[sb.TrainState] = []

    class Killed(Exception):
        pass

    def kill(row):
        if row["epoch"] == 3:
            raise Killed  # as if the process died after epoch 3, with the checkpoint of epoch 2 on disk

    with pytest.raises(Killed):
        sb.train(policy, problem, train_x, test_x, checkpoint=saved.append, checkpoint_every=2, on_epoch=kill, **kwargs)
    assert [s.epoch for s in saved] == [2]
    resumed = sb.train(policy, problem, train_x, test_x, start=saved[0], **kwargs)
    assert [r["test_loss"] for r in resumed.history] == [r["test_loss"] for r in whole.history]
    assert_trees_close(eqx.filter(resumed.policy, eqx.is_inexact_array), eqx.filter(whole.policy, eqx.is_inexact_array), rel=1e-12)

    # several runs at once: each equals its single run
    runs = sb.train_batched([policy, policy], problem, [train_x, train_x], [test_x, test_x],
                            flow=[sb.C(), sb.R()], optimizer=kwargs["optimizer"], epochs=4, batch_size=4)
    np.testing.assert_allclose([r["test_loss"] for r in runs[0].history], [r["test_loss"] for r in whole.history], rtol=1e-5)


def test_an_undeclared_shared_leaf_names_its_path_and_the_fix(setup):
    policy, problem = setup
    undeclared = sb.PerSample(policy.module)
    with pytest.raises(ValueError, match=r"leaf \['dt'\] of the training set has shape \(\) and dtype float32, not a sample axis; declare"):
        sb.train(undeclared, problem, states(0), states(1), flow=sb.C(), optimizer=sb.make_optimizer("none"), epochs=1, batch_size=4)
    # the same declaration on the problem instead, for a controller written for the batch
    declared = sb.ControlProblem(step=batch_step, n_steps=STEPS, final_loss=final_loss, state_axes=AXES)
    result = sb.train(BatchController(policy.module.mlp), declared, states(0), states(1), flow=sb.C(), optimizer=sb.make_optimizer("none"), epochs=1, batch_size=4)
    assert np.isfinite(result.history[0]["test_loss"])
    with pytest.raises(ValueError, match="disagree about which state leaves have a sample axis"):
        sb.train(policy, sb.ControlProblem(step=batch_step, n_steps=STEPS, final_loss=final_loss, state_axes={**AXES, "t": 0}),
                 states(0), states(1), flow=sb.C(), optimizer=sb.make_optimizer("none"), epochs=1, batch_size=4)


def test_a_loss_that_does_not_depend_on_the_controller_stops_in_the_first_epoch():
    """The state decays on its own and the control never reaches it: R's update is exactly zero."""
    problem = sb.ControlProblem(step=lambda x, c: 0.9 * x + 0.0 * jax.lax.stop_gradient(c), n_steps=5, final_loss=lambda x: jnp.mean(x**2))
    policy = sb.DenseNet(2, 2, (4,), key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (8, 2))
    with pytest.raises(sb.ZeroUpdateError, match="every update in the first epoch is exactly zero, so training would not change"):
        sb.train(policy, problem, x, x, flow=sb.R(), optimizer=sb.make_optimizer("none"), epochs=3, batch_size=4)
    with pytest.raises(sb.ZeroUpdateError, match="every update of run 1 in the first epoch is exactly zero"):
        sb.train_batched([policy] * 2, problem, [x] * 2, [x] * 2, flow=[sb.S(), sb.C()], optimizer=sb.make_optimizer("none"), epochs=3, batch_size=4)
    # S's update is zero by its own design where the loss needs feedback: that is its result, not an error
    result = sb.train(policy, problem, x, x, flow=sb.S(), optimizer=sb.make_optimizer("none"), epochs=2, batch_size=4)
    assert [row["update_sq_norm"] for row in result.history] == [0.0, 0.0]
