"""Reproduce the toy figures (docs/tasks.md, "The toy examples"): the fields of Figure 1 and the Adam runs of Figure 2."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import plots
from ..engine.flows import Modified, Regular
from ..engine.optim import keras_adam
from ..tasks import toy
from ..engine.updates import value_and_update
from ..runs import rundir

__all__ = ["Figure1Data", "Figure2Data", "figure1_data", "figure2_data", "reproduce_toy", "FIGURE1", "FIGURE2", "TOY_CONFIG"]

log = logging.getLogger(__name__)
FIGURE1, FIGURE2 = "figure1_fields.png", "figure2_adam.png"
TOY_CONFIG = "toy.json"
"""The marker of a folder of toy figures: the settings they were drawn with."""


@dataclasses.dataclass(frozen=True)
class Figure1Data:
    """On a ``(n, n)`` grid of ``θ = (θ₁, θ₂)``: the loss and the R and M fields ``(n, n, 2)``."""

    theta1: np.ndarray
    theta2: np.ndarray
    loss: np.ndarray
    gradient: np.ndarray
    modified: np.ndarray


@dataclasses.dataclass(frozen=True)
class Figure2Data:
    """Adam on three fields of ``L = θ₁² + θ₂²``: paths ``(steps+1, 2)`` and losses ``(steps+1,)`` per field."""

    names: tuple[str, ...]
    paths: dict
    losses: dict
    fields: dict  # name -> function θ -> vector, for drawing


def figure1_data(n: int = 41, limit: float = 4.0, config: toy.Figure1Config = toy.Figure1Config()) -> Figure1Data:
    axis = np.linspace(-limit, limit, n)
    t1, t2 = np.meshgrid(axis, axis, indexing="xy")
    thetas = jnp.asarray(np.stack([t1.ravel(), t2.ravel()], axis=1), jnp.float32)
    problem = toy.figure1_problem(config)
    x0 = jnp.asarray(config.x0, jnp.float32)

    def at(flow):
        def one(theta):
            loss, update, _ = value_and_update(flow, toy.figure1_policy(theta), problem, x0)
            return loss, update.params

        return jax.jit(jax.vmap(one))(thetas)

    loss, grad = at(Regular())
    _, mod = at(Modified())
    shape = (n, n)
    return Figure1Data(t1, t2, np.asarray(loss).reshape(shape), np.asarray(grad).reshape(shape + (2,)), np.asarray(mod).reshape(shape + (2,)))


def adam_path(field: Callable, theta0, learning_rate: float = 0.1, steps: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` Adam updates along ``field`` (Keras form, as in training); path and ``L`` including the start."""
    opt = keras_adam(learning_rate)
    theta0 = jnp.asarray(theta0, jnp.float32)

    def body(carry, _):
        theta, state = carry
        update, state = opt.update(field(theta), state, theta)
        theta = optax.apply_updates(theta, update)
        return (theta, state), theta

    _, path = jax.lax.scan(body, (theta0, opt.init(theta0)), None, length=steps)
    path = jnp.concatenate([theta0[None], path])
    return np.asarray(path), np.asarray(jax.vmap(toy.quadratic_loss)(path))


def figure2_data(theta0=(2.0, 4.0), learning_rate: float = 0.1, steps: int = 200) -> Figure2Data:
    fields = {"gradient": toy.gradient_field, "rotated": toy.rotated_field, "combined": toy.combined_field}
    paths, losses = {}, {}
    for name, field in fields.items():
        paths[name], losses[name] = adam_path(field, theta0, learning_rate, steps)
    return Figure2Data(tuple(fields), paths, losses, fields)


def reproduce_toy(out: Path) -> dict:
    """Write both toy figures into ``out`` and return the final loss of each Adam run (each also logged, INFO).

    ``out`` must be empty, missing or an earlier folder of toy figures (marked by :data:`TOY_CONFIG`).
    """
    out = Path(out)
    fig1, fig2 = {"n": 41, "limit": 4.0}, {"theta0": (2.0, 4.0), "learning_rate": 0.1, "steps": 200}
    settings = {"figure1": fig1, "figure2": {**fig2, "theta0": list(fig2["theta0"])}}
    rundir.claim_output(out, marker=TOY_CONFIG, what="set of toy figures", settings=settings, overwrite=True, unmarked=(FIGURE1, FIGURE2))
    plots.save_figure(plots.toy_figure1(figure1_data(**fig1)), out / FIGURE1)
    data = figure2_data(**fig2)
    plots.save_figure(plots.toy_figure2(data), out / FIGURE2)
    finals = {name: float(data.losses[name][-1]) for name in data.names}
    for name, value in finals.items():
        log.info("Adam on the %s field: final loss %.6g", name, value)
    return finals
