"""Gradient health of a control problem: how the adjoint grows along the horizon under R and under M, and which flow to try.

For a controller and a few batches of initial states, :func:`diagnose` runs one
forward pass per batch and, from the engine's own reverse step
(:func:`~stablebptt.engine.backward.adjoint_step`), measures

* **the growth of an adjoint** ``λ_t`` carried back along the horizon
  through the full loop (R: the simulator and the controller's feedback,
  ``∂S/∂x + ∂S/∂c·∂N/∂x``) and through the physics alone (M: ``∂S/∂x``), as
  the adjoint ``∂L/∂x_t`` of any loss is carried back: it starts as a fixed
  random direction at the last state (seed 0), is taken one step back, and
  from there its norm is followed to ``t = 0``, renormalised at every step so
  that ``‖λ_t‖ / ‖λ_{n−1}‖`` is exact however far it grows (the first step
  only drops the state leaves that no step reads, such as Brax's reward and
  observation, which are recomputed every step). ``growth`` is
  ``‖λ_0‖ / ‖λ_{n−1}‖``; ``rates`` the growth per step, ``exp`` of the
  least-squares slope of ``log ‖λ_t‖`` against the steps back (on a linear
  system ``x' = A x + B c`` under ``c = K x`` these are the spectral radii of
  ``A + B K`` and ``A``);
* **the updates** R and M of the whole loss (the same numbers as
  :func:`~stablebptt.value_and_update` gives for ``R()`` and ``M()``): the
  fraction of components where they agree in sign (of those not zero in
  both: what C keeps of M), their cosine (``cosine_mr`` of a C run's
  ``metrics.csv``) and the norms of R, M and C.

The time loop is one ``lax.scan`` per pass and the batches one ``lax.map``,
all inside one ``jit``.

**The verdict** (:meth:`Diagnosis.suggestion`), chosen on the committed
results (see ``results/diagnose.md``, made by ``benchmarks/diagnose_table.py``):

* if R and M coincide (the controller's output does not depend on the state
  yet, e.g. a zero last layer at initialization, as in the paper's cart pole
  and repulsion networks), there is nothing to compare: train a few epochs
  first (``stablebptt diagnose --warmup E``) or diagnose a trained controller;
* if R's adjoint grows at least :data:`GROWTH_RATIO` times more than M's
  over the horizon, the feedback through the controller is what amplifies
  the gradient: **try C**;
* otherwise the feedback does not amplify it and the true gradient is the
  safe choice: **use R**.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from ..engine.backward import adjoint_step, final_adjoint, forward_residuals, network_lanes, param_grads
from ..engine.flows import combine_by_sign, cosine_similarity
from ..engine.problem import ControlProblem, sample_axes
from ..engine.rollouts import loss_dtype
from ..engine.updates import trainable
from ..training.batching import sample_count, split_batches

__all__ = ["GROWTH_RATIO", "LANES", "Diagnosis", "diagnose"]

LANES = ("R", "M")
"""The two backward passes compared, in the order of every lane axis: R (both gates 1), M (network gate 0)."""

GROWTH_RATIO = 2.0
"""C is suggested when R's adjoint grows at least this many times more than M's over the horizon."""


def _lane_norms(tree: Any) -> jax.Array:
    """The L2 norm of each lane (leading axis) over every leaf of ``tree``, scaled by the largest entry first so
    that squaring cannot overflow (float32 squares overflow above 1.8e19)."""
    flat = [jnp.reshape(a, (a.shape[0], -1)) for a in jax.tree.leaves(tree)]
    top = jnp.max(jnp.stack([jnp.max(jnp.abs(a), axis=1) for a in flat]), axis=0)
    unit = jnp.where(top > 0, top, 1.0)
    return top * jnp.sqrt(sum(jnp.sum((a / unit[:, None].astype(a.dtype)) ** 2, axis=1) for a in flat))


def _scale_lanes(tree: Any, s: jax.Array) -> Any:
    return jax.tree.map(lambda a: a * s.astype(a.dtype).reshape((-1,) + (1,) * (a.ndim - 1)), tree)


def _no_loss(x: Any) -> jax.Array:
    return jnp.zeros(())


def _probe(like: Any) -> Any:
    """A fixed random direction shaped like ``like`` (standard normal, seed 0): the adjoint carried back."""
    leaves, treedef = jax.tree.flatten(like)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])


def _one_batch(apply, params, problem: ControlProblem, x0: Any, batch_lanes: bool) -> dict:
    """Every measurement of one batch; lanes R, M."""
    n = problem.n_steps
    net = np.stack([np.ones(n), np.zeros(n)])  # R, M: concrete gates, so M skips the network's input-Jacobian
    sim = np.ones((2, n))
    x_n, acc, xs, cs = forward_residuals(apply, params, problem, x0, jnp.zeros((), loss_dtype(x0)), n)
    xs_next = jax.tree.map(lambda a, b: jnp.concatenate([a[1:], b[None]]), xs, x_n)
    inputs = (xs, cs, xs_next, jnp.asarray(net.T), jnp.asarray(sim.T))

    # the updates: the engine's reverse scan over the whole loss, then one batched network VJP
    loss, lam_n = final_adjoint(problem, x_n, acc, 2)
    reverse = adjoint_step(apply, params, problem, network_lanes(net), batch_lanes=batch_lanes)
    _, mus = lax.scan(reverse, lam_n, inputs, reverse=True)
    grads = param_grads(apply, params, xs, jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), mus))

    # the growth: a fixed random adjoint of the last state carried back with no loss added on the way (so the reverse
    # step is linear in λ), renormalised every step: the logs of the norms add up to log ‖λ_t‖ / ‖λ_{n-1}‖. The size
    # after the first step back is the reference, so that state leaves no step reads (Brax's reward and observation,
    # recomputed every step) do not count.
    homogeneous = dataclasses.replace(problem, step_loss=None, final_loss=problem.final_loss or _no_loss)
    carry_back = adjoint_step(apply, params, homogeneous, network_lanes(net), batch_lanes=batch_lanes)
    start = _probe(eqx.partition(x_n, eqx.is_inexact_array)[0])
    start = jax.tree.map(lambda a: jnp.broadcast_to(a, (2,) + a.shape), start)
    start = _scale_lanes(start, 1.0 / _lane_norms(start))

    def back(lam, step_inputs):
        lam_prev, _ = carry_back(lam, step_inputs)
        size = _lane_norms(lam_prev)
        return _scale_lanes(lam_prev, 1.0 / jnp.where(size > 0, size, 1.0)), jnp.log(size)

    _, log_steps = lax.scan(back, start, inputs, reverse=True)  # (n, 2): step i holds log ‖λ_i‖ / ‖λ_{i+1}‖
    carried = log_steps[: n - 1]
    log_adjoint = jnp.concatenate([jnp.cumsum(carried[::-1], axis=0)[::-1], jnp.zeros((1, 2), log_steps.dtype)]).T  # (2, n)

    r, m = jax.tree.map(lambda a: a[0], grads), jax.tree.map(lambda a: a[1], grads)
    pairs = list(zip(jax.tree.leaves(m), jax.tree.leaves(r)))
    counted = sum(jnp.sum((a != 0) | (b != 0)) for a, b in pairs)
    agreed = sum(jnp.sum((jnp.sign(a) == jnp.sign(b)) & ((a != 0) | (b != 0))) for a, b in pairs)
    norms = [optax.tree_utils.tree_norm(u) for u in (r, m, combine_by_sign(m, r))]
    return {
        "loss": loss,
        "log_adjoint": log_adjoint.astype(loss.dtype),
        "sign_agreement": (agreed / jnp.maximum(counted, 1)).astype(loss.dtype),
        "cosine": cosine_similarity(m, r).astype(loss.dtype),
        "update_norms": jnp.stack(norms).astype(loss.dtype),
    }


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """What :func:`diagnose` measured, per batch (NumPy arrays, on the host).

    Attributes:
        loss: ``(batches,)``, each batch's loss.
        log_adjoint: ``(batches, 2, n_steps)``: ``log(‖λ_t‖ / ‖λ_{n−1}‖)`` at
            ``t = 0 .. n − 1`` for R (lane 0) and M (lane 1), the norm over
            the whole batch (see the module docstring).
        sign_agreement: ``(batches,)``, the fraction of update components where
            M and R have the same sign, of those not zero in both.
        cosine: ``(batches,)``, the cosine of M's and R's updates.
        update_norms: ``(batches, 3)``, the L2 norms of R, M and C.
    """

    loss: np.ndarray
    log_adjoint: np.ndarray
    sign_agreement: np.ndarray
    cosine: np.ndarray
    update_norms: np.ndarray

    @property
    def steps(self) -> int:
        """How many steps the adjoint's growth is followed over: the horizon less one."""
        return int(self.log_adjoint.shape[-1] - 1)

    @property
    def growth(self) -> np.ndarray:
        """``‖λ_0‖ / ‖λ_{n−1}‖`` of R and M, shape ``(2,)``: the geometric mean over the batches."""
        return np.exp(np.mean(self.log_adjoint[:, :, 0], axis=0))

    @property
    def rates(self) -> np.ndarray:
        """Growth per step of R and M, shape ``(2,)``: ``exp`` of the least-squares slope of the batches' mean
        ``log ‖λ_t‖`` against the steps back ``n − 1 − t``."""
        y = np.mean(np.asarray(self.log_adjoint, np.float64), axis=0)
        back = np.arange(self.steps, -1, -1, dtype=np.float64)
        back -= back.mean()
        return np.exp((y - y.mean(axis=1, keepdims=True)) @ back / max(back @ back, 1e-300))

    @property
    def coincide(self) -> bool:
        """Whether R and M are the same at this controller (its output does not depend on the state)."""
        return bool(np.array_equal(self.log_adjoint[:, 0], self.log_adjoint[:, 1]) and np.all(self.update_norms[:, 0] == self.update_norms[:, 1]))

    def suggestion(self) -> str | None:
        """``"C"``, ``"R"``, or None when there is nothing to compare (see the module's verdict rule)."""
        if self.coincide or not self._finite() or not np.any(self.update_norms[:, 0] > 0):
            return None
        r, m = self.growth
        return "C" if r >= GROWTH_RATIO * m else "R"

    def verdict(self) -> str:
        """One line: the growths, the agreement of M and R, and the flow to try."""
        n = self.steps
        if not np.any(self.update_norms[:, 0] > 0):
            return "R's update is exactly zero: the loss does not depend on the controller's parameters; no flow can train it"
        if not self._finite():
            return "the adjoint is not finite (the rollout or its gradient overflowed); check the simulator and the initial states"
        r, m = self.growth
        if self.coincide:
            return (
                f"R and M coincide here (adjoint ×{r:.3g} over {n} steps): the controller's output does not depend on the state yet "
                "(e.g. a zero last layer); train a few epochs first (--warmup E) or diagnose a trained controller (--params)"
            )
        agree = f"M and R agree in sign on {100 * np.mean(self.sign_agreement):.0f}% of the update, cosine {np.mean(self.cosine):.2f}"
        if self.suggestion() == "C":
            return f"R's adjoint grows ×{r:.3g} over {n} steps, M's ×{m:.3g} ({agree}): the controller's feedback amplifies R's gradient; try C"
        return f"R's adjoint grows ×{r:.3g} over {n} steps, M's ×{m:.3g} ({agree}): the controller's feedback does not amplify it; use R"

    def _finite(self) -> bool:
        """No NaN or growth to infinity (an adjoint that vanishes exactly, ``log 0 = −inf``, is a finite answer)."""
        return not np.any(np.isnan(self.log_adjoint) | np.isposinf(self.log_adjoint))

    def summary(self) -> dict:
        """The figures as plain JSON values (lists, floats, None for a non-finite number)."""

        def clean(a):
            a = np.asarray(a, dtype=np.float64)
            out = [None if not math.isfinite(v) else float(v) for v in a.ravel()]
            return out if a.ndim else out[0]

        return {
            "steps": self.steps,
            "batches": int(self.loss.shape[0]),
            "loss": clean(np.mean(self.loss)),
            "growth": dict(zip(LANES, clean(self.growth))),
            "rate_per_step": dict(zip(LANES, clean(self.rates))),
            "sign_agreement": clean(np.mean(self.sign_agreement)),
            "cosine": clean(np.mean(self.cosine)),
            "update_norm": dict(zip(("R", "M", "C"), clean(np.mean(self.update_norms, axis=0)))),
            "suggestion": self.suggestion(),
            "growth_ratio_for_C": GROWTH_RATIO,
            "verdict": self.verdict(),
            "per_batch": {
                "loss": clean(self.loss),
                "growth_R": clean(np.exp(self.log_adjoint[:, 0, 0])),
                "growth_M": clean(np.exp(self.log_adjoint[:, 1, 0])),
                "sign_agreement": clean(self.sign_agreement),
                "cosine": clean(self.cosine),
            },
        }

    def figure(self, title: str = ""):
        """The adjoints' growth along the horizon and each batch's agreement (a matplotlib ``Figure``)."""
        from ..plots.diagnosis import diagnosis_figure

        return diagnosis_figure(self.log_adjoint, self.sign_agreement, self.cosine, title=title, verdict=self.verdict())


def diagnose(policy: Any, problem: ControlProblem, x0: Any, *, batches: int = 1, batch_lanes: bool = True) -> Diagnosis:
    """Measure the gradient health of ``problem`` at the controller ``policy`` (see the module docstring).

    Args:
        policy: the controller, as :func:`~stablebptt.value_and_update` takes it.
        problem: simulator step, horizon and loss.
        x0: initial states, ``(samples, ...)`` on every leaf with a sample axis.
        batches: split the samples into this many equal batches, in order, each
            one rollout (as training sees a mini-batch); leaves without a sample
            axis (``ControlProblem(state_axes=...)``, ``PerSample(in_axes=...)``)
            go to every batch whole.
        batch_lanes: ``vmap`` the simulator's VJP over R and M (``False``: one
            call per lane, far faster to compile for big simulators such as Brax).

    Returns:
        a :class:`Diagnosis`; ``.verdict()`` says which flow to try.
    """
    problem.check(policy, x0)
    flags = sample_axes(problem, policy, x0)
    n = sample_count(x0, flags, "initial states")
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1 or n % batches:
        raise ValueError(f"batches={batches!r} does not split {n} samples into equal batches; give a divisor of {n}")
    xb = split_batches(x0, n // batches, flags)
    params, static = trainable(policy)

    def apply(p, x):
        return eqx.combine(p, static)(x)

    @jax.jit
    def run(params, xb):
        return lax.map(lambda x: _one_batch(apply, params, problem, x, batch_lanes), xb)

    out = jax.device_get(run(params, xb))
    return Diagnosis(**{k: np.asarray(v) for k, v in out.items()})
