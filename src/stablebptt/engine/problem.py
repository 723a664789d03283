"""What a controller is trained for: a simulator step, a horizon and a loss."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import validate
from .flows import AbstractFlow
from .networks import PerSample

__all__ = ["ControlProblem", "check_controller", "check_states", "check_policy", "check_optimizer", "check_flow", "sample_axes", "shapes"]

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


def check_states(x: Any, where: str = "the initial states") -> None:
    """One-line errors for states no entry point can use: no leaves, a leaf that is not an array,
    complex values, float64 while 64-bit JAX is off (it would be computed in float32), NaN or
    infinite values (checked where the values are known, not inside a traced function)."""
    leaves = jax.tree.leaves(x)
    if not leaves:
        raise ValueError(f"{where} are empty ({x!r}); give an array or a pytree of arrays")
    x64 = jax.config.read("jax_enable_x64")
    for path, leaf in jax.tree_util.tree_leaves_with_path(x):
        name = f"{where}{jax.tree_util.keystr(path)}"
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            if isinstance(leaf, bool | int | float):
                continue
            raise TypeError(f"{name} is a {type(leaf).__name__}; expected arrays (a pytree of jax or numpy arrays)")
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or not np.issubdtype(dtype, np.inexact):
            continue
        if np.issubdtype(dtype, np.complexfloating):
            raise TypeError(f"complex values in {name} ({np.dtype(dtype).name}); split them into real and imaginary float leaves")
        if dtype == np.float64 and not x64:
            raise ValueError(
                f"{name} is float64 but 64-bit JAX is off, so it would be computed in float32; "
                "call stablebptt.set_float64() first (--x64 on the command line), or pass float32 arrays"
            )
        if isinstance(leaf, jax.core.Tracer):
            continue
        bad = np.argwhere(~np.isfinite(np.atleast_1d(np.asarray(leaf))))
        if len(bad):
            raise ValueError(f"NaN or infinite values in {name} (at index {tuple(int(i) for i in bad[0])}); give finite states")


def check_policy(policy: Any, *, trained: bool = True) -> None:
    """One-line errors for a controller that cannot be used: not callable, or (``trained``) with no
    floating-point parameter to train, or with float64 parameters while 64-bit JAX is off."""
    if not callable(policy):
        raise TypeError(f"the controller is a {type(policy).__name__}, not callable; pass a module or function policy(x) -> c")
    floats = [a for a in jax.tree.leaves(policy) if hasattr(a, "dtype") and np.issubdtype(a.dtype, np.inexact)]
    if trained and not floats:
        raise ValueError("the controller has no floating-point parameters, so there is nothing to train; give it float arrays (e.g. an eqx.nn.MLP)")
    if not jax.config.read("jax_enable_x64") and any(a.dtype == np.float64 for a in floats):
        raise ValueError(
            "the controller has float64 parameters but 64-bit JAX is off, so they would be computed in float32; "
            "call stablebptt.set_float64() first, or cast them to float32"
        )


def check_flow(flow: Any, *, single_pass: bool = False) -> None:
    """A one-line ``TypeError`` unless ``flow`` is a flow object (``single_pass``: one backward pass, not C)."""
    if not isinstance(flow, AbstractFlow):
        hint = f"stablebptt.flow_from_name({flow!r})" if isinstance(flow, str) else "stablebptt.C()"
        raise TypeError(f"flow={flow!r}; expected a flow object such as stablebptt.R() or {hint}")
    if single_pass and flow.n_passes != 1:
        raise ValueError(f"this needs a single-pass flow (R, M, S, N); {flow.name} combines {flow.n_passes} passes: use value_and_update")


def check_optimizer(optimizer: Any) -> None:
    """A one-line ``TypeError`` unless ``optimizer`` is an optax transformation (``init`` and ``update``)."""
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"optimizer={optimizer!r}; expected an optax.GradientTransformation, e.g. stablebptt.make_optimizer('none')")


def check_controller(policy: Any, step: Callable, x0: Any) -> tuple[Any, Any]:
    """Check, without computing, that ``policy`` and ``step`` fit the state ``x0``; return the shapes
    (``jax.ShapeDtypeStruct`` pytrees) of the control and the next state.

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
    return c, x1


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
        validate.positive_int("ControlProblem: n_steps", self.n_steps)
        if self.final_loss is None and self.step_loss is None:
            raise ValueError("ControlProblem: give final_loss, step_loss, or both")
        for name in ("final_loss", "step_loss"):
            loss = getattr(self, name)
            if loss is not None and not callable(loss):
                raise TypeError(f"ControlProblem: {name}={loss!r} is not callable; give a function of the state returning a scalar")

    def check(self, policy: Any, x0: Any) -> None:
        """:func:`check_controller` of ``policy`` with this problem's ``step`` on the state ``x0``, and both
        losses' outputs: each must be a real scalar (sum or average over the batch inside the loss)."""
        c, x1 = check_controller(policy, self.step, x0)
        for name, loss, args in (("final_loss(x_n)", self.final_loss, (x1,)), ("step_loss(x_next, c)", self.step_loss, (x1, c))):
            if loss is None:
                continue
            try:
                out = jax.eval_shape(lambda *a: loss(*a), *args)
            except Exception as err:  # noqa: BLE001 - the user's loss failing becomes one line
                raise ValueError(f"{name} fails on states of shape {shapes(x1)} ({_first_line(err)})") from None
            if not (hasattr(out, "shape") and out.shape == () and jnp.issubdtype(out.dtype, jnp.floating)):
                got = f"shape {out.shape} and dtype {out.dtype}" if hasattr(out, "shape") else type(out).__name__
                raise ValueError(f"{name} returns {got}; it must return a real scalar (e.g. jnp.mean over the batch)")


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
