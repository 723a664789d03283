"""The training loop: learning, metrics, the NaN guard, batching, determinism."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import stablebptt as sb
from stablebptt.engine.optim import optimizer_hyperparams
from stablebptt.tasks import cartpole
from stablebptt.training import METRIC_COLUMNS, batch_count, compile_epoch, split_batches

pytestmark = pytest.mark.long  # a minute or more of compiling: scheduled first (tests/conftest.py)


@pytest.fixture(scope="module")
def one_pole():
    task = cartpole.make_task(cartpole.CartPoleConfig(n_poles=1))
    k_train, k_test, k_init = jax.random.split(jax.random.key(42), 3)
    return task, task.make_policy(k_init), task.sample_initial_states(k_train, 256), task.sample_initial_states(k_test, 256)


def test_combined_update_learns_one_pole(one_pole):
    task, policy, train_x, test_x = one_pole
    seen = []
    result = sb.train(policy, task.problem, train_x, test_x, flow=sb.C(), optimizer=sb.make_optimizer("none"), epochs=15, on_epoch=seen.append)
    assert seen == result.history and len(seen) == 15
    assert set(seen[0]) == set(METRIC_COLUMNS)
    first, last = result.initial["test_loss"], result.history[-1]["test_loss"]
    assert first > 1.5  # hanging poles: 1 − cos θ ≈ 2
    assert last < first / 10, (first, last)
    # metrics are what they claim to be
    rows = result.history
    assert all(-1 <= r["cosine_mr"] <= 1 for r in rows)
    assert all(r["update_sq_norm"] > 0 and r["seconds"] > 0 for r in rows)
    trained = sb.rollout_loss(result.policy, task.problem, test_x)
    np.testing.assert_allclose(float(trained), last, rtol=1e-6)


def test_same_seed_same_numbers(one_pole):
    task, policy, train_x, test_x = one_pole
    runs = [
        sb.train(policy, task.problem, train_x[:64], test_x[:32], flow=sb.C(), optimizer=sb.make_optimizer("norm"), epochs=2).history
        for _ in range(2)
    ]
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in h] for h in runs]
    assert strip[0] == strip[1]


def test_single_flows_log_no_cosine(one_pole):
    task, policy, train_x, test_x = one_pole
    result = sb.train(policy, task.problem, train_x[:16], test_x[:16], flow=sb.R(), optimizer=sb.make_optimizer("none"), epochs=1)
    assert math.isnan(result.history[0]["cosine_mr"])


def test_nan_guard_names_the_epoch():
    # the loss is finite for the first updates, then the parameter crosses 0 and sqrt goes NaN
    problem = sb.ControlProblem(step=lambda x, c: x + c, n_steps=2, final_loss=lambda x: jnp.mean(jnp.sqrt(x)))
    policy = sb.FunctionPolicy(lambda p, x: p * jnp.ones_like(x), jnp.array(0.05))
    x = jnp.zeros((8,))
    seen = []
    with pytest.raises(sb.NonFiniteLossError, match=r"non-finite loss at epoch (\d+).*clip") as info:
        sb.train(policy, problem, x, x, flow=sb.R(), optimizer=sb.make_optimizer("none", 0.01), epochs=50, batch_size=8, on_epoch=seen.append)
    err = info.value
    assert err.epoch > 1 and err.history == seen and len(seen) == err.epoch
    assert all(math.isfinite(r["test_loss"]) for r in seen[:-1]) and not math.isfinite(seen[-1]["test_loss"])


def test_batching():
    x = {"a": jnp.arange(12.0), "b": jnp.arange(24.0).reshape(12, 2)}
    b = split_batches(x, 4)
    assert b["a"].shape == (3, 4) and b["b"].shape == (3, 4, 2)
    np.testing.assert_array_equal(b["a"][1], [4, 5, 6, 7])  # fixed order, no shuffling
    with pytest.raises(ValueError, match="batch size 16 is larger than the training set"):
        batch_count(12, 16)
    with pytest.raises(ValueError, match="batch_size=0; expected a positive integer"):
        batch_count(12, 0)
    with pytest.raises(ValueError, match="does not split into batches of 5"):
        batch_count(12, 5)


def test_bad_epochs(one_pole):
    task, policy, train_x, test_x = one_pole
    with pytest.raises(ValueError, match="epochs=0; expected a positive integer"):
        sb.train(policy, task.problem, train_x, test_x, flow=sb.R(), optimizer=sb.make_optimizer(), epochs=0)


def pendulum():
    def step(x, f):
        v = x[:, 1] + 0.1 * (f[:, 0] - jnp.sin(x[:, 0]))
        return jnp.stack([x[:, 0] + 0.1 * v, v], axis=1)

    problem = sb.ControlProblem(step=step, n_steps=10, final_loss=lambda x: jnp.mean(x**2))
    x = np.random.default_rng(0).uniform(-1, 1, (16, 2)).astype(np.float32)
    return problem, sb.DenseNet(2, 1, (8,), key=jax.random.key(0)), x


def test_bad_data_is_refused_naming_the_set():
    problem, policy, x = pendulum()
    nan_test = x.copy()
    nan_test[3, 1] = np.nan
    cases = [
        ((x.astype(np.float64), x), "the training set is float64 but 64-bit JAX is off"),
        ((x, nan_test), "NaN or infinite values in the test set (at index (3, 1))"),
        ((x, x[:, :1]), "the test set: the controller fails on states of shape (16, 1)"),
        ((x[:, :1], x), "the training set: the controller fails on states of shape (16, 1)"),
    ]
    for (train_x, test_x), message in cases:
        with pytest.raises(ValueError) as err:
            sb.train(policy, problem, train_x, test_x, flow=sb.C(), optimizer=sb.make_optimizer(), epochs=1)
        assert message in str(err.value) and "\n" not in str(err.value)


def batched_runs(policies, problem, xs, ts, *, flow, specs, **kwargs):
    """train_batched with one optimizer and each run's ``(clip, learning rate)`` as hyperparameters in its state."""
    hyperparams = [optimizer_hyperparams(clip, lr) for clip, lr in specs]
    return sb.train_batched(policies, problem, xs, ts, flow=flow, optimizer=sb.make_optimizer(), hyperparams=hyperparams, **kwargs)


def test_batched_runs_with_different_learning_rates():
    """One optimizer, each run's learning rate in its own state: each run trains at its own rate, as its single run;
    any optax optimizer that injects its numbers (optax.inject_hyperparams) batches the same way."""
    problem, policy, x = pendulum()
    batched = batched_runs([policy, policy], problem, [x, x], [x, x], flow=sb.R(), specs=[("none", 1e-3), ("none", 1e-1)], epochs=2)
    for run, lr in zip(batched, (1e-3, 1e-1), strict=True):
        single = sb.train(policy, problem, x, x, flow=sb.R(), optimizer=sb.make_optimizer("none", lr), epochs=2)
        assert run.history[-1]["test_loss"] == pytest.approx(single.history[-1]["test_loss"], rel=1e-5)
        assert float(optax.tree_utils.tree_get(run.opt_state, "learning_rate")) == pytest.approx(lr)
    assert batched[0].history[-1]["test_loss"] != pytest.approx(batched[1].history[-1]["test_loss"], rel=1e-3)

    adam = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    runs = sb.train_batched([policy, policy], problem, [x, x], [x, x], flow=sb.R(), optimizer=adam, hyperparams=[{}, {"learning_rate": 1e-1}], epochs=2)
    for run, lr in zip(runs, (1e-3, 1e-1), strict=True):
        single = sb.train(policy, problem, x, x, flow=sb.R(), optimizer=optax.adam(lr), epochs=2)
        assert run.history[-1]["test_loss"] == pytest.approx(single.history[-1]["test_loss"], rel=1e-5)
    with pytest.raises(ValueError, match=r"holds no hyperparameter 'learning_rate' in its state \(it holds: none\); per-run numbers must be"):
        sb.train_batched([policy, policy], problem, [x, x], [x, x], flow=sb.R(), optimizer=optax.adam(1e-3), hyperparams=[{}, {"learning_rate": 1e-1}], epochs=1)
    started = [adam.init(sb.trainable(policy)[0])]
    lowered = []
    listen = lambda event, duration, **_: lowered.append(event) if event == "/jax/core/compile/jaxpr_to_mlir_module_duration" else None  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:  # refused before anything is compiled
        with pytest.raises(ValueError, match="holds no hyperparameter 'lr' in its state \\(it holds: max_delta, max_norm, b1, b2, eps, learning_rate\\)"):
            sb.train_batched([policy], problem, [x], [x], flow=sb.R(), optimizer=sb.make_optimizer(), hyperparams=[{"lr": 0.1}], epochs=1)
        with pytest.raises(ValueError, match="one mapping of hyperparameters per run \\(2\\), not 1"):
            sb.train_batched([policy, policy], problem, [x, x], [x, x], flow=sb.R(), optimizer=sb.make_optimizer(), hyperparams=[{}], epochs=1)
        with pytest.raises(ValueError, match="either opt_states \\(states to continue from\\) or hyperparams"):
            compile_epoch([policy], problem, [x], [x], flows=[sb.R()], optimizer=adam, opt_states=started, hyperparams=[{}])
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert lowered == []


def test_hyperparameters_set_in_the_state_equal_the_optimizers_own():
    """make_optimizer().init with optimizer_hyperparams(clip, lr) set is make_optimizer(clip, lr).init, leaf for leaf and dtype for dtype."""
    from stablebptt.engine.optim import with_hyperparams

    for dtype in (jnp.float32, jnp.bfloat16):
        params = {"w": jnp.ones((2, 3), dtype), "b": jnp.zeros(3, dtype)}
        for clip, lr in (("value", 3e-3), ("norm", 0.5), ("none", 1e-3)):
            got = with_hyperparams(sb.make_optimizer().init(params), optimizer_hyperparams(clip, lr))
            want = sb.make_optimizer(clip, lr).init(params)
            assert jax.tree.structure(got) == jax.tree.structure(want)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                assert a.dtype == b.dtype and np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))


def assert_same_rows(got, want, rel):
    """Two metric histories agree in every column but the wall time (NaN where the other is NaN)."""
    columns = [c for c in METRIC_COLUMNS if c != "seconds"]
    assert len(got) == len(want)
    np.testing.assert_allclose([[r[c] for c in columns] for r in got], [[r[c] for c in columns] for r in want], rtol=rel)


def test_a_diverging_run_is_marked_and_the_others_keep_their_single_run_numbers():
    """One loop, one failure policy: in a batch the diverged run is marked with its epoch and the others go on;
    alone, the same run raises at the same epoch with the same rows."""
    problem = sb.ControlProblem(step=lambda x, c: x + c, n_steps=2, final_loss=lambda x: jnp.mean(jnp.sqrt(x)))
    policy = sb.FunctionPolicy(lambda p, x: p * jnp.ones_like(x), jnp.array(0.05))
    x = jnp.linspace(0.0, 0.1, 8)
    optimizers = [sb.make_optimizer("none", lr) for lr in (1e-4, 1e-2, 3e-4)]
    batched = batched_runs([policy] * 3, problem, [x] * 3, [x] * 3, flow=sb.R(), specs=[("none", lr) for lr in (1e-4, 1e-2, 3e-4)], epochs=12)
    with pytest.raises(sb.NonFiniteLossError) as err:
        sb.train(policy, problem, x, x, flow=sb.R(), optimizer=optimizers[1], epochs=12)
    assert 1 < err.value.epoch < 12
    assert batched[1].diverged_at_epoch == err.value.epoch
    assert_same_rows(batched[1].history, err.value.history, 1e-6)
    for i in (0, 2):
        single = sb.train(policy, problem, x, x, flow=sb.R(), optimizer=optimizers[i], epochs=12)
        assert batched[i].diverged_at_epoch is None and len(batched[i].history) == 12
        assert_same_rows(batched[i].history, single.history, 1e-6)


def test_runs_of_different_flows_train_as_one_program_with_their_single_run_numbers():
    problem, policy, x = pendulum()
    flows = [sb.R(), sb.M(), sb.C(), sb.S(), sb.Truncated(4)]  # a final loss only: Truncated(3) would cut step 9 and equal S
    specs = [(clip, 1e-2) for clip in ("none", "norm", "value", "none", "norm")]
    optimizers = [sb.make_optimizer(*spec) for spec in specs]
    batched = batched_runs([policy] * 5, problem, [x] * 5, [x] * 5, flow=flows, specs=specs, epochs=2, batch_size=4)
    finals = set()
    for run, flow, opt in zip(batched, flows, optimizers, strict=True):
        single = sb.train(policy, problem, x, x, flow=flow, optimizer=opt, epochs=2, batch_size=4)
        assert_same_rows(run.history, single.history, 1e-4)
        assert math.isnan(run.history[0]["cosine_mr"]) == (flow.n_passes == 1)
        finals.add(round(run.history[-1]["test_loss"], 7))
    assert len(finals) == 5  # five different runs, not one repeated


def test_losses_in_the_epoch_program_equal_the_separate_evaluation(one_pole):
    """The losses after each epoch come from inside the epoch program (training and test set in one rollout
    when they share a shape, vmapped over runs): bit-identical to evaluating each run and set with its own jitted call."""
    from stablebptt.training import evaluate_losses, make_epoch_functions
    from stablebptt.engine.updates import trainable

    task, policy, train_x, test_x = one_pole
    for sizes in ((32, 32), (32, 16)):  # one rollout of both sets; two rollouts
        a, b = train_x[: sizes[0]], test_x[: sizes[1]]
        runs = batched_runs([policy] * 3, task.problem, [a] * 3, [b] * 3, flow=sb.C(), specs=[(c, 1e-3) for c in ("none", "value", "norm")], epochs=2)
        evaluate = jax.jit(make_epoch_functions(policy, task.problem, None, sb.make_optimizer("none")).evaluate)
        for run in runs:
            params, _ = trainable(run.policy)
            separate = (float(evaluate(params, a)), float(evaluate(params, b)))
            assert (run.history[-1]["train_loss"], run.history[-1]["test_loss"]) == separate
            assert evaluate_losses(run.policy, task.problem, a, b) == separate
        p0, _ = trainable(policy)
        assert (runs[0].initial["train_loss"], runs[0].initial["test_loss"]) == (float(evaluate(p0, a)), float(evaluate(p0, b)))


def test_a_group_of_the_three_clip_modes_equals_its_single_runs():
    """A sweep group batches clip modes as optimizer state: each run of none/value/norm equals its own run.
    (The clip rules themselves are checked against Keras in tests/test_optim.py.)"""
    problem, policy, x = pendulum()
    problem = sb.ControlProblem(step=problem.step, n_steps=problem.n_steps, final_loss=lambda x: 100 * jnp.mean(x**2))  # updates above 1
    specs = [(c, 1e-2) for c in ("none", "value", "norm")]
    optimizers = [sb.make_optimizer(*spec) for spec in specs]
    batched = batched_runs([policy] * 3, problem, [x] * 3, [x] * 3, flow=sb.C(), specs=specs, epochs=2, batch_size=4)
    assert batched[0].history[0]["update_sq_norm"] > 1  # so that both clip modes act
    finals = set()
    for run, opt in zip(batched, optimizers, strict=True):
        single = sb.train(policy, problem, x, x, flow=sb.C(), optimizer=opt, epochs=2, batch_size=4)
        assert_same_rows(run.history, single.history, 1e-6)
        finals.add(run.history[-1]["test_loss"])
    assert len(finals) == 3  # the clip modes made a difference


def test_best_epoch_is_the_earliest_lowest_finite_test_loss():
    rows = [{"epoch": e, "test_loss": v} for e, v in enumerate([3.0, 1.0, float("nan"), 1.0, 2.0, float("-inf")], start=1)]
    assert sb.training.best_epoch(rows) == 2  # the tie at epoch 4 keeps epoch 2; NaN and -inf are not finite
    assert sb.training.best_epoch(rows[2:3]) is None and sb.training.best_epoch([]) is None


def test_kept_best_parameters_are_those_of_the_lowest_logged_test_loss_in_every_run_and_survive_a_restart():
    """train_batched(keep_best=True): each run's best policy is evaluated to the minimum of its test-loss column,
    bit for bit (a run that diverges keeps its best before the divergence); continuing from a checkpoint keeps the same;
    off by default."""
    from stablebptt.engine.updates import trainable
    from stablebptt.training import evaluate_losses

    problem = sb.ControlProblem(step=lambda x, c: x + c, n_steps=2, final_loss=lambda x: jnp.mean(jnp.sqrt(x)))
    policy = sb.FunctionPolicy(lambda p, x: p * jnp.ones_like(x), jnp.array(0.05))
    x = jnp.linspace(0.0, 0.1, 8)
    specs = [("none", lr) for lr in (1e-4, 1e-2, 3e-4)]
    saved = []
    runs = batched_runs([policy] * 3, problem, [x] * 3, [x] * 3, flow=sb.R(), specs=specs, epochs=12, keep_best=True,
                        checkpoint=saved.append, checkpoint_every=4)  # fmt: skip
    assert runs[1].diverged_at_epoch is not None and runs[0].diverged_at_epoch is None
    for run in runs:
        tests = [r["test_loss"] for r in run.history]
        lowest = min(t for t in tests if math.isfinite(t))
        assert run.best_epoch == tests.index(lowest) + 1
        assert evaluate_losses(run.best_policy, problem, x, x)[1] == lowest
    assert runs[1].best_epoch < runs[1].diverged_at_epoch
    continued = batched_runs([policy] * 3, problem, [x] * 3, [x] * 3, flow=sb.R(), specs=specs, epochs=12, keep_best=True, starts=saved[0])
    for run, again in zip(runs, continued, strict=True):
        assert again.best_epoch == run.best_epoch
        for a, b in zip(jax.tree.leaves(trainable(again.best_policy)[0]), jax.tree.leaves(trainable(run.best_policy)[0]), strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    plain = batched_runs([policy] * 3, problem, [x] * 3, [x] * 3, flow=sb.R(), specs=specs, epochs=12, starts=saved[0])
    assert all(run.best_policy is None and run.best_epoch is None for run in plain)
    with pytest.raises(ValueError, match="the start state holds no best parameters matching this policy"):
        batched_runs([policy] * 3, problem, [x] * 3, [x] * 3, flow=sb.R(), specs=specs, epochs=12, keep_best=True,
                     starts=[dataclasses.replace(s, best_params=None) for s in saved[0]])  # fmt: skip
    with pytest.raises(TypeError, match="keep_best='yes'; expected True"):
        sb.train(policy, problem, x, x, flow=sb.R(), optimizer=sb.make_optimizer(), epochs=1, keep_best="yes")


def test_a_run_builds_one_program(one_pole):
    """From empty caches, a run lowers one program, the epoch program (its initial losses and the optimizer's
    first state included): no program for the optimizer's initial state, the data's layout, a run's
    hyperparameters, stacking flows or slicing the runs' results. So does a group of runs of different flows
    with their own hyperparameters."""
    task, policy, train_x, test_x = one_pole
    train_x, test_x = jax.block_until_ready((train_x[:64], test_x[:32]))
    built = []

    def listen(event: str, duration: float, fun_name: str = "", **_: object) -> None:
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            built.append(fun_name)

    jax.clear_caches()  # last in this file, so that no later test here compiles again
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        sb.train(policy, task.problem, train_x, test_x, flow=sb.C(), optimizer=sb.make_optimizer("norm"), epochs=1)
        one = list(built)
        built.clear()
        specs = (("norm", 1e-3), ("value", 3e-3), ("none", 1e-4))
        results = batched_runs([policy] * 3, task.problem, [train_x] * 3, [test_x] * 3, flow=[sb.R(), sb.M(), sb.C()], specs=specs, epochs=1, keep_best=True)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert one == ["jit(program)"]
    assert built == ["jit(program)"]
    for result, (_, lr) in zip(results, specs, strict=True):  # each run's own numbers, set without a program
        assert np.asarray(optax.tree_utils.tree_get(result.opt_state, "learning_rate")) == np.float32(lr)
        assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves((result.policy, result.opt_state)))  # as a single run's
