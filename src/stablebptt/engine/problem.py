"""What a controller is trained for: a simulator step, a horizon and a loss."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from .networks import PerSample

__all__ = ["ControlProblem", "check_controller", "sample_axes", "shapes"]

State = Any
Control = Any


def shapes(tree: Any, dtypes: bool = False) -> str:
    """The shapes of a pytree's leaves, for messages: ``(8, 2)`` or ``{'pos': (8, 2), 't': (8,)}``;
    with ``dtypes``: ``float32(8, 2)``."""
    leaf = (lambda a: f"{jnp.dtype(_dtype(a)).name}{tuple(jnp.shape(a))}") if dtypes else (lambda a: tuple(jnp.shape(a)))
    return str(jax.tree.map(leaf, tree)).replace("'", "")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".strip()


def _dtype(a: Any):
    return a.dtype if hasattr(a, "dtype") else jnp.result_type(a)


def check_controller(policy: Any, step: Callable, x0: Any) -> None:
    """Check, without computing, that ``policy`` and ``step`` fit the state ``x0``.

    Raises a one-line ``ValueError`` naming the shapes when the state has no
    floating-point leaf, the controller fails on the state, the simulator
    rejects the controller's output, or ``step`` returns a state of another layout.
    """
    if not any(jnp.issubdtype(_dtype(a), jnp.inexact) for a in jax.tree.leaves(x0)):
        raise ValueError(
            f"the initial states {shapes(x0)} have no floating-point leaf, so there is nothing to differentiate; "
            "pass them as floats (e.g. x0.astype(jnp.float32))"
        )
    try:
        c = jax.eval_shape(lambda x: policy(x), x0)  # a fresh function: JAX < 0.5 hashes the callable, and a module holding tracers cannot be hashed
    except Exception as err:  # noqa: BLE001 - any failure of the user's controller becomes one line
        fix = (
            "if some state leaves have no sample axis, declare them: sb.PerSample(module, in_axes=...) or ControlProblem(state_axes=...)"
            if isinstance(policy, PerSample)
            else "a module written for one sample at a time needs wrapping: sb.PerSample(module)"
        )
        raise ValueError(f"the controller fails on states of shape {shapes(x0)} ({_first_line(err)}); {fix}") from None
    try:
        x1 = jax.eval_shape(lambda x, u: step(x, u), x0, c)
    except Exception as err:  # noqa: BLE001
        raise ValueError(
            f"the simulator rejects the controller's output: controls of shape {shapes(c)} "
            f"for states of shape {shapes(x0)} ({_first_line(err)}); make the controller return what step(x, c) takes"
        ) from None
    x0 = jax.eval_shape(lambda x: x, x0)  # canonical dtypes, as a traced step sees them
    before = jax.tree.structure(x0), [(a.shape, a.dtype) for a in jax.tree.leaves(x0)]
    after = jax.tree.structure(x1), [(a.shape, a.dtype) for a in jax.tree.leaves(x1)]
    if before != after:
        detail = before[1] != after[1] and [s for s, _ in before[1]] == [s for s, _ in after[1]]  # only dtypes differ
        raise ValueError(
            f"step(x, c) returns a state of {'dtype and ' if detail else ''}shape {shapes(x1, detail)} "
            f"for a state of {'dtype and ' if detail else ''}shape {shapes(x0, detail)}; "
            "it must return the next state in the same layout and dtypes"
        )


@dataclasses.dataclass(frozen=True)
class ControlProblem:
    """A differentiable simulator unrolled for ``n_steps`` under a controller.

    Attributes:
        step: ``step(x, c) -> x_next``, any JAX-differentiable function of pytrees.
            It sees the whole state as you store it (e.g. a batch ``(batch, ...)``).
        n_steps: number of simulator steps ``n``; ``x_0 .. x_n``.
        final_loss: ``final_loss(x_n) -> scalar`` (the final-state loss), or None.
        step_loss: ``step_loss(x_{i+1}, c_i) -> scalar``, summed over
            ``i = 0 .. n-1`` (the continuous loss, including any regularizer on
            the controls), or None.
        state_axes: which state leaves have a sample axis, as ``jax.vmap``'s
            ``in_axes`` for the state: ``0`` (every leaf is ``(samples, ...)``,
            the default) or a prefix pytree of ``0`` and ``None``, e.g.
            ``{"pos": 0, "t": None}`` for a clock shared by every sample.
            Training splits only the leaves with a sample axis into
            mini-batches. A :class:`~stablebptt.PerSample` controller's
            ``in_axes`` declares the same, so one of the two is enough.

    The total loss is ``Σ_i step_loss(x_{i+1}, c_i) + final_loss(x_n)``; at
    least one of the two must be given.
    """

    step: Callable[[State, Control], State]
    n_steps: int
    final_loss: Callable[[State], jax.Array] | None = None
    step_loss: Callable[[State, Control], jax.Array] | None = None
    state_axes: Any = 0

    def __post_init__(self):
        if not callable(self.step):
            raise TypeError("ControlProblem: step must be a function step(x, c) -> x_next")
        if isinstance(self.n_steps, bool) or not isinstance(self.n_steps, int) or self.n_steps < 1:
            raise ValueError(f"ControlProblem: n_steps={self.n_steps!r}; expected a positive integer")
        if self.final_loss is None and self.step_loss is None:
            raise ValueError("ControlProblem: give final_loss, step_loss, or both")

    def check(self, policy: Any, x0: Any) -> None:
        """:func:`check_controller` of ``policy`` with this problem's ``step`` on the state ``x0``."""
        check_controller(policy, self.step, x0)


def _leaf_flags(prefix: Any, x: Any, where: str) -> list[bool]:
    """``prefix`` (``0``/``None`` per subtree) as one flag per leaf of ``x`` (True: axis 0 is the sample axis)."""

    def flag(ax):
        if ax is not None and not (isinstance(ax, int) and not isinstance(ax, bool) and ax == 0):
            raise ValueError(f"{where} holds the axis {ax!r}; each state leaf's sample axis must be 0 or None (no sample axis)")
        return ax is not None

    flags = jax.tree.map(flag, prefix, is_leaf=lambda z: z is None)
    try:
        return jax.tree.leaves(jax.tree.broadcast(flags, x))
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{where} {prefix!r} does not match the state's layout {shapes(x)} ({_first_line(err)}); "
            "give 0 or None per leaf, in the state's own structure"
        ) from None


def _declares(axes: Any) -> bool:
    return not (isinstance(axes, int) and axes == 0)


def sample_axes(problem: ControlProblem, policy: Any, x: Any) -> list[bool]:
    """For each leaf of the state ``x`` (``jax.tree.leaves`` order): True if it has a sample axis (axis 0),
    False if it is shared by every sample.

    Declared by ``problem.state_axes`` or by a :class:`~stablebptt.PerSample`
    controller's ``in_axes``; a one-line ``ValueError`` if they disagree or
    an entry is neither 0 nor None.
    """
    declared = [("ControlProblem(state_axes=...)", problem.state_axes)] if _declares(problem.state_axes) else []
    if isinstance(policy, PerSample) and _declares(policy.in_axes):
        declared.append(("PerSample(in_axes=...)", policy.in_axes))
    full = [_leaf_flags(prefix, x, where) for where, prefix in declared]
    if len(full) == 2 and full[0] != full[1]:
        raise ValueError(
            f"ControlProblem(state_axes={problem.state_axes!r}) and PerSample(in_axes={policy.in_axes!r}) disagree "
            "about which state leaves have a sample axis; declare it once, or the same in both"
        )
    return full[0] if full else [True] * len(jax.tree.leaves(x))
