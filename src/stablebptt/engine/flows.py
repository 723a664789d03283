"""Gradient flows: where the backward pass of a rollout is allowed to go.

At every time step a rollout feeds the state ``x_i`` to two places: the
controller (``c_i = N(x_i; θ)``) and the simulator (``x_{i+1} = S(x_i, c_i)``).
A flow puts a *gate* on each of those two inputs. A gate is the identity in
the forward pass and multiplies the cotangent by a number ``g`` in the
backward pass (``g = 1``: everything flows, ``g = 0``: a stop-gradient), so
every flow has exactly the same forward values.

The paper's flows are four settings of the two gates (docs/method.md, "Gradient flows"),
each a final class whose gates are constants of the class (no leaves, nothing traced):

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
with the second. Gates are numbers, not branches, so arbitrary (per-step,
traced) gates (:class:`Gated`) and truncation (:class:`Truncated`) are the
same mechanism.

Every flow declares which of its backward passes ("lanes") may use the
network (:attr:`AbstractFlow.network_lanes`): the backward pass evaluates the
network's input-Jacobian only for those, and the declaration is known when
the program is traced, whether or not the gate values are.

Every flow is also *data*: :meth:`AbstractFlow.schedule` turns it into a
:class:`Schedule`, a pytree of arrays (the gates of each lane, and whether
the lanes are combined by sign). Schedules of different flows with the same
number of lanes are the same program with different numbers, so they can be
traced arguments of ``jax.jit`` and stacked along a leading axis for
``jax.vmap`` (:func:`stack_flows`): one compiled program trains R, M, S, N
and C side by side.

A flow is a value you pass, in the style of ``diffrax``'s ``adjoint=``::

    loss, update, info = stablebptt.value_and_update(stablebptt.C(), policy, problem, x0)

New flows subclass :class:`AbstractFlow` (the extension point); the concrete
classes here are final.
"""

# No `from __future__ import annotations`: Equinox reads AbstractVar/AbstractClassVar annotations at class creation.

import abc
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from jax import lax

from .host import array_module

__all__ = [
    "AbstractFlow",
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
    "flat_vector",
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


def flat_vector(tree: Any) -> jax.Array:
    """Every leaf of ``tree`` raveled and concatenated into one vector (``jax.flatten_util.ravel_pytree``).

    Sums over a whole pytree (norms, dot products) are taken on this vector:
    one reduction compiles to one kernel, where a sum per leaf compiles to
    one per leaf.
    """
    return jax.flatten_util.ravel_pytree(tree)[0]


def cosine_similarity(a: Any, b: Any) -> jax.Array:
    """Cosine of the angle between two pytrees flattened into vectors (0 if either is 0)."""
    va, vb = flat_vector(a), flat_vector(b)
    dot = jnp.vdot(va, vb)
    na = jnp.sqrt(jnp.vdot(va, va))
    nb = jnp.sqrt(jnp.vdot(vb, vb))
    denom = na * nb
    return jnp.where(denom > 0, dot / jnp.where(denom > 0, denom, 1), 0.0)


def lane(grads: Any, i: int) -> Any:
    """Lane ``i`` of stacked per-lane gradients (every leaf indexed on its leading axis)."""
    return jax.tree.map(lambda a: a[i], grads)


def refuse_concrete_bases(cls: type, root: type) -> None:
    """Equinox's abstract/final pattern: a subclass of ``root`` may only extend abstract classes
    (named ``Abstract...``); every concrete class is final."""
    for base in cls.__bases__:
        if issubclass(base, root) and not base.__name__.lstrip("_").startswith("Abstract"):
            raise TypeError(f"{base.__name__} is final and cannot be subclassed; subclass {root.__module__.split('.')[0]}.{root.__name__} instead")


class AbstractFlow(eqx.Module):
    """A rule for the backward pass of a rollout: the extension point for new flows.

    A flow asks for ``n_passes`` backward passes ("lanes") of the same
    rollout, each with its own gates, and says how their gradients become one
    update. A subclass provides:

    - ``gate_schedule(n_steps)``: the gates ``(net, sim)``, each of shape
      ``(n_passes, n_steps)`` (NumPy or JAX arrays, possibly traced);
    - ``n_passes``: the number of lanes;
    - ``network_lanes``: the lanes whose network gate may be non-zero, a
      tuple of lane indices known without reading the gate values (the
      backward pass skips the network's input-Jacobian in the others);
    - ``combined``: whether the update keeps lane 0's components whose sign
      agrees with lane 1's (:func:`combine_by_sign`); otherwise the update is
      lane 0. A bool, or a boolean array for a traced :class:`Schedule`;
    - ``name``: a short name for tables and errors.

    The concrete flows (:class:`Regular`, :class:`Modified`, :class:`Stopped`,
    :class:`NetworkOnly`, :class:`Gated`, :class:`Truncated`,
    :class:`Combined`, :class:`Schedule`) are final: subclass this instead.
    """

    n_passes: eqx.AbstractVar[int]
    network_lanes: eqx.AbstractVar[tuple[int, ...]]
    combined: eqx.AbstractVar[Any]
    name: eqx.AbstractVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        refuse_concrete_bases(cls, AbstractFlow)

    @abc.abstractmethod
    def gate_schedule(self, n_steps: int) -> tuple[Any, Any]:
        """Gates ``(net, sim)``, each of shape ``(n_passes, n_steps)``."""

    def combine(self, grads: Any) -> Any:
        """The update from the stacked gradients (leading axis ``n_passes``): lane 0, or, where the flow
        is ``combined``, lane 0's components whose sign agrees with lane 1's (:func:`combine_by_sign`)."""
        first = lane(grads, 0)
        if self.n_passes < 2:
            return first
        return jax.tree.map(lambda c, a: jnp.where(self.combined, c, a), combine_by_sign(first, lane(grads, 1)), first)

    def schedule(self, n_steps: int, lanes: int | None = None) -> "Schedule":
        """This flow as data: its gates for a rollout of ``n_steps``, padded to ``lanes`` backward passes.

        A single-pass flow padded to two lanes repeats its lane and is not
        combined, so its update is unchanged; the padding only lets it share
        one program (and one ``vmap``) with a combined flow. The schedule
        declares that every lane may use the network, so that schedules of
        different flows are one program (:func:`stack_flows` declares less
        where it can).
        """
        lanes = self.n_passes if lanes is None else lanes
        if lanes < self.n_passes:
            raise ValueError(f"{self.name} needs {self.n_passes} backward passes; cannot fit it into {lanes}")
        net, sim = self.gate_schedule(n_steps)
        pad = lambda g: _concatenate(g, *[g[-1:]] * (lanes - g.shape[0]))  # noqa: E731
        return Schedule(pad(net), pad(sim), array_module(self.combined).asarray(self.combined))


class _AbstractSinglePass(AbstractFlow):
    """One backward pass, whose gradient is the update."""

    n_passes = 1
    combined = False


class _AbstractConstantGates(_AbstractSinglePass):
    """One backward pass whose two gates are constants of the class (static: the flow has no leaves)."""

    net: eqx.AbstractClassVar[float]
    sim: eqx.AbstractClassVar[float]

    def gate_schedule(self, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
        return np.full((1, n_steps), self.net), np.full((1, n_steps), self.sim)

    @property
    def network_lanes(self) -> tuple[int, ...]:
        return (0,) if self.net != 0 else ()


class Regular(_AbstractConstantGates):
    """R: regular backpropagation through time; everything flows."""

    name = "R"
    net = 1.0
    sim = 1.0


class Modified(_AbstractConstantGates):
    """M: the network sees ``stop(x)``; only the physics path carries gradients back in time."""

    name = "M"
    net = 0.0
    sim = 1.0


class Stopped(_AbstractConstantGates):
    """S: both inputs stopped; one-step feedback only."""

    name = "S"
    net = 0.0
    sim = 0.0


class NetworkOnly(_AbstractConstantGates):
    """N: the simulator sees ``stop(x)``; only the network path flows back (unused in the paper)."""

    name = "N"
    net = 1.0
    sim = 0.0


def _is_host_zero(g: Any) -> bool:
    """Whether a gate given as a host value (a Python number or list, a NumPy array) is identically 0.
    A JAX array may be traced, so it is not read: such a gate is taken to be non-zero."""
    return not isinstance(g, jax.Array) and not np.any(np.asarray(g) != 0)


class Gated(_AbstractSinglePass):
    """One backward pass with given gates, constant or one value per step, possibly traced.

    ``net`` gates the controller's input, ``sim`` the simulator's input; each is
    a scalar or an array of shape ``(n_steps,)`` (step ``i`` maps ``x_i`` to
    ``x_{i+1}``).

    ``uses_network`` (static) declares whether the network gate may be
    non-zero; if not, the backward pass skips the network's input-Jacobian.
    By default it is read from ``net`` when that is a host value (a number,
    a list, a NumPy array) and taken to be true for a JAX array (which may be
    traced); declare ``uses_network=False`` for a JAX ``net`` that is 0.
    """

    net: Any
    sim: Any
    uses_network: bool = eqx.field(static=True)

    def __init__(self, net: Any = 1.0, sim: Any = 1.0, uses_network: bool | None = None):
        host_zero = _is_host_zero(net)
        if uses_network is None:
            uses_network = not host_zero
        elif not uses_network and not isinstance(net, jax.Array) and not host_zero:
            raise ValueError("Gated: uses_network=False but the network gate is not 0; drop uses_network or give a network gate of 0")
        self.net, self.sim, self.uses_network = net, sim, bool(uses_network)

    @property
    def network_lanes(self) -> tuple[int, ...]:
        return (0,) if self.uses_network else ()

    @property
    def name(self) -> str:
        return "Gated"

    def gate_schedule(self, n_steps: int) -> tuple[jax.Array, jax.Array]:
        out = []
        for g, what in ((self.net, "net"), (self.sim, "sim")):
            g = jnp.asarray(g)
            if g.ndim == 0:
                g = jnp.broadcast_to(g, (n_steps,))
            if g.shape != (n_steps,):
                raise ValueError(
                    f"{what} gate has shape {g.shape}; expected a scalar or ({n_steps},) "
                    f"for a rollout of {n_steps} steps"
                )
            out.append(g[None])
        return out[0], out[1]


class Truncated(_AbstractSinglePass):
    """Truncated backpropagation: ``base``'s gates, but both are 0 at every ``every``-th step.

    Gradients then travel back at most ``every`` steps from where a loss term
    enters. ``Truncated(1, Regular())`` equals :class:`Stopped`.
    """

    every: int = eqx.field(static=True)
    base: AbstractFlow = Regular()

    def __check_init__(self):
        if self.every < 1:
            raise ValueError(f"Truncated: every={self.every}; expected a positive number of steps")
        if self.base.n_passes != 1:
            raise ValueError("Truncated: base must be a single-pass flow (R, M, S, N or Gated)")

    @property
    def network_lanes(self) -> tuple[int, ...]:
        return self.base.network_lanes

    @property
    def name(self) -> str:
        return f"Truncated({self.every}, {self.base.name})"

    def gate_schedule(self, n_steps: int) -> tuple[Any, Any]:
        net, sim = self.base.gate_schedule(n_steps)
        # Gating x_0 changes nothing (it does not depend on θ), so step 0 may be cut too.
        keep = (np.arange(n_steps) % self.every != 0).astype(np.float64)[None]
        return net * keep.astype(net.dtype), sim * keep.astype(sim.dtype)


def _concatenate(*gates: Any) -> Any:
    """Lanes of gates joined: on the host when every part is there (the program then holds one constant, and
    no program is compiled to join them), else as a JAX operation."""
    return array_module(*gates).concatenate(gates)


class Combined(AbstractFlow):
    """C: the combined update of the paper.

    Computes ``primary`` (default M) and ``reference`` (default R, the true
    gradient) in one program and keeps ``primary``'s components whose sign
    agrees with ``reference`` (:func:`combine_by_sign`).
    """

    primary: AbstractFlow = Modified()
    reference: AbstractFlow = Regular()

    n_passes = 2
    combined = True

    def __check_init__(self):
        if self.primary.n_passes != 1 or self.reference.n_passes != 1:
            raise ValueError("Combined: primary and reference must be single-pass flows")

    @property
    def network_lanes(self) -> tuple[int, ...]:
        return tuple(i for i, f in enumerate((self.primary, self.reference)) if f.network_lanes)

    @property
    def name(self) -> str:
        if isinstance(self.primary, Modified) and isinstance(self.reference, Regular):
            return "C"
        return f"Combined({self.primary.name}, {self.reference.name})"

    def gate_schedule(self, n_steps: int) -> tuple[Any, Any]:
        pn, ps = self.primary.gate_schedule(n_steps)
        rn, rs = self.reference.gate_schedule(n_steps)
        return _concatenate(pn, rn), _concatenate(ps, rs)


class Schedule(AbstractFlow):
    """A flow as plain arrays: any flow's gates, so that flows are traced values, not program structure.

    net, sim: gates of shape ``(lanes, n_steps)``, one row per backward pass.
    combined: a boolean scalar; true: the update keeps lane 0's components
    whose sign agrees with lane 1's (:func:`combine_by_sign`); false: the
    update is lane 0.
    network_lanes (static): the lanes whose network gate may be non-zero;
    every lane unless declared.

    Build one with :meth:`AbstractFlow.schedule` and stack several with
    :func:`stack_flows`. Every array may be traced (``jax.jit``) or carry a
    leading batch axis (``jax.vmap``); ``network_lanes`` is part of the
    program.
    """

    net: Any
    sim: Any
    combined: Any
    network_lanes: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, net: Any, sim: Any, combined: Any = False, network_lanes: Sequence[int] | None = None):
        self.net, self.sim, self.combined = net, sim, combined
        lanes = int(np.shape(net)[-2]) if np.ndim(net) >= 2 else 0
        self.network_lanes = tuple(range(lanes)) if network_lanes is None else tuple(int(i) for i in network_lanes)

    @property
    def n_passes(self) -> int:
        return int(np.shape(self.net)[0])

    @property
    def name(self) -> str:
        return "Schedule"

    def gate_schedule(self, n_steps: int) -> tuple[Any, Any]:
        for g, what in ((self.net, "net"), (self.sim, "sim")):
            if np.ndim(g) != 2 or np.shape(g)[1] != n_steps:
                raise ValueError(f"Schedule: {what} gates have shape {np.shape(g)}; expected (lanes, {n_steps}) for a rollout of {n_steps} steps")
        if not all(0 <= i < self.n_passes for i in self.network_lanes):
            raise ValueError(f"Schedule: network_lanes {self.network_lanes} name lanes outside 0..{self.n_passes - 1}")
        return self.net, self.sim


def stack_flows(flows: Sequence[AbstractFlow], n_steps: int) -> Schedule:
    """Several flows as one :class:`Schedule` with a leading axis (``len(flows)``) on every array, for ``jax.vmap``.

    All get as many lanes as the flow that needs most (2 if any is combined).
    A lane may use the network if it does in any of the flows, so a stack of
    flows that never use it (M and S) skips the network's input-Jacobian.
    """
    if not flows:
        raise ValueError("stack_flows needs at least one flow")
    lanes = max(f.n_passes for f in flows)
    # padding repeats a flow's last lane, and with it whether that lane uses the network
    network_lanes = sorted(
        {i for f in flows for i in f.network_lanes} | {i for f in flows if f.n_passes - 1 in f.network_lanes for i in range(f.n_passes, lanes)}
    )
    schedules = [f.schedule(n_steps, lanes) for f in flows]
    stacked = [array_module(*parts).stack(parts) for parts in ([getattr(s, k) for s in schedules] for k in ("net", "sim", "combined"))]
    return Schedule(*stacked, network_lanes=network_lanes)


R, M, S, N, C = Regular, Modified, Stopped, NetworkOnly, Combined

_NAMED = {cls.name: cls for cls in (Regular, Modified, Stopped, NetworkOnly)}
FLOW_NAMES = ("R", "M", "S", "N", "C")


def flow_from_name(name: str) -> AbstractFlow:
    """``"R" | "M" | "S" | "N" | "C"`` to a flow object (case-insensitive)."""
    key = str(name).strip().upper()
    if key == "C":
        return Combined()
    if key in _NAMED:
        return _NAMED[key]()
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(FLOW_NAMES)}")
