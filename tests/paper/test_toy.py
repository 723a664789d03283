"""The toy figures: the fields against closed forms, and Adam's behaviour on the three fields."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from stablebptt.paper import toy
from stablebptt.plots import toy_figure1, toy_figure2
from stablebptt.tasks import toy as toy_task

pytestmark = pytest.mark.long  # a quarter of a minute or more: scheduled first (tests/conftest.py)


def test_figure1_fields_equal_closed_forms():
    data = toy.figure1_data(n=5, limit=1.0)
    for i in range(5):
        for j in range(5):
            t1, t2 = data.theta1[i, j], data.theta2[i, j]
            xs = [-0.3]
            for _ in range(4):
                x = xs[-1]
                xs.append(x + t1 * x**2 + t2 * x)
            xs = np.array(xs)
            np.testing.assert_allclose(data.loss[i, j], 0.5 * (xs[4] - 2) ** 2, rtol=1e-5)
            # M: the physics path only; ∂x4/∂c_i = 1 for S = x + c
            m = (xs[4] - 2) * np.array([np.sum(xs[:4] ** 2), np.sum(xs[:4])])
            np.testing.assert_allclose(data.modified[i, j], m, rtol=1e-4, atol=1e-6)
            # R: the true derivative of the unrolled map, by central differences in float64
            def loss(a, b):
                x = -0.3
                for _ in range(4):
                    x = x + a * x**2 + b * x
                return 0.5 * (x - 2) ** 2

            eps = 1e-6
            fd = [(loss(t1 + eps, t2) - loss(t1 - eps, t2)) / (2 * eps), (loss(t1, t2 + eps) - loss(t1, t2 - eps)) / (2 * eps)]
            np.testing.assert_allclose(data.gradient[i, j], fd, rtol=1e-3, atol=1e-5)


def test_figure2_adam_converges_circles_and_recovers():
    data = toy.figure2_data()
    final = {name: data.losses[name][-1] for name in data.names}
    start = data.losses["gradient"][0]
    assert start == 20.0
    assert final["gradient"] < 1e-4  # a) converges
    assert final["rotated"] > 0.5  # b) circles
    assert final["combined"] < final["rotated"] / 10  # c) approaches the minimum
    # the combined field never points uphill: u·g >= 0 everywhere on its path
    for theta in data.paths["combined"]:
        theta = jnp.asarray(theta)
        assert float(jnp.dot(toy_task.combined_field(theta), toy_task.gradient_field(theta))) >= 0


def test_toy_figures_have_their_panels(tmp_path):
    assert len(toy_figure1(toy.figure1_data(n=9)).axes) == 6  # three panels and three colour bars
    fig2 = toy_figure2(toy.figure2_data(steps=20), n=9)
    assert [ax.get_title() for ax in fig2.axes] == ["a) gradient field", "b) rotated field", "c) combined field", "d) loss"]
    finals = toy.reproduce_toy(tmp_path)
    assert set(finals) == {"gradient", "rotated", "combined"}
    assert (tmp_path / toy.FIGURE1).read_bytes()[:4] == b"\x89PNG" and (tmp_path / toy.FIGURE2).exists()
