"""Any pytree state (integer, boolean, PRNG-key leaves) and controllers written for one sample."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import stablebptt as sb

from ..helpers import assert_trees_close, value_and_update

BATCH = 4
FLOWS = [sb.R(), sb.M(), sb.S(), sb.N(), sb.C(), sb.Gated([0.0, 0.5, 1.0] * 3, 1.0), sb.Truncated(3)]


def step(x, c):
    """A point mass whose step reads every kind of leaf: a counter, a flag, a PRNG key."""
    noise = jax.vmap(lambda k: jax.random.normal(k, (2,)))(x["key"])
    pos = x["pos"] + 0.1 * c + 0.05 * noise * jnp.where(x["flag"], 1.0, 0.5)[:, None] + 0.01 * x["t"][:, None]
    return {
        "pos": pos - 0.05 * jnp.sin(pos),
        "t": x["t"] + 1,
        "flag": ~x["flag"],
        "key": jax.vmap(lambda k: jax.random.split(k)[0])(x["key"]),
        "unused": 2.0 * x["unused"],  # a float leaf the loss never reaches
    }


def initial_state(dtype):
    return {
        "pos": jax.random.normal(jax.random.key(1), (BATCH, 2), dtype),
        "t": jnp.arange(BATCH, dtype=jnp.int32),
        "flag": jnp.array([True, False, True, True]),
        "key": jax.random.split(jax.random.key(2), BATCH),
        "unused": jnp.ones(BATCH, dtype),
    }


def policy_and_problem(dtype):
    def fn(p, x):
        return jnp.tanh(x["pos"] @ p["w"] + p["b"]) * (1.0 + 0.1 * x["flag"][:, None])

    params = {"w": 0.5 * jax.random.normal(jax.random.key(0), (2, 2), dtype), "b": jnp.full((2,), 0.1, dtype)}
    problem = sb.ControlProblem(
        step=step, n_steps=9, final_loss=lambda x: jnp.mean(x["pos"] ** 2), step_loss=lambda x, c: 0.01 * jnp.mean(c**2)
    )
    return sb.FunctionPolicy(fn, params), problem


CASES = [(flow, False, "float64") for flow in FLOWS] + [(sb.C(), 3, "float32")]


@pytest.mark.parametrize("flow, remat, precision", CASES, ids=lambda v: type(v).__name__ if isinstance(v, sb.AbstractFlow) else str(v))
def test_integer_bool_and_key_leaves_pass_through_every_flow(flow, remat, precision):
    with sb.float64(precision == "float64"):
        check_flow(flow, remat, jnp.dtype(precision))


def check_flow(flow, remat, dtype):
    policy, problem = policy_and_problem(dtype)
    x0 = initial_state(dtype)
    shared = value_and_update(flow, policy, problem, x0, backward=sb.SharedBackward(remat=remat))
    autodiff = value_and_update(flow, policy, problem, x0, backward=sb.AutodiffBackward(remat=remat))
    assert shared[0] == pytest.approx(float(autodiff[0]), rel=1e-6)
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(shared[1]))
    assert float(optax.tree_utils.tree_norm(shared[1])) > 1e-4  # a real update, not zeros
    assert_trees_close(shared[1], autodiff[1], rel=1e-5 if dtype == jnp.float32 else 1e-12)


def test_lanes_one_by_one_equal_batched_lanes(x64):
    """SharedBackward(batch_lanes=False) (one simulator VJP call per lane) gives the batched numbers."""
    policy, problem = policy_and_problem(jnp.float64)
    x0 = initial_state(jnp.float64)
    for flow in (sb.Combined(sb.N(), sb.R()),):  # two lanes, only one through the network
        one_by_one = value_and_update(flow, policy, problem, x0, backward=sb.SharedBackward(batch_lanes=False))[1]
        batched = value_and_update(flow, policy, problem, x0, backward=sb.SharedBackward())[1]
        assert_trees_close(one_by_one, batched, rel=1e-13)


def test_non_float_leaves_are_carried_unchanged_through_the_rollout():
    policy, problem = policy_and_problem(jnp.float32)
    x0 = initial_state(jnp.float32)
    states = sb.rollout(policy, problem.step, x0, 9).states
    np.testing.assert_array_equal(states["t"][:, 0], np.arange(10))  # the counter counts
    np.testing.assert_array_equal(states["flag"][:, 0], [True, False] * 5)
    assert states["key"].shape == (10, BATCH) and jax.dtypes.issubdtype(states["key"].dtype, jax.dtypes.prng_key)
    want_key = jax.random.split(jax.random.split(jax.random.key(2), BATCH)[1])[0]
    assert jnp.array_equal(jax.random.key_data(states["key"][1, 1]), jax.random.key_data(want_key))
    np.testing.assert_allclose(states["unused"][:, 0], 2.0 ** np.arange(10))


def pendulum_problem():
    def pendulum(x, force):  # the README's simulator
        velocity = x[:, 1] + 0.1 * (force[:, 0] - jnp.sin(x[:, 0]))
        return jnp.stack([x[:, 0] + 0.1 * velocity, velocity], axis=1)

    return sb.ControlProblem(step=pendulum, n_steps=50, final_loss=lambda x: jnp.mean(x**2))


def test_per_sample_mlp_trains_like_the_same_batch_first_network():
    problem = pendulum_problem()
    mlp = eqx.nn.MLP(2, 1, 32, 2, activation=jnp.tanh, key=jax.random.key(0))
    dense = sb.DenseNet(2, 1, hidden=(32, 32), key=jax.random.key(9))
    kernels = [layer.weight.T for layer in mlp.layers]  # equinox stores (out, in), Keras (in, out)
    biases = [layer.bias for layer in mlp.layers]
    dense = eqx.tree_at(lambda n: [l.kernel for l in n.layers] + [l.bias for l in n.layers], dense, kernels + biases)
    train_x, test_x = jax.random.uniform(jax.random.key(1), (2, 64, 2), minval=-1, maxval=1)
    runs = [
        sb.train(policy, problem, train_x, test_x, flow=sb.C(), optimizer=sb.make_optimizer("norm"), epochs=4)
        for policy in (sb.PerSample(mlp), dense)
    ]
    assert runs[0].initial["test_loss"] == pytest.approx(runs[1].initial["test_loss"], rel=1e-6)
    for a, b in zip(runs[0].history, runs[1].history, strict=True):
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4)
    assert runs[0].history[-1]["test_loss"] < 0.5 * runs[0].initial["test_loss"]
    trained = runs[0].policy.module
    assert isinstance(trained, eqx.nn.MLP)  # the user's own module comes back, trained
    np.testing.assert_allclose(trained.layers[0].weight.T, runs[1].policy.layers[0].kernel, atol=1e-5)


def test_per_sample_with_unbatched_leaves():
    module = lambda x: jnp.tanh(x["pos"] * x["gain"])  # noqa: E731 - one sample: pos (2,), gain shared
    policy = sb.PerSample(module, in_axes={"pos": 0, "gain": None})
    out = policy({"pos": jnp.ones((3, 2)), "gain": jnp.array(0.5)})
    np.testing.assert_allclose(out, np.tanh(0.5) * np.ones((3, 2)), rtol=1e-6)


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_controller_that_does_not_fit_is_named_with_both_shapes():
    problem = pendulum_problem()
    x = jnp.zeros((8, 2))
    mlp = eqx.nn.MLP(2, 1, 8, 1, key=jax.random.key(0))
    with pytest.raises(ValueError) as err:
        sb.value_and_update(sb.C(), mlp, problem, x)  # written for one sample, given a batch
    assert "the controller fails on states of shape (8, 2)" in one_line(err) and "sb.PerSample(module)" in str(err.value)
    scalar = sb.PerSample(eqx.nn.MLP(2, "scalar", 8, 1, key=jax.random.key(0)))
    with pytest.raises(ValueError) as err:
        sb.train(scalar, problem, x, x, flow=sb.R(), optimizer=sb.make_optimizer(), epochs=1)
    assert "controls of shape (8,) for states of shape (8, 2)" in one_line(err)
    shrinking = sb.ControlProblem(step=lambda x, c: x[:, :1] + c, n_steps=3, final_loss=jnp.mean)
    with pytest.raises(ValueError) as err:
        sb.value_and_update(sb.C(), sb.PerSample(mlp), shrinking, x)
    assert "returns a state of shape (8, 1) for a state of shape (8, 2)" in one_line(err)
    with pytest.raises(ValueError) as err:
        sb.value_and_update(sb.C(), sb.PerSample(mlp), problem, jnp.zeros((8, 2), jnp.int32))
    assert "have no floating-point leaf" in one_line(err)
    with pytest.raises(ValueError) as err:
        sb.rollout(mlp, problem.step, x, 3)
    assert "the controller fails on states of shape (8, 2)" in one_line(err)
