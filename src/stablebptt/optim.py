"""Optimizers of the paper's protocol, as optax transformations.

The authors used Keras's Adam, whose ε sits on ``sqrt(v)`` *before* bias
correction (SPEC §1). :func:`scale_by_keras_adam` is that form;
:func:`make_optimizer` chains the clipping of the protocol in front of it.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "ScaleByKerasAdamState",
    "scale_by_keras_adam",
    "keras_adam",
    "clipping",
    "make_optimizer",
    "CLIP_MODES",
    "ADAM_FORMS",
]

CLIP_MODES = ("none", "value", "norm")
ADAM_FORMS = ("keras", "optax")


class ScaleByKerasAdamState(NamedTuple):
    count: jax.Array
    mu: Any
    nu: Any


def scale_by_keras_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7) -> optax.GradientTransformation:
    """Adam's scaling in Keras's form: ``sqrt(1−β2^t)/(1−β1^t) · m / (sqrt(v) + ε)``.

    ``m``, ``v`` are the raw (not bias-corrected) moments. Compared with
    ``optax.scale_by_adam`` the effective ε is larger by ``1/sqrt(1−β2^t)``
    early on (about 32× at step 1). Chain with ``optax.scale_by_learning_rate``.
    """

    def init_fn(params):
        return ScaleByKerasAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree_utils.tree_zeros_like(params),
            nu=optax.tree_utils.tree_zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree_utils.tree_update_moment(updates, state.mu, b1, 1)
        nu = optax.tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)

        def scale(m, v):
            t = count.astype(m.dtype)
            factor = jnp.sqrt(1 - jnp.asarray(b2, m.dtype) ** t) / (1 - jnp.asarray(b1, m.dtype) ** t)
            return factor * m / (jnp.sqrt(v) + jnp.asarray(eps, m.dtype))

        updates = jax.tree.map(scale, mu, nu)
        return updates, ScaleByKerasAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def keras_adam(
    learning_rate: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7
) -> optax.GradientTransformation:
    """Keras's Adam as an optax optimizer (the paper's default, **as published**)."""
    return optax.chain(scale_by_keras_adam(b1, b2, eps), optax.scale_by_learning_rate(learning_rate))


def clipping(mode: str) -> optax.GradientTransformation:
    """``"none"``, ``"value"`` (each component to [−1, 1]) or ``"norm"`` (global L2 norm ≤ 1)."""
    if mode == "none":
        return optax.identity()
    if mode == "value":
        return optax.clip(1.0)
    if mode == "norm":
        return optax.clip_by_global_norm(1.0)
    raise ValueError(f"unknown clip mode {mode!r}; choose one of {', '.join(CLIP_MODES)}")


def make_optimizer(
    clip: str = "none",
    learning_rate: float = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-7,
    adam: str = "keras",
) -> optax.GradientTransformation:
    """The paper's optimizer: clipping of the final update, then Adam.

    ``adam="keras"`` (default, as published) or ``"optax"`` (``optax.adam``,
    ε on the bias-corrected ``sqrt(v̂)``).
    """
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning rate {learning_rate!r} must be a positive finite number")
    if adam == "keras":
        opt = keras_adam(learning_rate, b1, b2, eps)
    elif adam == "optax":
        opt = optax.adam(learning_rate, b1, b2, eps)
    else:
        raise ValueError(f"unknown Adam form {adam!r}; choose one of {', '.join(ADAM_FORMS)}")
    return optax.chain(clipping(clip), opt)
