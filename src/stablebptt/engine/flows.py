"""Gradient flows: where the backward pass of a rollout is allowed to go.

At every time step a rollout feeds the state ``x_i`` to two places: the
controller (``c_i = N(x_i; θ)``) and the simulator (``x_{i+1} = S(x_i, c_i)``).
A flow puts a *gate* on each of those two inputs. A gate is the identity in
the forward pass and multiplies the cotangent by a number ``g`` in the
backward pass (``g = 1``: everything flows, ``g = 0``: a stop-gradient), so
every flow has exactly the same forward values.

The paper's flows are four settings of the two gates (docs/method.md, "Gradient flows"):

====  =================  ============  ==============
name  class              network gate  simulator gate
====  =================  ============  ==============
R     :class:`Regular`   1             1
M     :class:`Modified`  0             1
S     :class:`Stopped`   0             0
N     :class:`NetworkOnly` 1           0
====  =================  ============  ==============

and the combined update **C** (:class:`Combined`) computes two of them (M and
R by default) and keeps each component of the first only where its sign agrees
with the second. Gates are numbers, not branches, so time-varying schedules
(:class:`Gated`) and truncation (:class:`Truncated`) are the same mechanism.

Every flow is also *data*: :meth:`Flow.schedule` turns it into a
:class:`Schedule`, a pytree of arrays (the gates of each backward pass, or
"lane", and whether the lanes are combined by sign). Schedules of different
flows with the same number of lanes are the same program with different
numbers, so they can be traced arguments of ``jax.jit`` and stacked along a
leading axis for ``jax.vmap`` (:func:`stack_flows`): one compiled program
trains R, M, S, N and C side by side.

A flow is a value you pass, in the style of ``diffrax``'s ``adjoint=``::

    loss, update, info = stablebptt.value_and_update(stablebptt.C(), policy, problem, x0)
"""

from __future__ import annotations

import abc
from typing import Any, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

__all__ = [
    "Flow",
    "Gated",
    "Regular",
    "Modified",
    "Stopped",
    "NetworkOnly",
    "Truncated",
    "Combined",
    "Schedule",
    "stack_flows",
    "R",
    "M",
    "S",
    "N",
    "C",
    "gate",
    "combine_by_sign",
    "cosine_similarity",
    "flow_from_name",
    "FLOW_NAMES",
]


def gate(x: Any, g: jax.Array | float) -> Any:
    """Identity in the forward pass; scales the backward flow through ``x`` by ``g``.

    ``stop(x) + g·(x − stop(x))`` equals ``x`` exactly for finite ``x``. Applied
    to every inexact leaf of the pytree ``x``; integer leaves pass unchanged.
    ``g`` is a real scalar (usually 0 or 1).
    """

    def leaf(a):
        a = jnp.asarray(a)
        if not jnp.issubdtype(a.dtype, jnp.inexact):
            return a
        s = lax.stop_gradient(a)
        return s + jnp.asarray(g, jnp.finfo(a.dtype).dtype) * (a - s)

    return jax.tree.map(leaf, x)


def combine_by_sign(primary: Any, reference: Any) -> Any:
    """The combined update (docs/method.md, "The combined update"), leaf by leaf and component by component.

    ``u_k = primary_k`` where ``sign(primary_k) == sign(reference_k)``, else 0
    (``sign(0) = 0``: a zero in either gives 0 unless both are zero, when ``u_k``
    is 0 anyway). Hence ``u·reference ≥ 0`` and ``u`` is 0 wherever
    ``reference`` is. A component that is not finite in either pass is NaN in
    ``u``, so a blown-up pass reaches the divergence guard instead of hiding
    behind the sign rule.
    """

    def combine(m, g):
        agreed = jnp.where(jnp.sign(m) == jnp.sign(g), m, jnp.zeros_like(m))
        return jnp.where(jnp.isfinite(m) & jnp.isfinite(g), agreed, jnp.full_like(m, jnp.nan))

    return jax.tree.map(combine, primary, reference)


def cosine_similarity(a: Any, b: Any) -> jax.Array:
    """Cosine of the angle between two pytrees flattened into vectors (0 if either is 0)."""
    dot = optax.tree_utils.tree_vdot(a, b)
    na = optax.tree_utils.tree_norm(a)
    nb = optax.tree_utils.tree_norm(b)
    denom = na * nb
    return jnp.where(denom > 0, dot / jnp.where(denom > 0, denom, 1), 0.0)


def _lane(grads: Any, i: int) -> Any:
    return jax.tree.map(lambda a: a[i], grads)


def _array_module(*gates: Any):
    """NumPy for concrete gates (the backward pass then skips network VJPs whose gate is 0), ``jax.numpy`` for
    traced ones (a flow whose gates are values under ``jit``/``vmap``)."""
    return jnp if any(isinstance(g, jax.core.Tracer) for g in gates) else np


class Flow(eqx.Module):
    """A rule for the backward pass of a rollout.

    Subclasses return, for a rollout of ``n_steps``, the gate values of each
    backward pass they need (:meth:`gate_schedule`) and how to turn the
    resulting gradients into one update (:meth:`combine`).
    """

    @abc.abstractmethod
    def gate_schedule(self, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Gates ``(net, sim)``, each of shape ``(n_passes, n_steps)``."""

    def combine(self, grads: Any) -> Any:
        """Turn the stacked gradients (leading axis ``n_passes``) into one update."""
        return _lane(grads, 0)

    def cosine(self, grads: Any) -> jax.Array:
        """Cosine similarity of the two passes a combined flow compares (M vs R for C); NaN otherwise."""
        return jnp.full((), jnp.nan)

    @property
    def n_passes(self) -> int:
        return 1

    def schedule(self, n_steps: int, lanes: int | None = None) -> "Schedule":
        """This flow as data: its gates for a rollout of ``n_steps``, padded to ``lanes`` backward passes.

        A single-pass flow padded to two lanes repeats its lane and is not
        combined, so its update is unchanged; the padding only lets it share
        one program (and one ``vmap``) with a combined flow.
        """
        lanes = self.n_passes if lanes is None else lanes
        if lanes < self.n_passes:
            raise ValueError(f"{self.name} needs {self.n_passes} backward passes; cannot fit it into {lanes}")
        net, sim = self.gate_schedule(n_steps)
        xp = _array_module(net, sim)
        pad = lambda g: xp.concatenate([g] + [g[-1:]] * (lanes - g.shape[0]))  # noqa: E731
        return Schedule(pad(net), pad(sim), np.asarray(self.n_passes > 1))

    @property
    def name(self) -> str:
        return type(self).__name__


class Gated(Flow):
    """One backward pass with given gates, constant or one value per step.

    ``net`` gates the controller's input, ``sim`` the simulator's input; each is
    a scalar or an array of shape ``(n_steps,)`` (step ``i`` maps ``x_i`` to
    ``x_{i+1}``).
    """

    net: Any = 1.0
    sim: Any = 1.0

    def gate_schedule(self, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for g, what in ((self.net, "net"), (self.sim, "sim")):
            xp = _array_module(g)
            g = xp.asarray(g, dtype=np.float64 if xp is np else None)
            if g.ndim == 0:
                g = xp.broadcast_to(g, (n_steps,))
            if g.shape != (n_steps,):
                raise ValueError(
                    f"{what} gate has shape {g.shape}; expected a scalar or ({n_steps},) "
                    f"for a rollout of {n_steps} steps"
                )
            out.append(g[None])
        return out[0], out[1]

    @property
    def name(self) -> str:
        for letter, cls in _LETTERS.items():
            if type(self) is cls:
                return letter
        return "Gated"


class Regular(Gated):
    """R: regular backpropagation through time; everything flows."""

    def __init__(self):
        self.net, self.sim = 1.0, 1.0


class Modified(Gated):
    """M: the network sees ``stop(x)``; only the physics path carries gradients back in time."""

    def __init__(self):
        self.net, self.sim = 0.0, 1.0


class Stopped(Gated):
    """S: both inputs stopped; one-step feedback only."""

    def __init__(self):
        self.net, self.sim = 0.0, 0.0


class NetworkOnly(Gated):
    """N: the simulator sees ``stop(x)``; only the network path flows back (unused in the paper)."""

    def __init__(self):
        self.net, self.sim = 1.0, 0.0


class Truncated(Flow):
    """Truncated backpropagation: ``base``'s gates, but both are 0 at every ``every``-th step.

    Gradients then travel back at most ``every`` steps from where a loss term
    enters. ``Truncated(1, Regular())`` equals :class:`Stopped`.
    """

    every: int = eqx.field(static=True)
    base: Flow = Regular()

    def __check_init__(self):
        if self.every < 1:
            raise ValueError(f"Truncated: every={self.every}; expected a positive number of steps")
        if self.base.n_passes != 1:
            raise ValueError("Truncated: base must be a single-pass flow (R, M, S, N or Gated)")

    def gate_schedule(self, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
        net, sim = self.base.gate_schedule(n_steps)
        # Gating x_0 changes nothing (it does not depend on θ), so step 0 may be cut too.
        keep = (np.arange(n_steps) % self.every != 0).astype(np.float64)[None]
        return net * keep.astype(net.dtype), sim * keep.astype(sim.dtype)

    @property
    def name(self) -> str:
        return f"Truncated({self.every}, {self.base.name})"


class Combined(Flow):
    """C: the combined update of the paper.

    Computes ``primary`` (default M) and ``reference`` (default R, the true
    gradient) in one program and keeps ``primary``'s components whose sign
    agrees with ``reference`` (:func:`combine_by_sign`).
    """

    primary: Flow = Modified()
    reference: Flow = Regular()

    def __check_init__(self):
        if self.primary.n_passes != 1 or self.reference.n_passes != 1:
            raise ValueError("Combined: primary and reference must be single-pass flows")

    @property
    def n_passes(self) -> int:
        return 2

    def gate_schedule(self, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
        pn, ps = self.primary.gate_schedule(n_steps)
        rn, rs = self.reference.gate_schedule(n_steps)
        xp = _array_module(pn, ps, rn, rs)
        return xp.concatenate([pn, rn]), xp.concatenate([ps, rs])

    def combine(self, grads: Any) -> Any:
        return combine_by_sign(_lane(grads, 0), _lane(grads, 1))

    def cosine(self, grads: Any) -> jax.Array:
        return cosine_similarity(_lane(grads, 0), _lane(grads, 1))

    @property
    def name(self) -> str:
        if isinstance(self.primary, Modified) and isinstance(self.reference, Regular):
            return "C"
        return f"Combined({self.primary.name}, {self.reference.name})"


class Schedule(Flow):
    """A flow as plain arrays: any flow's gates, so that flows are traced values, not program structure.

    net, sim: gates of shape ``(lanes, n_steps)``, one row per backward pass.
    combined: a boolean scalar; true: the update keeps lane 0's components
    whose sign agrees with lane 1's (:func:`combine_by_sign`); false: the
    update is lane 0.

    Build one with :meth:`Flow.schedule` and stack several with
    :func:`stack_flows`. Every field may be traced (``jax.jit``) or carry a
    leading batch axis (``jax.vmap``).
    """

    net: Any
    sim: Any
    combined: Any = False

    def gate_schedule(self, n_steps: int) -> tuple[Any, Any]:
        for g, what in ((self.net, "net"), (self.sim, "sim")):
            if np.ndim(g) != 2 or np.shape(g)[1] != n_steps:
                raise ValueError(f"Schedule: {what} gates have shape {np.shape(g)}; expected (lanes, {n_steps}) for a rollout of {n_steps} steps")
        return self.net, self.sim

    @property
    def n_passes(self) -> int:
        return int(np.shape(self.net)[0])

    def _switch(self, combined: Any, single: Any) -> Any:
        if not isinstance(self.combined, jax.core.Tracer):
            return combined() if bool(self.combined) else single()
        return jax.tree.map(lambda a, b: jnp.where(self.combined, a, b), combined(), single())

    def combine(self, grads: Any) -> Any:
        if self.n_passes < 2:
            return _lane(grads, 0)
        return self._switch(lambda: combine_by_sign(_lane(grads, 0), _lane(grads, 1)), lambda: _lane(grads, 0))

    def cosine(self, grads: Any) -> jax.Array:
        if self.n_passes < 2:
            return jnp.full((), jnp.nan)
        return self._switch(lambda: cosine_similarity(_lane(grads, 0), _lane(grads, 1)), lambda: jnp.full((), jnp.nan))


def stack_flows(flows: Sequence[Flow], n_steps: int) -> Schedule:
    """Several flows as one :class:`Schedule` with a leading axis (``len(flows)``) on every field, for ``jax.vmap``.

    All get as many lanes as the flow that needs most (2 if any is combined).
    """
    if not flows:
        raise ValueError("stack_flows needs at least one flow")
    lanes = max(f.n_passes for f in flows)
    schedules = [f.schedule(n_steps, lanes) for f in flows]
    return jax.tree.map(lambda *a: jnp.stack([jnp.asarray(x) for x in a]), *schedules)


R, M, S, N, C = Regular, Modified, Stopped, NetworkOnly, Combined

_LETTERS = {"R": Regular, "M": Modified, "S": Stopped, "N": NetworkOnly}
FLOW_NAMES = ("R", "M", "S", "N", "C")


def flow_from_name(name: str) -> Flow:
    """``"R" | "M" | "S" | "N" | "C"`` to a flow object (case-insensitive)."""
    key = str(name).strip().upper()
    if key == "C":
        return Combined()
    if key in _LETTERS:
        return _LETTERS[key]()
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(FLOW_NAMES)}")
