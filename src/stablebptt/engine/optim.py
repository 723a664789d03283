"""Optimizers of the paper's protocol, as optax transformations.

The authors used Keras's Adam, whose ε sits on ``sqrt(v)`` *before* bias
correction (docs/method.md, "Clipping and Adam"). :func:`scale_by_keras_adam` is that form;
:func:`make_optimizer` chains the clipping of the protocol in front of it,
with every number injected into the state (``optax.inject_hyperparams``):
one optimizer serves runs that differ in them, each run's numbers in its own
state (:func:`with_hyperparams`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "ScaleByKerasAdamState",
    "scale_by_keras_adam",
    "keras_adam",
    "CLIP_LIMITS",
    "clip_limits",
    "clipping",
    "make_optimizer",
    "optimizer_hyperparams",
    "with_hyperparams",
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


def optimizer_hyperparams(
    clip: str = "none", learning_rate: float = 1e-3, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7
) -> dict[str, float]:
    """The numbers :func:`make_optimizer` keeps in its state, by name: ``max_delta`` and ``max_norm`` (the clip
    mode's limits, :data:`CLIP_LIMITS`), ``learning_rate``, ``b1``, ``b2``, ``eps``."""
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning rate {learning_rate!r} must be a positive finite number")
    max_delta, max_norm = clip_limits(clip)
    return dict(max_delta=max_delta, max_norm=max_norm, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)


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
    rate, β, ε: :func:`optimizer_hyperparams`) live in the optimizer state, so
    one optimizer trains runs that differ in them as one batched program
    (:func:`stablebptt.training.train_batched`'s ``hyperparams``).
    """
    values = optimizer_hyperparams(clip, learning_rate, b1=b1, b2=b2, eps=eps)
    if adam not in ADAM_FORMS:
        raise ValueError(f"unknown Adam form {adam!r}; choose one of {', '.join(ADAM_FORMS)}")
    adam_fn = keras_adam if adam == "keras" else optax.adam
    return optax.chain(
        clipping(clip),
        optax.inject_hyperparams(adam_fn)(**{k: values[k] for k in ("learning_rate", "b1", "b2", "eps")}),
    )


def _hyperparam_name(path: tuple) -> str | None:
    """The name of a hyperparameter leaf of an ``optax.inject_hyperparams`` state (its path ends in ``.hyperparams[name]``), else None."""
    if len(path) >= 2 and isinstance(path[-1], jax.tree_util.DictKey) and getattr(path[-2], "name", None) == "hyperparams":
        return path[-1].key
    return None


def with_hyperparams(opt_state: Any, values: Mapping[str, float]) -> Any:
    """``opt_state`` with the named hyperparameters of its ``optax.inject_hyperparams`` states set to ``values``.

    Each value takes the dtype the state holds its hyperparameter in, as the
    optimizer's own ``init`` would give it: the state of
    ``make_optimizer().init(p)`` with ``optimizer_hyperparams(clip, lr)`` equals
    ``make_optimizer(clip, lr).init(p)``. The values set are NumPy scalars
    (made on the host, so no program is compiled); ``opt_state`` may also be
    a tree of ``jax.ShapeDtypeStruct`` (``jax.eval_shape`` of an ``init``), to
    check ``values`` before anything is computed. A name the state does not
    hold is a one-line ValueError listing those it does.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(opt_state)
    names = [_hyperparam_name(path) for path, _ in leaves]
    unknown = sorted(set(values) - set(names))
    if unknown:
        held = ", ".join(dict.fromkeys(n for n in names if n is not None)) or "none"
        raise ValueError(
            f"the optimizer holds no hyperparameter {unknown[0]!r} in its state (it holds: {held}); "
            "per-run numbers must be hyperparameters injected with optax.inject_hyperparams, as make_optimizer's are"
        )

    def value(name: str, old: jax.Array) -> np.ndarray:
        new = np.asarray(values[name], old.dtype)  # on the host: no program to compile
        if not np.issubdtype(old.dtype, np.inexact) and new != values[name]:
            raise ValueError(f"hyperparameter {name!r} is held as {old.dtype} in the optimizer state, so {values[name]!r} cannot be set")
        return new

    return jax.tree.unflatten(treedef, [leaf if n is None or n not in values else value(n, leaf) for (_, leaf), n in zip(leaves, names, strict=True)])
