"""Optimizers of the paper's protocol, as optax transformations.

The authors used Keras's Adam, whose ε sits on ``sqrt(v)`` *before* bias
correction (docs/method.md, "Clipping and Adam"). :func:`scale_by_keras_adam` is that form;
:func:`make_optimizer` chains the clipping of the protocol in front of it.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "ScaleByKerasAdamState",
    "scale_by_keras_adam",
    "keras_adam",
    "CLIP_LIMITS",
    "clip_limits",
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


CLIP_LIMITS = {"none": (math.inf, math.inf), "value": (1.0, math.inf), "norm": (math.inf, 1.0)}
"""``(max_delta, max_norm)`` of each clip mode: value clipping to [−1, 1], global-norm clipping to 1."""


def clip_limits(mode: str) -> tuple[float, float]:
    """``(max_delta, max_norm)`` of a clip mode (``inf`` = no limit)."""
    if mode not in CLIP_LIMITS:
        raise ValueError(f"unknown clip mode {mode!r}; choose one of {', '.join(CLIP_MODES)}")
    return CLIP_LIMITS[mode]


def _clip_by_global_norm_unless_inf(max_norm: float) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` that passes updates through unchanged when ``max_norm`` is ``inf``.

    optax's own computes ``u / ‖u‖ · max_norm``, which is ``nan`` when ``‖u‖``
    overflows to ``inf`` even with ``max_norm = inf``; "no clipping" must be
    exactly the identity.
    """
    inner = optax.clip_by_global_norm(max_norm)

    def update_fn(updates, state, params=None):
        clipped, state = inner.update(updates, state, params)
        off = jnp.isposinf(max_norm)
        return jax.tree.map(lambda u, c: jnp.where(off, u, c), updates, clipped), state

    return optax.GradientTransformation(inner.init, update_fn)


def clipping(mode: str) -> optax.GradientTransformation:
    """``"none"``, ``"value"`` (each component to [−1, 1]) or ``"norm"`` (global L2 norm ≤ 1).

    Built from ``optax.clip`` and ``optax.clip_by_global_norm`` with their
    limits injected into the optimizer state (``inf`` = off, exactly the
    identity), so that runs with different clip modes share one program and
    can be batched.
    """
    max_delta, max_norm = clip_limits(mode)
    return optax.chain(
        optax.inject_hyperparams(optax.clip)(max_delta=max_delta),
        optax.inject_hyperparams(_clip_by_global_norm_unless_inf)(max_norm=max_norm),
    )


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
    ε on the bias-corrected ``sqrt(v̂)``). All numbers (clip limits, learning
    rate, β, ε) live in the optimizer state, so optimizers that differ only in
    them run as one batched program (:func:`stablebptt.training.train_batched`).
    """
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning rate {learning_rate!r} must be a positive finite number")
    if adam not in ADAM_FORMS:
        raise ValueError(f"unknown Adam form {adam!r}; choose one of {', '.join(ADAM_FORMS)}")
    # every optimizer of one Adam form shares one update function (its numbers are in the state), so a
    # batch of them is seen to follow one rule by identity: stablebptt.training.train_batched
    return optax.GradientTransformation(_build(clip, learning_rate, b1, b2, eps, adam).init, _shared_update(adam))


def _build(clip: str, learning_rate: float, b1: float, b2: float, eps: float, adam: str) -> optax.GradientTransformation:
    adam_fn = keras_adam if adam == "keras" else optax.adam
    return optax.chain(clipping(clip), optax.inject_hyperparams(adam_fn)(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps))


@functools.cache
def _shared_update(adam: str):
    return _build("none", 1e-3, 0.9, 0.999, 1e-7, adam).update
