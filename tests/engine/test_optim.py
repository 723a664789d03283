"""Keras-form Adam and the clipping of the protocol, against closed forms."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import stablebptt as sb
from stablebptt.engine.optim import clipping

from ..conftest import tol


def first_step(opt, g):
    params = jnp.zeros_like(g)
    updates, _ = opt.update(g, opt.init(params), params)
    return np.asarray(updates)


def test_keras_adam_first_step_closed_form(dtype):
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-7
    g = jnp.array([1e-7, -1e-5, 2.0, 0.0], dtype)
    got = first_step(sb.keras_adam(lr, b1, b2, eps), g)
    assert got.dtype == dtype
    # m = (1-b1) g, v = (1-b2) g², step = lr sqrt(1-b2)/(1-b1) m / (sqrt(v) + eps)
    gn = np.asarray(g, np.float64)
    want = -lr * np.sqrt(1 - b2) * gn / (np.sqrt(1 - b2) * np.abs(gn) + eps)
    np.testing.assert_allclose(got, want, rtol=tol(dtype, 1e-5, 1e-13), atol=tol(dtype, 1e-12, 1e-18))
    # optax's form puts eps on the bias-corrected root: tiny gradients move weights ~16x more here
    ours, theirs = got[0], first_step(optax.adam(lr, b1, b2, eps), g)[0]
    assert abs(theirs) > 10 * abs(ours)


def test_keras_adam_later_steps_follow_recursion(dtype):
    lr, b1, b2, eps = 0.01, 0.8, 0.95, 1e-7
    opt = sb.keras_adam(lr, b1, b2, eps)
    params = jnp.zeros(3, dtype)
    state = opt.init(params)
    m = v = np.zeros(3)
    rng = np.random.default_rng(0)
    for t in range(1, 6):
        g = rng.normal(size=3).astype(dtype)
        updates, state = opt.update(jnp.asarray(g), state, params)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        want = -lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
        assert updates.dtype == dtype
        np.testing.assert_allclose(np.asarray(updates), want, rtol=tol(dtype, 1e-5, 1e-13))


def test_clipping_acts_on_the_update(dtype):
    g = {"a": jnp.array([3.0, -0.5], dtype), "b": jnp.array([4.0], dtype)}
    value = clipping("value")
    norm = clipping("norm")
    u, _ = value.update(g, value.init(g))
    np.testing.assert_allclose(u["a"], [1.0, -0.5])
    np.testing.assert_allclose(u["b"], [1.0])
    u, _ = norm.update(g, norm.init(g))
    total = np.sqrt(3.0**2 + 0.5**2 + 4.0**2)
    assert u["a"].dtype == dtype
    np.testing.assert_allclose(u["a"], np.array([3.0, -0.5]) / total, rtol=tol(dtype, 1e-6, 1e-15))
    np.testing.assert_allclose(u["b"], np.array([4.0]) / total, rtol=tol(dtype, 1e-6, 1e-15))


def test_clip_none_is_exactly_keras_adam_when_the_norm_overflows():
    # the squared norm of [3e19, 1] overflows float32; "none" must still be the identity
    g = jnp.array([3e19, 1.0], jnp.float32)
    got = first_step(sb.make_optimizer("none", 1e-3), g)
    want = first_step(optax.inject_hyperparams(sb.keras_adam)(learning_rate=1e-3), g)  # the same hyperparameter dtypes
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(got, want)
    # norm clipping of the same update stays finite (optax scales by max_norm / inf = 0)
    assert np.all(np.isfinite(first_step(sb.make_optimizer("norm", 1e-3), g)))


def test_bad_optimizer_settings():
    with pytest.raises(ValueError, match="unknown clip mode 'max'; choose one of none, value, norm"):
        sb.make_optimizer("max")
    with pytest.raises(ValueError, match="learning rate"):
        sb.make_optimizer("none", -1.0)
    with pytest.raises(ValueError, match="learning rate"):
        sb.make_optimizer("none", float("nan"))
