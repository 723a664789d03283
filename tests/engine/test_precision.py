"""The float64 switch: training end to end in float64 from the library, matching float32 to its rounding."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb
from stablebptt.runs.config import RunConfig
from stablebptt.runs.single import build

CONFIG = RunConfig(task="cartpole", task_options={"n_poles": 1, "n_steps": 40}, method="C", epochs=2, n_train=16, n_test=8)


def train(config: RunConfig, policy, train_x, test_x):
    task = config.make_task()
    return sb.train(policy, task.problem, train_x, test_x, flow=config.flow(), optimizer=config.optimizer(),
                    epochs=config.epochs, backward=config.backward(task))  # fmt: skip


def to_float64(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, tree)


def test_switch_turns_64_bit_on_and_restores_it():
    before = jax.config.read("jax_enable_x64")
    with sb.float64():
        assert jnp.zeros(1).dtype == jnp.float64
        with sb.float64(False):
            assert jnp.zeros(1).dtype == jnp.float32
        assert jnp.zeros(1).dtype == jnp.float64
    assert jax.config.read("jax_enable_x64") == before


def test_float64_config_without_the_switch_names_the_fix():
    with sb.float64(False), pytest.raises(ValueError, match=r"needs 64-bit JAX: pass --x64, or call stablebptt.set_float64\(\)"):
        build(CONFIG.replace(dtype="float64"))


@pytest.mark.parametrize("remat", [0, True], ids=["plain", "checkpointed"])
def test_float64_training_end_to_end(remat):
    s = build(CONFIG)
    single = train(CONFIG.replace(remat=remat).resolved(), s.policy, s.train_x, s.test_x)
    with sb.float64():
        assert build(CONFIG.replace(dtype="float64")).train_x.dtype == jnp.float64
        # float32's data and initial weights, computed in float64
        double = train(CONFIG.replace(dtype="float64", remat=remat).resolved(), *to_float64((s.policy, s.train_x, s.test_x)))
        leaves = jax.tree.leaves(double.policy) + jax.tree.leaves(double.opt_state)
        assert all(a.dtype in (jnp.float64, jnp.int64, jnp.int32) for a in leaves if hasattr(a, "dtype"))
        assert any(a.dtype == jnp.float64 for a in leaves)
    # the same computation in two precisions: equal to float32's rounding, but not bit-identical
    keys = ("batch_loss", "train_loss", "test_loss", "update_sq_norm")
    a = np.array([[row[k] for k in keys] for row in single.history])
    b = np.array([[row[k] for k in keys] for row in double.history])
    np.testing.assert_allclose(a, b, rtol=1e-4)
    assert np.any(a != b)
    assert b[-1, 2] < double.initial["test_loss"]  # it learned
