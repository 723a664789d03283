"""Brax environments: updates against jax.grad of a rollout written directly against Brax, learning, errors."""

from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb
from stablebptt.simulators import brax as brax_sim

from ..helpers import assert_trees_close

STEPS, BATCH = 8, 4


@pytest.fixture(scope="module")
def env():
    return brax_sim.get_env("inverted_double_pendulum")


def direct_loss(policy, env, x0, *, stop_network_input: bool):
    """Minus the mean return, stepping ``jax.vmap(env.step)`` by hand (no episode ends in these steps)."""

    def body(x, _):
        seen = jax.lax.stop_gradient(x) if stop_network_input else x
        x = jax.vmap(env.step)(x, policy(seen))
        return x, (x.reward, x.done)

    _, (rewards, done) = jax.lax.scan(body, x0, None, length=STEPS)
    return -jnp.sum(jnp.mean(rewards, axis=1)), done


def test_updates_equal_jax_grad_of_the_brax_rollout(env):
    # float32: Brax's pipeline keeps its system constants in float32 and its frame scan refuses float64 states
    x0 = brax_sim.reset(env, jax.random.key(0), BATCH)
    net = sb.DenseNet(env.observation_size, env.action_size, (16,), key=jax.random.key(1))
    policy = brax_sim.ObservationPolicy(net)
    problem = brax_sim.brax_problem(env, STEPS)
    params, static = eqx.partition(policy, eqx.is_inexact_array)

    def direct(stop):
        return jax.jit(jax.value_and_grad(lambda p: direct_loss(eqx.combine(p, static), env, x0, stop_network_input=stop), has_aux=True))(params)

    (loss_r, done), grad_r = direct(False)
    (_, _), grad_m = direct(True)
    assert not np.any(np.asarray(done)), "an episode ended: the direct rollout would need masking"
    loss, update_r, _ = jax.jit(lambda p: sb.value_and_update(sb.R(), eqx.combine(p, static), problem, x0))(params)
    assert float(loss) == pytest.approx(float(loss_r), rel=1e-6)
    assert_trees_close(update_r, grad_r, rel=1e-4)
    _, update_c, info = jax.jit(lambda p: sb.value_and_update(sb.C(), eqx.combine(p, static), problem, x0))(params)
    want_c = sb.combine_by_sign(grad_m, grad_r)
    assert_trees_close(update_c, want_c, rel=1e-4)
    assert -1 < float(info.cosine) < 1 and float(info.cosine) != pytest.approx(1.0, abs=1e-6)  # M and R differ


def test_an_ended_episode_stays_frozen_with_no_reward(env):
    x0 = brax_sim.reset(env, jax.random.key(2), 2)
    x0 = x0.replace(done=jnp.array([1.0, 0.0]))
    x1 = brax_sim.batch_step(env)(x0, jnp.ones((2, env.action_size)))
    for before, after in zip(jax.tree.leaves(x0.pipeline_state), jax.tree.leaves(x1.pipeline_state), strict=True):
        np.testing.assert_array_equal(after[0], before[0])  # ended: unchanged
    assert not np.array_equal(x1.pipeline_state.q[1], x0.pipeline_state.q[1])  # running: stepped
    assert float(x1.reward[0]) == 0.0 and float(x1.reward[1]) != 0.0
    returns = brax_sim.episode_returns(lambda x: jnp.ones((x.obs.shape[0], 1)), env, brax_sim.reset(env, jax.random.key(3), 3), 100)
    assert np.all(np.isfinite(returns)) and np.all(returns < 100 * 9)  # a pushed pendulum falls: the bonus stops


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stablebptt: error:"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", ["train", "compare"])
def test_without_the_extra_one_line_names_the_install(command, monkeypatch, capsys, tmp_path):
    import sys

    from stablebptt.cli import main

    monkeypatch.setitem(sys.modules, "brax", None)  # as if Brax were not installed
    code = main([command, "brax", "--env", "reacher", "--out", str(tmp_path / "run")])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "pip install 'stablebptt[brax]'" in line
    assert not (tmp_path / "run").exists()


def test_unknown_environment_lists_the_valid_ones(capsys, tmp_path):
    from stablebptt.cli import main

    code = main(["train", "brax", "--env", "cheetah", "--out", str(tmp_path / "run")])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "unknown Brax environment 'cheetah'; choose one of ant," in line and "reacher" in line
    code = main(["train", "brax", "--backend", "mjx", "--out", str(tmp_path / "run")])
    assert code == 2 and "Brax backend 'mjx' cannot be differentiated here" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_train_brax_learns(capsys, tmp_path):
    """Inverted double pendulum, 30 steps: the return (≈ 280 of at most ~281) rises; a zero or reversed update would not."""
    from stablebptt.cli import main
    from stablebptt.experiments.rundir import read_metrics

    out = tmp_path / "run"
    argv = ["train", "brax", "--steps", "30", "--epochs", "3", "--n-train", "32", "--n-test", "32", "--lr", "1e-2", "--method", "R"]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    initial = json.loads((out / "summary.json").read_text())["initial"]["test_loss"]
    final = read_metrics(out / "metrics.csv")[-1]["test_loss"]
    assert -281 < final < initial - 0.3
