"""Helpers shared by tests."""

from __future__ import annotations

import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import stablebptt as sb

value_and_update = eqx.filter_jit(sb.value_and_update)
"""``sb.value_and_update`` compiled as one program, as a training step runs it: called outside ``jit`` it
would dispatch (and compile) its hundreds of operations one by one. Error messages are tested on the
unjitted public function, as a user meets them."""


def dense_leaves(net):
    """Kernels and biases of a DenseNet in the reference order (k0, b0, k1, b1, ...)."""
    return [a for layer in net.layers for a in (layer.kernel, layer.bias)]


def with_reference_weights(net, ref: dict, prefix: str = "w0_"):
    """``net`` with its weights replaced by ``ref[prefix + '0'] ...`` (Keras layout), in the net's dtype."""
    arrays = [jnp.asarray(ref[f"{prefix}{i}"], old.dtype) for i, old in enumerate(dense_leaves(net))]
    return eqx.tree_at(dense_leaves, net, arrays)


def assert_trees_close(got, want, rel: float) -> None:
    """Every leaf of ``got`` within ``rel`` (relative to the leaf's largest entry) of ``want``."""
    got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(got_leaves) == len(want_leaves) > 0
    for a, b in zip(got_leaves, want_leaves, strict=True):
        assert max_rel_err(a, b) < rel


def max_rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def assert_regular_gradient_matches_finite_differences(policy, problem, x0, *, eps: float, n_directions: int = 3, rtol: float = 1e-6):
    """R's update against central differences of the loss along random directions (use float64)."""
    params, static = eqx.partition(policy, eqx.is_inexact_array)
    _, update, _ = value_and_update(sb.R(), policy, problem, x0)
    loss = jax.jit(lambda p: sb.rollout_loss(eqx.combine(p, static), problem, x0))
    rng = np.random.default_rng(0)
    for _ in range(n_directions):
        direction = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), params)
        plus = loss(jax.tree.map(lambda a, d: a + eps * d, params, direction))
        minus = loss(jax.tree.map(lambda a, d: a - eps * d, params, direction))
        analytic = sum(jnp.vdot(u, d) for u, d in zip(jax.tree.leaves(update), jax.tree.leaves(direction)))
        assert abs(float(analytic)) > 1e-3  # a direction the loss really changes along
        np.testing.assert_allclose(float(analytic), float((plus - minus) / (2 * eps)), rtol=rtol)


def assert_step_and_rollout_match(step, x0, u, x1, controls, rollout, dtype, *, atol: float, rollout_atol: float, rtol: float = 0.0):
    """One ``step`` from ``x0`` under ``u`` equals ``x1``; stepping under ``controls[:, n]`` follows ``rollout[:, n + 1]``.

    Inputs (the authors' float32 vectors) are cast to ``dtype``; the results must keep it.
    """
    step = jax.jit(step)
    got = step(jnp.asarray(x0, dtype), jnp.asarray(u, dtype))
    assert got.dtype == dtype
    np.testing.assert_allclose(got, x1, atol=atol)
    x = jnp.asarray(x0, dtype)
    for n in range(controls.shape[1]):
        x = step(x, jnp.asarray(controls[:, n], dtype))
        np.testing.assert_allclose(x, rollout[:, n + 1], atol=rollout_atol, rtol=rtol)


def without_brax(monkeypatch) -> None:
    """As if Brax were not installed, for one test, even if an earlier test imported it."""
    for name in ["brax", *(m for m in list(sys.modules) if m.startswith("brax."))]:
        monkeypatch.setitem(sys.modules, name, None)
