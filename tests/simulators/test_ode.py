"""A diffrax solve as the step: a driven harmonic oscillator against its closed-form solution."""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb
from stablebptt.simulators.ode import ode_step

from ..helpers import assert_regular_gradient_matches_finite_differences, assert_trees_close, value_and_update

pytestmark = pytest.mark.long  # a quarter of a minute or more: scheduled first (tests/conftest.py)

OMEGA, DT = 1.7, 0.1


def oscillator(t, x, c):
    """``x'' = −ω² x + c`` on a batch ``(batch, 2)`` of ``(position, velocity)``, control ``(batch, 1)``."""
    return jnp.stack([x[:, 1], -(OMEGA**2) * x[:, 0] + c[:, 0]], axis=1)


def exact_step(x, c):
    """The same interval in closed form: ``e^{A dt} x + ∫₀^dt e^{A s} B ds · c``."""
    cos, sin = np.cos(OMEGA * DT), np.sin(OMEGA * DT)
    pos = cos * x[:, 0] + sin / OMEGA * x[:, 1] + (1 - cos) / OMEGA**2 * c[:, 0]
    vel = -OMEGA * sin * x[:, 0] + cos * x[:, 1] + sin / OMEGA * c[:, 0]
    return jnp.stack([pos, vel], axis=1)


def problems():
    loss = lambda x: jnp.mean(jnp.sum(x**2, axis=1))  # noqa: E731
    solver = ode_step(oscillator, DT, solver=diffrax.Tsit5(), dt0=DT / 8)
    return (
        sb.ControlProblem(step=solver, n_steps=12, final_loss=loss),
        sb.ControlProblem(step=exact_step, n_steps=12, final_loss=loss),
    )


def test_one_interval_equals_the_closed_form(x64):
    x = jax.random.normal(jax.random.key(0), (5, 2), jnp.float64)
    c = jax.random.normal(jax.random.key(1), (5, 1), jnp.float64)
    np.testing.assert_allclose(ode_step(oscillator, DT, dt0=DT / 10)(x, c), exact_step(x, c), rtol=0, atol=1e-12)
    adaptive = ode_step(oscillator, DT, stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12))
    np.testing.assert_allclose(adaptive(x, c), exact_step(x, c), atol=1e-10)


def test_updates_through_the_solver_equal_the_closed_form_and_finite_differences(x64):
    ode, exact = problems()
    policy = sb.DenseNet(2, 1, hidden=(8,), key=jax.random.key(2), dtype=jnp.float64)
    x0 = jax.random.normal(jax.random.key(3), (6, 2), jnp.float64)
    for flow in (sb.R(), sb.C()):  # C holds M's and R's lanes
        loss, update, _ = value_and_update(flow, policy, ode, x0)
        want_loss, want, _ = value_and_update(flow, policy, exact, x0)
        assert float(loss) == pytest.approx(float(want_loss), rel=1e-10)
        assert_trees_close(update, want, rel=1e-7)
    assert_regular_gradient_matches_finite_differences(policy, ode, x0, eps=1e-6, rtol=1e-6)


def test_bad_interval():
    with pytest.raises(ValueError, match="dt=0.0; a control interval must be positive"):
        ode_step(oscillator, 0.0)


def test_without_diffrax_the_error_names_the_install(monkeypatch):
    import sys

    from stablebptt.simulators import MissingExtraError

    monkeypatch.setitem(sys.modules, "diffrax", None)
    with pytest.raises(MissingExtraError, match=r"pip install '\.\[diffrax\]'"):
        ode_step(oscillator, DT)
