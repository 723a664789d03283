"""Every library entry point refuses unusable input with one line that names the argument, what was given and what is expected."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb


def step(x, c):
    return x + 0.1 * c


def final(x):
    return jnp.mean(x**2)


PROBLEM = sb.ControlProblem(step=step, n_steps=3, final_loss=final)
NET = sb.PerSample(eqx.nn.Linear(2, 2, key=jax.random.key(0)))
X = jnp.ones((4, 2))


def train(**kw):
    args = dict(policy=NET, problem=PROBLEM, train_x=X, test_x=X, flow=sb.R(), optimizer=sb.make_optimizer("none"), epochs=1, batch_size=2)
    args.update(kw)
    return sb.train(args.pop("policy"), args.pop("problem"), args.pop("train_x"), args.pop("test_x"), **args)


CASES = {
    "flow None": (lambda: sb.value_and_update(None, NET, PROBLEM, X), TypeError, "flow=None; expected a flow object"),
    "flow as a name": (lambda: train(flow="C"), TypeError, "stablebptt.flow_from_name('C')"),
    "optimizer None": (lambda: train(optimizer=None), TypeError, "optimizer=None; expected an optax.GradientTransformation"),
    "final_loss a vector": (
        lambda: sb.value_and_update(sb.R(), NET, sb.ControlProblem(step, 3, final_loss=lambda x: x), X),
        ValueError, "final_loss(x_n) returns shape (4, 2)",
    ),
    "final_loss a string": (lambda: sb.ControlProblem(step, 3, final_loss="mse"), TypeError, "final_loss='mse' is not callable"),
    "step_loss per sample": (
        lambda: sb.value_and_update(sb.R(), NET, sb.ControlProblem(step, 3, step_loss=lambda x, c: jnp.sum(x, -1)), X),
        ValueError, "step_loss(x_next, c) returns shape (4,)",
    ),
    "negative horizon": (lambda: sb.rollout(NET, step, X, n_steps=-3), ValueError, "n_steps=-3; expected a positive integer"),
    "NaN state, update": (lambda: sb.value_and_update(sb.R(), NET, PROBLEM, X.at[1, 0].set(jnp.nan)), ValueError, "NaN or infinite values in the initial states (at index (1, 0))"),
    "NaN state, rollout": (lambda: sb.rollout(NET, step, X.at[0, 1].set(jnp.inf), 3), ValueError, "NaN or infinite values in the initial states (at index (0, 1))"),
    "complex state": (lambda: sb.value_and_update(sb.R(), NET, PROBLEM, X.astype(jnp.complex64)), TypeError, "complex values in the initial states"),
    "a string leaf": (lambda: sb.rollout(NET, step, {"x": X, "name": "a"}, 3), TypeError, "the initial states['name'] is a str"),
    "no state": (lambda: sb.rollout(NET, step, {}, 3), ValueError, "the initial states are empty"),
    "no float parameters": (lambda: train(policy=sb.FunctionPolicy(lambda p, x: x, {})), ValueError, "the controller has no floating-point parameters"),
    "float64 parameters in float32": (
        lambda: sb.value_and_update(sb.R(), eqx.tree_at(lambda n: n.module.weight, NET, np.ones((2, 2))), PROBLEM, X),
        ValueError, "float64 parameters but 64-bit JAX is off",
    ),
    "controller not callable": (lambda: sb.rollout(3, step, X, 3), TypeError, "the controller is a int, not callable"),
    "checkpoint_every -1": (lambda: train(checkpoint_every=-1), ValueError, "checkpoint_every=-1; expected 0 (never) or a positive integer"),
    "PerSample of a number": (lambda: sb.PerSample(3), TypeError, "PerSample(module=3): the module is not callable"),
    "leaves of different batch sizes": (
        lambda: train(train_x={"a": jnp.ones((4, 2)), "b": jnp.ones((3, 2))}, problem=sb.ControlProblem(lambda x, c: x, 3, final_loss=lambda x: jnp.mean(x["a"])), policy=sb.FunctionPolicy(lambda p, x: p * x["a"], jnp.ones(()))),
        ValueError, "leaf ['b'] of the training set has shape (3, 2)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_it(case):
    call, kind, message = CASES[case]
    with pytest.raises(kind) as err:
        call()
    text = str(err.value)
    assert message in text and "\n" not in text, text


def test_good_input_still_computes_and_a_jitted_call_skips_the_value_checks():
    loss, update, _ = sb.value_and_update(sb.R(), NET, PROBLEM, X)
    jitted = jax.jit(lambda x: sb.value_and_update(sb.R(), NET, PROBLEM, x)[0])
    np.testing.assert_allclose(jitted(X), loss, rtol=1e-6)
    assert np.isnan(float(jitted(X.at[0, 0].set(jnp.nan))))  # values are unknown while tracing: no check, no error
